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
pub fn run(_opts: &Opts) -> Result<()> {
    bail!("`cargo xtask bench` is not implemented yet")
}
