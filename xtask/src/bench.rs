//! `cargo xtask bench`.

use anyhow::{Result, bail};
use clap::Args;

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Opts {
    /// Arguments passed through.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `cargo xtask bench`.
pub fn run(opts: &Opts) -> Result<()> {
    match opts.args.first().map(String::as_str) {
        Some("netns") => crate::bench_netns::run(&opts.args[1..]),
        Some(other) => bail!("unknown benchmark {other:?} (known: netns)"),
        None => bail!("which benchmark? (known: netns)"),
    }
}
