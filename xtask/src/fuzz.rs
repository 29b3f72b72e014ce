//! `cargo xtask fuzz`: every target of `fuzz/` for a bounded time, starting from its committed
//! seeds; `cargo xtask test` runs it for 30 s a target.
//!
//! Built as cargo-fuzz builds it (libFuzzer from `libfuzzer-sys`, SanitizerCoverage flags,
//! `--cfg fuzzing`, debug assertions and overflow checks), but with the stable toolchain and
//! without AddressSanitizer: the decoders have no `unsafe`, so a bug shows as a panic, and
//! cargo-fuzz itself need not be installed. `cargo +nightly fuzz run <target>` (cargo-fuzz,
//! with ASan) remains the way to fuzz for long. New inputs go to a scratch corpus under the
//! target directory, never into `fuzz/seeds/`; a crashing input is written to
//! `fuzz/artifacts/<target>/` and fails the run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::build::{ebpf_object, root, run};

/// The targets of `fuzz/Cargo.toml`.
pub(crate) const TARGETS: [&str; 2] = ["decode_reply", "decode_destination"];

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Options of `cargo xtask fuzz`.
#[derive(Debug, Args)]
pub(crate) struct Opts {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Only these targets (default: all).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
}

/// Builds the fuzz targets and runs each for `opts.seconds`.
pub(crate) fn run_targets(opts: &Opts) -> Result<()> {
    let targets: Vec<&str> = if opts.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in &opts.targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("no fuzz target {t:?} (targets: {})", TARGETS.join(", "));
            }
        }
        opts.targets.iter().map(String::as_str).collect()
    };
    let fuzz = root().join("fuzz");
    // As cargo-fuzz: coverage for libFuzzer, the `fuzzing` cfg, checks on. `--target` keeps
    // these flags off build scripts and proc macros.
    let rustflags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .current_dir(&fuzz)
        .args(["build", "--release", "--target", TRIPLE])
        .args(targets.iter().flat_map(|t| ["--bin", t]))
        .env("RUSTFLAGS", rustflags)
        .env("IPVS_TELEMETRY_EBPF_OBJECT", ebpf_object(true));
    run(&mut build)?;
    for t in targets {
        let bin = fuzz.join("target").join(TRIPLE).join("release").join(t);
        let scratch: PathBuf = fuzz.join("target/corpus").join(t);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let artifacts = fuzz.join("artifacts").join(t);
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        eprintln!("fuzzing {t} for {} s", opts.seconds);
        run(Command::new(&bin)
            .arg(format!("-max_total_time={}", opts.seconds))
            .arg("-rss_limit_mb=1024")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&scratch)
            .arg(fuzz.join("seeds").join(t)))
        .with_context(|| {
            format!(
                "fuzz target {t} failed (its input is in {})",
                artifacts.display()
            )
        })?;
    }
    Ok(())
}
