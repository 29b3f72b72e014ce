//! Where the lab keeps things: the repository, cargo's target directory and the lab cache.

use std::path::PathBuf;

/// The repository root (the parent of `lab/`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                repo_root().join(d)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// The lab cache (kernels, initramfs images, VM work directories): `IPVS_LAB_CACHE` or
/// `<target>/lab`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("IPVS_LAB_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => target_dir().join("lab"),
    }
}
