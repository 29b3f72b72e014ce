//! `cargo xtask bench`: benchmarks in the lab; figures go to BENCHMARKS.md.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Opts {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: Option<Which>,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Which {
    /// Scrape latency and RSS at 10,000 × 5 services, next to node_exporter's ipvs collector.
    Scrape(crate::bench_scrape::Opts),
}

/// Runs `cargo xtask bench`.
pub fn run(opts: &Opts) -> Result<()> {
    match &opts.which {
        Some(Which::Scrape(o)) => crate::bench_scrape::run(o),
        None => bail!("name a benchmark: `cargo xtask bench scrape`"),
    }
}
