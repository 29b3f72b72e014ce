//! `cargo xtask bench SCENARIO [OPTIONS]`: benchmarks; each prints its figures as BENCHMARKS.md
//! table rows. Timing under TCG is noisy, so every scenario alternates its two sides (A B A B …)
//! and reports medians and ratios.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use ipvs_lab::paths;

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub(crate) struct Opts {
    /// The scenario (`netlink`, `netns`, `scrape`, `scale`, `ebpf`) and its options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

const KNOWN: &str = "netlink, netns, scrape, scale, ebpf";

/// Runs `cargo xtask bench`.
pub(crate) fn run(opts: &Opts) -> Result<()> {
    let rest = opts.args.get(1..).unwrap_or_default();
    match opts.args.first().map(String::as_str) {
        Some("netlink") => crate::bench_netlink::run(rest),
        Some("netns") => crate::bench_netns::run(rest),
        Some("scrape") => crate::bench_scrape::run(rest),
        Some("scale") => crate::bench_scale::run(rest),
        Some("ebpf") => crate::bench_ebpf::run(rest),
        Some(other) => bail!("unknown benchmark {other:?} (known: {KNOWN})"),
        None => bail!("which benchmark? (known: {KNOWN})"),
    }
}

/// Builds an example of the daemon crate in release mode and returns its path.
pub(crate) fn build_example(name: &str) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(paths::repo_root()).args([
        "build",
        "--release",
        "--package",
        "ipvs-telemetry",
        "--example",
        name,
    ]);
    if std::env::var_os("IPVS_TELEMETRY_EBPF_OBJECT").is_none() {
        let obj = paths::repo_root()
            .join("ipvs-telemetry-ebpf/target/bpfel-unknown-none/release/ipvs-telemetry-ebpf");
        if obj.is_file() {
            cmd.env("IPVS_TELEMETRY_EBPF_OBJECT", obj);
        }
    }
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(paths::target_dir().join("release/examples").join(name))
}
