//! `cargo xtask bench SCENARIO [OPTIONS]`: benchmarks; each prints its figures as BENCHMARKS.md
//! table rows. Timing under TCG is noisy, so every scenario alternates its two sides (A B A B …)
//! and reports medians and ratios.

use anyhow::{Result, bail};
use clap::Args;

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Opts {
    /// The scenario (`netlink`, `netns`, `scrape`, `ebpf`) and its options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

const KNOWN: &str = "netlink, netns, scrape, ebpf";

/// Runs `cargo xtask bench`.
pub fn run(opts: &Opts) -> Result<()> {
    let rest = opts.args.get(1..).unwrap_or_default();
    match opts.args.first().map(String::as_str) {
        Some("netlink") => crate::bench_netlink::run(rest),
        Some("netns") => crate::bench_netns::run(rest),
        Some("scrape") => crate::bench_scrape::run(rest),
        Some("ebpf") => crate::bench_ebpf::run(rest),
        Some(other) => bail!("unknown benchmark {other:?} (known: {KNOWN})"),
        None => bail!("which benchmark? (known: {KNOWN})"),
    }
}
