//! `cargo xtask bench scale`: the cost of watching a large director, in one lab VM.
//!
//! N services × M masquerading destinations (one `ipvsadm -R`), then four sides measured in
//! turn, A B C D A B C D … (`--rounds`, medians reported):
//! - `daemon`: `ipvs-telemetry` with its defaults (`--ebpf off`: the lab makes no traffic);
//! - `large-table`: the same with `--metrics.destinations none`;
//! - `node_exporter`: Debian's `prometheus-node-exporter --collector.disable-defaults
//!   --collector.ipvs`;
//! - `floor`: the `netlink_collect` example run as a new process per scrape: the N+1 netlink
//!   dump of the daemon's collection, decoded, nothing encoded or served.
//!
//! Each side runs for `--window` (default 60 s) with a Prometheus-like scrape every
//! `--interval` (15 s; OpenMetrics accepted, gzip) from inside the VM; reported per side: CPU
//! seconds per minute of the process (from `/proc/PID/stat`), the scrape latency, series per
//! scrape, gzip body size, and peak RSS (`VmHWM`) after the window plus one uncompressed scrape
//! concurrent with a gzip one. Then one-shot `snapshot --format prometheus` vs `netlink_collect`
//! (wall time, alternating, `--rounds` pairs). Last, the table is replaced by `--large`
//! (default 50,000 services × 2 destinations) and the daemon with its defaults is measured for
//! one window the same way, with its collection time (`ipvs_collection_duration_seconds`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ipvs_lab::{Kernel, Vm, VmConfig};

/// Options of `cargo xtask bench scale`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask bench scale")]
pub(crate) struct Opts {
    /// Lab kernel.
    #[arg(long, default_value = "6.1")]
    pub kernel: Kernel,
    /// Virtual services.
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    /// Destinations per service.
    #[arg(long, default_value_t = 5)]
    pub destinations: u32,
    /// Rounds of the four sides (and pairs of the one-shot comparison).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// How long each side is measured, in seconds.
    #[arg(long, default_value_t = 60)]
    pub window: u64,
    /// Seconds between two scrapes.
    #[arg(long, default_value_t = 15)]
    pub interval: u64,
    /// Sides measured, comma-separated (`daemon,large-table,node-exporter,floor`); the
    /// one-shot comparison runs with `floor`.
    #[arg(long, value_delimiter = ',', default_value = "daemon,large-table,node-exporter,floor",
          value_parser = parse_side)]
    pub sides: Vec<Side>,
    /// The large table measured last, SERVICESxDESTINATIONS (`0x0`: none).
    #[arg(long, default_value = "50000x2", value_parser = parse_table)]
    pub large: (u32, u32),
    /// More flags for the daemon's sides (e.g. `--collection.timeout 5m` for a table whose
    /// dump takes longer than the default deadline under emulation).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub daemon_args: String,
    /// node_exporter binary on the host.
    #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
    pub node_exporter: std::path::PathBuf,
}

/// `NxM` as (services, destinations).
fn parse_table(s: &str) -> Result<(u32, u32), String> {
    let (n, m) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected SERVICESxDESTINATIONS, e.g. 50000x2"))?;
    let p = |v: &str| v.parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
    Ok((p(n)?, p(m)?))
}

fn parse_side(s: &str) -> Result<Side, String> {
    Ok(match s {
        "daemon" => Side::Daemon,
        "large-table" => Side::LargeTable,
        "node-exporter" => Side::NodeExporter,
        "floor" => Side::Floor,
        _ => {
            return Err(format!(
                "{s:?}: not one of daemon, large-table, node-exporter, floor"
            ));
        }
    })
}

