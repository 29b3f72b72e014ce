//! `ipvs-telemetry serve`: the daemon's wiring of collection, eBPF, encoding and HTTP.
//!
//! One task collects every `--poll.interval` (the collector reads the namespaces
//! concurrently), asks the eBPF side for its series, and publishes one
//! [`Generation`](crate::metrics::Generation) through a watch channel; it encodes ahead the
//! formats scrapers asked for in the previous generation. Scrapes only read the latest
//! generation: they never touch netlink.
//!
//! Signals: SIGINT/SIGTERM shut down gracefully (exit 0); SIGHUP re-reads `--web.config.file`
//! and `--names.file` (an invalid file is logged and the previous one stays in force).
//!
//! Names join here, at the merged state: after each collection the name sources
//! ([`crate::names`]) name what it found, and the result travels in the same [`Inputs`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::Cli;
use crate::http::{self, Shared, WebConfig};
use crate::metrics::{BuildInfo, ErrorCounts, Format, Generation, Inputs, ProcessStats};
use crate::model::Snapshot;

/// Exit status: clean shutdown.
pub const EXIT_OK: i32 = 0;
/// Exit status: a runtime failure prevents serving.
pub const EXIT_RUNTIME: i32 = 1;
/// Exit status: bad flags or configuration file.
pub const EXIT_USAGE: i32 = 2;

/// Runs the daemon until SIGINT/SIGTERM; returns the process exit status.
pub fn run(cli: Cli) -> i32 {
    crate::logging::init(&cli.common);
    // Flag and file problems are exit status 2, before anything starts.
    for a in &cli.serve.listen_addresses {
        if let Err(e) = crate::cli::parse_listen_address(a) {
            eprintln!("ipvs-telemetry: --web.listen-address: {e}");
            return EXIT_USAGE;
        }
    }
    let web = match &cli.serve.web_config_file {
        Some(path) => match WebConfig::load(path) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("ipvs-telemetry: --web.config.file: {e}");
                return EXIT_USAGE;
            }
        },
        None => WebConfig::default(),
    };
    let names_file = match &cli.serve.names_file {
        Some(path) => match crate::names::file::FileSource::open(path) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                eprintln!("ipvs-telemetry: --names.file: {e}");
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
            eprintln!("ipvs-telemetry: cannot start the async runtime: {e}");
            return EXIT_RUNTIME;
        }
    };
    let code = runtime.block_on(daemon(cli, web, names_file));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Deadline of one namespace's collection: at least 10 s, so that a large table (10,000
/// services × 5 destinations take seconds on a slow or virtual machine) is never cut short
/// by a short `--poll.interval`; longer polls allow as long, up to a minute. A collection that
/// outlasts the poll interval only delays the next one.
fn netlink_timeout(poll: Duration) -> Duration {
    poll.clamp(Duration::from_secs(10), Duration::from_secs(60))
}

/// The names file shared by the collection loop (reload on change) and the SIGHUP handler.
type SharedFile = Arc<Mutex<crate::names::file::FileSource>>;

async fn daemon(cli: Cli, web: WebConfig, names_file: Option<SharedFile>) -> i32 {
    log_capabilities();
    let collector =
        match crate::netns::Collector::new(&cli.common, netlink_timeout(cli.serve.poll_interval)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ipvs-telemetry: {e}");
                return EXIT_USAGE;
            }
        };
    let listeners = match http::bind(&cli.serve.listen_addresses) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ipvs-telemetry: {e}");
            return EXIT_RUNTIME;
        }
    };
    let ebpf = match crate::ebpf::Ebpf::start(&cli.serve).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ipvs-telemetry: --ebpf on: {e}");
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
            eprintln!("ipvs-telemetry: cannot install signal handlers");
            return EXIT_RUNTIME;
        }
    };
    tracing::info!(
        version = crate::cli::VERSION,
        poll_interval = ?cli.serve.poll_interval,
        "starting ipvs-telemetry"
    );

    let (tx, rx) = watch::channel(None);
    let shared = Arc::new(Shared::new(
        rx,
        web,
        cli.serve.telemetry_path.clone(),
        cli.serve.max_requests,
    ));
    let sources = NameSources {
        file: names_file.clone(),
        docker: match &cli.serve.docker_host {
            crate::cli::DockerHost::Unix(socket) => Some(crate::names::docker::spawn(
                socket.clone(),
                cli.serve.docker_refresh_interval,
            )),
            crate::cli::DockerHost::Off => None,
        },
    };
    let collection = tokio::spawn(collect_loop(
        collector,
        ebpf,
        sources,
        cli.serve.poll_interval,
        tx,
    ));

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
    collection.abort();
    let _ = collection.await;
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
            shared.set_web(w);
            tracing::info!(file = %path.display(), "reloaded the web configuration");
        }
        Err(e) => tracing::error!(
            error = %e,
            "SIGHUP: the new web configuration is invalid, keeping the previous one"
        ),
    }
}

