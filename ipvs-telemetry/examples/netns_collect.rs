//! Measures one collection of N network namespaces made with `ip netns add` on this host.
//!
//! ```text
//! sudo cargo run --release --example netns_collect -- [--services K] [--settle SECS] 1 50 200
//! ```
//!
//! Creates `bench-<pid>-<i>` namespaces (deleted at the end), each with `K` IPVS services of one
//! real server (`ipvsadm -R` inside it; needs IPVS, so run it in the lab VM), collects them with
//! `--netns.discover /run/netns` after waiting `SECS` (kernels ≥ 6.2 calibrate one IPVS
//! estimator thread per namespace when its first service appears, which competes for the CPU
//! for a while), and prints the first collection (threads started) and the
//! median and maximum of 20 following ones. With `K = 0` (the default) it runs on hosts without
//! IPVS and measures the namespace machinery alone (scan, worker threads, rtnetlink, conntrack,
//! one failed IPVS family lookup per namespace).

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use ipvs_telemetry::cli::Cli;
use ipvs_telemetry::netns::Collector;

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {args:?} failed");
}

fn services(ns: &str, count: usize) {
    use std::io::Write;
    ip(&["-n", ns, "route", "add", "10.0.0.0/16", "dev", "lo"]);
    let mut rules = String::new();
    for k in 0..count {
        rules.push_str(&format!("-A -t 10.0.0.1:{} -s rr\n", 1000 + k));
        rules.push_str(&format!("-a -t 10.0.0.1:{} -r 10.0.1.1:80 -m\n", 1000 + k));
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "ipvsadm", "-R"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ipvsadm");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("write rules");
    assert!(
        child.wait().is_ok_and(|s| s.success()),
        "ipvsadm -R in {ns}"
    );
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut per_ns = 0;
    if let Some(i) = args.iter().position(|a| a == "--services") {
        per_ns = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .expect("--services K");
        args.drain(i..i + 2);
    }
    let mut settle = 0;
    if let Some(i) = args.iter().position(|a| a == "--settle") {
        settle = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .expect("--settle SECS");
        args.drain(i..i + 2);
    }
    let counts: Vec<usize> = args
        .iter()
        .map(|a| a.parse().expect("namespace count"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in counts {
        let prefix = format!("bench-{}-{n}-", std::process::id());
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        for name in &names {
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
            if per_ns > 0 {
                services(name, per_ns);
            }
        }
        std::thread::sleep(Duration::from_secs(settle));
        let include = format!("^{prefix}");
        let cli = Cli::try_parse_from([
            "ipvs-telemetry",
            "--no-netns.host",
            "--netns.discover",
            "/run/netns",
            "--netns.include",
            &include,
        ])
        .expect("flags");
        let mut collector = Collector::new(&cli.common, Duration::from_secs(5)).expect("collector");
        let t = Instant::now();
        let snap = rt.block_on(collector.collect());
        let first = t.elapsed();
        assert_eq!(snap.namespaces.len(), n);
        if per_ns > 0 {
            for ns in &snap.namespaces {
                let read = ns.ipvs.as_ref().map(|s| s.services.len());
                assert_eq!(read, Ok(per_ns), "namespace {}", ns.netns.name);
            }
        }
        let mut times: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let snap = rt.block_on(collector.collect());
                assert_eq!(snap.namespaces.len(), n);
                t.elapsed()
            })
            .collect();
        times.sort();
        // Time spent inside each namespace (netlink, rtnetlink, conntrack), and `ipvsadm -Ln`
        // in one namespace as the kernel's own reference: the IPVS service table is shared by
        // every namespace, so one namespace's dump walks the services of all of them.
        let snap = rt.block_on(collector.collect());
        let inside: Duration = snap.namespaces.iter().map(|ns| ns.duration).sum();
        let mut ipvsadm: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let ok = Command::new("ip")
                    .args(["netns", "exec", &names[0], "ipvsadm", "-Ln"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                let took = t.elapsed();
                if ok { took } else { Duration::ZERO }
            })
            .collect();
        ipvsadm.sort();
        println!(
            "namespaces={n} services_each={per_ns} first={:.2}ms median={:.2}ms max={:.2}ms per_namespace={:.1}us inside_mean={:.1}us ipvsadm_one={:.2}ms",
            first.as_secs_f64() * 1e3,
            times[10].as_secs_f64() * 1e3,
            times[19].as_secs_f64() * 1e3,
            times[10].as_secs_f64() * 1e6 / n as f64,
            inside.as_secs_f64() * 1e6 / n as f64,
            ipvsadm[2].as_secs_f64() * 1e3
        );
        drop(collector);
        for name in &names {
            ip(&["netns", "del", name]);
        }
    }
}
