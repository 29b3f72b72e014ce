//! `cargo xtask bench netlink`: one VM per kernel with 10,000 services × 5 destinations (created
//! at once with `ipvsadm -R`); times our collection next to `ipvsadm -Ln --stats --exact` on the
//! same services, in rounds of four (A, A1, S, B), and prints wall and CPU time (min / median /
//! max) as BENCHMARKS.md table rows.
//!
//! - A: one collection by the client (`netlink_collect` example: a fresh `Client`, no output),
//!   destination dumps spread over up to 4 sockets by the example itself (the daemon uses one);
//!   wall and CPU time measured in the process around the collection itself.
//! - A1: the same on one socket (`--sockets 1`): the daemon's collection.
//! - S: the whole `ipvs-telemetry snapshot --format table` process (ipvsadm's output, printed).
//! - B: the whole `ipvsadm -Ln --stats --exact` process.
//!
//! S and B are timed with busybox `time -p` (10 ms resolution). The host's load average is
//! printed before and after each kernel: the lab shares the host, and figures taken under load
//! are to be rerun.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipvs_lab::{Kernel, Vm, VmConfig};

/// Services and destinations per service of the netlink benchmark.
const SERVICES: usize = 10_000;
const DESTS: usize = 5;

/// The four timed commands, by label: what the table calls them.
const COMMANDS: [(&str, &str); 4] = [
    (
        "A",
        "A: collection, dumps over up to 4 sockets (the example's experiment)",
    ),
    (
        "A1",
        "A1: collection, `read_state` on 1 socket (the daemon's)",
    ),
    (
        "S",
        "S: `ipvs-telemetry snapshot --format table` (whole process)",
    ),
    ("B", "B: `ipvsadm -Ln --stats --exact` (whole process)"),
];

/// Samples the VM's CPU use over 2 s until under 10 % (at most 45 times); prints the last.
const SETTLE: &str = "for i in $(seq 1 45); do a=$(head -1 /proc/stat); sleep 2; \
    b=$(head -1 /proc/stat); busy=$(echo \"$a $b\" | busybox awk '{ \
      b1 = $2 + $3 + $4 + $7 + $8 + $9; t1 = b1 + $5 + $6; \
      b2 = $13 + $14 + $15 + $18 + $19 + $20; t2 = b2 + $16 + $17; \
      print int(100 * (b2 - b1) / (t2 - t1)) }'); \
    [ \"$busy\" -lt 10 ] && break; done; echo \"$busy% after $((i * 2)) s\"";

/// Options of `bench netlink`: `[--pairs N] [--kernel K]...`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut rounds = 10usize;
    let mut kernels = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pairs" | "--rounds" => {
                rounds = it
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds")?
            }
            "--kernel" => kernels.push(
                it.next()
                    .context("--kernel needs 6.1 or 6.12")?
                    .parse::<Kernel>()
                    .map_err(anyhow::Error::msg)?,
            ),
            other => bail!("unknown option {other:?} (known: --rounds N, --kernel K)"),
        }
    }
    if kernels.is_empty() {
        kernels = Kernel::all().to_vec();
    }
    let example = crate::bench::build_example("netlink_collect")?;
    println!(
        "| kernel | command | wall min / median / max (ms) | CPU median (ms) | user median (ms) | sys median (ms) |"
    );
    println!("|---|---|---|---|---|---|");
    for k in kernels {
        eprintln!("host load before kernel {k}: {}", host_load());
        let vm = Vm::boot(
            VmConfig::new(k)
                .with_daemon()
                .file(&example, "/usr/local/bin/netlink-collect"),
        )?;
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
        let cpus = vm.sh_ok("nproc")?;
        // Kernels >= 6.2 fold new services into their estimator kthreads gradually (and
        // calibrate them), which takes the VM's CPUs for a while after `ipvsadm -R`: wait until
        // the VM is mostly idle (or 90 s), then report how busy it still is.
        let busy = vm.sh_ok_timeout(SETTLE, Duration::from_secs(300))?;
        eprintln!("kernel {k}: VM CPU busy before the runs: {}", busy.trim());
        // Warm up each (page cache, first-use allocations), then rounds of A A1 S B.
        let script = format!(
            "set -e; netlink-collect >/dev/null; ipvs-telemetry snapshot --format table >/dev/null; \
             ipvsadm -Ln --stats --exact >/dev/null; \
             for i in $(seq 1 {rounds}); do \
               echo A; netlink-collect; \
               echo A1; netlink-collect --sockets 1; \
               echo S; busybox time -p ipvs-telemetry snapshot --format table 2>&1 >/dev/null; \
               echo B; busybox time -p ipvsadm -Ln --stats --exact 2>&1 >/dev/null; \
             done"
        );
        let out = vm.sh_ok_timeout(&script, Duration::from_secs(3600))?;
        vm.shutdown()?;
        let runs = parse_runs(&out)?;
        for (label, name) in COMMANDS {
            let t = runs
                .get(label)
                .with_context(|| format!("no runs of {label}:\n{out}"))?;
            let (wall, cpu, user, sys) = summary(t);
            println!(
                "| {k} | {name} | {} / {} / {} | {cpu} | {user} | {sys} |",
                wall.0, wall.1, wall.2
            );
        }
        let b = &runs["B"];
        for (label, what) in [("A", "A / B"), ("A1", "A1 / B"), ("S", "S / B")] {
            let a = &runs[label];
            let wall =
                median(a.iter().map(|t| t.0)) as f64 / median(b.iter().map(|t| t.0)).max(1) as f64;
            let cpu = median(a.iter().map(|t| t.1 + t.2)) as f64
                / median(b.iter().map(|t| t.1 + t.2)).max(1) as f64;
            println!("| {k} | ratio {what} of medians | wall {wall:.2} | CPU {cpu:.2} | | |");
        }
        eprintln!(
            "kernel {k}: {} vCPUs, {rounds} rounds; host load after: {}",
            cpus.trim(),
            host_load()
        );
    }
    Ok(())
}