/// The name sources the collection loop asks after each collection.
struct NameSources {
    file: Option<SharedFile>,
    docker: Option<crate::names::docker::Handle>,
}

impl NameSources {
    /// The names of `snapshot` and the sources' state; the names file is read again first if
    /// it changed.
    fn resolve(&self, snapshot: &Snapshot) -> crate::names::NameState {
        let mut state = crate::names::NameState::default();
        let mut file = None;
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            f.reload_if_changed();
            state.file = Some(f.status());
            file = Some(f.names());
        }
        let docker = self.docker.as_ref().map(|h| h.latest());
        let docker_names = docker.as_ref().and_then(|p| p.names.clone());
        let mut sources: Vec<&dyn crate::names::Source> = Vec::new();
        if let Some(f) = &file {
            sources.push(&**f);
        }
        if let Some(d) = &docker_names {
            sources.push(&**d);
        }
        state.netns = crate::names::resolve(snapshot, &sources);
        if let Some(h) = &self.docker {
            // The Docker source works only while Docker's namespaces are collected: a host
            // without Swarm never hears of it.
            let o = crate::names::docker::observe(snapshot, &state.netns, docker_names.as_deref());
            h.observe(o);
            if o.active {
                state.docker = docker.and_then(|p| p.status);
            }
        }
        state
    }
}

async fn collect_loop(
    mut collector: crate::netns::Collector,
    ebpf: crate::ebpf::Ebpf,
    names: NameSources,
    interval: Duration,
    tx: watch::Sender<Option<Arc<Generation>>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut errors: ErrorCounts = BTreeMap::new();
    let mut last_state: HashMap<String, Option<String>> = HashMap::new();
    let build = BuildInfo::current();
    // When each variant was last asked for. Prometheus asks for OpenMetrics + gzip: have it
    // ready for the first scrape.
    let mut asked = AskedFor::default();
    asked.mark(&[(Format::OpenMetrics, true)], std::time::Instant::now());
    loop {
        ticker.tick().await;
        let snapshot = collector.collect().await;
        log_changes(&snapshot, &mut last_state);
        count_errors(&snapshot, &mut errors);
        let ebpf_snapshot = ebpf.snapshot(&snapshot);
        let names = Arc::new(names.resolve(&snapshot));
        let inputs = Inputs {
            snapshot: Arc::new(snapshot),
            ebpf: Arc::new(ebpf_snapshot),
            errors: errors.clone(),
            process: ProcessStats::read(),
            build,
            names,
        };
        let generation = Arc::new(Generation::new(inputs));
        // What scrapers asked of the generations being replaced (recently) is what this one
        // encodes ahead; nobody scraping means no encoding at all.
        let now = std::time::Instant::now();
        if let Some(old) = tx.borrow().as_ref() {
            asked.mark(&old.requested(), now);
        }
        let g = generation.clone();
        let w = asked.recent(now);
        let started = std::time::Instant::now();
        // Encoding 10,000 services takes a while: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            for (f, gz) in w {
                g.prepare(f, gz);
            }
        })
        .await;
        tracing::debug!(took = ?started.elapsed(), "encoded");
        tx.send_replace(Some(generation));
    }
}

/// A variant unasked for this long is no longer encoded ahead (longer than any sane scrape
/// interval).
const ASKED_MEMORY: Duration = Duration::from_secs(180);

/// When each encoding variant was last asked for.
#[derive(Debug, Default)]
struct AskedFor(Vec<((Format, bool), std::time::Instant)>);

