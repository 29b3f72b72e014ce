//! The Swarm profile: a real Docker Swarm in the VM (Debian's docker.io 20.10 with containerd
//! and runc), for the ingress routing mesh and overlay load balancing, all IPVS.
//!
//! ```no_run
//! use ipvs_lab::{Kernel, Vm, VmConfig, swarm};
//! # fn main() -> anyhow::Result<()> {
//! let vm = Vm::boot(VmConfig::swarm(Kernel::V6_1))?;
//! swarm::up(&vm)?;
//! swarm::create_service(&vm, "web", 2, &[swarm::Publish::tcp(30080, 80)], "")?;
//! let reply = vm.sh_ok("lab-client tcp 127.0.0.1:30080 -n 10")?;
//! swarm::down(&vm)?;
//! # let _ = reply;
//! # Ok(())
//! # }
//! ```
//!
//! The packages ([`PACKAGES`]) are fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` into `<cache>/docker/root/` once (a `READY` file marks a complete unpack),
//! like the kernels. [`crate::VmConfig::swarm`] boots with 2 GiB and adds to the VM: `dockerd`,
//! `docker`, `containerd`, `containerd-shim-runc-v2`, `runc`, `docker-proxy`, `docker-init`,
//! `/etc/docker/daemon.json` (`"storage-driver": "vfs"`: the initramfs root has no overlay
//! upper directory support worth using) and the root file system of the service image in
//! `/opt/ipvs-lab/image` (static busybox and `lab-server`, which answers TCP and UDP with the
//! container's host name, i.e. the task's container id).
//!
//! [`up`] makes the VM a single-node swarm: loads the modules Docker needs, points `iptables`
//! (and `ip6tables`, `-save`, `-restore`) at the legacy backend (Docker 20.10 writes legacy
//! rules; only this profile does it, at [`up`]), starts `dockerd` with `DOCKER_RAMDISK=true`
//! (an initramfs root cannot `pivot_root`), runs `docker swarm init --advertise-addr 10.0.2.15`
//! and imports [`IMAGE`] with `docker import` (the two at the same time). Services are created
//! with `--no-resolve-image` (there is no registry) and `--init` (see [`start_service`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::initramfs::{self, Layer};
use crate::kernel::run;
use crate::vm::Vm;
use crate::{binaries, lock, paths};

/// The Debian packages unpacked into the VM (runtime libraries the host may lack included).
pub const PACKAGES: &[&str] = &[
    "docker.io",
    "containerd",
    "runc",
    "tini",
    "libdevmapper1.02.1",
    "libseccomp2",
];

/// The image every service runs: busybox and `lab-server`, imported by [`up`].
pub const IMAGE: &str = "ipvs-lab/server:latest";

/// The address the swarm advertises (the VM's `eth0`).
pub const ADVERTISE_ADDR: &str = "10.0.2.15";

/// Where Docker keeps its network namespaces.
pub const NETNS_DIR: &str = "/var/run/docker/netns";

/// The routing mesh's namespace.
pub const INGRESS_NETNS: &str = "/var/run/docker/netns/ingress_sbox";

/// Where the image's root file system is in the VM.
pub const IMAGE_ROOT: &str = "/opt/ipvs-lab/image";

/// Memory of a Swarm VM in MiB.
pub const MEMORY_MB: u32 = 2048;

/// Modules Docker and Swarm need (carried by the base image, loaded by [`up`]).
pub const MODULES: &[&str] = &[
    "overlay",
    "br_netfilter",
    "bridge",
    "vxlan",
    "veth",
    "ip_vs",
    "ip_vs_rr",
    "ip_tables",
    "iptable_nat",
    "iptable_filter",
    "iptable_mangle",
    "xt_mark",
    "xt_conntrack",
    "xt_addrtype",
    "xt_nat",
    "xt_tcpudp",
    "xt_ipvs",
    "xt_MASQUERADE",
    "xt_REDIRECT",
    "nf_nat",
];

