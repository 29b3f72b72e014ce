//! Shared helpers of the in-VM programs: the agent's wire protocol and command-line parsing.
//!
//! The binaries (`lab-agent`, `lab-client`, `lab-server`) use only std and libc so they run from
//! the lab initramfs with nothing but the host's glibc.

// Every dependency of the package is used by this crate (see the workspace lints).
#![warn(unused_crate_dependencies)]
// libc is the binaries' (lab-agent), not this library's.
use libc as _;

pub mod args;
pub mod proto;
