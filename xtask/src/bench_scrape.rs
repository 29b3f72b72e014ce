//! `cargo xtask bench scrape`: in one lab VM, N services × M destinations, then the daemon and
//! node_exporter's ipvs collector (Debian `prometheus-node-exporter`, `--collector.disable-defaults
//! --collector.ipvs`) scraped in turn from inside the VM (loopback, so QEMU's user network does
//! not distort the figures): latency min/median/max over the scrapes, and each process's RSS.
//!
//! Both are scraped the way Prometheus does (OpenMetrics accepted, gzip). Scrapes are sequential,
//! one a second. The daemon polls every 15 s (a usual scrape interval): under TCG one collection
//! of 50,000 destinations takes seconds.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ipvs_lab::{Kernel, Vm, VmConfig};

/// Options of `cargo xtask bench scrape`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask bench scrape")]
pub(crate) struct Opts {
    /// Lab kernel.
    #[arg(long, default_value = "6.12")]
    pub kernel: Kernel,
    /// Virtual services.
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    /// Destinations per service.
    #[arg(long, default_value_t = 5)]
    pub destinations: u32,
    /// Scrapes per exporter.
    #[arg(long, default_value_t = 20)]
    pub scrapes: usize,
    /// node_exporter binary on the host.
    #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
    pub node_exporter: PathBuf,
}

const DAEMON_PORT: u16 = 10054;
const NODE_PORT: u16 = 9100;

/// Runs the benchmark with `args` (after `scrape`) and prints the figures as a Markdown table.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts =
        &Opts::try_parse_from(std::iter::once("scrape".to_string()).chain(args.iter().cloned()))
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
    let mut cfg = VmConfig::new(opts.kernel)
        .with_daemon()
        .file(&opts.node_exporter, "/usr/local/bin/node_exporter");
    cfg.memory_mb = 2048;
    let vm = Vm::boot(cfg)?;
    eprintln!("bench: VM up ({:?}), creating services", vm.boot_time());
    let (n, m) = (opts.services, opts.destinations);
    vm.sh_ok_timeout(
        &format!(
            "busybox awk 'BEGIN {{ for (i = 0; i < {n}; i++) {{ \
               v = sprintf(\"10.%d.%d.%d:80\", int(i / 62500), int(i / 250) % 250, i % 250 + 1); \
               print \"-A -t \" v \" -s rr\"; \
               for (d = 1; d <= {m}; d++) \
                 printf \"-a -t %s -r 192.168.%d.%d:8080 -m\\n\", v, d, i % 250 + 1 }} }}' \
             > /tmp/rules && ipvsadm -R < /tmp/rules"
        ),
        Duration::from_secs(1800),
    )
    .context("creating the services")?;
    let count = vm.sh_ok("ipvsadm -Ln | grep -c '^TCP'")?;
    if count.trim() != n.to_string() {
        bail!("expected {n} services, ipvsadm shows {}", count.trim());
    }

    let daemon = vm.spawn(&format!(
        "exec ipvs-telemetry serve --web.listen-address 127.0.0.1:{DAEMON_PORT} --ebpf off \
         --collection.max-age 15s"
    ))?;
    vm.wait_until(
        &format!("wget -q -O /dev/null http://127.0.0.1:{DAEMON_PORT}/-/ready"),
        Duration::from_secs(600),
    )
    .context("the daemon never became ready")?;
    // `ipvs_services` comes first in the exposition: grep stops at once, no full decompression.
    vm.wait_until(
        &format!(
            "wget -q -O - --header 'Accept-Encoding: gzip' http://127.0.0.1:{DAEMON_PORT}/metrics \
             | zcat | grep -m1 '^ipvs_services{{netns=\"host\"}} {n}$'"
        ),
        Duration::from_secs(600),
    )
    .context("the daemon never served every service")?;
    eprintln!("bench: the daemon serves every service, scraping");
    let daemon_rows = measure(&vm, DAEMON_PORT, "/metrics", daemon.pid, opts.scrapes)?;
    vm.sh_ok(&format!("kill {}", daemon.pid))?;

    let node = vm.spawn(&format!(
        "exec node_exporter --collector.disable-defaults --collector.ipvs \
         --web.listen-address 127.0.0.1:{NODE_PORT}"
    ))?;
    vm.wait_until(
        &format!("lab-client wait-tcp 127.0.0.1:{NODE_PORT} --timeout 1s"),
        Duration::from_secs(120),
    )?;
    let node_rows = measure(&vm, NODE_PORT, "/metrics", node.pid, opts.scrapes)?;

    println!(
        "\n{n} services × {m} destinations, kernel {}, {} scrapes each, inside the VM (TCG), \
         OpenMetrics accepted + gzip:\n",
        opts.kernel, opts.scrapes
    );
    println!("| exporter | latency min | median | max | body (gzip) | RSS after | peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for (name, r) in [
        ("ipvs-telemetry", &daemon_rows),
        ("node_exporter --collector.ipvs", &node_rows),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} MB | {:.1} MiB | {:.1} MiB |",
            r.min_ms,
            r.median_ms,
            r.max_ms,
            r.bytes as f64 / 1e6,
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0
        );
    }
    println!(
        "\nlatency ratio (median): {:.4}; RSS ratio: {:.2}",
        daemon_rows.median_ms / node_rows.median_ms,
        daemon_rows.rss_kib as f64 / node_rows.rss_kib as f64
    );
    let _ = vm.shutdown();
    Ok(())
}

struct Figures {
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
    bytes: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

/// `scrapes` sequential scrapes timed inside the VM, then the process's RSS.
fn measure(vm: &Vm, port: u16, path: &str, pid: u32, scrapes: usize) -> Result<Figures> {
    // A raw HTTP/1.0 request through lab-client, which prints the elapsed time; the body size
    // comes from a separate scrape with busybox wget.
    let request = format!(
        "p=$(printf 'GET {path} HTTP/1.0\\r\\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\\r\\nAccept-Encoding: gzip\\r\\n\\r\\nX'); p=${{p%X}}"
    );
    let mut times = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let out = vm.sh_ok_timeout(
            &format!(
                "{request}; sleep 1; lab-client tcp 127.0.0.1:{port} --timeout 120s --payload \"$p\""
            ),
            Duration::from_secs(300),
        )?;
        let elapsed = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("elapsed="))
            .and_then(|v| v.trim_end_matches('s').parse::<f64>().ok())
            .with_context(|| format!("no elapsed= in {out:?}"))?;
        times.push(elapsed * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let size = vm.sh_ok(&format!(
        "wget -q -O /tmp/body --header 'Accept: application/openmetrics-text;version=1.0.0' \
         --header 'Accept-Encoding: gzip' http://127.0.0.1:{port}{path} && wc -c < /tmp/body"
    ))?;
    let status = vm.sh_ok(&format!("grep -E '^(VmRSS|VmHWM)' /proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Figures {
        min_ms: times[0],
        median_ms: times[times.len() / 2],
        max_ms: times[times.len() - 1],
        bytes: size.trim().parse().unwrap_or(0),
        rss_kib: kib("VmRSS"),
        hwm_kib: kib("VmHWM"),
    })
}
