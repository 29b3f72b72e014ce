//! The lab kernels: Debian's cloud kernels, resolved through their meta packages, downloaded with
//! `apt-get download`, unpacked with `dpkg-deb -x`, modules decompressed and indexed with
//! `busybox depmod`, all in `<cache>/kernels/<name>/`.
//!
//! A `READY` file marks a complete unpack; until it exists the directory is rebuilt from scratch.
//! A lock file serialises concurrent preparations of the same kernel.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};

use crate::{lock, paths};

/// A lab kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// Debian 12's cloud kernel 6.1 (timer-based IPVS estimator).
    V6_1,
    /// Debian 12 backports' cloud kernel 6.12 (kthread estimator, `.ko.xz` modules).
    V6_12,
}

impl Kernel {
    /// Every lab kernel, oldest first.
    pub fn all() -> [Kernel; 2] {
        [Kernel::V6_1, Kernel::V6_12]
    }

    /// The Debian meta package whose dependency is the kernel image package.
    pub fn meta_package(self) -> &'static str {
        match self {
            Kernel::V6_1 => "linux-image-cloud-amd64",
            Kernel::V6_12 => "linux-image-6.12-cloud-amd64",
        }
    }

    /// The short name: `6.1` or `6.12`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "6.1" => Ok(Kernel::V6_1),
            "6.12" => Ok(Kernel::V6_12),
            other => Err(format!(
                "unknown lab kernel {other:?} (expected 6.1 or 6.12)"
            )),
        }
    }
}

/// An unpacked kernel ready to boot.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// Which kernel.
    pub kernel: Kernel,
    /// The full release, e.g. `6.12.117+deb12-cloud-amd64` (`uname -r` in the VM).
    pub release: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// `.../lib/modules/<release>`, decompressed, with `modules.dep`.
    pub modules: PathBuf,
    /// The kernel's build configuration.
    pub config: PathBuf,
}

fn kernel_dir(k: Kernel) -> PathBuf {
    paths::cache_dir().join("kernels").join(k.name())
}

/// Returns the cached kernel without downloading anything, if it is complete.
pub fn cached_kernel(k: Kernel) -> Option<KernelFiles> {
    let dir = kernel_dir(k);
    let release = fs::read_to_string(dir.join("READY")).ok()?;
    let files = files(k, &dir, release.trim());
    (files.vmlinuz.is_file() && files.modules.join("modules.dep").is_file()).then_some(files)
}

fn files(k: Kernel, dir: &Path, release: &str) -> KernelFiles {
    KernelFiles {
        kernel: k,
        release: release.to_string(),
        vmlinuz: dir.join(format!("root/boot/vmlinuz-{release}")),
        modules: dir.join(format!("root/lib/modules/{release}")),
        config: dir.join(format!("root/boot/config-{release}")),
    }
}

/// The image package the kernel's meta package depends on (asks `apt-cache`).
pub fn image_package(k: Kernel) -> Result<String> {
    let meta = k.meta_package();
    let out = Command::new("apt-cache")
        .args(["depends", meta])
        .output()
        .context("running apt-cache (is this Debian?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "apt-cache knows no image package for {meta} (run apt-get update?): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

/// Downloads and unpacks kernel `k` unless it is cached; fast and offline when cached. Safe when
/// several processes call it at once.
pub fn ensure_kernel(k: Kernel) -> Result<KernelFiles> {
    if let Some(f) = cached_kernel(k) {
        return Ok(f);
    }
    let dir = kernel_dir(k);
    let _lock = lock::lock(&paths::cache_dir().join(format!("kernels/{}.lock", k.name())))?;
    if let Some(f) = cached_kernel(k) {
        return Ok(f);
    }
    prepare(k, &dir).with_context(|| format!("preparing lab kernel {k} in {}", dir.display()))?;
    cached_kernel(k).ok_or_else(|| anyhow!("lab kernel {k} incomplete in {}", dir.display()))
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start {line}"))?;
    if !out.status.success() {
        bail!(
            "{line} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn prepare(k: Kernel, dir: &Path) -> Result<()> {
    let pkg = image_package(k)?;
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let dl = dir.join("download");
    fs::create_dir_all(&dl)?;
    run(Command::new("apt-get")
        .args(["download", "-q", &pkg])
        .current_dir(&dl))?;
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download {pkg} left no .deb in {}", dl.display()))?;
    let root = dir.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let release = fs::read_dir(root.join("boot"))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .next()
        .ok_or_else(|| anyhow!("{pkg} has no /boot/vmlinuz-*"))?;
    let modules = root.join("lib/modules").join(&release);
    // The 6.12 packages ship .ko.xz; busybox's modprobe and depmod want plain .ko.
    let mut xz = Vec::new();
    collect_suffix(&modules, ".ko.xz", &mut xz)?;
    for chunk in xz.chunks(200) {
        run(Command::new("xz").arg("-d").args(chunk))?;
    }
    run(Command::new("busybox")
        .arg("depmod")
        .arg("-b")
        .arg(&root)
        .arg(&release))?;
    fs::remove_dir_all(&dl)?;
    fs::write(dir.join("READY"), &release)?;
    Ok(())
}

/// Appends every file under `dir` whose name ends with `suffix`.
pub(crate) fn collect_suffix(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            collect_suffix(&p, suffix, out)?;
        } else if p.to_str().is_some_and(|s| s.ends_with(suffix)) {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kernel::all() {
            assert_eq!(k.to_string().parse::<Kernel>(), Ok(k));
        }
        assert!("5.10".parse::<Kernel>().is_err());
    }
}
