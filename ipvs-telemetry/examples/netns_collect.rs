//! Measures one collection of N network namespaces made with `ip netns add` on this host.
//!
//! ```text
//! sudo cargo run --release --example netns_collect -- 1 50 200
//! ```
//!
//! Creates `bench-<pid>-<i>` namespaces (deleted at the end), collects them with
//! `--netns.discover /run/netns`, and prints the first collection (threads started) and the
//! median of 20 following ones. Without IPVS on the host this measures the namespace machinery
//! (scan, worker threads, rtnetlink, conntrack) plus a failed IPVS family lookup per namespace;
//! the lab benchmark (`cargo xtask bench netns`) adds 10 IPVS services per namespace.

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

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
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
        }
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
        let mut times: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let snap = rt.block_on(collector.collect());
                assert_eq!(snap.namespaces.len(), n);
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "namespaces={n} first={:.2}ms median={:.2}ms max={:.2}ms per_namespace={:.1}us",
            first.as_secs_f64() * 1e3,
            times[10].as_secs_f64() * 1e3,
            times[19].as_secs_f64() * 1e3,
            times[10].as_secs_f64() * 1e6 / n as f64
        );
        drop(collector);
        for name in &names {
            ip(&["netns", "del", name]);
        }
    }
}
