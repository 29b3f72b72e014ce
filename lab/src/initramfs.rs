//! The VM's root file system, as an initramfs in two layers.
//!
//! - The base image, per kernel, cached in `<cache>/initramfs/base-<kernel>-<hash>.cpio`:
//!   busybox (init and the small tools), dash as `/bin/sh`, ipvsadm, iproute2 (`ip`, `tc`),
//!   iptables (nft and legacy), the shared libraries they need (from `ldd`), the kernel modules
//!   of [`crate::modules`] with their dependencies, and the boot scripts of `src/guest/`. The
//!   hash covers every input (paths, sizes, modification times, scripts, module list), so the
//!   image is rebuilt only when one changed.
//! - The per-VM layer, appended to a copy of the base (the kernel unpacks concatenated
//!   archives in order): the lab tools, the daemon when asked, their libraries and the
//!   scenario's files.
//!
//! Guest paths of the tools (PATH also finds them; real tools are never shadowed by busybox
//! applets because `/bin/sh` is dash):
//! `/usr/sbin/ipvsadm`, `/usr/sbin/ip`, `/usr/sbin/tc`, `/usr/sbin/iptables` (nft),
//! `/usr/sbin/iptables-legacy`, `/usr/sbin/iptables-save`, `/usr/sbin/ip6tables`,
//! `/usr/local/bin/lab-{agent,client,server}`, `/usr/local/bin/ipvs-telemetry`; and, when the
//! host has them, the real `setsid timeout nohup env nice xargs nsenter unshare chroot taskset
//! ionice flock ss capsh getpcaps setpriv prlimit strace jq` (see [`OPTIONAL_TOOLS`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result, anyhow};

use crate::cpio::CpioWriter;
use crate::kernel::KernelFiles;
use crate::{lock, modules, paths};

/// Bump when the layout of the base image changes in a way the hash does not see.
const FORMAT: &str = "ipvs-lab-initramfs-2";

const RCS: &str = include_str!("guest/rcS");
const INITTAB: &str = include_str!("guest/inittab");

/// One entry of an image.
#[derive(Debug, Clone)]
enum Item {
    /// A copy of a host file.
    Host {
        guest: String,
        host: PathBuf,
    },
    /// Generated contents.
    Data {
        guest: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        guest: String,
        target: String,
    },
    Dir {
        guest: String,
    },
    CharDev {
        guest: String,
        major: u32,
        minor: u32,
    },
}