/// Programs of the packages put into the VM: (path in the unpacked packages, guest path).
const PROGRAMS: &[(&str, &str)] = &[
    ("usr/sbin/dockerd", "/usr/sbin/dockerd"),
    ("usr/sbin/docker-proxy", "/usr/sbin/docker-proxy"),
    ("usr/bin/docker", "/usr/bin/docker"),
    ("usr/bin/containerd", "/usr/bin/containerd"),
    (
        "usr/bin/containerd-shim-runc-v2",
        "/usr/bin/containerd-shim-runc-v2",
    ),
    ("usr/sbin/runc", "/usr/sbin/runc"),
    ("usr/bin/tini-static", "/usr/bin/docker-init"),
];

/// Libraries of the packages, in case the host lacks them (`ldd` on the host finds the rest).
const LIB_PREFIXES: &[&str] = &["libdevmapper.so", "libseccomp.so"];

const DAEMON_JSON: &str = r#"{
  "storage-driver": "vfs",
  "log-driver": "json-file",
  "log-opts": { "max-size": "1m" }
}
"#;

/// Busybox applets linked in the image.
const IMAGE_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "hostname", "ip", "ps", "wget", "nc", "httpd", "ping",
    "kill", "true", "false", "env", "grep",
];

fn docker_dir() -> PathBuf {
    paths::cache_dir().join("docker")
}

/// The unpacked packages, without downloading anything, if complete.
pub fn cached_docker() -> Option<PathBuf> {
    let dir = docker_dir();
    let root = dir.join("root");
    (dir.join("READY").is_file() && root.join("usr/sbin/dockerd").is_file()).then_some(root)
}

/// Checks the Swarm profile can run here: the packages are cached or `apt-get` and `dpkg-deb`
/// can fetch them. `Err` carries the reason, for tests to print when skipping.
pub fn prerequisites() -> Result<(), String> {
    crate::prerequisites()?;
    if cached_docker().is_some() {
        return Ok(());
    }
    for (bin, pkg) in [("apt-get", "apt"), ("dpkg-deb", "dpkg")] {
        if initramfs::host_bin(bin).is_none() {
            return Err(format!(
                "{bin} is needed to fetch docker.io (package {pkg})"
            ));
        }
    }
    let out = Command::new("apt-cache")
        .args(["policy", "docker.io"])
        .output()
        .map_err(|e| format!("running apt-cache: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("Candidate:") || text.contains("Candidate: (none)") {
        return Err("apt knows no docker.io package (run apt-get update?)".into());
    }
    Ok(())
}

/// Downloads and unpacks [`PACKAGES`] unless cached; returns the root they are unpacked in.
/// Safe when several processes call it at once.
pub fn ensure_docker() -> Result<PathBuf> {
    if let Some(r) = cached_docker() {
        return Ok(r);
    }
    let dir = docker_dir();
    let _lock = lock::lock(&paths::cache_dir().join("docker.lock"))?;
    if let Some(r) = cached_docker() {
        return Ok(r);
    }
    prepare(&dir).with_context(|| format!("preparing docker.io in {}", dir.display()))?;
    cached_docker().ok_or_else(|| anyhow!("docker.io incomplete in {}", dir.display()))
}

fn prepare(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let dl = dir.join("download");
    fs::create_dir_all(&dl)?;
    run(Command::new("apt-get")
        .args(["download", "-q"])
        .args(PACKAGES)
        .current_dir(&dl))?;
    let root = dir.join("root");
    let mut debs: Vec<PathBuf> = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    if debs.len() < PACKAGES.len() {
        bail!(
            "apt-get download left {} packages in {}, expected {}",
            debs.len(),
            dl.display(),
            PACKAGES.len()
        );
    }
    for deb in &debs {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    }
    fs::remove_dir_all(&dl)?;
    fs::write(dir.join("READY"), PACKAGES.join(" "))?;
    Ok(())
}

/// Adds the Swarm profile's programs, libraries, configuration and image root to a VM layer.
pub(crate) fn add_to_layer(layer: &mut Layer) -> Result<()> {
    let root = ensure_docker()?;
    for (from, guest) in PROGRAMS {
        let host = root.join(from);
        if !host.is_file() {
            bail!("{} is missing from the unpacked docker.io", host.display());
        }
        layer.programs.push((guest.to_string(), host));
    }
    for sub in ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"] {
        let Ok(entries) = fs::read_dir(root.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if LIB_PREFIXES.iter().any(|l| name.starts_with(l)) && p.is_file() {
                layer
                    .programs
                    .push((format!("/usr/lib/x86_64-linux-gnu/{name}"), p));
            }
        }
    }
    layer
        .data
        .push(("/etc/docker/daemon.json".into(), 0o644, DAEMON_JSON.into()));
    // The image: static busybox and lab-server with its libraries under IMAGE_ROOT.
    let busybox = initramfs::host_bin("busybox")
        .ok_or_else(|| anyhow!("busybox not found on this host (package busybox-static)"))?;
    layer
        .files
        .push((busybox, format!("{IMAGE_ROOT}/bin/busybox")));
    let server = binaries::tools_dir()?.join("lab-server");
    for lib in initramfs::ldd(std::slice::from_ref(&server))? {
        let guest = format!("{IMAGE_ROOT}{}", lib.display());
        layer.files.push((lib, guest));
    }
    layer
        .files
        .push((server, format!("{IMAGE_ROOT}/bin/lab-server")));
    Ok(())
}