impl AskedFor {
    fn mark(&mut self, variants: &[(Format, bool)], now: std::time::Instant) {
        for v in variants {
            match self.0.iter_mut().find(|(x, _)| x == v) {
                Some(e) => e.1 = now,
                None => self.0.push((*v, now)),
            }
        }
    }

    fn recent(&self, now: std::time::Instant) -> Vec<(Format, bool)> {
        self.0
            .iter()
            .filter(|(_, t)| now.duration_since(*t) < ASKED_MEMORY)
            .map(|(v, _)| *v)
            .collect()
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

/// Adds this collection's failures to the counters; namespaces gone are forgotten.
fn count_errors(snapshot: &Snapshot, errors: &mut ErrorCounts) {
    for ns in &snapshot.namespaces {
        if let Err(f) = &ns.ipvs {
            *errors
                .entry((ns.netns.name.clone(), f.reason.as_str().to_string()))
                .or_insert(0) += 1;
        }
    }
    errors.retain(|(name, _), _| snapshot.namespaces.iter().any(|n| &n.netns.name == name));
}

/// Logs a namespace's failure when it starts or changes, and its recovery: not every poll.
fn log_changes(snapshot: &Snapshot, last: &mut HashMap<String, Option<String>>) {
    for ns in &snapshot.namespaces {
        let now = ns.ipvs.as_ref().err().map(|f| f.message.clone());
        let before = last.insert(ns.netns.name.clone(), now.clone());
        match (before, now) {
            (None, None) => tracing::info!(netns = %ns.netns.name, "collecting namespace"),
            (Some(Some(_)), None) => {
                tracing::info!(netns = %ns.netns.name, "namespace readable again")
            }
            (b, Some(msg)) if b.as_ref().and_then(|x| x.as_ref()) != Some(&msg) => {
                tracing::warn!(netns = %ns.netns.name, error = %msg, "cannot read IPVS")
            }
            _ => {}
        }
    }
    last.retain(|name, _| snapshot.namespaces.iter().any(|n| &n.netns.name == name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::time::SystemTime;

    fn ns(name: &str, ok: bool) -> NamespaceSnapshot {
        NamespaceSnapshot {
            netns: NetnsId {
                name: name.into(),
                dev: 1,
                inode: 2,
            },
            ipvs: if ok {
                Ok(IpvsState {
                    info: Info::default(),
                    timeouts: Timeouts::default(),
                    services: vec![],
                })
            } else {
                Err(CollectFailure {
                    reason: ErrorReason::Timeout,
                    message: "timed out".into(),
                })
            },
            context: NetnsContext::default(),
            duration: Duration::ZERO,
            timestamp: SystemTime::now(),
        }
    }

    #[test]
    fn errors_accumulate_and_gone_namespaces_are_forgotten() {
        let mut e = ErrorCounts::new();
        let s = Snapshot {
            namespaces: vec![ns("a", false), ns("b", true)],
        };
        count_errors(&s, &mut e);
        count_errors(&s, &mut e);
        assert_eq!(e.get(&("a".into(), "timeout".into())), Some(&2));
        assert_eq!(e.len(), 1);
        count_errors(
            &Snapshot {
                namespaces: vec![ns("b", true)],
            },
            &mut e,
        );
        assert!(e.is_empty());
    }

    #[test]
    fn asked_variants_are_forgotten_after_a_while() {
        let t0 = std::time::Instant::now();
        let mut a = AskedFor::default();
        a.mark(&[(Format::OpenMetrics, true)], t0);
        a.mark(&[(Format::Text, false)], t0 + Duration::from_secs(100));
        assert_eq!(a.recent(t0 + Duration::from_secs(1)).len(), 2);
        assert_eq!(
            a.recent(t0 + Duration::from_secs(200)),
            vec![(Format::Text, false)]
        );
        a.mark(
            &[(Format::OpenMetrics, true)],
            t0 + Duration::from_secs(200),
        );
        assert_eq!(a.recent(t0 + Duration::from_secs(300)).len(), 1);
        assert!(a.recent(t0 + Duration::from_secs(1000)).is_empty());
    }

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
