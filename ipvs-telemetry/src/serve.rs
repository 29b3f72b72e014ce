//! `ipvs-telemetry serve`: the daemon's wiring of collection, eBPF, encoding and HTTP.
//!
//! [`Telemetry`](crate::collect::Telemetry) decides when to collect (on demand, see
//! [`crate::collect`]); the HTTP server asks it for a collection fresh enough for each scrape and
//! streams the encoding.
//!
//! Signals: SIGINT/SIGTERM shut down gracefully (exit 0); SIGHUP re-reads `--web.config.file`
//! (an invalid file is logged and the previous configuration stays in force), as does a new
//! connection after the file or a certificate it names changed on disk; SIGHUP also re-reads
//! `--names.file` (an invalid file is logged and the previous one stays in force).
//!
//! Names join at the merged state: after each collection the name sources ([`crate::names`])
//! name what it found (see [`crate::collect`]), and the result travels in the same inputs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ServeCommand;
use crate::http::{self, Shared, WebConfig};
use crate::logging::print_error;

/// Exit status: clean shutdown.
pub const EXIT_OK: i32 = 0;
/// Exit status: a runtime failure prevents serving.
pub const EXIT_RUNTIME: i32 = 1;
/// Exit status: bad flags or configuration file.
pub const EXIT_USAGE: i32 = 2;

/// Runs the daemon until SIGINT/SIGTERM; returns the process exit status.
pub fn run(cli: ServeCommand) -> i32 {
    crate::logging::init(&cli.common);
    crate::memory::limit_arenas();
    let format = cli.common.log_format;
    // Flag and file problems are exit status 2, before anything starts.
    for a in &cli.serve.listen_addresses {
        if let Err(e) = crate::cli::parse_listen_address(a) {
            print_error(format, &format!("--web.listen-address: {e}"));
            return EXIT_USAGE;
        }
    }
    let web = match &cli.serve.web_config_file {
        Some(path) => match WebConfig::load(path) {
            Ok(w) => {
                w.log_warnings();
                w
            }
            Err(e) => {
                print_error(format, &format!("--web.config.file: {e}"));
                return EXIT_USAGE;
            }
        },
        None => WebConfig::default(),
    };
    let names_file = match &cli.serve.names_file {
        Some(path) => match crate::names::file::FileSource::open(path) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                print_error(format, &format!("--names.file: {e}"));
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ipvs-telemetry")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            print_error(format, &format!("cannot start the async runtime: {e}"));
            return EXIT_RUNTIME;
        }
    };
    let code = runtime.block_on(daemon(cli, web, names_file));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Deadline of one namespace's collection: at least 10 s, so that a large table (10,000
/// services × 5 destinations take seconds on a slow or virtual machine) is never cut short
/// by a short `--collection.max-age`; longer ages allow as long, up to a minute.
fn netlink_timeout(max_age: Duration) -> Duration {
    max_age.clamp(Duration::from_secs(10), Duration::from_secs(60))
}

/// The names file shared by the collections (reload on change) and the SIGHUP handler.
type SharedFile = Arc<Mutex<crate::names::file::FileSource>>;

async fn daemon(cli: ServeCommand, web: WebConfig, names_file: Option<SharedFile>) -> i32 {
    let format = cli.common.log_format;
    log_capabilities();
    let max_age = cli.serve.max_age();
    let options = match cli.metrics.export_options() {
        Ok(o) => o,
        Err(e) => {
            print_error(format, &e);
            return EXIT_USAGE;
        }
    };
    let collector = match crate::netns::Collector::new(&cli.common, netlink_timeout(max_age)) {
        Ok(c) => c,
        Err(e) => {
            print_error(format, &e.to_string());
            return EXIT_USAGE;
        }
    };
    let listeners = match http::bind(&cli.serve.listen_addresses) {
        Ok(l) => l,
        Err(e) => {
            print_error(format, &e.to_string());
            return EXIT_RUNTIME;
        }
    };
    let ebpf = match crate::ebpf::Ebpf::start(&cli.serve).await {
        Ok(e) => e,
        Err(e) => {
            print_error(format, &format!("--ebpf on: {e}"));
            return EXIT_RUNTIME;
        }
    };
    let (mut sigterm, mut sigint, mut sighup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            print_error(format, "cannot install signal handlers");
            return EXIT_RUNTIME;
        }
    };
    if cli.serve.poll_interval.is_some() {
        tracing::warn!(
            "--poll.interval (IPVS_TELEMETRY_POLL_INTERVAL) is deprecated: collections now follow \
             scrapes; it is read as --collection.max-age"
        );
    }
    tracing::info!(
        version = crate::cli::VERSION,
        collection_max_age = ?max_age,
        "starting ipvs-telemetry"
    );

    let names = crate::collect::NameSources {
        file: names_file.clone(),
        docker: match &cli.serve.docker_host {
            crate::cli::DockerHost::Unix(socket) => Some(crate::names::docker::spawn(
                socket.clone(),
                cli.serve.docker_refresh_interval,
            )),
            crate::cli::DockerHost::Off => None,
        },
    };
    let telemetry = crate::collect::Telemetry::new(collector, ebpf, names, max_age, options);
    telemetry.start();
    let shared = Arc::new(
        Shared::new(
            telemetry,
            web,
            cli.serve.telemetry_path.clone(),
            cli.serve.max_requests,
        )
        .with_health_without_auth(cli.serve.health_without_auth)
        .with_web_file(cli.serve.web_config_file.clone()),
    );

    let reload_shared = shared.clone();
    let web_path = cli.serve.web_config_file.clone();
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!("received SIGTERM, shutting down"); break; }
                _ = sigint.recv() => { tracing::info!("received SIGINT, shutting down"); break; }
                _ = sighup.recv() => {
                    reload(&reload_shared, web_path.as_deref());
                    if let Some(f) = &names_file {
                        f.lock().unwrap_or_else(|e| e.into_inner()).reload("SIGHUP");
                    }
                }
            }
        }
    };
    http::serve(listeners, shared, shutdown).await;
    tracing::info!("stopped");
    EXIT_OK
}

fn reload(shared: &Shared, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::debug!("SIGHUP: no --web.config.file to reload");
        return;
    };
    match WebConfig::load(path) {
        Ok(w) => {
            w.log_warnings();
            shared.set_web(w);
            tracing::info!(file = %path.display(), "reloaded the web configuration");
        }
        Err(e) => tracing::error!(
            error = %e,
            "SIGHUP: the new web configuration is invalid, keeping the previous one"
        ),
    }
}

/// Logs which of the capabilities the daemon uses it holds, and which not (what each one is
/// for: docs/deploy.md); a refusal later names the one it needed.
fn log_capabilities() {
    match crate::caps::CapSet::effective() {
        Some(set) if set.missing().is_empty() => {
            tracing::info!(held = %set.held(), "effective capabilities")
        }
        Some(set) => {
            tracing::info!(held = %set.held(), missing = %set.missing(), "effective capabilities")
        }
        None => tracing::info!("effective capabilities unknown: /proc/self/status unreadable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(
            netlink_timeout(Duration::from_millis(250)),
            Duration::from_secs(10)
        );
        assert_eq!(
            netlink_timeout(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            netlink_timeout(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
    }
}
