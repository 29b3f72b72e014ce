//! `build-ebpf` and `build`: the probes with nightly + bpf-linker, then the daemon that embeds them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Options of `cargo xtask build-ebpf`.
#[derive(Debug, Args)]
pub(crate) struct EbpfOpts {
    /// Build the release profile.
    #[arg(long)]
    pub release: bool,
}

/// Options of `cargo xtask build`.
#[derive(Debug, Args)]
pub(crate) struct BuildOpts {
    /// Build the release profile.
    #[arg(long)]
    pub release: bool,
}

/// The repository root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Path of the probe object for a profile.
pub(crate) fn ebpf_object(release: bool) -> PathBuf {
    root()
        .join("ipvs-telemetry-ebpf/target/bpfel-unknown-none")
        .join(if release { "release" } else { "debug" })
        .join("ipvs-telemetry-ebpf")
}

/// Runs a command; on failure the error names the whole command line.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {line}"))?;
    if !status.success() {
        bail!("{line} failed with {status}");
    }
    Ok(())
}

/// Builds the probes for `bpfel-unknown-none` with the nightly toolchain and bpf-linker.
pub(crate) fn build_ebpf(opts: &EbpfOpts) -> Result<()> {
    let dir = root().join("ipvs-telemetry-ebpf");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&dir)
        .args(["run", &crate::deps::nightly(), "cargo", "build"]);
    if opts.release {
        cmd.arg("--release");
    }
    // The outer cargo (stable) exports its toolchain; the probes need the nightly one.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    run(&mut cmd).context("building the eBPF probes")?;
    let obj = ebpf_object(opts.release);
    if !obj.is_file() {
        bail!("the probe build finished but {} is missing", obj.display());
    }
    Ok(())
}

/// Builds the probes, then the daemon, with the same profile.
pub(crate) fn build(opts: &BuildOpts) -> Result<()> {
    build_ebpf(&EbpfOpts {
        release: opts.release,
    })?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).args([
        "build",
        "--package",
        "ipvs-telemetry",
        "--package",
        "ipvs-lab-tools",
    ]);
    if opts.release {
        cmd.arg("--release");
    }
    cmd.env("IPVS_TELEMETRY_EBPF_OBJECT", ebpf_object(opts.release));
    run(&mut cmd).context("building the daemon")
}
