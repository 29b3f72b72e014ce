//! `cargo xtask run -- [daemon flags]`: builds the probes and the daemon, then runs it on this
//! host (through sudo when not root: the daemon needs CAP_NET_ADMIN, and CAP_BPF/CAP_PERFMON for
//! the probes).

use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::build::{BuildOpts, build, root};

/// Options of `cargo xtask run`.
#[derive(Debug, Args)]
pub(crate) struct Opts {
    /// Run the release build.
    #[arg(long)]
    pub release: bool,
    /// Flags passed to the daemon (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Builds and runs the daemon; returns when it exits, with its status.
pub(crate) fn run(opts: &Opts) -> Result<()> {
    crate::deps::ensure(false)?;
    build(&BuildOpts {
        release: opts.release,
    })?;
    let bin = root()
        .join("target")
        .join(if opts.release { "release" } else { "debug" })
        .join("ipvs-telemetry");
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root_user {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg("--").arg(&bin);
        c
    };
    cmd.args(&opts.args);
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