/// The host's load averages (1, 5, 15 min).
fn host_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// (wall, user, sys) in milliseconds of each run, by command label.
type Runs = BTreeMap<String, Vec<(u64, u64, u64)>>;

/// Parses the labelled output: `netlink-collect` lines (`wall_ms=… user_ms=… sys_ms=…`) and
/// busybox `time -p` output (`real`, `user`, `sys` in seconds).
fn parse_runs(out: &str) -> Result<Runs> {
    let mut runs = Runs::new();
    let mut current: Option<String> = None;
    let mut t = (0, 0, 0);
    let ms = |v: &str, line: &str| -> Result<u64> {
        Ok(v.trim()
            .parse::<f64>()
            .with_context(|| format!("{line:?}"))?
            .round() as u64)
    };
    for line in out.lines() {
        let line = line.trim();
        if COMMANDS.iter().any(|(l, _)| *l == line) {
            current = Some(line.to_string());
            continue;
        }
        let label = || current.clone().context("timing before a label");
        if line.starts_with("run=") {
            let field = |key: &str| -> Result<u64> {
                let v = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .with_context(|| format!("no {key} in {line:?}"))?;
                ms(v, line)
            };
            let run = (field("wall_ms=")?, field("user_ms=")?, field("sys_ms=")?);
            runs.entry(label()?).or_default().push(run);
            continue;
        }
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let seconds = || -> Result<u64> {
            Ok((value
                .trim()
                .parse::<f64>()
                .with_context(|| format!("{line:?}"))?
                * 1000.0)
                .round() as u64)
        };
        match key {
            "real" => t.0 = seconds()?,
            "user" => t.1 = seconds()?,
            "sys" => {
                t.2 = seconds()?;
                runs.entry(label()?).or_default().push(t);
            }
            _ => {}
        }
    }
    let counts: Vec<usize> = runs.values().map(Vec::len).collect();
    if runs.len() != COMMANDS.len() || counts.iter().any(|&c| c == 0 || c != counts[0]) {
        bail!("unbalanced runs ({counts:?}):\n{out}");
    }
    Ok(runs)
}

fn median(v: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = v.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// ((wall min, median, max), CPU median, user median, sys median).
fn summary(runs: &[(u64, u64, u64)]) -> ((u64, u64, u64), u64, u64, u64) {
    let mut wall: Vec<u64> = runs.iter().map(|t| t.0).collect();
    wall.sort_unstable();
    (
        (wall[0], median(wall.iter().copied()), wall[wall.len() - 1]),
        median(runs.iter().map(|t| t.1 + t.2)),
        median(runs.iter().map(|t| t.1)),
        median(runs.iter().map(|t| t.2)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_collect_lines_and_busybox_time_output() {
        let out = "A\nrun=1 sockets=4 services=2 destinations=3 wall_ms=51.4 cpu_ms=60.0 \
                   user_ms=20.2 sys_ms=39.8\n\
                   A1\nrun=1 sockets=1 services=2 destinations=3 wall_ms=80.0 cpu_ms=70.0 \
                   user_ms=20.0 sys_ms=50.0\n\
                   S\nreal 0.52\nuser 0.10\nsys 0.40\nB\nreal 1.05\nuser 0.30\nsys 0.70\n";
        let runs = parse_runs(out).unwrap();
        assert_eq!(runs["A"], vec![(51, 20, 40)]);
        assert_eq!(runs["A1"], vec![(80, 20, 50)]);
        assert_eq!(runs["S"], vec![(520, 100, 400)]);
        assert_eq!(runs["B"], vec![(1050, 300, 700)]);
        // A command without runs, or a timing before any label, is an error.
        assert!(parse_runs("A\nreal 0.5\nuser 0.1\nsys 0.1\n").is_err());
        assert!(parse_runs("real 0.5\nuser 0.1\nsys 0.1\n").is_err());
        assert_eq!(summary(&runs["S"]), ((520, 520, 520), 500, 100, 400));
    }
}
