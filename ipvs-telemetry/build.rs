//! Locates the probe object built by `cargo xtask build-ebpf` and hands its path to the crate.
//!
//! The daemon embeds the probes; it is never built without them. When the object is missing the
//! build fails with a message that names the command which produces it.

use std::path::PathBuf;

fn main() {
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
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
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
    let git_head = manifest_git_head();
    if let Some(h) = git_head {
        println!("cargo:rerun-if-changed={}", h.display());
    }
}

fn manifest_git_head() -> Option<PathBuf> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let head = manifest.parent()?.join(".git/HEAD");
    head.exists().then_some(head)
}