/// How long each step of [`up`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpTimes {
    /// From starting `dockerd` to `docker info` answering.
    pub dockerd: Duration,
    /// `docker swarm init` (at the same time as the import).
    pub swarm_init: Duration,
    /// Building and importing [`IMAGE`] (at the same time as `docker swarm init`).
    pub image: Duration,
}

/// The setup shell script of [`up`] that runs before `dockerd`.
fn prepare_script() -> String {
    let mut s = String::from("set -e\n");
    s.push_str(&format!(
        "modprobe -a {} 2>/dev/null || for m in {}; do modprobe $m || true; done\n",
        MODULES.join(" "),
        MODULES.join(" ")
    ));
    for t in ["iptables", "ip6tables"] {
        for suffix in ["", "-save", "-restore"] {
            s.push_str(&format!(
                "ln -sf xtables-legacy-multi /usr/sbin/{t}{suffix}\n"
            ));
        }
    }
    s.push_str("mkdir -p /var/lib/docker /etc/docker\n");
    s.push_str("[ -e /etc/resolv.conf ] || : > /etc/resolv.conf\n");
    // The image's root: applets and mount points.
    s.push_str(&format!(
        "cd {IMAGE_ROOT} && mkdir -p etc proc sys dev tmp root && \
         for a in {}; do ln -sf busybox bin/$a; done\n",
        IMAGE_APPLETS.join(" ")
    ));
    s
}

/// Makes the VM a single-node swarm with [`IMAGE`] imported (see the module doc). `docker swarm
/// init` and the import run at the same time (neither needs the other).
pub fn up(vm: &Vm) -> Result<UpTimes> {
    vm.sh_ok(&prepare_script())
        .context("preparing the VM for docker")?;
    let dockerd = start_dockerd(vm)?;
    let timed = |step: &dyn Fn() -> Result<()>| -> Result<Duration> {
        let t = Instant::now();
        step()?;
        Ok(t.elapsed())
    };
    let (swarm_init, image) = std::thread::scope(|s| {
        let init = s.spawn(|| {
            timed(&|| {
                vm.sh_ok_timeout(
                    &format!("docker swarm init --advertise-addr {ADVERTISE_ADDR} >/dev/null"),
                    Duration::from_secs(120),
                )
                .context("docker swarm init")
                .map(drop)
            })
        });
        let image = timed(&|| import_image(vm));
        let init = init
            .join()
            .unwrap_or_else(|_| Err(anyhow!("docker swarm init: its thread panicked")));
        (init, image)
    });
    Ok(UpTimes {
        dockerd,
        swarm_init: swarm_init?,
        image: image?,
    })
}

