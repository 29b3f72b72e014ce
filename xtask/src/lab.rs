//! `cargo xtask lab`.

use anyhow::{Result, bail};
use clap::Args;

/// Options of `cargo xtask lab`.
#[derive(Debug, Args)]
pub struct Opts {
    /// Arguments passed through.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `cargo xtask lab`.
pub fn run(_opts: &Opts) -> Result<()> {
    bail!("`cargo xtask lab` is not implemented yet")
}