/// Host directories searched for the tools, in order.
const HOST_BIN_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Finds a host program by name.
pub fn host_bin(name: &str) -> Option<PathBuf> {
    HOST_BIN_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn need_bin(name: &str, package: &str) -> Result<PathBuf> {
    host_bin(name).ok_or_else(|| {
        anyhow!("{name} not found on this host (install the Debian package {package})")
    })
}

/// The real tools of the base image: (guest path, host program, Debian package).
const TOOLS: &[(&str, &str, &str)] = &[
    ("/usr/bin/dash", "dash", "dash"),
    ("/usr/sbin/ipvsadm", "ipvsadm", "ipvsadm"),
    ("/usr/sbin/ip", "ip", "iproute2"),
    ("/usr/sbin/tc", "tc", "iproute2"),
    (
        "/usr/sbin/xtables-nft-multi",
        "xtables-nft-multi",
        "iptables",
    ),
    (
        "/usr/sbin/xtables-legacy-multi",
        "xtables-legacy-multi",
        "iptables",
    ),
];

/// Real tools copied when the host has them. Busybox's applets that run other programs
/// (`setsid`, `timeout`, `nsenter`, `xargs`, ...) would run busybox's own `ip` or `tc` instead of
/// the real ones found in PATH, so the real versions of those replace them.
const OPTIONAL_TOOLS: &[&str] = &[
    "setsid", "timeout", "nohup", "env", "nice", "xargs", "nsenter", "unshare", "chroot",
    "taskset", "ionice", "flock", "ss", "capsh", "getpcaps", "setpriv", "prlimit", "strace", "jq",
];

/// Symlinks to the real tools: (guest path, target).
const TOOL_LINKS: &[(&str, &str)] = &[
    ("/usr/bin/sh", "dash"),
    ("/usr/bin/ip", "/usr/sbin/ip"),
    ("/usr/sbin/iptables", "xtables-nft-multi"),
    ("/usr/sbin/iptables-save", "xtables-nft-multi"),
    ("/usr/sbin/iptables-restore", "xtables-nft-multi"),
    ("/usr/sbin/ip6tables", "xtables-nft-multi"),
    ("/usr/sbin/ip6tables-save", "xtables-nft-multi"),
    ("/usr/sbin/ip6tables-restore", "xtables-nft-multi"),
    ("/usr/sbin/iptables-nft", "xtables-nft-multi"),
    ("/usr/sbin/iptables-nft-save", "xtables-nft-multi"),
    ("/usr/sbin/iptables-nft-restore", "xtables-nft-multi"),
    ("/usr/sbin/ip6tables-nft", "xtables-nft-multi"),
    ("/usr/sbin/ip6tables-nft-save", "xtables-nft-multi"),
    ("/usr/sbin/ip6tables-nft-restore", "xtables-nft-multi"),
    ("/usr/sbin/iptables-legacy", "xtables-legacy-multi"),
    ("/usr/sbin/iptables-legacy-save", "xtables-legacy-multi"),
    ("/usr/sbin/iptables-legacy-restore", "xtables-legacy-multi"),
    ("/usr/sbin/ip6tables-legacy", "xtables-legacy-multi"),
    ("/usr/sbin/ip6tables-legacy-save", "xtables-legacy-multi"),
    ("/usr/sbin/ip6tables-legacy-restore", "xtables-legacy-multi"),
];

/// Small host directories copied as they are (when present).
const HOST_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/xtables",
    "/usr/lib/x86_64-linux-gnu/tc",
    "/etc/iproute2",
    "/usr/share/iproute2",
];

/// Small host files copied as they are (when present).
const HOST_FILES: &[&str] = &["/etc/protocols", "/etc/services", "/etc/ethertypes"];

fn guest_base_files() -> Vec<Item> {
    let data = |guest: &str, mode: u32, text: &str| Item::Data {
        guest: guest.into(),
        mode,
        data: text.as_bytes().to_vec(),
    };
    let mut v = vec![
        Item::Dir {
            guest: "/proc".into(),
        },
        Item::Dir {
            guest: "/sys".into(),
        },
        Item::Dir {
            guest: "/dev".into(),
        },
        Item::Dir {
            guest: "/run".into(),
        },
        Item::Dir {
            guest: "/tmp".into(),
        },
        Item::Dir {
            guest: "/root".into(),
        },
        Item::Dir {
            guest: "/var/log/lab".into(),
        },
        Item::Dir {
            guest: "/usr/local/bin".into(),
        },
        Item::CharDev {
            guest: "/dev/console".into(),
            major: 5,
            minor: 1,
        },
        Item::Symlink {
            guest: "/var/run".into(),
            target: "/run".into(),
        },
        Item::Symlink {
            guest: "/etc/mtab".into(),
            target: "/proc/self/mounts".into(),
        },
        Item::Symlink {
            guest: "/init".into(),
            target: "/usr/bin/busybox".into(),
        },
        data("/etc/init.d/rcS", 0o755, RCS),
        data("/etc/inittab", 0o644, INITTAB),
        data(
            "/etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        data("/etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n"),
        data(
            "/etc/hosts",
            0o644,
            "127.0.0.1 localhost lab\n::1 localhost ip6-localhost\n",
        ),
        data(
            "/etc/nsswitch.conf",
            0o644,
            "passwd: files\ngroup: files\nhosts: files\nservices: files\nprotocols: files\n",
        ),
    ];
    for f in HOST_FILES {
        if Path::new(f).is_file() {
            v.push(Item::Host {
                guest: f.to_string(),
                host: f.into(),
            });
        }
    }
    v
}

fn dir_files(dir: &Path, guest: &str, out: &mut Vec<Item>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let g = format!("{guest}/{name}");
        if p.is_dir() {
            dir_files(&p, &g, out)?;
        } else if p.is_file() {
            out.push(Item::Host { guest: g, host: p });
        }
    }
    Ok(())
}

