//! Helpers that make each end-to-end test read like a recipe.
//!
//! ```no_run
//! use ipvs_telemetry_e2e::{lab_or_skip, boot};
//! use ipvs_lab::Kernel;
//! # fn main() -> anyhow::Result<()> {
//! if !lab_or_skip("my_test") {
//!     return Ok(());
//! }
//! for k in Kernel::all() {
//!     let vm = boot(k)?;
//!     assert_eq!(vm.sh_ok("ipvsadm -Ln | wc -l")?.trim(), "3");
//! }
//! # Ok(())
//! # }
//! ```

// Every dependency of the package is used by this crate (see the workspace lints).
#![warn(unused_crate_dependencies)]

use std::time::Duration;

// Used by the test files (the soak decodes gzip scrapes), not by this library.
use flate2 as _;

pub use ipvs_lab::{CmdOutput, Kernel, Spawned, Vm, VmConfig, skip};

/// Shell function `backend NAME SUBNET DELAY`: a NAT real server in namespace NAME at
/// 10.SUBNET.0.2 behind a veth (10.SUBNET.0.1 on the host side) whose inner end delays every
/// packet it sends by DELAY (`tc qdisc … netem`).
pub const DELAYED_BACKEND_SH: &str = r#"backend() { # name subnet delay
  ip netns add $1
  ip link add v$1 type veth peer name eth0 netns $1
  ip addr add 10.$2.0.1/24 dev v$1 && ip link set v$1 up
  ip -n $1 addr add 10.$2.0.2/24 dev eth0 && ip -n $1 link set eth0 up && ip -n $1 link set lo up
  ip -n $1 route add default via 10.$2.0.1
  ip netns exec $1 tc qdisc add dev eth0 root netem delay $3
}
"#;

pub mod contract;
pub mod exposition;

/// The JSON `ebpf-dump` writes in the VM at `path` (see `ipvs-telemetry/examples/ebpf-dump.rs`).
pub fn read_ebpf_dump(vm: &Vm, path: &str) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let text = vm.sh_ok(&format!("cat {path}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {path}: {text}"))
}

/// The count of event `kind` in the `field` list (`events` or `lost`) of an `ebpf-dump` JSON,
/// `u64::MAX` when absent.
pub fn ebpf_kind_total(json: &serde_json::Value, field: &str, kind: &str) -> u64 {
    json[field]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e[0] == kind)
        .and_then(|e| e[1].as_u64())
        .unwrap_or(u64::MAX)
}

/// Whether the lab can run here; when it cannot, skips `test` ([`skip::skip`]: a panic under
/// `IPVS_LAB_REQUIRED`, else a printed and counted skip) so the test can return early.
pub fn lab_or_skip(test: &str) -> bool {
    skip::require(test, &[ipvs_lab::prerequisites()])
}

/// Boots a plain VM (no daemon, no forwards) on kernel `k`.
pub fn boot(k: Kernel) -> anyhow::Result<Vm> {
    Vm::boot(VmConfig::new(k))
}

/// The kernels to test: `IPVS_LAB_KERNELS` (comma-separated, e.g. `6.12`) or all of them.
pub fn kernels() -> Vec<Kernel> {
    match std::env::var("IPVS_LAB_KERNELS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|k| {
                k.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("IPVS_LAB_KERNELS: {e}"))
            })
            .collect(),
        _ => Kernel::all().to_vec(),
    }
}

/// Starts the daemon in the VM in the background with `args` (after `serve`) and waits until
/// its port answers; returns the spawned process.
pub fn start_daemon(vm: &Vm, port: u16, args: &str) -> anyhow::Result<Spawned> {
    start_daemon_wrapped(vm, port, &|cmd| cmd.to_string(), args)
}

