//! Shared helpers of the in-VM programs: the agent's wire protocol and command-line parsing.
//!
//! The binaries (`lab-agent`, `lab-client`, `lab-server`) use only std and libc so they run from
//! the lab initramfs with nothing but the host's glibc.

pub mod args;
pub mod proto;