/// Imports [`IMAGE`] from the root file system in [`IMAGE_ROOT`].
pub fn import_image(vm: &Vm) -> Result<()> {
    vm.sh_ok_timeout(
        &format!(
            "tar -C {IMAGE_ROOT} -cf - . | docker import \
             -c 'CMD [\"/bin/lab-server\", \"--tcp\", \"80\", \"--udp\", \"53\"]' - {IMAGE} >/dev/null"
        ),
        Duration::from_secs(120),
    )
    .context("importing the lab image")?;
    Ok(())
}

/// Starts `dockerd` (with `DOCKER_RAMDISK=true`; log in `/var/log/lab/dockerd.log`) and waits
/// until it answers; returns how long that took.
pub fn start_dockerd(vm: &Vm) -> Result<Duration> {
    let t = Instant::now();
    vm.spawn("export DOCKER_RAMDISK=true; exec dockerd >> /var/log/lab/dockerd.log 2>&1")?;
    wait_in_vm(
        vm,
        &format!("[ -S /var/run/docker.sock ] && {API_GET} /_ping >/dev/null 2>&1"),
        Duration::from_secs(180),
    )
    .map_err(|e| e.context(dockerd_log(vm)))?;
    Ok(t.elapsed())
}

fn dockerd_log(vm: &Vm) -> String {
    let log = vm
        .sh("tail -n 30 /var/log/lab/dockerd.log")
        .map(|o| o.stdout)
        .unwrap_or_default();
    format!("dockerd did not answer; the end of its log:\n{log}")
}

/// Stops `dockerd` (SIGTERM, as a service manager does) and waits until it has exited.
pub fn stop_dockerd(vm: &Vm) -> Result<()> {
    vm.sh_ok("[ -f /var/run/docker.pid ] && kill $(cat /var/run/docker.pid) || true")?;
    wait_in_vm(
        vm,
        "! pidof dockerd >/dev/null && ! pidof containerd >/dev/null",
        Duration::from_secs(120),
    )
    .context("waiting for dockerd to exit")?;
    Ok(())
}

/// Restarts `dockerd` and waits until the routing mesh is back (the ingress namespace is
/// re-created, with a new inode); returns how long that took.
pub fn restart_dockerd(vm: &Vm) -> Result<Duration> {
    let t = Instant::now();
    stop_dockerd(vm)?;
    start_dockerd(vm)?;
    wait_in_vm(
        vm,
        &format!("[ -e {INGRESS_NETNS} ] && nsenter --net={INGRESS_NETNS} true"),
        Duration::from_secs(180),
    )
    .context("waiting for the ingress namespace after the restart")?;
    Ok(t.elapsed())
}

/// Leaves the swarm and stops `dockerd`.
pub fn down(vm: &Vm) -> Result<()> {
    vm.sh_timeout(
        "docker swarm leave --force >/dev/null 2>&1",
        Duration::from_secs(60),
    )?;
    stop_dockerd(vm)
}

/// A port published through the routing mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// The published port (on every node).
    pub published: u16,
    /// The container's port.
    pub target: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
}

impl Publish {
    /// A TCP port.
    pub fn tcp(published: u16, target: u16) -> Self {
        Publish {
            published,
            target,
            protocol: "tcp",
        }
    }

    /// A UDP port.
    pub fn udp(published: u16, target: u16) -> Self {
        Publish {
            published,
            target,
            protocol: "udp",
        }
    }
}

/// Creates a service of [`IMAGE`] with `replicas` replicas and the published ports, plus
/// `extra` arguments of `docker service create` (e.g. `--network NET`), and waits until every
/// replica runs.
pub fn create_service(
    vm: &Vm,
    name: &str,
    replicas: u32,
    publish: &[Publish],
    extra: &str,
) -> Result<()> {
    start_service(vm, name, replicas, publish, extra)?;
    wait_replicas(vm, name, replicas)
}

