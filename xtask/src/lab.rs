//! `cargo xtask lab`: the demo. Boots a lab kernel with the daemon, builds the scenario of
//! `lab/scenarios/demo.sh` (TCP, UDP and fwmark services in the VM's namespace and in two named
//! namespaces, NAT backends, steady traffic with bursts), starts the daemon with eBPF on auto,
//! forwards it to `127.0.0.1:<port>`, optionally starts a real Prometheus on the host, and runs
//! until Ctrl-C, then shuts everything down.
//!
//! `--swarm` boots the Swarm profile instead: a single-node Docker Swarm (2 GiB VM) with a TCP
//! service published on 30080 and a UDP service on 30053 (2 replicas each) under steady traffic
//! through the routing mesh, and the daemon run as a Swarm user runs it
//! (`--netns.discover /var/run/docker/netns`).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ipvs_lab::{Kernel, Vm, VmConfig};

use crate::build;

/// Options of `cargo xtask lab`.
#[derive(Debug, Args)]
pub(crate) struct Opts {
    /// Lab kernel: 6.1 or 6.12.
    #[arg(long, default_value = "6.12")]
    pub kernel: Kernel,
    /// Also run Prometheus (Debian's `prometheus`) on the host, scraping the daemon.
    #[arg(long)]
    pub prometheus: bool,
    /// Use KVM instead of TCG (nested KVM hangs on some machines).
    #[arg(long)]
    pub kvm: bool,
    /// Host port of the daemon's endpoint (forwarded to the same port in the VM).
    #[arg(long, default_value_t = 10054)]
    pub port: u16,
    /// Host port of Prometheus.
    #[arg(long, default_value_t = 9090)]
    pub prometheus_port: u16,
    /// Use the debug build of the daemon (faster to build).
    #[arg(long)]
    pub debug: bool,
    /// A real Docker Swarm (the lab's Swarm profile) instead of the ipvsadm demo.
    #[arg(long)]
    pub swarm: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Runs `cargo xtask lab`.
pub(crate) fn run(opts: &Opts) -> Result<()> {
    catch_interrupts();
    // Installs what is missing (as root), like `run` and `test`; then the kernels.
    crate::deps::ensure(false)?;
    crate::deps::ensure_lab_kernels()?;
    ipvs_lab::prerequisites()
        .map_err(|e| anyhow!("the lab cannot run here: {e} (try `cargo xtask deps`)"))?;
    if opts.swarm {
        ipvs_lab::swarm::prerequisites()
            .map_err(|e| anyhow!("the Swarm profile cannot run here: {e}"))?;
    }
    if !port_free(opts.port) {
        bail!(
            "127.0.0.1:{} is in use; pick another with --port",
            opts.port
        );
    }
    if opts.prometheus && !port_free(opts.prometheus_port) {
        bail!(
            "127.0.0.1:{} is in use; pick another with --prometheus-port",
            opts.prometheus_port
        );
    }
    if std::env::var_os("IPVS_TELEMETRY_BIN").is_none() {
        let release = !opts.debug;
        eprintln!(
            "lab: building the probes and the daemon ({})",
            if release { "release" } else { "debug" }
        );
        build::build(&build::BuildOpts { release })?;
        let bin = build::root()
            .join("target")
            .join(if release { "release" } else { "debug" })
            .join("ipvs-telemetry");
        // SAFETY: single-threaded at this point; the lab reads it when it boots.
        unsafe { std::env::set_var("IPVS_TELEMETRY_BIN", &bin) };
    }
    let t = Instant::now();
    eprintln!(
        "lab: booting kernel {} (TCG; takes a few seconds)",
        opts.kernel
    );
    let (vm, daemon) = if opts.swarm {
        start_swarm(opts)?
    } else {
        start_demo(opts)?
    };
    let url = format!("http://127.0.0.1:{}/metrics", opts.port);
    let ready = wait_ready(&vm, opts.port, daemon.pid, Duration::from_secs(90));
    match &ready {
        Ok(()) => eprintln!(
            "lab: ipvs-telemetry is ready ({:.1?} after start)",
            t.elapsed()
        ),
        Err(e) => {
            let log = vm
                .sh(&format!("tail -n 30 {}", daemon.log))
                .map(|o| o.stdout)
                .unwrap_or_default();
            eprintln!("lab: the daemon is not answering yet ({e:#}); its log:\n{log}");
        }
    }
    let mut prom = None;
    if opts.prometheus {
        prom = Some(start_prometheus(opts)?);
    }
    println!();
    println!("  metrics:    {url}");
    println!("  try:        curl -s {url} | grep -E '^ipvs_(up|service_connections_total)'");
    if opts.prometheus {
        println!(
            "  prometheus: http://127.0.0.1:{}/graph?g0.expr=rate(ipvs_service_connections_total[1m])",
            opts.prometheus_port
        );
    }
    println!(
        "  in the VM:  daemon log {}, scenario {}",
        daemon.log,
        if opts.swarm {
            "Docker Swarm (services web: 30080/tcp, dns: 30053/udp)"
        } else {
            "lab/scenarios/demo.sh"
        }
    );
    println!("  Ctrl-C stops the lab.");
    let mut last_check = Instant::now();
    while !INTERRUPTED.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(200));
        if last_check.elapsed() > Duration::from_secs(10) {
            last_check = Instant::now();
            if let Err(e) = vm.sh_timeout("true", Duration::from_secs(30)) {
                stop_prometheus(prom.take());
                return Err(e.context("the lab VM stopped answering"));
            }
        }
    }
    eprintln!("\nlab: shutting down");
    stop_prometheus(prom.take());
    if opts.swarm {
        if let Err(e) = ipvs_lab::swarm::down(&vm) {
            eprintln!("lab: leaving the swarm: {e:#}");
        }
    }
    vm.shutdown()?;
    eprintln!("lab: stopped");
    Ok(())
}

