//! `cargo xtask soak [--minutes N] [--kernel 6.1|6.12]`: the soak and fault-injection suite
//! (`tests/tests/soak.rs`) for N minutes (default 30) on one kernel or on both at once; it
//! prints its checks as figures every ~10 s and a summary per kernel at the end (RELIABILITY.md).
//! `cargo xtask test` runs the same test for 2 minutes on both kernels (the CI variant).

use std::process::Command;

use anyhow::{Result, bail};
use clap::Args;

use crate::build::{self, EbpfOpts, ebpf_object, root};

/// Options of `cargo xtask soak`.
#[derive(Debug, Args)]
pub(crate) struct Opts {
    /// Minutes of churn, traffic and faults (after the VM's boot and setup).
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Only this lab kernel (`6.1` or `6.12`); default both, at once.
    #[arg(long = "kernel", value_name = "VERSION")]
    pub kernels: Vec<String>,
}

/// Builds the probes, then runs the soak test with the options.
pub(crate) fn run(opts: &Opts) -> Result<()> {
    if opts.minutes.is_nan() || opts.minutes <= 0.0 {
        bail!("--minutes must be positive");
    }
    for k in &opts.kernels {
        if k.parse::<ipvs_lab::Kernel>().is_err() {
            bail!("--kernel {k}: the lab kernels are 6.1 and 6.12");
        }
    }
    build::build_ebpf(&EbpfOpts { release: true })?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root())
        .env("IPVS_TELEMETRY_EBPF_OBJECT", ebpf_object(true))
        .env("IPVS_SOAK_MINUTES", opts.minutes.to_string())
        .env("IPVS_LAB_REQUIRED", "1");
    if !opts.kernels.is_empty() {
        cmd.env("IPVS_LAB_KERNELS", opts.kernels.join(","));
    }
    build::run(cmd.args([
        "test",
        "--release",
        "--package",
        "ipvs-telemetry-e2e",
        "--test",
        "soak",
        "--",
        "--nocapture",
        "--exact",
        "soak",
    ]))
}
