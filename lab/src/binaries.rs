//! The project's own programs that go into the VM: the lab tools and the daemon.
//!
//! - Lab tools: `IPVS_LAB_TOOLS_DIR` (prebuilt `lab-agent`, `lab-client`, `lab-server`), or
//!   built once per process with `cargo build --release -p ipvs-lab-tools` into
//!   `<target>/lab-tools` (a target directory of their own, so the build never waits for the
//!   lock of a `cargo test` that is running us).
//! - Daemon: `IPVS_TELEMETRY_BIN`, or built once per process with
//!   `cargo build -p ipvs-telemetry --profile <IPVS_LAB_PROFILE, default release>` in the
//!   workspace target directory, so a test always runs the daemon of the current sources. The
//!   probe object comes from `IPVS_TELEMETRY_EBPF_OBJECT` or, when unset, the default path of
//!   `cargo xtask build-ebpf --release` if it exists.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};

use crate::paths;

/// Names of the lab tools, installed in `/usr/local/bin` in the VM.
pub const TOOLS: &[&str] = &["lab-agent", "lab-client", "lab-server"];

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(paths::repo_root());
    cmd
}

fn run_build(mut cmd: Command, what: &str) -> Result<(), String> {
    let line = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("could not start cargo to build {what}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "building {what} failed ({line}):\n{}",
            tail.join("\n")
        ));
    }
    Ok(())
}

/// The directory holding the lab tools, building them on first use.
pub fn tools_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("IPVS_LAB_TOOLS_DIR").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(d));
        }
        let target = paths::target_dir().join("lab-tools");
        let mut cmd = cargo();
        cmd.args([
            "build",
            "--release",
            "--package",
            "ipvs-lab-tools",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(&target);
        run_build(cmd, "the lab tools")?;
        Ok(target.join("release"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
    .and_then(|d| {
        for t in TOOLS {
            if !d.join(t).is_file() {
                return Err(anyhow!("lab tool {} is missing", d.join(t).display()));
            }
        }
        Ok(d)
    })
}

/// The daemon binary for the VM, building it on first use (see the module doc).
pub fn daemon_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("IPVS_TELEMETRY_BIN").filter(|b| !b.is_empty()) {
            let b = PathBuf::from(b);
            return if b.is_file() {
                Ok(b)
            } else {
                Err(format!("IPVS_TELEMETRY_BIN={} does not exist", b.display()))
            };
        }
        let profile = std::env::var("IPVS_LAB_PROFILE").unwrap_or_else(|_| "release".into());
        let mut cmd = cargo();
        cmd.args([
            "build",
            "--package",
            "ipvs-telemetry",
            "--bin",
            "ipvs-telemetry",
        ])
        .args(["--profile", &profile]);
        if std::env::var_os("IPVS_TELEMETRY_EBPF_OBJECT").is_none() {
            let obj = paths::repo_root()
                .join("ipvs-telemetry-ebpf/target/bpfel-unknown-none/release/ipvs-telemetry-ebpf");
            if obj.is_file() {
                cmd.env("IPVS_TELEMETRY_EBPF_OBJECT", obj);
            }
        }
        run_build(cmd, "the daemon")?;
        let dir = if profile == "dev" {
            "debug"
        } else {
            profile.as_str()
        };
        Ok(paths::target_dir().join(dir).join("ipvs-telemetry"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}
