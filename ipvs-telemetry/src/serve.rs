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
use crate::error::Error;
use crate::http::{self, Shared, WebConfig};

/// Runs the daemon until SIGINT/SIGTERM. `Err` when it could not start (bad flags or files,
/// the listen address taken, `--ebpf on` without probes): `main.rs` prints it and picks the exit
/// status ([`Error::exit_code`](crate::error::Error::exit_code)).
pub fn run(cli: ServeCommand) -> Result<(), Error> {
    crate::logging::init(&cli.common);
    crate::memory::limit_arenas();
    // Flag and file problems come first, before anything starts.
    for a in &cli.serve.listen_addresses {
        crate::cli::parse_listen_address(a)
            .map_err(|e| Error::Flags(format!("--web.listen-address: {e}")))?;
    }
    let web = match &cli.serve.web_config_file {
        Some(path) => {
            let w = WebConfig::load(path).map_err(Error::WebConfig)?;
            w.log_warnings();
            w
        }
        None => WebConfig::default(),
    };
    let names_file = match &cli.serve.names_file {
        Some(path) => Some(Arc::new(Mutex::new(
            crate::names::file::FileSource::open(path).map_err(Error::NamesFile)?,
        ))),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ipvs-telemetry")
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(daemon(cli, web, names_file));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Deadline of one namespace's collection: `--collection.timeout` when given, else at least
/// 10 s, so that a large table (10,000 services × 5 destinations take seconds on a slow or
/// virtual machine) is never cut short by a short `--collection.max-age`; longer ages allow as
/// long, up to a minute.
fn netlink_timeout(max_age: Duration, explicit: Option<Duration>) -> Duration {
    explicit.unwrap_or_else(|| max_age.clamp(Duration::from_secs(10), Duration::from_secs(60)))
}

/// The names file shared by the collections (reload on change) and the SIGHUP handler.
type SharedFile = Arc<Mutex<crate::names::file::FileSource>>;

async fn daemon(
    cli: ServeCommand,
    web: WebConfig,
    names_file: Option<SharedFile>,
) -> Result<(), Error> {
    log_capabilities();
    let max_age = cli.serve.max_age();
    let options = cli.metrics.export_options().map_err(Error::Flags)?;
    let collector = crate::netns::Collector::new(
        &cli.common,
        netlink_timeout(max_age, cli.serve.collection_timeout),
    )?;
    let listeners = http::bind(&cli.serve.listen_addresses)?;
    let ebpf = crate::ebpf::Ebpf::start(&cli.serve)
        .await
        .map_err(Error::Ebpf)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(Error::Signals)?;
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
    let telemetry = crate::collect::Telemetry::new(
        collector,
        ebpf,
        names,
        max_age,
        cli.serve.collection_ahead,
        options,
    );
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
    Ok(())
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
            netlink_timeout(Duration::from_millis(250), None),
            Duration::from_secs(10)
        );
        assert_eq!(
            netlink_timeout(Duration::from_secs(30), None),
            Duration::from_secs(30)
        );
        assert_eq!(
            netlink_timeout(Duration::from_secs(600), None),
            Duration::from_secs(60)
        );
        assert_eq!(
            netlink_timeout(Duration::from_secs(1), Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
    }
}
