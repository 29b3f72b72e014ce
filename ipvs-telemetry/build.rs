//! Locates the probe object built by `cargo xtask build-ebpf` and hands its path to the crate,
//! and records the git revision and the compiler version.
//!
//! The daemon embeds the probes; it is never built without them. When the object is missing the
//! build fails with a message that names the command which produces it.
//!
//! The revision is `IPVS_TELEMETRY_REVISION` when set (a container build, whose context has no
//! `.git`, passes it as a build argument), else `git rev-parse --short=12 HEAD`, else `unknown`.
//!
//! Targets other than x86-64 are refused with a message saying why (the probes read x86-64
//! registers).

use std::path::PathBuf;

fn main() {
    // The probes read the kernel's x86-64 registers (`pt_regs`) directly: a build for another
    // architecture would load and then read garbage. Say so before anything else is compiled.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" {
        eprintln!(
            "error: ipvs-telemetry builds for x86-64 only, not {arch:?}: its eBPF probes read the \
             kernel's x86-64 registers (pt_regs) directly; an arm64 port is a later step"
        );
        std::process::exit(1);
    }
    println!("cargo:rerun-if-env-changed=IPVS_TELEMETRY_EBPF_OBJECT");
    let path = match std::env::var_os("IPVS_TELEMETRY_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
            let root = manifest
                .parent()
                .unwrap()
                .join("ipvs-telemetry-ebpf/target/bpfel-unknown-none");
            // Prefer the release object; fall back to the debug one.
            let release = root.join("release/ipvs-telemetry-ebpf");
            let debug = root.join("debug/ipvs-telemetry-ebpf");
            println!("cargo:rerun-if-changed={}", release.display());
            println!("cargo:rerun-if-changed={}", debug.display());
            if release.exists() { release } else { debug }
        }
    };
    println!("cargo:rerun-if-changed={}", path.display());
    if !path.is_file() {
        eprintln!(
            "error: the eBPF probe object {} does not exist; build it first with `cargo xtask build-ebpf` (or use `cargo xtask build`)",
            path.display()
        );
        std::process::exit(1);
    }
    println!(
        "cargo:rustc-env=IPVS_TELEMETRY_EBPF_OBJECT={}",
        path.display()
    );
    println!("cargo:rerun-if-env-changed=IPVS_TELEMETRY_REVISION");
    let rev = std::env::var("IPVS_TELEMETRY_REVISION")
        .ok()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty() && r != "unknown")
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IPVS_TELEMETRY_REVISION={rev}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IPVS_TELEMETRY_RUSTC={rustc_version}");
    // Rebuild when the checkout moves: HEAD, the branch it points at, packed refs. Works in
    // worktrees too, where `.git` is a file.
    for path in git_paths() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn git_paths() -> Vec<PathBuf> {
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        refs.push(branch);
    }
    refs.iter()
        .filter_map(|r| git(&["rev-parse", "--path-format=absolute", "--git-path", r]))
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}
