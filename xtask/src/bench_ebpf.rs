//! `cargo xtask bench ebpf`: (a) in one lab VM, connections/s of a local load generator and
//! request/replies/s of one long-lived NAT UDP flow (packet rate) with the probes attached vs
//! detached (A B A B, medians; goal ≥ 0.97×), optionally next to an older build (`--baseline`); (b) on this host, events/s of
//! the ring-buffer consumer into the histograms on one core (goal ≥ 5 M/s).
//!
//! Both are measurements, never assertions: (a) is the ignored lab test `probe_overhead`, (b) the
//! ignored unit test `ebpf::bench::consumer_events_per_second`; each prints its figures.

use std::process::Command;

use anyhow::{Result, bail};

use crate::build::{self, EbpfOpts, ebpf_object, root};

/// Runs both parts; `--host-only` skips the VM part, `--pairs N` sets the A/B pairs of (a),
/// `--baseline PATH` names an older `ebpf-dump` build measured next to this one in (a).
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut host_only = false;
    let mut pairs = "10".to_string();
    let mut baseline = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--host-only" => host_only = true,
            "--pairs" => match it.next() {
                Some(n) if n.parse::<u32>().is_ok_and(|n| n > 0) => pairs = n.clone(),
                _ => bail!("--pairs needs a positive number"),
            },
            "--baseline" => match it.next() {
                Some(p) if std::path::Path::new(p).is_file() => baseline = Some(p.clone()),
                _ => bail!("--baseline needs the path of an ebpf-dump binary"),
            },
            other => {
                bail!("unknown option {other:?} (known: --host-only, --pairs N, --baseline PATH)")
            }
        }
    }
    build::build_ebpf(&EbpfOpts { release: true })?;
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(root())
            .env("IPVS_TELEMETRY_EBPF_OBJECT", ebpf_object(true));
        c
    };
    eprintln!("==> (b) consumer events/s on one core (host)");
    build::run(cargo().args([
        "test",
        "--release",
        "--package",
        "ipvs-telemetry",
        "--lib",
        "ebpf::bench::tests::consumer_events_per_second",
        "--",
        "--ignored",
        "--nocapture",
        "--exact",
    ]))?;
    if host_only {
        return Ok(());
    }
    eprintln!("==> (a) probes attached vs detached (lab VM)");
    let mut cmd = cargo();
    cmd.env("IPVS_BENCH_PAIRS", &pairs);
    if let Some(b) = &baseline {
        cmd.env("IPVS_BENCH_BASELINE_DUMP", b);
    }
    build::run(cmd.args([
        "test",
        "--release",
        "--package",
        "ipvs-telemetry-e2e",
        "--test",
        "ebpf",
        "--",
        "--ignored",
        "--nocapture",
        "--exact",
        "probe_overhead",
    ]))
}
