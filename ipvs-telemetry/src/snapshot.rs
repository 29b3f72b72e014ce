//! `ipvs-telemetry snapshot`: one collection of every selected namespace, printed.

use crate::cli::{Cli, SnapshotOpts};

/// Runs the snapshot command; returns the process exit status.
pub fn run(_cli: &Cli, _opts: &SnapshotOpts) -> i32 {
    eprintln!("ipvs-telemetry: snapshot is not implemented yet");
    1
}