/// Boots the ipvsadm demo scenario and starts the daemon.
fn start_demo(opts: &Opts) -> Result<(Vm, ipvs_lab::Spawned)> {
    let scenario = build::root().join("lab/scenarios/demo.sh");
    let mut cfg = VmConfig::new(opts.kernel)
        .forward_fixed(opts.port, opts.port)
        .file(&scenario, "/root/demo.sh")
        .with_daemon();
    cfg.kvm = opts.kvm;
    let vm = Vm::boot(cfg)?;
    eprintln!("lab: kernel {} up in {:.1?}", opts.kernel, vm.boot_time());
    let summary = vm
        .sh_ok_timeout("sh /root/demo.sh setup", Duration::from_secs(180))
        .context("setting up the demo scenario")?;
    eprintln!("lab: {}", summary.trim());
    vm.spawn("exec sh /root/demo.sh traffic")?;
    let daemon = vm.spawn(&format!(
        "exec ipvs-telemetry serve --web.listen-address :{} --netns.discover /run/netns \
         --netns.exclude '^be-' --ebpf auto",
        opts.port
    ))?;
    Ok((vm, daemon))
}

/// Boots the Swarm profile, brings up the swarm with two published services and traffic, and
/// starts the daemon the way a Swarm user runs it.
fn start_swarm(opts: &Opts) -> Result<(Vm, ipvs_lab::Spawned)> {
    use ipvs_lab::swarm::{self, Publish};
    let mut cfg = VmConfig::swarm(opts.kernel)
        .forward_fixed(opts.port, opts.port)
        .with_daemon();
    cfg.kvm = opts.kvm;
    let vm = Vm::boot(cfg)?;
    eprintln!("lab: kernel {} up in {:.1?}", opts.kernel, vm.boot_time());
    let up = swarm::up(&vm).context("bringing up the swarm")?;
    eprintln!(
        "lab: dockerd up in {:.1?}, swarm init {:.1?}, image imported in {:.1?}",
        up.dockerd, up.swarm_init, up.image
    );
    let service = |name, publish| swarm::Service {
        name,
        replicas: 2,
        publish,
        extra: "",
    };
    swarm::start_services(
        &vm,
        &[
            service("web", &[Publish::tcp(30080, 80)]),
            service("dns", &[Publish::udp(30053, 53)]),
        ],
    )?;
    swarm::wait_services(&vm, &[("web", 2), ("dns", 2)])?;
    eprintln!("lab: services web (30080/tcp) and dns (30053/udp) run 2 replicas each");
    vm.spawn(
        "while :; do lab-client tcp 127.0.0.1:30080 -n 20 --rate 10 --allow-errors; \
         lab-client udp 127.0.0.1:30053 -n 10 --rate 10 --allow-errors; done >/dev/null 2>&1",
    )?;
    let daemon = vm.spawn(&format!(
        "exec ipvs-telemetry serve --web.listen-address :{} --netns.discover {} --ebpf auto",
        opts.port,
        swarm::NETNS_DIR
    ))?;
    Ok((vm, daemon))
}

fn wait_ready(vm: &Vm, port: u16, pid: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if !vm.sh(&format!("kill -0 {pid}"))?.success() {
            bail!("the daemon exited");
        }
        match vm.http_get(port, "/metrics") {
            Ok(body) if body.contains("ipvs_up") => return Ok(()),
            Ok(_) if Instant::now() >= deadline => bail!("no ipvs_up series after {timeout:?}"),
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ => {}
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        thread::sleep(Duration::from_millis(500));
    }
}

struct Prometheus {
    child: Child,
    dir: PathBuf,
}

fn start_prometheus(opts: &Opts) -> Result<Prometheus> {
    let dir = std::env::temp_dir().join(format!("ipvs-lab-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
             scrape_configs:\n  - job_name: ipvs-telemetry-lab\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            opts.port
        ),
    )?;
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!(
            "--web.listen-address=127.0.0.1:{}",
            opts.prometheus_port
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
        .process_group(0)
        .spawn()
        .context("starting prometheus (Debian package prometheus)")?;
    eprintln!(
        "lab: prometheus started (pid {}, log {})",
        child.id(),
        dir.join("prometheus.log").display()
    );
    Ok(Prometheus { child, dir })
}

fn stop_prometheus(p: Option<Prometheus>) {
    if let Some(mut p) = p {
        // SAFETY: kill(2) on the pid of a child we started.
        unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
        let _ = std::fs::remove_dir_all(&p.dir);
    }
}
