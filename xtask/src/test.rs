//! `cargo xtask test`: everything CI checks, in order, ending with one `N passed, N failed` line.
//!
//! Steps: prerequisites, `cargo fmt --check`, the probe build, `cargo clippy -D warnings`, unit
//! tests, the release build of the daemon and the in-VM tools, and the lab end-to-end tests on
//! both lab kernels. Each check step counts as one test; each `cargo test` contributes its own
//! counts. A failed step does not stop the later independent ones, so one run reports everything.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::build::{self, EbpfOpts, ebpf_object, root};

/// Options of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct Opts {
    /// Skip the lab end-to-end tests (no VM is booted).
    #[arg(long)]
    pub no_lab: bool,
    /// Only these lab kernels (e.g. `--kernel 6.1`); default both.
    #[arg(long = "kernel", value_name = "VERSION")]
    pub kernels: Vec<String>,
    /// Passed to the end-to-end test binary as a name filter.
    #[arg(long)]
    pub filter: Option<String>,
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    failures: Vec<String>,
}

impl Tally {
    fn step(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(name.to_string());
        }
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
fn cargo_test(tally: &mut Tally, name: &str, cmd: &mut Command) -> Result<()> {
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
    eprintln!(
        "==> {name}: {passed} passed, {failed} failed in {:.1?}",
        t.elapsed()
    );
    Ok(())
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
pub fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    crate::deps::ensure(false)?;
    if !opts.no_lab {
        crate::deps::ensure_lab_kernels()?;
    }
    let mut tally = Tally::default();

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
        cargo_test(
            &mut tally,
            "unit tests",
            cargo().args([
                "test",
                "--no-fail-fast",
                "--workspace",
                "--exclude",
                "ipvs-telemetry-e2e",
            ]),
        )?;
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
            let mut cmd = cargo();
            // --no-fail-fast: one failing test binary must not hide the results of the others.
            cmd.args([
                "test",
                "--no-fail-fast",
                "--release",
                "--package",
                "ipvs-telemetry-e2e",
                "--",
            ]);
            if let Some(f) = &opts.filter {
                cmd.arg(f);
            }
            if !opts.kernels.is_empty() {
                cmd.env("IPVS_LAB_KERNELS", opts.kernels.join(","));
            }
            cargo_test(&mut tally, "lab end-to-end tests", &mut cmd)?;
        }
    }

    eprintln!("\nxtask test finished in {:.0?}", started.elapsed());
    for f in &tally.failures {
        eprintln!("failed: {f}");
    }
    // The summary is the last line of the run (CI reads it).
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

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
