//! The `ipvs-telemetry` binary: parses flags, hands over to the library, and is the one place
//! that turns the outcome into an exit status (docs/cli.md, "Exit status").

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use ipvs_telemetry::cli::{Cli, Command};
use ipvs_telemetry::error::{EXIT_RUNTIME, Error};
use ipvs_telemetry::logging::{format_of_args, print_error};

fn main() -> ExitCode {
    match try_main() {
        Ok(true) => ExitCode::SUCCESS,
        // The command ran and said why (a namespace it could not read, stdout closed).
        Ok(false) => ExitCode::from(EXIT_RUNTIME),
        Err(e) => {
            // Printed in the `--log.format` asked for, even when the flags did not parse.
            let args: Vec<String> = std::env::args().collect();
            let env = std::env::var("IPVS_TELEMETRY_LOG_FORMAT").ok();
            print_error(format_of_args(&args, env.as_deref()), &e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Parses the flags and runs the command: `Ok(false)` when it ran but not everything went well.
fn try_main() -> Result<bool, Error> {
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
            return Err(Error::Flags(format!("{line} (see --help)")));
        }
    };
    let mut command = cli.into_command();
    command
        .common_mut()
        .resolve_env(|name| std::env::var(name).ok())
        .map_err(Error::Flags)?;
    match command {
        Command::Snapshot(cmd) => ipvs_telemetry::snapshot::run(&cmd),
        Command::Serve(cmd) => ipvs_telemetry::serve::run(cmd).map(|()| true),
        Command::Top(cmd) => ipvs_telemetry::top::run(&cmd).map(|()| true),
    }
}
