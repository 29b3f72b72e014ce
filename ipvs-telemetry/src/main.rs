//! The `ipvs-telemetry` binary: parses flags and hands over to the library.

use clap::Parser;
use clap::error::ErrorKind;
use ipvs_telemetry::cli::{Cli, Command};
use ipvs_telemetry::logging::{format_of_args, print_error};

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
            let args: Vec<String> = std::env::args().collect();
            let env = std::env::var("IPVS_TELEMETRY_LOG_FORMAT").ok();
            let format = format_of_args(&args, env.as_deref());
            print_error(format, &format!("{line} (see --help)"));
            std::process::exit(2);
        }
    };
    let mut command = cli.into_command();
    if let Err(e) = command
        .common_mut()
        .resolve_env(|name| std::env::var(name).ok())
    {
        print_error(command.common().log_format, &e);
        std::process::exit(2);
    }
    let code = match command {
        Command::Snapshot(cmd) => ipvs_telemetry::snapshot::run(&cmd),
        Command::Serve(cmd) => ipvs_telemetry::serve::run(cmd),
        Command::Top(cmd) => ipvs_telemetry::top::run(&cmd),
    };
    std::process::exit(code);
}