/// Parses `modules.dep` into module name -> (path, dependency paths).
fn modules_dep(modules: &Path) -> Result<BTreeMap<String, (String, Vec<String>)>> {
    let text = fs::read_to_string(modules.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", modules.display()))?;
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let path = path.trim().to_string();
        let name = module_name(&path);
        let deps = deps.split_whitespace().map(str::to_string).collect();
        map.insert(name, (path, deps));
    }
    Ok(map)
}

/// `kernel/net/x/foo-bar.ko` -> `foo_bar`.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// The modules of the image (relative paths, dependencies included) and the boot list of
/// this kernel (only modules it has).
fn module_plan(modules: &Path) -> Result<(BTreeSet<String>, Vec<String>)> {
    let dep = modules_dep(modules)?;
    let mut files = BTreeSet::new();
    let mut boot = Vec::new();
    for (i, name) in modules::BOOT.iter().chain(modules::ON_DEMAND).enumerate() {
        let name = name.replace('-', "_");
        let Some((path, deps)) = dep.get(&name) else {
            continue; // built in or absent from this kernel
        };
        if i < modules::BOOT.len() {
            boot.push(name.clone());
        }
        files.insert(path.clone());
        files.extend(deps.iter().cloned());
    }
    Ok((files, boot))
}

/// Plans the base image of a kernel (without libraries, which need `ldd`).
fn base_plan(kf: &KernelFiles) -> Result<(Vec<Item>, Vec<PathBuf>)> {
    let mut items = guest_base_files();
    let mut elves = Vec::new();
    let busybox = need_bin("busybox", "busybox-static")?;
    items.push(Item::Host {
        guest: "/usr/bin/busybox".into(),
        host: busybox.clone(),
    });
    elves.push(busybox.clone());
    let mut provided: BTreeSet<String> = BTreeSet::new();
    for (guest, name, pkg) in TOOLS {
        let host = need_bin(name, pkg)?;
        items.push(Item::Host {
            guest: guest.to_string(),
            host: host.clone(),
        });
        elves.push(host);
        provided.insert(basename(guest));
    }
    for name in OPTIONAL_TOOLS {
        if let Some(host) = host_bin(name) {
            items.push(Item::Host {
                guest: host.to_string_lossy().into_owned(),
                host: host.clone(),
            });
            elves.push(host);
            provided.insert(name.to_string());
        }
    }
    for (guest, target) in TOOL_LINKS {
        items.push(Item::Symlink {
            guest: guest.to_string(),
            target: target.to_string(),
        });
        provided.insert(basename(guest));
    }
    for d in HOST_DIRS {
        let p = Path::new(d);
        if p.is_dir() {
            let before = items.len();
            dir_files(p, d, &mut items)?;
            for it in &items[before..] {
                if let Item::Host { host, .. } = it {
                    if host.extension().is_some_and(|e| e == "so") {
                        elves.push(host.clone());
                    }
                }
            }
        }
    }
    // Busybox applets for everything the real tools do not provide.
    let out = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    for path in String::from_utf8_lossy(&out.stdout).lines() {
        let name = basename(path);
        if name.is_empty() || provided.contains(&name) || name == "busybox" {
            continue;
        }
        items.push(Item::Symlink {
            guest: format!("/{}", path.trim_start_matches('/')),
            target: "/usr/bin/busybox".into(),
        });
    }
    // Kernel modules.
    let (mods, boot) = module_plan(&kf.modules)?;
    let guest_mods = format!("/lib/modules/{}", kf.release);
    for m in &mods {
        items.push(Item::Host {
            guest: format!("{guest_mods}/{m}"),
            host: kf.modules.join(m),
        });
    }
    // Index files trimmed to the modules carried: busybox's modprobe parses them on every call.
    let names: BTreeSet<String> = mods.iter().map(|m| module_name(m)).collect();
    for (idx, keep) in [
        ("modules.dep", IndexKey::DepPath),
        ("modules.alias", IndexKey::LastWord),
        ("modules.symbols", IndexKey::LastWord),
        ("modules.builtin", IndexKey::All),
        ("modules.order", IndexKey::DepPath),
    ] {
        let p = kf.modules.join(idx);
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        let kept: String = text
            .lines()
            .filter(|l| match keep {
                IndexKey::All => true,
                IndexKey::DepPath => {
                    let path = l.split(':').next().unwrap_or("").trim();
                    mods.contains(path)
                }
                IndexKey::LastWord => l
                    .split_whitespace()
                    .last()
                    .is_some_and(|w| names.contains(&w.replace('-', "_"))),
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        items.push(Item::Data {
            guest: format!("{guest_mods}/{idx}"),
            mode: 0o644,
            data: kept.into_bytes(),
        });
    }
    items.push(Item::Data {
        guest: "/etc/ipvs-lab/modules".into(),
        mode: 0o644,
        data: (boot.join("\n") + "\n").into_bytes(),
    });
    Ok((items, elves))
}

/// Which lines of a module index file to keep.
#[derive(Clone, Copy)]
enum IndexKey {
    All,
    /// Lines whose first field (before `:`) is a carried module's path.
    DepPath,
    /// Lines whose last word is a carried module's name.
    LastWord,
}

fn basename(p: &str) -> String {
    p.rsplit('/').next().unwrap_or(p).to_string()
}

/// The shared libraries (and the dynamic loader) the given ELF files need, from one `ldd` call.
pub fn ldd(files: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    if files.is_empty() {
        return Ok(libs);
    }
    for chunk in files.chunks(100) {
        let out = Command::new("ldd")
            .args(chunk)
            .output()
            .context("running ldd (package libc-bin)")?;
        // ldd exits 1 when one of the files is static; its output is still complete.
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.starts_with('\t') {
                continue;
            }
            let l = line.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.trim().split(' ').next().unwrap_or(""),
                None => l.split(' ').next().unwrap_or(""),
            };
            if path.starts_with('/') {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libs)
}

/// Hash input line of an item: its guest path and what determines its contents.
fn describe(it: &Item, h: &mut Fnv) {
    match it {
        Item::Host { guest, host } => {
            h.write(guest.as_bytes());
            h.write(host.as_os_str().as_encoded_bytes());
            if let Ok(m) = fs::metadata(host) {
                h.write(&m.len().to_le_bytes());
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                h.write(&mtime.to_le_bytes());
            }
        }
        Item::Data { guest, mode, data } => {
            h.write(guest.as_bytes());
            h.write(&mode.to_le_bytes());
            h.write(data);
        }
        Item::Symlink { guest, target } => {
            h.write(guest.as_bytes());
            h.write(target.as_bytes());
        }
        Item::Dir { guest } => h.write(guest.as_bytes()),
        Item::CharDev {
            guest,
            major,
            minor,
        } => {
            h.write(guest.as_bytes());
            h.write(&[*major as u8, *minor as u8]);
        }
    }
    h.write(b"\0");
}

/// FNV-1a, 64 bits: enough to tell input sets apart, no dependency.
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

fn write_items<W: Write>(w: &mut CpioWriter<W>, items: &[Item]) -> Result<()> {
    for it in items {
        let r = match it {
            Item::Host { guest, host } => w
                .host_file(guest, host)
                .with_context(|| format!("archiving {} as {guest}", host.display())),
            Item::Data { guest, mode, data } => w
                .file(guest, *mode, data)
                .with_context(|| format!("archiving {guest}")),
            Item::Symlink { guest, target } => w
                .symlink(guest, target)
                .with_context(|| format!("archiving {guest}")),
            Item::Dir { guest } => w.dir(guest).with_context(|| format!("archiving {guest}")),
            Item::CharDev {
                guest,
                major,
                minor,
            } => w
                .char_dev(guest, 0o600, *major, *minor)
                .with_context(|| format!("archiving {guest}")),
        };
        r?;
    }
    Ok(())
}

fn lib_items(libs: BTreeSet<PathBuf>) -> Vec<Item> {
    libs.into_iter()
        .map(|l| Item::Host {
            guest: l.to_string_lossy().into_owned(),
            host: l,
        })
        .collect()
}

/// Returns the cached base image of a kernel, building it when an input changed.
pub fn base_image(kf: &KernelFiles) -> Result<PathBuf> {
    let (items, elves) = base_plan(kf)?;
    let mut h = Fnv::new();
    h.write(FORMAT.as_bytes());
    h.write(kf.release.as_bytes());
    for it in &items {
        describe(it, &mut h);
    }
    let dir = paths::cache_dir().join("initramfs");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("base-{}-{:016x}.cpio", kf.kernel, h.finish());
    let path = dir.join(&name);
    if path.is_file() {
        return Ok(path);
    }
    let _lock = lock::lock(&dir.join(format!("base-{}.lock", kf.kernel)))?;
    if path.is_file() {
        return Ok(path);
    }
    let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
    let build = || -> Result<()> {
        let mut w = CpioWriter::create(&tmp)?;
        w.merged_usr()?;
        write_items(&mut w, &items)?;
        write_items(&mut w, &lib_items(ldd(&elves)?))?;
        w.finish()?;
        fs::rename(&tmp, &path)?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = fs::remove_file(&tmp);
        return Err(e.context(format!("building the initramfs {}", path.display())));
    }
    // Older images of this kernel are stale now.
    if let Ok(entries) = fs::read_dir(&dir) {
        let prefix = format!("base-{}-", kf.kernel);
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.ends_with(".cpio") && n != name {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(path)
}

/// What the per-VM layer carries.
#[derive(Debug, Default)]
pub struct Layer {
    /// Executables: (guest path, host path); their libraries are added.
    pub programs: Vec<(String, PathBuf)>,
    /// Plain files or directories (copied recursively): (host path, guest path).
    pub files: Vec<(PathBuf, String)>,
    /// Generated files: (guest path, mode, contents).
    pub data: Vec<(String, u32, Vec<u8>)>,
}

/// Writes the VM's initrd: a copy of `base` followed by the archive of `layer`.
pub fn write_initrd(base: &Path, layer: &Layer, dest: &Path) -> Result<()> {
    let mut items = Vec::new();
    let mut elves = Vec::new();
    for (guest, host) in &layer.programs {
        items.push(Item::Host {
            guest: guest.clone(),
            host: host.clone(),
        });
        elves.push(host.clone());
    }
    for (host, guest) in &layer.files {
        if host.is_dir() {
            dir_files(host, guest.trim_end_matches('/'), &mut items)?;
        } else if host.is_file() {
            items.push(Item::Host {
                guest: guest.clone(),
                host: host.clone(),
            });
        } else {
            return Err(anyhow!(
                "scenario file {} does not exist (meant for {guest} in the VM)",
                host.display()
            ));
        }
    }
    for (guest, mode, data) in &layer.data {
        items.push(Item::Data {
            guest: guest.clone(),
            mode: *mode,
            data: data.clone(),
        });
    }
    items.extend(lib_items(ldd(&elves)?));
    let mut out = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut b = fs::File::open(base).with_context(|| format!("opening {}", base.display()))?;
    io::copy(&mut b, &mut out).with_context(|| format!("copying {}", base.display()))?;
    let mut w = CpioWriter::new(io::BufWriter::with_capacity(1 << 20, out));
    write_items(&mut w, &items)?;
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_normalized() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
        assert_eq!(module_name("kernel/net/netfilter/ipvs/ip_vs.ko"), "ip_vs");
    }
}
