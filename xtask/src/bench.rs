//! `cargo xtask bench`: benchmarks in the lab; figures go to BENCHMARKS.md.
//!
//! `scrape`: see [`crate::bench_scrape`].

use anyhow::{Result, bail};
use clap::Args;

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Opts {
    /// Arguments passed through: the scenario (`scrape`) and its options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `cargo xtask bench`.
pub fn run(opts: &Opts) -> Result<()> {
    match opts.args.first().map(String::as_str) {
        Some("scrape") => crate::bench_scrape::run(&opts.args[1..]),
        Some(other) => bail!("unknown benchmark {other:?} (known: scrape)"),
        None => bail!("which benchmark? (known: scrape)"),
    }
}
