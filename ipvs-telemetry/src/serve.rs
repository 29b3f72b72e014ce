//! `ipvs-telemetry serve`: the daemon's wiring of collection, eBPF, encoding and HTTP.

use crate::cli::Cli;

/// Runs the daemon until SIGINT/SIGTERM; returns the process exit status.
pub fn run(_cli: Cli) -> i32 {
    eprintln!("ipvs-telemetry: serve is not implemented yet");
    1
}
