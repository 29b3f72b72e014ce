//! `cargo xtask test`: everything CI checks, in order, ending with one
//! `N passed, N failed, N skipped` line.
//!
//! Steps: prerequisites, `cargo fmt --check`, the probe build, `cargo clippy -D warnings`, unit
//! tests, the fuzz targets (30 s each, `cargo xtask fuzz`), the release build of the daemon and
//! the in-VM tools, and the lab end-to-end tests on both lab kernels. Each check step counts as one test; each `cargo test` contributes its own
//! counts. A failed step does not stop the later independent ones, so one run reports everything.
//!
//! Every test must run: `IPVS_LAB_REQUIRED=1` turns a missing prerequisite (the lab, a tool such
//! as promtool or curl, root, a fixture; `ipvs_lab::skip`) into a failure naming it. With
//! `--allow-skips` (a machine without them) such tests skip instead; each skip is recorded in
//! `IPVS_TEST_SKIP_LOG` and counted as skipped, not passed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::build::{self, EbpfOpts, ebpf_object, root};

/// Options of `cargo xtask test`.
#[derive(Debug, Args)]
pub(crate) struct Opts {
    /// Skip the lab end-to-end tests (no VM is booted).
    #[arg(long)]
    pub no_lab: bool,
    /// Only these lab kernels (e.g. `--kernel 6.1`); default both.
    #[arg(long = "kernel", value_name = "VERSION")]
    pub kernels: Vec<String>,
    /// Passed to the end-to-end test binary as a name filter.
    #[arg(long)]
    pub filter: Option<String>,
    /// Let tests whose prerequisites are missing (a tool, root, the lab) skip, counted in the
    /// summary, instead of failing (CI never sets this).
    #[arg(long)]
    pub allow_skips: bool,
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
    failures: Vec<String>,
}

impl Tally {
    /// Moves the skips recorded in the skip log since the last call from passed to skipped
    /// (libtest counts a test that returned early as passed).
    fn take_skips(&mut self, log: &SkipLog) -> u64 {
        let new = log.take();
        self.skipped += new;
        self.passed = self.passed.saturating_sub(new);
        new
    }

    fn step(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(name.to_string());
        }
    }
}

/// The file tests append `skipped <test>: <why>` lines to (`IPVS_TEST_SKIP_LOG`).
struct SkipLog {
    path: std::path::PathBuf,
    seen: std::sync::atomic::AtomicU64,
}

