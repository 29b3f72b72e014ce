//! `cargo xtask bench netns`: collection time of 1, 50 and 200 network namespaces with 10 IPVS
//! services each, in one lab VM per kernel.
//!
//! Builds the `netns_collect` example of the daemon crate (it drives the same
//! `netns::Collector` as the daemon), copies it into the VM and runs it there: it creates the
//! namespaces (`ip netns add`, `ipvsadm -R` inside each), then times the first collection
//! (worker threads started) and 20 more, after letting the kernel settle for 15 s. Prints a
//! BENCHMARKS.md table.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipvs_lab::{Kernel, Vm, VmConfig};

/// Namespace counts and services per namespace of the scenario.
const COUNTS: &[usize] = &[1, 50, 200];
const SERVICES: usize = 10;
/// Seconds to wait after creating the namespaces (IPVS estimator calibration, kernels ≥ 6.2).
const SETTLE: u64 = 15;

/// Options: `[--kernel K]...`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut kernels = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kernel" => kernels.push(
                it.next()
                    .context("--kernel needs 6.1 or 6.12")?
                    .parse::<Kernel>()
                    .map_err(anyhow::Error::msg)?,
            ),
            other => bail!("unknown option {other:?} (known: --kernel K)"),
        }
    }
    if kernels.is_empty() {
        kernels = Kernel::all().to_vec();
    }
    let example = crate::bench::build_example("netns_collect")?;
    println!(
        "| kernel | namespaces × services | first collection (ms) | median / max of 20 (ms) | per namespace (µs) | mean time inside one namespace (µs) | `ipvsadm -Ln` in one namespace (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for k in kernels {
        let vm = Vm::boot(VmConfig::new(k).file(&example, "/usr/local/bin/netns-collect"))?;
        let counts: Vec<String> = COUNTS.iter().map(usize::to_string).collect();
        let out = vm.sh_ok_timeout(
            &format!(
                "netns-collect --services {SERVICES} --settle {SETTLE} {}",
                counts.join(" ")
            ),
            Duration::from_secs(1800),
        )?;
        for line in out.lines().filter(|l| l.starts_with("namespaces=")) {
            let field = |key: &str| -> Result<String> {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{key}=")))
                    .map(|v| v.trim_end_matches("ms").trim_end_matches("us").to_string())
                    .with_context(|| format!("no {key} in {line:?}"))
            };
            println!(
                "| {k} | {} × {} | {} | {} / {} | {} | {} | {} |",
                field("namespaces")?,
                field("services_each")?,
                field("first")?,
                field("median")?,
                field("max")?,
                field("per_namespace")?,
                field("inside_mean")?,
                field("ipvsadm_one")?
            );
        }
        vm.shutdown()?;
    }
    Ok(())
}
