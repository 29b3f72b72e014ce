//! One lab VM: QEMU booting a lab kernel from the lab initramfs, the agent channel to run
//! commands, port forwards to reach services from the host, and the guarantees that come with
//! it: failures name what happened and carry the console tail, and QEMU never outlives the
//! [`Vm`] (killed on drop, and by the kernel when this process dies: `PR_SET_PDEATHSIG`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use ipvs_lab_tools::proto::{PORT_NAME, Reply, Request};

use crate::channel::{Channel, ChannelError};
use crate::console::Console;
use crate::initramfs::{self, Layer};
use crate::kernel::{Kernel, ensure_kernel};
use crate::lock::{self, FileLock};
use crate::{binaries, paths};

/// Default timeout of [`Vm::sh`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Extra time the host waits beyond a command's timeout for the agent's answer before it
/// declares the VM hung.
const GRACE: Duration = Duration::from_secs(15);

/// Lines of console in error messages.
const TAIL_LINES: usize = 40;

/// How to boot a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The lab kernel.
    pub kernel: Kernel,
    /// Guest memory in MiB (default 1024).
    pub memory_mb: u32,
    /// Virtual CPUs (default 2).
    pub cpus: u32,
    /// Guest TCP ports forwarded from free ports on the host's 127.0.0.1 (see [`Vm::host_port`]).
    pub forwards: Vec<u16>,
    /// Guest TCP ports forwarded from fixed host ports: `(host, guest)`.
    pub fixed_forwards: Vec<(u16, u16)>,
    /// Host files or directories copied into the VM: `(host path, guest path)`.
    pub files: Vec<(PathBuf, String)>,
    /// Put the daemon at `/usr/local/bin/ipvs-telemetry` (built from the current sources unless
    /// `IPVS_TELEMETRY_BIN` names a binary).
    pub with_daemon: bool,
    /// Use KVM instead of TCG (opt-in: nested KVM hangs on some machines).
    pub kvm: bool,
    /// Deadline for the agent to answer after QEMU started (default 180 s, or
    /// `IPVS_LAB_BOOT_TIMEOUT` in seconds).
    pub boot_timeout: Duration,
    /// Extra kernel command line arguments.
    pub cmdline: String,
    /// The Swarm profile: Docker, containerd, runc and the service image in the VM (see
    /// [`crate::swarm`]).
    pub swarm: bool,
}