impl SkipLog {
    /// A fresh (removed) log at `path`.
    fn new(path: std::path::PathBuf) -> Result<SkipLog> {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
        Ok(SkipLog {
            path,
            seen: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The skips recorded since the last call, each printed.
    fn take(&self) -> u64 {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let seen = self.seen.load(std::sync::atomic::Ordering::Relaxed) as usize;
        let new = &lines[seen.min(lines.len())..];
        for l in new {
            eprintln!("{l}");
        }
        self.seen
            .store(lines.len() as u64, std::sync::atomic::Ordering::Relaxed);
        new.len() as u64
    }
}

/// Sets the switches of the tests' prerequisites (`ipvs_lab::skip`) on `cmd`.
fn prerequisites_env(cmd: &mut Command, opts: &Opts, log: &SkipLog) {
    cmd.env("IPVS_TEST_SKIP_LOG", &log.path);
    if opts.allow_skips {
        cmd.env_remove("IPVS_LAB_REQUIRED");
    } else {
        cmd.env("IPVS_LAB_REQUIRED", "1");
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c.env("IPVS_TELEMETRY_EBPF_OBJECT", ebpf_object(true));
    c
}

/// Runs a check step; its output goes straight to the terminal.
fn check(tally: &mut Tally, name: &str, cmd: &mut Command) {
    eprintln!("\n==> {name}");
    let t = Instant::now();
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    eprintln!(
        "==> {name}: {} in {:.1?}",
        if ok { "ok" } else { "FAILED" },
        t.elapsed()
    );
    tally.step(name, ok);
}

/// Runs `cargo test ...`, echoing its output and adding up its `test result:` lines.
fn cargo_test(tally: &mut Tally, log: &SkipLog, name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("\n==> {name}");
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        println!("{line}");
        if let Some((p, f)) = parse_result_line(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    // A build failure or a crashed test binary reports no result line: count it as a failure.
    if !status.success() && failed == 0 {
        failed += 1;
        tally.failures.push(format!("{name} (exit {status})"));
    } else if failed > 0 {
        tally.failures.push(format!("{name} ({failed} failed)"));
    }
    tally.passed += passed;
    tally.failed += failed;
    let skipped = tally.take_skips(log);
    eprintln!(
        "==> {name}: {} passed, {failed} failed, {skipped} skipped in {:.1?}",
        passed.saturating_sub(skipped),
        t.elapsed()
    );
    Ok(())
}

/// Builds the end-to-end test binaries and runs them as a pool of [`LAB_JOBS`] processes,
/// longest first, so the machine's VM slots (`IPVS_LAB_MAX_VMS`) stay busy while short binaries
/// come and go; `cargo test` would run the binaries one after another. Each binary's output is
/// printed in one piece when it ends.
fn lab_tests(tally: &mut Tally, opts: &Opts, log: &SkipLog) -> Result<()> {
    let name = "lab end-to-end tests";
    eprintln!("\n==> {name}");
    let t = Instant::now();
    let out = cargo()
        .args([
            "test",
            "--release",
            "--package",
            "ipvs-telemetry-e2e",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("could not start cargo")?;
    if !out.status.success() {
        tally.failed += 1;
        tally.failures.push(format!("{name} (build failed)"));
        return Ok(());
    }
    let mut bins = test_executables(&String::from_utf8_lossy(&out.stdout));
    bins.sort_by_key(|b| std::cmp::Reverse(expected_weight(b)));
    let (mut passed, mut failed) = (0u64, 0u64);
    let queue = std::sync::Mutex::new(bins.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..LAB_JOBS {
            scope.spawn(|| {
                loop {
                    let Some(bin) = queue.lock().map(|mut q| q.next()).ok().flatten() else {
                        return;
                    };
                    let started = Instant::now();
                    let mut cmd = Command::new(&bin);
                    // deps made sure the lab can run: a test that finds it unusable fails
                    // instead of skipping (unless --allow-skips).
                    cmd.current_dir(root().join("tests"))
                        .env("IPVS_TELEMETRY_EBPF_OBJECT", ebpf_object(true));
                    prerequisites_env(&mut cmd, opts, log);
                    if let Some(f) = &opts.filter {
                        cmd.arg(f);
                    }
                    if !opts.kernels.is_empty() {
                        cmd.env("IPVS_LAB_KERNELS", opts.kernels.join(","));
                    }
                    let out = cmd.output();
                    let short = bin.file_name().map(|n| n.to_string_lossy().into_owned());
                    let short = short.unwrap_or_default();
                    let (ok, text) = match out {
                        Ok(o) => (
                            o.status.success(),
                            format!(
                                "{}{}",
                                String::from_utf8_lossy(&o.stdout),
                                String::from_utf8_lossy(&o.stderr)
                            ),
                        ),
                        Err(e) => (false, format!("could not start {}: {e}", bin.display())),
                    };
                    let (p, f) = text
                        .lines()
                        .filter_map(parse_result_line)
                        .fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
                    println!(
                        "\n--- {short} ({} passed, {} failed, {:.0?})\n{text}",
                        p,
                        f,
                        started.elapsed()
                    );
                    if let Ok(mut r) = results.lock() {
                        r.push((short, ok, p, f));
                    }
                }
            });
        }
    });
    for (bin, ok, p, f) in results.into_inner().unwrap_or_default() {
        passed += p;
        failed += f;
        if f > 0 {
            tally.failures.push(format!("{name}: {bin} ({f} failed)"));
        } else if !ok {
            // A crashed binary reports no result line: count it as one failure.
            failed += 1;
            tally
                .failures
                .push(format!("{name}: {bin} (exited without a result)"));
        }
    }
    tally.passed += passed;
    tally.failed += failed;
    let skipped = tally.take_skips(log);
    eprintln!(
        "==> {name}: {} passed, {failed} failed, {skipped} skipped in {:.1?}",
        passed.saturating_sub(skipped),
        t.elapsed()
    );
    Ok(())
}

/// End-to-end test binaries run at once. At most `IPVS_LAB_MAX_VMS` VMs run machine-wide
/// whatever this is; a third binary makes sure a slot freed by one is taken at once.
const LAB_JOBS: usize = 3;

/// The test executables of `cargo test --no-run --message-format=json` output.
fn test_executables(json_lines: &str) -> Vec<std::path::PathBuf> {
    json_lines
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"test\":true"))
        .filter_map(|l| {
            let rest = &l[l.find("\"executable\":\"")? + "\"executable\":\"".len()..];
            Some(std::path::PathBuf::from(&rest[..rest.find('"')?]))
        })
        .collect()
}

/// Rough relative run time of a test binary (its file name starts with the test's name), so
/// the long ones start first.
fn expected_weight(bin: &std::path::Path) -> u32 {
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    const WEIGHTS: &[(&str, u32)] = &[
        ("swarm-", 10),
        ("ebpf-", 9),
        ("daemon-", 8),
        ("dashboard-", 7),
        ("capabilities-", 6),
        ("scale-", 6),
        ("netns-", 5),
        ("latency-", 5),
        ("native-", 4),
        ("netlink-", 4),
        ("names-", 4),
        ("lab-", 3),
        ("soak-", 11),
        ("ops-", 2),
    ];
    WEIGHTS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, w)| *w)
        .unwrap_or(1)
}

/// Parses libtest's `test result: ok. 3 passed; 1 failed; ...`.
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let num = |key: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .strip_suffix(key)
                    .map(|n| n.trim().trim_start_matches(|c: char| !c.is_ascii_digit()))
            })
            .and_then(|n| n.parse().ok())
    };
    Some((num(" passed")?, num(" failed")?))
}