/// [`create_service`] without waiting for the replicas (several services start faster
/// together: [`start_services`], then [`wait_services`]). Tasks run with `--init`
/// (`docker-init`, i.e. tini, as PID 1): `lab-server` as PID 1 would ignore SIGTERM, and every
/// stop (`docker service rm`, scaling down, a dockerd restart) would wait out the 10 s grace
/// period.
pub fn start_service(
    vm: &Vm,
    name: &str,
    replicas: u32,
    publish: &[Publish],
    extra: &str,
) -> Result<()> {
    start_services(
        vm,
        &[Service {
            name,
            replicas,
            publish,
            extra,
        }],
    )
}

/// A service for [`start_services`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service<'a> {
    /// Its name.
    pub name: &'a str,
    /// How many replicas.
    pub replicas: u32,
    /// Ports published through the routing mesh.
    pub publish: &'a [Publish],
    /// More arguments of `docker service create` (e.g. `--network NET`).
    pub extra: &'a str,
}

fn create_command(s: &Service<'_>) -> String {
    let mut cmd = format!(
        "docker service create --detach --no-resolve-image --init --name {} --replicas {}",
        s.name, s.replicas
    );
    for p in s.publish {
        cmd.push_str(&format!(
            " --publish published={},target={},protocol={}",
            p.published, p.target, p.protocol
        ));
    }
    cmd.push_str(&format!(" {} {IMAGE} >/dev/null", s.extra));
    cmd
}

