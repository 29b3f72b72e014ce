//! `cargo xtask deps`: checks every prerequisite and installs what is missing.
//!
//! As root it installs (one `apt-get update` first); otherwise it prints the exact commands and
//! exits 2. When everything is present it only runs a few cheap queries (well under 5 s).

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::build;

/// Debian packages the build, the lab and the tests need.
pub const DEBIAN_PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22.
    "llvm-22-dev",
    "libclang-22-dev",
    "libpolly-22-dev",
    // The lab.
    "qemu-system-x86",
    "busybox-static",
    "ipvsadm",
    "iproute2",
    "iptables",
    "cpio",
    "xz-utils",
    "zstd",
    // promtool and real scrapes; the node_exporter comparison benchmark.
    "prometheus",
    "prometheus-node-exporter",
    // TLS tests.
    "curl",
    "openssl",
    // systemd-analyze verify of the unit in deploy/.
    "systemd",
];

/// bpf-linker version known to build against Debian's LLVM 22 with this toolchain.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Options of `cargo xtask deps`.
#[derive(Debug, Args)]
pub struct Opts {
    /// Only check; exit 2 when something is missing.
    #[arg(long)]
    pub check: bool,
}

/// One missing prerequisite and how to get it.
struct Missing {
    what: String,
    commands: Vec<String>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn missing_debian_packages() -> Vec<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(DEBIAN_PACKAGES)
        .stderr(Stdio::null())
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    DEBIAN_PACKAGES
        .iter()
        .filter(|p| {
            !text.lines().any(|l| {
                let mut f = l.split_whitespace();
                f.next() == Some(**p) && f.next().is_some_and(|s| s.starts_with("ii"))
            })
        })
        .map(|p| p.to_string())
        .collect()
}

fn has_nightly_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false)
}

fn has_bpf_linker() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn bpf_linker_install_cmd() -> String {
    format!(
        "LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked --no-default-features --features llvm-22"
    )
}

fn find_missing() -> Vec<Missing> {
    let mut missing = Vec::new();
    let pkgs = missing_debian_packages();
    if !pkgs.is_empty() {
        missing.push(Missing {
            what: format!("Debian packages: {}", pkgs.join(" ")),
            commands: vec![
                "apt-get update".into(),
                format!(
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
                    pkgs.join(" ")
                ),
            ],
        });
    }
    if !has_nightly_rust_src() {
        missing.push(Missing {
            what: "the nightly toolchain's rust-src component".into(),
            commands: vec![
                "rustup toolchain install nightly --profile minimal --component rust-src".into(),
            ],
        });
    }
    if !has_bpf_linker() {
        missing.push(Missing {
            what: "bpf-linker".into(),
            commands: vec![bpf_linker_install_cmd()],
        });
    }
    missing
}

fn sh(cmdline: &str) -> Result<()> {
    build::run(Command::new("sh").args(["-c", cmdline]))
}

/// Checks and installs the host prerequisites and the lab kernels.
pub fn run(opts: &Opts) -> Result<()> {
    ensure(opts.check)?;
    if opts.check {
        if let Some(k) = ipvs_lab::Kernel::all()
            .into_iter()
            .find(|k| ipvs_lab::cached_kernel(*k).is_none())
        {
            eprintln!("xtask: lab kernel {k} is not cached; `cargo xtask deps` downloads it");
            std::process::exit(2);
        }
    } else {
        ensure_lab_kernels()?;
    }
    eprintln!("xtask: every prerequisite is present");
    Ok(())
}

/// Downloads and unpacks the lab kernels that are not cached yet (fast when they are).
pub fn ensure_lab_kernels() -> Result<()> {
    for k in ipvs_lab::Kernel::all() {
        if ipvs_lab::cached_kernel(k).is_none() {
            eprintln!("xtask: fetching lab kernel {k}");
            ipvs_lab::ensure_kernel(k).with_context(|| format!("preparing lab kernel {k}"))?;
        }
    }
    Ok(())
}

/// Installs missing host prerequisites (not the lab kernels). With `check_only`, or when not
/// root, prints the commands and exits 2.
pub fn ensure(check_only: bool) -> Result<()> {
    let missing = find_missing();
    if missing.is_empty() {
        return Ok(());
    }
    if check_only || !is_root() {
        eprintln!("xtask: missing prerequisites:");
        for m in &missing {
            eprintln!("  - {}", m.what);
        }
        eprintln!("install them with (as root):");
        for m in &missing {
            for c in &m.commands {
                eprintln!("  {c}");
            }
        }
        std::process::exit(2);
    }
    let mut updated = false;
    for m in &missing {
        eprintln!("xtask: installing {}", m.what);
        for c in &m.commands {
            if c == "apt-get update" {
                if updated {
                    continue;
                }
                updated = true;
            }
            sh(c).with_context(|| format!("installing {}", m.what))?;
        }
    }
    let still = find_missing();
    if !still.is_empty() {
        bail!(
            "still missing after installation: {}",
            still
                .iter()
                .map(|m| m.what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
