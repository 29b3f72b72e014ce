//! The `ipvs-telemetry` binary: parses flags and hands over to the library.

use clap::Parser;
use clap::error::ErrorKind;
use ipvs_telemetry::cli::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // clap's messages span several lines (tips, usage); operators get one.
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            let line = line.trim_start_matches("error: ");
            eprintln!("ipvs-telemetry: {line} (see --help)");
            std::process::exit(2);
        }
    };
    let code = match &cli.command {
        Some(Command::Snapshot(opts)) => {
            let opts = opts.clone();
            ipvs_telemetry::snapshot::run(&cli, &opts)
        }
        Some(Command::Serve) | None => ipvs_telemetry::serve::run(cli),
    };
    std::process::exit(code);
}