/// [`start_daemon`] with the daemon's command line (`exec ipvs-telemetry serve ...`, a shell
/// command) passed through `wrap`, which returns the shell command to run instead (e.g. the
/// same under `capsh`). The wrapper must `exec` it, so that the returned pid is the daemon's.
pub fn start_daemon_wrapped(
    vm: &Vm,
    port: u16,
    wrap: &dyn Fn(&str) -> String,
    args: &str,
) -> anyhow::Result<Spawned> {
    let p = vm.spawn(&wrap(&format!(
        "exec ipvs-telemetry serve --web.listen-address 0.0.0.0:{port} {args}"
    )))?;
    vm.wait_until(
        &format!("lab-client wait-tcp 127.0.0.1:{port} --timeout 1s"),
        Duration::from_secs(60),
    )
    .map_err(|e| {
        let log = vm
            .sh(&format!("cat {}", p.log))
            .map(|o| o.stdout)
            .unwrap_or_default();
        e.context(format!(
            "the daemon did not listen on {port}; its log:\n{log}"
        ))
    })?;
    Ok(p)
}

/// Runs `f` for each kernel of [`kernels`], naming the kernel in an error.
pub fn for_each_kernel(mut f: impl FnMut(Kernel) -> anyhow::Result<()>) -> anyhow::Result<()> {
    for k in kernels() {
        f(k).map_err(|e| e.context(format!("kernel {k}")))?;
    }
    Ok(())
}

/// Runs `f` for each kernel of [`kernels`] at once, one thread (named `kernel <k>`) per kernel,
/// each booting its own VM (the lab's machine-wide VM slots bound how many run together);
/// waits for all of them and names the kernel of every error or panic.
pub fn for_each_kernel_parallel(
    f: impl Fn(Kernel) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let f = &f;
    let results: Vec<(Kernel, anyhow::Result<()>)> = std::thread::scope(|s| {
        let running: Vec<_> = kernels()
            .into_iter()
            .map(|k| {
                let thread = std::thread::Builder::new()
                    .name(format!("kernel {k}"))
                    .spawn_scoped(s, move || f(k));
                (k, thread)
            })
            .collect();
        running
            .into_iter()
            .map(|(k, thread)| {
                let result = match thread {
                    Ok(t) => t.join().unwrap_or_else(|panic| {
                        let why = panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("(no message)");
                        Err(anyhow::anyhow!("panicked: {why}"))
                    }),
                    Err(e) => Err(anyhow::anyhow!("cannot start its thread: {e}")),
                };
                (k, result)
            })
            .collect()
    });
    let mut failed: Vec<anyhow::Error> = results
        .into_iter()
        .filter_map(|(k, r)| r.err().map(|e| e.context(format!("kernel {k}"))))
        .collect();
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        n => {
            let all: Vec<String> = failed.iter().map(|e| format!("{e:?}")).collect();
            Err(anyhow::anyhow!("{n} kernels failed:\n{}", all.join("\n\n")))
        }
    }
}

/// Builds `ipvs-telemetry/examples/ebpf-dump` once per test process (release, with the probes
/// of this checkout: `IPVS_TELEMETRY_EBPF_OBJECT`, else the `build-ebpf --release` object) and
/// returns its path. The eBPF tests run it in the VM to read the eBPF side alone.
pub fn ebpf_dump_binary() -> anyhow::Result<std::path::PathBuf> {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = ipvs_lab::paths::repo_root();
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(&root).args([
            "build",
            "--release",
            "--package",
            "ipvs-telemetry",
            "--example",
            "ebpf-dump",
        ]);
        let obj =
            root.join("ipvs-telemetry-ebpf/target/bpfel-unknown-none/release/ipvs-telemetry-ebpf");
        if std::env::var_os("IPVS_TELEMETRY_EBPF_OBJECT").is_none() && obj.is_file() {
            cmd.env("IPVS_TELEMETRY_EBPF_OBJECT", obj);
        }
        let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building ebpf-dump failed ({status})"));
        }
        Ok(ipvs_lab::paths::target_dir().join("release/examples/ebpf-dump"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}
