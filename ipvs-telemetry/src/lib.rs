//! ipvs-telemetry: Prometheus telemetry for Linux IPVS.
//!
//! Data flows one way: [`netlink`] (through [`netns`]) and [`ebpf`] produce immutable
//! [`model`] values, [`metrics`] encodes them once per collection, [`http`] serves the bytes.
//! `main.rs` only parses flags and wires these together.

#![warn(missing_docs)]

pub mod caps;
pub mod cli;
pub mod ebpf;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod serve;
pub mod snapshot;