/// Runs every check and prints the summary line; fails when anything failed.
pub(crate) fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    crate::deps::ensure(false)?;
    if !opts.no_lab {
        crate::deps::ensure_lab_kernels()?;
    }
    let mut tally = Tally::default();
    let log = SkipLog::new(ipvs_lab::paths::target_dir().join("xtask-test-skips.log"))?;

    check(
        &mut tally,
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    );
    check(
        &mut tally,
        "cargo fmt --check (probes)",
        Command::new("rustup")
            .current_dir(root().join("ipvs-telemetry-ebpf"))
            .args([
                "run",
                &crate::deps::nightly(),
                "cargo",
                "fmt",
                "--",
                "--check",
            ])
            .env_remove("RUSTUP_TOOLCHAIN"),
    );

    eprintln!("\n==> probe build (cargo xtask build-ebpf --release)");
    let probes = build::build_ebpf(&EbpfOpts { release: true });
    if let Err(e) = &probes {
        eprintln!("{e:#}");
    }
    tally.step("probe build", probes.is_ok());

    if probes.is_ok() {
        check(
            &mut tally,
            "cargo clippy -D warnings",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        );
        let mut unit = cargo();
        unit.args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "ipvs-telemetry-e2e",
        ]);
        prerequisites_env(&mut unit, opts, &log);
        cargo_test(&mut tally, &log, "unit tests", &mut unit)?;
        eprintln!("\n==> fuzz targets, 30 s each (cargo xtask fuzz)");
        let t = Instant::now();
        let fuzzed = crate::fuzz::run_targets(&crate::fuzz::Opts {
            seconds: 30,
            targets: Vec::new(),
        });
        if let Err(e) = &fuzzed {
            eprintln!("{e:#}");
        }
        eprintln!(
            "==> fuzz targets: {} in {:.1?}",
            if fuzzed.is_ok() { "ok" } else { "FAILED" },
            t.elapsed()
        );
        tally.step("fuzz targets", fuzzed.is_ok());
        if !opts.no_lab {
            check(
                &mut tally,
                "release build (daemon, lab tools)",
                cargo().args([
                    "build",
                    "--release",
                    "--package",
                    "ipvs-telemetry",
                    "--package",
                    "ipvs-lab-tools",
                ]),
            );
            lab_tests(&mut tally, opts, &log)?;
        }
    }

    eprintln!("\nxtask test finished in {:.0?}", started.elapsed());
    for f in &tally.failures {
        eprintln!("failed: {f}");
    }
    // The summary is the last line of the run (CI reads it).
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    if tally.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

    #[test]
    fn executables_of_cargo_json() {
        let json = concat!(
            r#"{"reason":"compiler-artifact","package_id":"x","profile":{"opt_level":"3","test":true},"executable":"/t/release/deps/swarm-1234"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"y","profile":{"opt_level":"3","test":false},"executable":null}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        let bins = super::test_executables(json);
        assert_eq!(
            bins,
            vec![std::path::PathBuf::from("/t/release/deps/swarm-1234")]
        );
        assert!(super::expected_weight(&bins[0]) > super::expected_weight("/t/ops-9".as_ref()));
    }

    /// Skips recorded by tests move from passed to skipped, each counted once.
    #[test]
    fn skips_are_taken_from_passed() {
        let path = std::env::temp_dir().join(format!("xtask-skips-{}", std::process::id()));
        let log = super::SkipLog::new(path).unwrap();
        let mut tally = super::Tally {
            passed: 5,
            ..Default::default()
        };
        std::fs::write(&log.path, "skipped a: x\nskipped b: y\n").unwrap();
        assert_eq!(tally.take_skips(&log), 2);
        assert_eq!(tally.take_skips(&log), 0);
        assert_eq!((tally.passed, tally.skipped), (3, 2));
        let _ = std::fs::remove_file(&log.path);
    }

    #[test]
    fn result_lines() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            parse_result_line(
                "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((3, 2))
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