impl VmConfig {
    /// The defaults for a kernel: 1024 MiB, 2 CPUs, TCG, no forwards, no files, no daemon.
    pub fn new(kernel: Kernel) -> Self {
        let boot_timeout = std::env::var("IPVS_LAB_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(180));
        VmConfig {
            kernel,
            memory_mb: 1024,
            cpus: 2,
            forwards: Vec::new(),
            fixed_forwards: Vec::new(),
            files: Vec::new(),
            with_daemon: false,
            kvm: false,
            boot_timeout,
            cmdline: String::new(),
            swarm: false,
        }
    }

    /// The Swarm profile on `kernel`: the defaults with 2 GiB and Docker in the VM (see
    /// [`crate::swarm`]; [`crate::swarm::up`] starts the swarm).
    pub fn swarm(kernel: Kernel) -> Self {
        let mut cfg = VmConfig::new(kernel);
        cfg.memory_mb = cfg.memory_mb.max(crate::swarm::MEMORY_MB);
        cfg.swarm = true;
        cfg
    }

    /// Adds a forward of guest TCP `port` from a free host port.
    pub fn forward(mut self, port: u16) -> Self {
        self.forwards.push(port);
        self
    }

    /// Adds a forward of guest TCP `guest` from host `127.0.0.1:host`.
    pub fn forward_fixed(mut self, host: u16, guest: u16) -> Self {
        self.fixed_forwards.push((host, guest));
        self
    }

    /// Copies a host file or directory to `guest` in the VM.
    pub fn file(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.files.push((host.into(), guest.into()));
        self
    }

    /// Puts the daemon into the VM.
    pub fn with_daemon(mut self) -> Self {
        self.with_daemon = true;
        self
    }
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit status; 128 + signal when killed by a signal.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CmdOutput {
    /// Whether the status is 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// A background process started by [`Vm::spawn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    /// Its pid in the VM (it leads its own session: `kill -- -PID` ends it with its children).
    pub pid: u32,
    /// Its output (stdout and stderr) in the VM.
    pub log: String,
}

/// A running VM. Dropping it kills QEMU.
pub struct Vm {
    kernel: Kernel,
    child: Mutex<Child>,
    qemu_pid: u32,
    channel: Channel,
    console: Arc<Console>,
    qemu_stderr: Arc<Mutex<Vec<u8>>>,
    ports: BTreeMap<u16, u16>,
    dir: PathBuf,
    socket: PathBuf,
    failed: AtomicBool,
    boot_time: Duration,
    _slot: FileLock,
}

static VM_COUNTER: AtomicU64 = AtomicU64::new(0);

type SpawnReq = (Command, Sender<std::io::Result<Child>>);

/// Starts `cmd` from a thread that lives as long as the process: `PR_SET_PDEATHSIG` fires when
/// the *thread* that forked dies, and test threads end long before the process does.
fn spawn_orphan_proof(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnReq>>> = OnceLock::new();
    let parent = std::process::id();
    // SAFETY: prctl(2), getppid(2) and _exit(2) are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnReq>();
        let _ = thread::Builder::new()
            .name("ipvs-lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .map_err(|_| std::io::Error::other("spawner poisoned"))?
        .send((cmd, rtx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    rrx.recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free host port")?;
    Ok(l.local_addr()?.port())
}

/// Removes VM work directories older than a day (logs of old failures).
fn prune_old(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(86400));
        if old {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn max_vms() -> usize {
    std::env::var("IPVS_LAB_MAX_VMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

impl Vm {
    /// Boots a VM and returns once its agent answers.
    pub fn boot(cfg: VmConfig) -> Result<Vm> {
        let kf = ensure_kernel(cfg.kernel)?;
        let base = initramfs::base_image(&kf)?;
        let tools = binaries::tools_dir()?;
        let mut layer = Layer::default();
        for t in binaries::TOOLS {
            layer
                .programs
                .push((format!("/usr/local/bin/{t}"), tools.join(t)));
        }
        if cfg.with_daemon {
            let bin = binaries::daemon_binary()?;
            layer
                .programs
                .push(("/usr/local/bin/ipvs-telemetry".into(), bin));
        }
        layer.files = cfg.files.clone();
        if cfg.swarm {
            crate::swarm::add_to_layer(&mut layer)?;
        }

        let cache = paths::cache_dir();
        // Machine-wide (not per cache): the limit is about this machine's CPUs.
        let slot = lock::take_slot(&std::env::temp_dir().join("ipvs-lab-slots"), max_vms())?;
        let vms = cache.join("vms");
        prune_old(&vms);
        let n = VM_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = vms.join(format!("{}-{}-{n}", cfg.kernel, std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let initrd = dir.join("initrd.cpio");
        initramfs::write_initrd(&base, &layer, &initrd)?;
        // Unix socket paths are limited to 108 bytes: keep it short, in the temp directory.
        let socket = std::env::temp_dir().join(format!("ipvs-lab-{}-{n}.sock", std::process::id()));
        let _ = fs::remove_file(&socket);

        let mut ports = BTreeMap::new();
        for &g in &cfg.forwards {
            ports.insert(g, free_port()?);
        }
        for &(h, g) in &cfg.fixed_forwards {
            ports.insert(g, h);
        }
        let mut netdev = "user,id=net0".to_string();
        for (g, h) in &ports {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}"));
        }
        let append = format!(
            "console=ttyS0 panic=-1 oops=panic loglevel=4 random.trust_cpu=on mitigations=off \
             8250.nr_uarts=1 {}",
            cfg.cmdline
        );
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        if cfg.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            // One host thread runs all vCPUs (round robin) unless IPVS_LAB_TCG_THREAD=multi.
            // With a thread per vCPU, the guest kernel patching its own text (static keys,
            // text_poke_bp) while another vCPU runs it crashed a few lab VMs (a stray `int3`
            // Oops on 6.12, a call to address 0 from ip_vs_in_hook on 6.1, both at moments of
            // patching); the lab runs 2 VMs on 2 cores, so a VM has about one core anyway.
            let thread = match std::env::var("IPVS_LAB_TCG_THREAD").as_deref() {
                Ok("multi") => "multi",
                _ => "single",
            };
            cmd.args(["-accel", &format!("tcg,thread={thread}"), "-cpu", "max"]);
        }
        cmd.args([
            "-m",
            &cfg.memory_mb.to_string(),
            "-smp",
            &cfg.cpus.to_string(),
        ])
        .arg("-kernel")
        .arg(&kf.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", append.trim()])
        .args(["-serial", "stdio"])
        .args(["-device", "virtio-serial-pci,id=vser0"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=agent,path={},server=on,wait=off",
            socket.display()
        ))
        .args([
            "-device",
            &format!("virtserialport,bus=vser0.0,chardev=agent,name={PORT_NAME}"),
        ])
        .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"])
        .args(["-device", "virtio-rng-pci"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in the terminal goes to us, and we shut it down.
        .process_group(0);
        let line = format!("{cmd:?}");
        fs::write(dir.join("qemu.cmdline"), &line)?;
        let start = Instant::now();
        let mut child = spawn_orphan_proof(cmd).with_context(|| {
            format!("starting qemu-system-x86_64 (package qemu-system-x86): {line}")
        })?;
        let qemu_pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let console = match stdout.map(|s| Console::start(s, &dir.join("console.log"))) {
            Some(Ok(c)) => c,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("cannot capture the console of qemu");
            }
        };
        let qemu_stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut s) = stderr {
            let buf = Arc::clone(&qemu_stderr);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut b) = buf.lock() {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            });
        }
        let pending = PendingVm {
            child: Some(child),
            console: Arc::clone(&console),
            qemu_stderr: Arc::clone(&qemu_stderr),
            dir: dir.clone(),
            socket: socket.clone(),
            kernel: cfg.kernel,
        };
        let deadline = start + cfg.boot_timeout;
        let channel = pending.connect(deadline)?;
        let mut pending = pending;
        let vm = Vm {
            kernel: cfg.kernel,
            child: Mutex::new(pending.child.take().ok_or_else(|| anyhow!("qemu lost"))?),
            qemu_pid,
            channel,
            console,
            qemu_stderr,
            ports,
            dir,
            socket,
            failed: AtomicBool::new(false),
            boot_time: Duration::ZERO,
            _slot: slot,
        };
        let mut vm = vm;
        vm.wait_agent(deadline, cfg.boot_timeout)?;
        vm.boot_time = start.elapsed();
        // QEMU loaded it before the guest started.
        let _ = fs::remove_file(&initrd);
        Ok(vm)
    }

    fn wait_agent(&self, deadline: Instant, timeout: Duration) -> Result<()> {
        loop {
            let id = self.channel.next_id();
            let step = (Instant::now() + Duration::from_millis(500)).min(deadline);
            match self
                .channel
                .call(Request::Ping { id }, step, &|| self.abort_reason())
            {
                Ok(_) => return Ok(()),
                Err(ChannelError::Timeout) if Instant::now() < deadline => continue,
                Err(ChannelError::Timeout) => {
                    return Err(self.fail(format!(
                        "boot: the agent did not answer within {timeout:?} (hung boot?)"
                    )));
                }
                Err(ChannelError::Closed(why)) => return Err(self.fail(format!("boot: {why}"))),
            }
        }
    }

    /// Why the VM cannot answer any more, if it cannot: a kernel panic or QEMU's exit.
    fn abort_reason(&self) -> Option<String> {
        if self.console.panicked() {
            // Let QEMU finish printing (and exit, thanks to panic=-1 and -no-reboot).
            thread::sleep(Duration::from_millis(300));
            return Some("kernel panic".into());
        }
        let status = self.child.lock().ok()?.try_wait().ok()??;
        Some(format!("qemu exited ({status}){}", self.qemu_stderr_text()))
    }

    fn qemu_stderr_text(&self) -> String {
        let s = self
            .qemu_stderr
            .lock()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        if s.is_empty() { s } else { format!(": {s}") }
    }

    /// Builds an error for this VM with the console tail, and keeps the console log.
    fn fail(&self, what: String) -> anyhow::Error {
        self.failed.store(true, Ordering::SeqCst);
        let exited = self
            .child
            .lock()
            .ok()
            .and_then(|mut c| c.try_wait().ok().flatten())
            .is_some();
        if self.console.panicked() || exited || what.contains("closed") {
            self.console.settle(Duration::from_secs(3));
        }
        let what = if self.console.panicked() && !what.contains("kernel panic") {
            format!("kernel panic; {what}")
        } else {
            what
        };
        anyhow!(
            "lab vm {} (kernel {}): {what}\n--- console (full log kept: {}) ---\n{}\n---",
            self.qemu_pid,
            self.kernel,
            self.console.log().display(),
            self.console.report(TAIL_LINES)
        )
    }

    /// Runs `sh -c script` in the VM with the default timeout (60 s).
    pub fn sh(&self, script: &str) -> Result<CmdOutput> {
        self.sh_timeout(script, DEFAULT_TIMEOUT)
    }

    /// Runs `sh -c script` in the VM; at `timeout` the command's process group is killed and
    /// this returns an error with its partial output and the console tail.
    pub fn sh_timeout(&self, script: &str, timeout: Duration) -> Result<CmdOutput> {
        let id = self.channel.next_id();
        let req = Request::Run {
            id,
            timeout_ms: timeout.as_millis().max(1) as u64,
            script: script.as_bytes().to_vec(),
        };
        let deadline = Instant::now() + timeout + GRACE;
        match self.channel.call(req, deadline, &|| self.abort_reason()) {
            Ok(Reply::Done {
                status,
                timed_out,
                stdout,
                stderr,
                ..
            }) => {
                let out = CmdOutput {
                    status,
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                };
                if timed_out {
                    return Err(self.fail(format!(
                        "command timed out after {timeout:?} and was killed: {}\nstdout: {}\nstderr: {}",
                        quote(script),
                        out.stdout.trim_end(),
                        out.stderr.trim_end()
                    )));
                }
                if status == -1 {
                    return Err(self.fail(format!(
                        "command could not start: {}: {}",
                        quote(script),
                        out.stderr.trim_end()
                    )));
                }
                Ok(out)
            }
            Ok(Reply::Pong { .. }) => Err(self.fail("unexpected pong".into())),
            Err(ChannelError::Timeout) => Err(self.fail(format!(
                "no answer {:?} after the command's {timeout:?} timeout (hung VM?): {}",
                GRACE,
                quote(script)
            ))),
            Err(ChannelError::Closed(why)) => {
                Err(self.fail(format!("{why} while running {}", quote(script))))
            }
        }
    }

    /// Runs a script and returns its stdout; an error (with script, status, stderr and console
    /// tail) when the status is not 0.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        self.sh_ok_timeout(script, DEFAULT_TIMEOUT)
    }

    /// [`Vm::sh_ok`] with a timeout.
    pub fn sh_ok_timeout(&self, script: &str, timeout: Duration) -> Result<String> {
        let out = self.sh_timeout(script, timeout)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(self.fail(format!(
                "command exited with status {}: {}\nstdout: {}\nstderr: {}",
                out.status,
                quote(script),
                out.stdout.trim_end(),
                out.stderr.trim_end()
            )))
        }
    }

    /// Runs `script` until it exits 0 (returning its stdout) or `timeout` expires (an error
    /// with its last output). For waiting on conditions; never sleep a fixed time instead.
    pub fn wait_until(&self, script: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out =
                self.sh_timeout(script, left.clamp(Duration::from_secs(1), DEFAULT_TIMEOUT))?;
            if out.success() {
                return Ok(out.stdout);
            }
            if Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "condition not met within {timeout:?}: {}\nlast status {}\nstdout: {}\nstderr: {}",
                    quote(script),
                    out.status,
                    out.stdout.trim_end(),
                    out.stderr.trim_end()
                )));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts `sh -c script` in the background, in its own session, output to a log file in
    /// the VM; returns at once.
    pub fn spawn(&self, script: &str) -> Result<Spawned> {
        let id = self.channel.next_id();
        let req = Request::Spawn {
            id,
            timeout_ms: 0,
            script: script.as_bytes().to_vec(),
        };
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        match self.channel.call(req, deadline, &|| self.abort_reason()) {
            Ok(Reply::Done {
                status: 0, stdout, ..
            }) => {
                let text = String::from_utf8_lossy(&stdout);
                let mut words = text.split_whitespace();
                let pid = words.next().and_then(|p| p.parse().ok());
                let log = words.next().map(str::to_string);
                match (pid, log) {
                    (Some(pid), Some(log)) => Ok(Spawned { pid, log }),
                    _ => Err(self.fail(format!("spawn: bad agent answer {text:?}"))),
                }
            }
            Ok(Reply::Done { stderr, .. }) => Err(self.fail(format!(
                "spawn failed: {}: {}",
                quote(script),
                String::from_utf8_lossy(&stderr).trim_end()
            ))),
            Ok(Reply::Pong { .. }) => Err(self.fail("unexpected pong".into())),
            Err(ChannelError::Timeout) => {
                Err(self.fail(format!("spawn: no answer (hung VM?): {}", quote(script))))
            }
            Err(ChannelError::Closed(why)) => {
                Err(self.fail(format!("{why} while spawning {}", quote(script))))
            }
        }
    }

    /// Writes `contents` to the file `guest` in the VM (parent directories created).
    pub fn write_file(&self, guest: &str, contents: &[u8]) -> Result<()> {
        let dir = Path::new(guest)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "/".into());
        self.sh_ok(&format!(
            "mkdir -p '{dir}' && base64 -d > '{guest}' <<'IPVS_LAB_EOF'\n{}\nIPVS_LAB_EOF",
            base64(contents)
        ))
        .map(|_| ())
    }

    /// Reads the file `guest` from the VM.
    pub fn read_file(&self, guest: &str) -> Result<Vec<u8>> {
        let text = self.sh_ok(&format!("base64 '{guest}'"))?;
        unbase64(&text).ok_or_else(|| self.fail(format!("reading {guest}: bad base64 from the VM")))
    }

    /// The host port (on 127.0.0.1) forwarded to guest TCP `guest_port`.
    ///
    /// # Panics
    /// When the port was not requested in [`VmConfig::forwards`] or `fixed_forwards` (a bug
    /// in the test).
    pub fn host_port(&self, guest_port: u16) -> u16 {
        match self.ports.get(&guest_port) {
            Some(p) => *p,
            None => {
                panic!("guest port {guest_port} is not forwarded: add it to VmConfig::forwards")
            }
        }
    }

    /// `GET path` over HTTP/1.0 from the host to a forwarded guest port; the body of a 2xx
    /// answer, an error otherwise.
    pub fn http_get(&self, guest_port: u16, path: &str) -> Result<String> {
        let port = self
            .ports
            .get(&guest_port)
            .copied()
            .ok_or_else(|| anyhow!("guest port {guest_port} is not forwarded"))?;
        let (status, body) = http_get(port, path)?;
        if !(200..300).contains(&status) {
            bail!(
                "GET 127.0.0.1:{port}{path} (guest port {guest_port}) answered {status}: {}",
                body.chars().take(500).collect::<String>()
            );
        }
        Ok(body)
    }

    /// The last `lines` lines of the serial console.
    pub fn console_tail(&self, lines: usize) -> String {
        self.console.tail(lines)
    }

    /// The console log file (kept after a failure).
    pub fn console_log(&self) -> &Path {
        self.console.log()
    }

    /// The kernel this VM runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// QEMU's pid on the host.
    pub fn qemu_pid(&self) -> u32 {
        self.qemu_pid
    }

    /// How long the boot took, from starting QEMU to the agent's first answer.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Powers the VM off cleanly (waits up to 10 s, then kills QEMU).
    pub fn shutdown(self) -> Result<()> {
        let _ = self.spawn("sync; poweroff -f");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.child.lock() {
                if let Ok(Some(_)) = c.try_wait() {
                    return Ok(());
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(()) // Drop kills it.
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, in lines of 76 characters.
fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 57 + 4);
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push('\n');
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for j in 0..4 {
            if j <= c.len() {
                out.push(B64[((n >> (18 - 6 * j)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn quote(script: &str) -> String {
    let s = script.trim();
    if s.len() > 2000 {
        let mut end = 2000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("`{}...`", &s[..end])
    } else {
        format!("`{s}`")
    }
}

/// A minimal HTTP/1.0 GET to `127.0.0.1:port`: (status, body). Handles chunked bodies.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path} to 127.0.0.1:{port}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path} from 127.0.0.1:{port}"))?;
    parse_http(&raw).with_context(|| format!("GET 127.0.0.1:{port}{path}"))
}

fn parse_http(raw: &[u8]) -> Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {:?}", head.lines().next()))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

/// A QEMU that is booting: killed on drop unless handed to the [`Vm`].
struct PendingVm {
    child: Option<Child>,
    console: Arc<Console>,
    qemu_stderr: Arc<Mutex<Vec<u8>>>,
    dir: PathBuf,
    socket: PathBuf,
    kernel: Kernel,
}

impl PendingVm {
    fn error(&self, what: String) -> anyhow::Error {
        let stderr = self
            .qemu_stderr
            .lock()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        anyhow!(
            "lab vm (kernel {}): {what}{}\n--- console (full log kept: {}) ---\n{}\n---",
            self.kernel,
            if stderr.is_empty() {
                String::new()
            } else {
                format!("\nqemu stderr: {stderr}")
            },
            self.console.log().display(),
            self.console.report(TAIL_LINES)
        )
    }

    /// Connects to the agent socket once QEMU created it.
    fn connect(&self, deadline: Instant) -> Result<Channel> {
        loop {
            if let Ok(s) = UnixStream::connect(&self.socket) {
                return Channel::new(s).map_err(|e| self.error(format!("agent channel: {e}")));
            }
            let exited =
                self.child.as_ref().map(|c| c.id()).is_some_and(|pid| {
                    !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid)
                });
            if exited || self.console.ended() {
                thread::sleep(Duration::from_millis(100));
                return Err(self.error("qemu exited before the agent socket appeared".into()));
            }
            if Instant::now() >= deadline {
                return Err(self.error(format!(
                    "qemu did not create {} in time",
                    self.socket.display()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(true)
}

impl Drop for PendingVm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = fs::remove_file(&self.socket);
            let _ = fs::remove_file(self.dir.join("initrd.cpio"));
            eprintln!(
                "ipvs-lab: boot failed, console log kept: {}",
                self.console.log().display()
            );
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(self.dir.join("initrd.cpio"));
        let keep = self.failed.load(Ordering::SeqCst)
            || std::env::var_os("IPVS_LAB_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        if keep {
            eprintln!(
                "ipvs-lab: console log kept: {}",
                self.console.log().display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"hello world\n\0\xff"] {
            assert_eq!(unbase64(&base64(data)).as_deref(), Some(data));
        }
        assert_eq!(base64(b"abcd"), "YWJjZA==");
        let long = vec![7u8; 1000];
        assert!(base64(&long).lines().all(|l| l.len() <= 76));
        assert_eq!(unbase64(&base64(&long)), Some(long));
    }

    /// Tests share one VM between threads.
    #[test]
    fn vm_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Vm>();
    }

    #[test]
    fn parses_plain_and_chunked_http() {
        let (s, b) = parse_http(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((s, b.as_str()), (200, "hi"));
        let (s, b) = parse_http(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (404, "abcde"));
        assert!(parse_http(b"garbage").is_err());
    }
}
