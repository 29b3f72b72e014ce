//! ipvs-telemetry: Prometheus telemetry for Linux IPVS.
//!
//! Data flows one way: [`netlink`] (through [`netns`]) and [`ebpf`] produce immutable
//! [`model`] values, [`metrics`] encodes them for each scrape, [`http`] streams the bytes.
//! [`collect`] decides when to collect; `main.rs` only parses flags and picks the command;
//! [`serve`] wires the daemon together, [`snapshot`] the one-shot command.

#![warn(missing_docs)]
// Every dependency of the package is used by this crate (see the workspace lints).
#![warn(unused_crate_dependencies)]

pub mod api;
pub mod caps;
pub mod cli;
pub mod collect;
pub mod ebpf;
pub mod error;
pub mod http;
pub mod ipvsadm_table;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod serve;
pub mod snapshot;
pub mod top;
