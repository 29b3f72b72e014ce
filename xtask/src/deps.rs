//! `cargo xtask deps`: checks every prerequisite and installs what is missing.
//!
//! As root it installs (one `apt-get update` first); otherwise it prints the exact commands and
//! exits 2. When everything is present it only runs a few cheap queries (well under 5 s).

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::build;

/// Debian packages the build, the lab and the tests need.
pub(crate) const DEBIAN_PACKAGES: &[&str] = &[
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

/// The LLVM major version bpf-linker is built against (`--features llvm-22`). The nightly
/// rustc that compiles the probes must emit bitcode of this LLVM: a newer one makes bpf-linker
/// fail with `Invalid record`.
pub(crate) const LLVM_MAJOR: u32 = 22;

/// A nightly whose rustc is on LLVM 22 (rustc 1.97.0-nightly of 2026-05-19). Installed and
/// used when the machine's `nightly` is missing or on another LLVM; `rustup toolchain install
/// nightly` would fetch the newest nightly, which may not be.
pub(crate) const PINNED_NIGHTLY: &str = "nightly-2026-05-20";

/// The toolchain the probes are built with: `IPVS_TELEMETRY_NIGHTLY` when set, else `nightly`
/// when its rustc is on LLVM 22, else [`PINNED_NIGHTLY`].
pub(crate) fn nightly() -> String {
    static NIGHTLY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NIGHTLY
        .get_or_init(|| {
            if let Some(t) = std::env::var("IPVS_TELEMETRY_NIGHTLY")
                .ok()
                .filter(|t| !t.is_empty())
            {
                return t;
            }
            if rustc_llvm_major("nightly") == Some(LLVM_MAJOR) {
                "nightly".into()
            } else {
                PINNED_NIGHTLY.into()
            }
        })
        .clone()
}

/// The LLVM major version of `toolchain`'s rustc, or `None` when it is not installed.
fn rustc_llvm_major(toolchain: &str) -> Option<u32> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    parse_llvm_major(&String::from_utf8_lossy(&out.stdout))
}

/// `LLVM version: 22.1.4` in `rustc -vV` output -> 22.
fn parse_llvm_major(vv: &str) -> Option<u32> {
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

/// Options of `cargo xtask deps`.
#[derive(Debug, Args)]
pub(crate) struct Opts {
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

fn has_rust_src(toolchain: &str) -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", toolchain, "--installed"])
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
    let nightly = nightly();
    match rustc_llvm_major(&nightly) {
        // Never `rustup update`/`toolchain install nightly`: that replaces the machine's nightly
        // with the newest one, whose LLVM bpf-linker may not read.
        Some(LLVM_MAJOR) if !has_rust_src(&nightly) => missing.push(Missing {
            what: format!("the {nightly} toolchain's rust-src component"),
            commands: vec![format!("rustup component add rust-src --toolchain {nightly}")],
        }),
        Some(LLVM_MAJOR) => {}
        Some(other) => missing.push(Missing {
            what: format!(
                "a nightly toolchain on LLVM {LLVM_MAJOR} (IPVS_TELEMETRY_NIGHTLY={nightly} is on LLVM {other})"
            ),
            commands: vec![format!(
                "unset IPVS_TELEMETRY_NIGHTLY; rustup toolchain install {PINNED_NIGHTLY} --profile minimal --component rust-src,rustfmt"
            )],
        }),
        None => missing.push(Missing {
            what: format!(
                "a nightly toolchain on LLVM {LLVM_MAJOR}: {nightly} (the machine's `nightly` is missing or on another LLVM)"
            ),
            commands: vec![format!(
                "rustup toolchain install {nightly} --profile minimal --component rust-src,rustfmt"
            )],
        }),
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
pub(crate) fn run(opts: &Opts) -> Result<()> {
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
pub(crate) fn ensure_lab_kernels() -> Result<()> {
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
pub(crate) fn ensure(check_only: bool) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::parse_llvm_major;

    #[test]
    fn llvm_major_of_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("release: 1.95.0\n"), None);
    }
}
