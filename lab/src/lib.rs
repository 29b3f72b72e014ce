//! The lab: Debian cloud kernels with IPVS, booted under QEMU from an initramfs, driven by tests,
//! benchmarks and `cargo xtask lab`.
//!
//! ```no_run
//! use ipvs_lab::{Kernel, Vm, VmConfig};
//! # fn main() -> anyhow::Result<()> {
//! if let Err(why) = ipvs_lab::prerequisites() {
//!     eprintln!("skipped: {why}");
//!     return Ok(());
//! }
//! let vm = Vm::boot(VmConfig::new(Kernel::V6_12).forward(10054).with_daemon())?;
//! vm.sh_ok("ipvsadm -A -t 10.0.0.1:80 -s rr")?;
//! let table = vm.sh_ok("ipvsadm -Ln")?;
//! vm.spawn("ipvs-telemetry serve --web.listen-address 0.0.0.0:10054")?;
//! vm.wait_until("lab-client wait-tcp 127.0.0.1:10054 --timeout 1s", std::time::Duration::from_secs(60))?;
//! let metrics = vm.http_get(10054, "/metrics")?;
//! # let _ = (table, metrics);
//! # Ok(())
//! # }
//! ```
//!
//! Inside the VM (`/bin/sh` is dash, so PATH finds the real tools, never busybox applets):
//! `/usr/sbin/ipvsadm`, `/usr/sbin/ip`, `/usr/sbin/tc`, `/usr/sbin/iptables` (nft backend; the
//! legacy one is `iptables-legacy`), `iptables-save`, `ip6tables`, busybox for the rest,
//! `/usr/local/bin/lab-client`, `/usr/local/bin/lab-server`, `/usr/local/bin/ipvs-telemetry`
//! (with [`VmConfig::with_daemon`]). The VM is `10.0.2.15/24` on `eth0` behind QEMU's user
//! network; IPVS, its schedulers, conntrack, veth, netem, tunnels and iptables modules are loaded
//! at boot (list in [`modules`]); `/run/netns` exists for `ip netns`; debugfs, tracefs, bpffs and
//! cgroup2 are mounted.
//!
//! Environment: `IPVS_LAB_CACHE` (kernels and images, default `<target>/lab`),
//! `IPVS_TELEMETRY_BIN` (daemon binary; default: built from the sources),
//! `IPVS_LAB_PROFILE` (cargo profile of that build, default `release`),
//! `IPVS_LAB_TOOLS_DIR` (prebuilt lab tools), `IPVS_LAB_MAX_VMS` (VMs at once on this machine,
//! counted with lock files in `$TMPDIR/ipvs-lab-slots`,
//! default 2), `IPVS_LAB_BOOT_TIMEOUT` (seconds, default 180), `IPVS_LAB_KEEP=1` (keep every
//! console log, not only those of failed VMs), `IPVS_LAB_TCG_THREAD=multi` (one host thread
//! per vCPU instead of one for the whole VM: faster alone, but the guest patching its own
//! code then races the other vCPUs and has crashed VMs).
//!
//! The Swarm profile ([`VmConfig::swarm`], [`swarm`]) adds Docker 20.10 in swarm mode.

// Every dependency of the package is used by this crate (see the workspace lints).
#![warn(unused_crate_dependencies)]

pub mod binaries;
mod channel;
mod console;
mod cpio;
pub mod initramfs;
pub mod kernel;
mod lock;
pub mod modules;
pub mod paths;
pub mod skip;
pub mod swarm;
mod vm;

pub use kernel::{Kernel, KernelFiles, cached_kernel, ensure_kernel};
pub use vm::{CmdOutput, DEFAULT_TIMEOUT, Spawned, Vm, VmConfig, http_get};

/// Checks that VMs can be booted here: QEMU and the host tools are installed and both kernels
/// are cached or can be downloaded. `Err` carries the reason, for tests to print when skipping.
pub fn prerequisites() -> Result<(), String> {
    if let Some(v) = std::env::var_os("IPVS_LAB_SKIP").filter(|v| !v.is_empty() && v != "0") {
        return Err(format!("IPVS_LAB_SKIP={} is set", v.to_string_lossy()));
    }
    let need = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("ipvsadm", "ipvsadm"),
        ("ip", "iproute2"),
        ("xtables-nft-multi", "iptables"),
        ("dash", "dash"),
        ("ldd", "libc-bin"),
    ];
    for (bin, pkg) in need {
        if initramfs::host_bin(bin).is_none() {
            return Err(format!("{bin} is not installed (Debian package {pkg})"));
        }
    }
    for k in Kernel::all() {
        if cached_kernel(k).is_some() {
            continue;
        }
        for (bin, pkg) in [("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("xz", "xz-utils")] {
            if initramfs::host_bin(bin).is_none() {
                return Err(format!(
                    "{bin} is needed to fetch kernel {k} (package {pkg})"
                ));
            }
        }
        kernel::image_package(k).map_err(|e| format!("lab kernel {k} unavailable: {e:#}"))?;
    }
    Ok(())
}
