//! Diagnostics and lab tests: runs only the eBPF side and rewrites `$EBPF_DUMP_OUT` (default
//! `/tmp/ebpf.json`) every 100 ms with the JSON of [`Ebpf::snapshot_all`] (every tracked
//! series, no netlink join). Accepts the daemon's flags (`--ebpf on`, `--ebpf.granularity`, ...).
//!
//! `cargo build --release --example ebpf-dump`

use std::time::Duration;

use clap::Parser;
use ipvs_telemetry::cli::Cli;
use ipvs_telemetry::ebpf::Ebpf;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let out = std::env::var("EBPF_DUMP_OUT").unwrap_or_else(|_| "/tmp/ebpf.json".into());
    let ebpf = match Ebpf::start(&cli.serve).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ebpf-dump: --ebpf on: {e}");
            std::process::exit(1);
        }
    };
    let tmp = format!("{out}.tmp");
    loop {
        let snap = ebpf.snapshot_all();
        let json = serde_json::to_string(&snap).unwrap_or_default();
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &out);
        }
        // The consumer drains once a second by itself: have it drain before the next round.
        ebpf.request_drain();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