const PORT: u16 = 10054;
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Daemon,
    LargeTable,
    NodeExporter,
    Floor,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Daemon => "ipvs-telemetry (defaults)",
            Side::LargeTable => "ipvs-telemetry --metrics.destinations none",
            Side::NodeExporter => "node_exporter --collector.ipvs",
            Side::Floor => "floor: N+1 dump + decode per scrape (netlink_collect)",
        }
    }

    fn command(self, daemon_args: &str) -> Option<String> {
        match self {
            Side::Daemon => Some(format!(
                "exec ipvs-telemetry serve --web.listen-address 127.0.0.1:{PORT} --ebpf off \
                 {daemon_args}"
            )),
            Side::LargeTable => Some(format!(
                "exec ipvs-telemetry serve --web.listen-address 127.0.0.1:{PORT} --ebpf off \
                 --metrics.destinations none {daemon_args}"
            )),
            Side::NodeExporter => Some(format!(
                "exec node_exporter --collector.disable-defaults --collector.ipvs \
                 --web.listen-address 127.0.0.1:{PORT}"
            )),
            Side::Floor => None,
        }
    }
}

/// One side's window.
#[derive(Debug, Default, Clone)]
struct Window {
    cpu_per_min: f64,
    latency_ms: Vec<f64>,
    series: u64,
    gzip_bytes: u64,
    hwm_kib: u64,
    /// The daemon's `ipvs_telemetry_scrapes_precollected` after the window.
    precollected: Option<u64>,
    /// The daemon's `ipvs_collection_duration_seconds` after the window.
    collection_s: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark with `args` (after `scale`) and prints the figures as Markdown tables.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts =
        &Opts::try_parse_from(std::iter::once("scale".to_string()).chain(args.iter().cloned()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Err(why) = ipvs_lab::prerequisites() {
        bail!("the lab cannot run here: {why}");
    }
    if !opts.node_exporter.is_file() {
        bail!(
            "{} not found (Debian package prometheus-node-exporter)",
            opts.node_exporter.display()
        );
    }
    let collect = crate::bench::build_example("netlink_collect")?;
    let mut cfg = VmConfig::new(opts.kernel)
        .with_daemon()
        .file(&opts.node_exporter, "/usr/local/bin/node_exporter")
        .file(&collect, "/usr/local/bin/netlink_collect");
    cfg.memory_mb = 3072;
    let vm = Vm::boot(cfg)?;
    eprintln!("bench: VM up ({:?})", vm.boot_time());
    let (n, m) = (opts.services, opts.destinations);
    create_table(&vm, n, m)?;
    let hz: f64 = vm.sh_ok("getconf CLK_TCK || echo 100")?.trim().parse()?;

    let sides = &opts.sides;
    let mut results: Vec<(Side, Vec<Window>)> = sides.iter().map(|s| (*s, vec![])).collect();
    for round in 1..=opts.rounds {
        for (side, windows) in &mut results {
            let w = match side.command(&opts.daemon_args) {
                Some(cmd) => measure_server(&vm, &cmd, *side != Side::NodeExporter, opts, hz)?,
                None => measure_floor(&vm, opts)?,
            };
            eprintln!("bench: round {round} {}: {w:?}", side.name());
            windows.push(w);
        }
    }

    println!(
        "\n{n} services × {m} destinations, kernel {}, {} rounds of {} s windows, a scrape every \
         {} s (OpenMetrics accepted, gzip) from inside the VM (QEMU TCG), medians:\n",
        opts.kernel, opts.rounds, opts.window, opts.interval
    );
    println!(
        "| side | CPU-s per minute | series per scrape | gzip body | scrape latency | peak RSS | \
         collection |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut cpu = std::collections::HashMap::new();
    for (side, ws) in &results {
        let c = median(ws.iter().map(|w| w.cpu_per_min).collect());
        cpu.insert(side.name(), c);
        let lat = median(ws.iter().flat_map(|w| w.latency_ms.clone()).collect());
        let series = ws.last().map(|w| w.series).unwrap_or(0);
        let gz = ws.last().map(|w| w.gzip_bytes).unwrap_or(0);
        let hwm = ws.iter().map(|w| w.hwm_kib).max().unwrap_or(0);
        let coll = median(ws.iter().filter_map(|w| w.collection_s).collect());
        println!(
            "| {} | {c:.2} | {} | {} | {} | {} | {} |",
            side.name(),
            if series > 0 {
                series.to_string()
            } else {
                "—".into()
            },
            if gz > 0 {
                format!("{:.2} MB", gz as f64 / 1e6)
            } else {
                "—".into()
            },
            if lat.is_nan() {
                "—".into()
            } else {
                format!("{lat:.0} ms")
            },
            if hwm > 0 {
                format!("{:.1} MiB", hwm as f64 / 1024.0)
            } else {
                "—".into()
            },
            if coll.is_nan() {
                "—".into()
            } else {
                format!("{:.0} ms", coll * 1000.0)
            },
        );
    }
    for (side, ws) in &results {
        let pre: Vec<String> = ws
            .iter()
            .filter_map(|w| w.precollected.map(|p| p.to_string()))
            .collect();
        if !pre.is_empty() {
            println!(
                "{}: scrapes served from a collection begun ahead of them, by the end of each \
                 round's window ({LEARN} learning + the window's): {}",
                side.name(),
                pre.join(", ")
            );
        }
    }
    let get = |s: Side| cpu.get(s.name()).copied().unwrap_or(f64::NAN);
    println!(
        "\nCPU ratios: daemon / floor {:.2} (goal ≤ 1.5), daemon / node_exporter {:.2} (goal ≤ 0.35), \
         large-table / floor {:.2}",
        get(Side::Daemon) / get(Side::Floor),
        get(Side::Daemon) / get(Side::NodeExporter),
        get(Side::LargeTable) / get(Side::Floor),
    );

    // One-shot: snapshot --format prometheus vs the collection alone.
    let one_shot = sides.contains(&Side::Floor);
    let mut snap = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..if one_shot { opts.rounds.max(3) } else { 0 } {
        snap.push(wall(
            &vm,
            "ipvs-telemetry snapshot --format prometheus > /dev/null",
        )?);
        floor.push(wall(&vm, "netlink_collect --sockets 1 > /dev/null")?);
    }
    let (s, f) = (median(snap), median(floor));
    if one_shot {
        println!(
            "\n| one-shot | wall (median) |\n|---|---|\n| `snapshot --format prometheus` | {s:.0} ms |\n\
         | `netlink_collect` (N+1 dump + decode) | {f:.0} ms |\n\nratio {:.2} (goal ≤ 2)",
            s / f
        );
    }

    let (ln, lm) = opts.large;
    if ln > 0 {
        create_table(&vm, ln, lm)?;
        let w = measure_server(
            &vm,
            &Side::Daemon.command(&opts.daemon_args).unwrap_or_default(),
            true,
            opts,
            hz,
        )?;
        eprintln!("bench: {ln} × {lm} {}: {w:?}", Side::Daemon.name());
        let f = wall(&vm, "netlink_collect --sockets 1 > /dev/null")?;
        println!(
            "\n{ln} services × {lm} destinations, ipvs-telemetry (defaults), one {} s window \
             after learning the cadence:\n\n\
             | collection (ipvs_collection_duration_seconds) | scrape latency (median) | \
             CPU-s per minute | series | gzip body | peak RSS | precollected | N+1 dump + decode (wall) |\n\
             |---|---|---|---|---|---|---|---|\n\
             | {} | {:.0} ms | {:.2} | {} | {:.2} MB | {:.1} MiB | {} | {f:.0} ms |",
            opts.window,
            w.collection_s
                .map(|c| format!("{:.0} ms", c * 1000.0))
                .unwrap_or_else(|| "—".into()),
            median(w.latency_ms.clone()),
            w.cpu_per_min,
            w.series,
            w.gzip_bytes as f64 / 1e6,
            w.hwm_kib as f64 / 1024.0,
            w.precollected
                .map(|p| p.to_string())
                .unwrap_or_else(|| "—".into()),
        );
    }
    let _ = vm.shutdown();
    Ok(())
}

/// Replaces the VM's IPVS table with `n` TCP services × `m` masquerading destinations.
fn create_table(vm: &Vm, n: u32, m: u32) -> Result<()> {
    eprintln!("bench: creating {n} × {m}");
    vm.sh_ok_timeout(
        &format!(
            "ipvsadm -C && busybox awk 'BEGIN {{ for (i = 0; i < {n}; i++) {{ \
               v = sprintf(\"10.%d.%d.%d:80\", int(i / 62500), int(i / 250) % 250, i % 250 + 1); \
               print \"-A -t \" v \" -s rr\"; \
               for (d = 1; d <= {m}; d++) \
                 printf \"-a -t %s -r 192.168.%d.%d:8080 -m\\n\", v, d, i % 250 + 1 }} }}' \
             > /tmp/rules && ipvsadm -R < /tmp/rules"
        ),
        Duration::from_secs(3600),
    )
    .context("creating the services")?;
    let count = vm.sh_ok_timeout("ipvsadm -Ln | grep -c '^TCP'", Duration::from_secs(1800))?;
    if count.trim() != n.to_string() {
        bail!("expected {n} services, ipvsadm shows {}", count.trim());
    }
    Ok(())
}

/// Wall time of `cmd` in the VM, in ms (busybox date has no sub-second format: /proc/uptime).
fn wall(vm: &Vm, cmd: &str) -> Result<f64> {
    let out = vm.sh_ok_timeout(
        &format!("a=$(cut -d' ' -f1 /proc/uptime); {cmd}; b=$(cut -d' ' -f1 /proc/uptime); echo \"$a $b\""),
        Duration::from_secs(1800),
    )?;
    let v: Vec<f64> = out
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [a, b] => Ok((b - a) * 1000.0),
        _ => bail!("no times in {out:?}"),
    }
}

fn cpu_ticks(vm: &Vm, pid: u32) -> Result<u64> {
    let stat = vm.sh_ok(&format!("cat /proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 13 {
        bail!("short /proc/{pid}/stat: {stat}");
    }
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// One timed gzip scrape (connect to last byte), in ms.
fn scrape(vm: &Vm) -> Result<f64> {
    let out = vm.sh_ok_timeout(
        &format!(
            "p=$(printf 'GET /metrics HTTP/1.0\\r\\nAccept: {ACCEPT}\\r\\nAccept-Encoding: gzip\\r\\n\\r\\nX'); \
             p=${{p%X}}; lab-client tcp 127.0.0.1:{PORT} --timeout 300s --payload \"$p\""
        ),
        Duration::from_secs(600),
    )?;
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("elapsed="))
        .and_then(|v| v.trim_end_matches('s').parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .with_context(|| format!("no elapsed= in {out:?}"))
}

/// Scrapes at the interval before the daemon's window: enough for it to learn the cadence.
const LEARN: u64 = 4;

fn measure_server(vm: &Vm, cmd: &str, learns: bool, opts: &Opts, hz: f64) -> Result<Window> {
    let p = vm.spawn(cmd)?;
    vm.wait_until(
        &format!("lab-client wait-tcp 127.0.0.1:{PORT} --timeout 1s"),
        Duration::from_secs(300),
    )?;
    // Warm-up: the first scrape (the daemon's start-up collection, node_exporter's first parse),
    // then, for the daemon, three more at the interval: a scraper that has been scraping steadily
    // (as Prometheus does), whose cadence the daemon has learned (--collection.ahead).
    let learn = if learns { LEARN } else { 1 };
    let base = std::time::Instant::now();
    for i in 0..learn {
        let due = Duration::from_secs(i * opts.interval);
        if let Some(wait) = due.checked_sub(base.elapsed()) {
            std::thread::sleep(wait);
        }
        scrape(vm)?;
    }
    let start = if learns {
        Duration::from_secs(learn * opts.interval)
    } else {
        base.elapsed()
    };
    if let Some(wait) = start.checked_sub(base.elapsed()) {
        std::thread::sleep(wait.saturating_sub(Duration::from_millis(300)));
    }
    let cpu0 = cpu_ticks(vm, p.pid)?;
    let t0 = std::time::Instant::now();
    let mut w = Window::default();
    let scrapes = (opts.window / opts.interval).max(1);
    for i in 0..scrapes {
        let due = start + Duration::from_secs(i * opts.interval);
        if let Some(wait) = due.checked_sub(base.elapsed()) {
            std::thread::sleep(wait);
        }
        w.latency_ms.push(scrape(vm)?);
    }
    if let Some(wait) = (start + Duration::from_secs(opts.window)).checked_sub(base.elapsed()) {
        std::thread::sleep(wait);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks(vm, p.pid)?;
    w.cpu_per_min = (cpu1 - cpu0) as f64 / hz * 60.0 / secs;
    // Sizes, then an uncompressed scrape concurrent with a gzip one for the peak RSS.
    let sizes = vm.sh_ok_timeout(
        &format!(
            "wget -q -O /tmp/gz --header 'Accept: {ACCEPT}' --header 'Accept-Encoding: gzip' \
               http://127.0.0.1:{PORT}/metrics && wc -c < /tmp/gz && \
             zcat /tmp/gz | grep -vc '^#'; \
             zcat /tmp/gz | grep '^ipvs_telemetry_scrapes_precollected_total ' | cut -d' ' -f2; \
             zcat /tmp/gz | grep '^ipvs_collection_duration_seconds{{' | cut -d' ' -f2"
        ),
        Duration::from_secs(600),
    )?;
    let mut it = sizes.split_whitespace();
    w.gzip_bytes = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    w.series = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    w.precollected = it
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64);
    w.collection_s = it.next().and_then(|v| v.parse().ok());
    vm.sh_ok_timeout(
        &format!(
            "wget -q -O /dev/null --header 'Accept: {ACCEPT}' http://127.0.0.1:{PORT}/metrics & \
             wget -q -O /dev/null --header 'Accept-Encoding: gzip' http://127.0.0.1:{PORT}/metrics; \
             wait"
        ),
        Duration::from_secs(600),
    )?;
    let status = vm.sh_ok(&format!("grep '^VmHWM' /proc/{}/status", p.pid))?;
    w.hwm_kib = status
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    vm.sh_ok(&format!(
        "kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.2; done",
        pid = p.pid
    ))?;
    Ok(w)
}

/// The floor: one collection per scrape in a new process; its CPU time from its own report.
fn measure_floor(vm: &Vm, opts: &Opts) -> Result<Window> {
    let t0 = std::time::Instant::now();
    let scrapes = (opts.window / opts.interval).max(1);
    let mut cpu_ms = 0.0;
    let mut w = Window::default();
    for i in 0..scrapes {
        let due = Duration::from_secs(i * opts.interval);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        let out = vm.sh_ok_timeout("netlink_collect --sockets 1", Duration::from_secs(600))?;
        let field = |k: &str| {
            out.split_whitespace()
                .find_map(|x| x.strip_prefix(k))
                .and_then(|v| v.parse::<f64>().ok())
        };
        cpu_ms += field("cpu_ms=").context("no cpu_ms= from netlink_collect")?;
        w.latency_ms.push(field("wall_ms=").unwrap_or(f64::NAN));
    }
    if let Some(wait) = Duration::from_secs(opts.window).checked_sub(t0.elapsed()) {
        std::thread::sleep(wait);
    }
    w.cpu_per_min = cpu_ms / 1000.0 * 60.0 / opts.window as f64;
    Ok(w)
}
