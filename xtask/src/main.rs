//! `cargo xtask`: the project's automation. Each subcommand lives in its own module.

// Every dependency of the package is used by this crate (see the workspace lints).
#![warn(unused_crate_dependencies)]

use clap::{Parser, Subcommand};

mod bench;
mod bench_ebpf;
mod bench_netlink;
mod bench_netns;
mod bench_scale;
mod bench_scrape;
mod build;
mod deps;
mod fuzz;
mod lab;
mod run;
mod soak;
mod test;

#[derive(Parser)]
#[command(name = "xtask", about = "ipvs-telemetry project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check and install every prerequisite (toolchains, Debian packages, bpf-linker, lab kernels).
    Deps(deps::Opts),
    /// Build the eBPF probes (nightly, bpf-linker).
    BuildEbpf(build::EbpfOpts),
    /// Build the probes, then the daemon.
    Build(build::BuildOpts),
    /// Build and run the daemon on this host (via sudo when not root).
    Run(run::Opts),
    /// Boot the demo lab: real IPVS kernel in QEMU with services, traffic and the daemon.
    Lab(lab::Opts),
    /// fmt, clippy, unit tests, probe build and the lab end-to-end tests on both kernels.
    Test(test::Opts),
    /// Benchmarks (figures go to BENCHMARKS.md).
    Bench(bench::Opts),
    /// Run the fuzz targets of fuzz/ for a bounded time from their seeds.
    Fuzz(fuzz::Opts),
    /// The soak and fault-injection suite for N minutes (figures go to RELIABILITY.md).
    Soak(soak::Opts),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Deps(o) => deps::run(&o),
        Cmd::BuildEbpf(o) => build::build_ebpf(&o),
        Cmd::Build(o) => build::build(&o),
        Cmd::Run(o) => run::run(&o),
        Cmd::Lab(o) => lab::run(&o),
        Cmd::Test(o) => test::run(&o),
        Cmd::Bench(o) => bench::run(&o),
        Cmd::Fuzz(o) => fuzz::run_targets(&o),
        Cmd::Soak(o) => soak::run(&o),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