/// Creates the services of [`IMAGE`] at the same time (see [`start_service`]) without waiting
/// for their replicas.
pub fn start_services(vm: &Vm, services: &[Service<'_>]) -> Result<()> {
    let mut script = String::new();
    for (i, s) in services.iter().enumerate() {
        script.push_str(&format!("{} &\np{i}=$!\n", create_command(s)));
    }
    script.push_str("failed=\n");
    for (i, s) in services.iter().enumerate() {
        script.push_str(&format!("wait $p{i} || failed=\"$failed {}\"\n", s.name));
    }
    script.push_str(
        "[ -z \"$failed\" ] || { echo \"docker service create failed for$failed\" >&2; exit 1; }\n",
    );
    let names: Vec<&str> = services.iter().map(|s| s.name).collect();
    vm.sh_ok_timeout(&script, Duration::from_secs(120))
        .with_context(|| format!("creating services {}", names.join(", ")))?;
    Ok(())
}

/// Waits until `replicas` tasks of service `name` run.
pub fn wait_replicas(vm: &Vm, name: &str, replicas: u32) -> Result<()> {
    wait_services(vm, &[(name, replicas)])
}

/// Runs `lab-client unix-get` on the Engine API's socket in the VM: a docker CLI run costs the
/// emulated VM about 2 s of CPU, which dockerd needs to converge.
const API_GET: &str = "lab-client unix-get /var/run/docker.sock";

/// Running and desired tasks per service name, from the Engine API's
/// `GET /services?status=true` (services without a status are left out).
pub fn service_tasks(json: &str) -> BTreeMap<String, (u64, u64)> {
    const NAME: &str = "\"Spec\":{\"Name\":\"";
    let number = |text: &str, key: &str| -> Option<u64> {
        let at = text.find(key)? + key.len();
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let mut out = BTreeMap::new();
    let mut rest = json;
    while let Some(at) = rest.find(NAME) {
        rest = &rest[at + NAME.len()..];
        let Some(end) = rest.find('"') else { break };
        let name = &rest[..end];
        let service = rest.find(NAME).map_or(rest, |next| &rest[..next]);
        if let (Some(running), Some(desired)) = (
            number(service, "\"RunningTasks\":"),
            number(service, "\"DesiredTasks\":"),
        ) {
            out.insert(name.to_string(), (running, desired));
        }
    }
    out
}

/// Waits until every service of `services` (name, replicas) runs its replicas, asking the
/// Engine API (as `docker service ls` does) twice a second.
pub fn wait_services(vm: &Vm, services: &[(&str, u32)]) -> Result<()> {
    // Under TCG on a loaded host Docker took 336 s (6.1) and 564 s (6.12) to converge (seen at
    // load 12–17); a quiet host takes under 3 minutes. A deadline, not a sleep.
    let timeout = Duration::from_secs(900);
    let deadline = Instant::now() + timeout;
    let names: Vec<&str> = services.iter().map(|(name, _)| *name).collect();
    loop {
        let out = vm.sh(&format!("{API_GET} '/services?status=true'"))?;
        let tasks = service_tasks(&out.stdout);
        if out.success()
            && services
                .iter()
                .all(|(name, n)| tasks.get(*name) == Some(&(u64::from(*n), u64::from(*n))))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let ls = vm
                .sh("docker service ls; docker service ps --no-trunc $(docker service ls -q)")
                .map(|o| o.stdout)
                .unwrap_or_default();
            bail!(
                "the replicas of {} did not all run within {timeout:?} (running, desired: {tasks:?}{}); \
                 the services now:\n{ls}",
                names.join(", "),
                out.stderr.trim_end()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Re-runs the shell condition `cond` in the VM until it succeeds or `timeout` expires. Unlike
/// [`Vm::wait_until`], every attempt may take as long as it needs (the docker CLI is slow on a
/// loaded machine under TCG); only the whole wait is bounded.
pub fn wait_in_vm(vm: &Vm, cond: &str, timeout: Duration) -> Result<()> {
    let secs = timeout.as_secs().max(1);
    let script = format!(
        "end=$(( $(date +%s) + {secs} ))\nuntil {cond}\ndo\n  [ $(date +%s) -lt $end ] || exit 1\n  sleep 0.5\ndone"
    );
    let out = vm.sh_timeout(&script, timeout + Duration::from_secs(60))?;
    if !out.success() {
        bail!(
            "condition not met within {timeout:?}: {cond}\nstdout: {}\nstderr: {}",
            out.stdout.trim_end(),
            out.stderr.trim_end()
        );
    }
    Ok(())
}

/// `docker service scale NAME=N`, then waits until the N replicas run.
pub fn scale(vm: &Vm, name: &str, replicas: u32) -> Result<()> {
    vm.sh_ok_timeout(
        &format!("docker service scale --detach {name}={replicas} >/dev/null"),
        Duration::from_secs(60),
    )?;
    wait_replicas(vm, name, replicas)
}

/// `docker service rm NAME`.
pub fn remove_service(vm: &Vm, name: &str) -> Result<()> {
    vm.sh_ok_timeout(
        &format!("docker service rm {name} >/dev/null"),
        Duration::from_secs(60),
    )?;
    Ok(())
}

/// The IPv4 addresses of the running tasks of service `name` on network `network`.
pub fn task_addresses(vm: &Vm, name: &str, network: &str) -> Result<Vec<String>> {
    let out = vm.sh_ok(&format!(
        "for c in $(docker ps -q --filter label=com.docker.swarm.service.name={name}); do \
         docker inspect --format '{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}' $c; done"
    ))?;
    let mut v: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_tasks_reads_the_engine_api_status() {
        let json = r#"[{"ID":"a1","Spec":{"Name":"web","Labels":{},"TaskTemplate":{}},"PreviousSpec":{"Name":"web"},"Endpoint":{"Spec":{"Mode":"vip"}},"ServiceStatus":{"RunningTasks":2,"DesiredTasks":3,"CompletedTasks":0}},{"ID":"b2","Spec":{"Name":"dns"},"ServiceStatus":{"RunningTasks":2,"DesiredTasks":2,"CompletedTasks":0}},{"ID":"c3","Spec":{"Name":"job"}}]"#;
        let t = service_tasks(json);
        assert_eq!(t.get("web"), Some(&(2, 3)));
        assert_eq!(t.get("dns"), Some(&(2, 2)));
        assert_eq!(t.get("job"), None);
        assert!(service_tasks("[]").is_empty());
        assert!(service_tasks("not json").is_empty());
    }
}
