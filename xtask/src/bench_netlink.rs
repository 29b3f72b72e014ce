//! `cargo xtask bench netlink`: one VM per kernel with 10,000 services × 5 destinations (created
//! at once with `ipvsadm -R`); times one full collection (`ipvs-telemetry snapshot --format json`)
//! and `ipvsadm -Ln --stats --exact` on the same services, alternating A B A B, and prints wall,
//! user and system time (min / median / max) as a BENCHMARKS.md table row.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipvs_lab::{Kernel, Vm, VmConfig};

/// Services and destinations per service of the netlink benchmark.
const SERVICES: usize = 10_000;
const DESTS: usize = 5;

/// Options of `bench netlink`: `[--pairs N] [--kernel K]...`.
pub fn run(args: &[String]) -> Result<()> {
    let mut pairs = 10usize;
    let mut kernels = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pairs" => {
                pairs = it
                    .next()
                    .context("--pairs needs a number")?
                    .parse()
                    .context("--pairs")?
            }
            "--kernel" => kernels.push(
                it.next()
                    .context("--kernel needs 6.1 or 6.12")?
                    .parse::<Kernel>()
                    .map_err(anyhow::Error::msg)?,
            ),
            other => bail!("unknown option {other:?} (known: --pairs N, --kernel K)"),
        }
    }
    if kernels.is_empty() {
        kernels = Kernel::all().to_vec();
    }
    println!(
        "| kernel | command | wall min / median / max (ms) | user median (ms) | sys median (ms) |"
    );
    println!("|---|---|---|---|---|");
    for k in kernels {
        let vm = Vm::boot(VmConfig::new(k).with_daemon())?;
        let rules = format!(
            "busybox awk 'BEGIN {{ for (i = 0; i < {SERVICES}; i++) {{ \
               v = sprintf(\"10.%d.%d.%d:80\", int(i / 62500), int(i / 250) % 250, i % 250 + 1); \
               print \"-A -t \" v \" -s rr\"; \
               for (d = 1; d <= {DESTS}; d++) \
                 printf \"-a -t %s -r 192.168.%d.%d:8080 -m -w 1\\n\", v, d, i % 250 + 1 }} }}' \
             > /tmp/rules && ipvsadm -R < /tmp/rules && ipvsadm -Ln | grep -c '^  -> [0-9]'"
        );
        let n = vm.sh_ok_timeout(&rules, Duration::from_secs(900))?;
        let n: usize = n.trim().parse().context("destination count")?;
        if n != SERVICES * DESTS {
            bail!(
                "kernel {k}: {n} destinations created, expected {}",
                SERVICES * DESTS
            );
        }
        // Warm up both (page cache, first-use allocations), then alternate A B A B.
        let script = format!(
            "set -e; ipvs-telemetry snapshot --format json >/dev/null; \
             ipvsadm -Ln --stats --exact >/dev/null; \
             for i in $(seq 1 {pairs}); do \
               echo A; busybox time -p ipvs-telemetry snapshot --format json 2>&1 >/dev/null; \
               echo B; busybox time -p ipvsadm -Ln --stats --exact 2>&1 >/dev/null; \
             done"
        );
        let out = vm.sh_ok_timeout(&script, Duration::from_secs(3600))?;
        let (a, b) = parse_times(&out)?;
        for (name, t) in [
            ("`ipvs-telemetry snapshot --format json`", &a),
            ("`ipvsadm -Ln --stats --exact`", &b),
        ] {
            let (wall, user, sys) = summary(t);
            println!(
                "| {k} | {name} | {} / {} / {} | {} | {} |",
                wall.0, wall.1, wall.2, user, sys
            );
        }
        let ratio =
            median(a.iter().map(|t| t.0)) as f64 / median(b.iter().map(|t| t.0)).max(1) as f64;
        println!("| {k} | ratio of medians (wall) | {ratio:.2} | | |");
        vm.shutdown()?;
    }
    Ok(())
}

/// (wall, user, sys) in milliseconds of each run of A and of B, from `time -p` output.
type Runs = Vec<(u64, u64, u64)>;

fn parse_times(out: &str) -> Result<(Runs, Runs)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut current: Option<bool> = None;
    let mut t = (0, 0, 0);
    for line in out.lines() {
        let line = line.trim();
        match line {
            "A" => current = Some(true),
            "B" => current = Some(false),
            _ => {
                let Some((key, value)) = line.split_once(' ') else {
                    continue;
                };
                let ms = (value
                    .trim()
                    .parse::<f64>()
                    .with_context(|| format!("{line:?}"))?
                    * 1000.0)
                    .round() as u64;
                match key {
                    "real" => t.0 = ms,
                    "user" => t.1 = ms,
                    "sys" => {
                        t.2 = ms;
                        match current {
                            Some(true) => a.push(t),
                            Some(false) => b.push(t),
                            None => bail!("timing before a label"),
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if a.is_empty() || a.len() != b.len() {
        bail!("unbalanced runs ({} vs {}):\n{out}", a.len(), b.len());
    }
    Ok((a, b))
}

fn median(v: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = v.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn summary(runs: &Runs) -> ((u64, u64, u64), u64, u64) {
    let mut wall: Vec<u64> = runs.iter().map(|t| t.0).collect();
    wall.sort_unstable();
    (
        (wall[0], median(wall.iter().copied()), wall[wall.len() - 1]),
        median(runs.iter().map(|t| t.1)),
        median(runs.iter().map(|t| t.2)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_busybox_time_output() {
        let out = "A\nreal 0.52\nuser 0.10\nsys 0.40\nB\nreal 1.05\nuser 0.30\nsys 0.70\n";
        let (a, b) = parse_times(out).unwrap();
        assert_eq!(a, vec![(520, 100, 400)]);
        assert_eq!(b, vec![(1050, 300, 700)]);
        assert!(parse_times("A\nreal 0.5\nuser 0.1\nsys 0.1\n").is_err());
    }
}
