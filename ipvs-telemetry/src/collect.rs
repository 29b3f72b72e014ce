//! When to collect: on demand, never on a timer.
//!
//! A netlink collection of every namespace happens because a scrape needs one: a scrape is
//! answered from the latest collection when that collection began less than
//! `--collection.max-age` ago, and otherwise waits for a new one. Concurrent scrapes share the
//! collection in flight (at most one runs at a time), so the cost follows what is read: with no
//! scraper the daemon makes no netlink dump at all (the eBPF consumer still drains its ring).
//! One collection runs at start, so `/-/ready` and the namespace log lines mean what they did.
//!
//! Collections ahead of a steady scraper (`--collection.ahead`, on by default): a client whose
//! last intervals between scrapes agree ([`cadence`]) is expected again one interval after its
//! last scrape; a collection starts ahead of that time by the last collection's duration plus a
//! margin, so the scrape finds it finished and is answered at once. Such a collection counts
//! for the scrape it was begun for: it serves every scrape until `slack` (a tenth of the
//! interval, at least `--collection.max-age`) after the expected time, whatever its age. Each one
//! is set off by a scrape and predicts only the next: with no steady scraper nothing runs, and a
//! scraper that stops costs at most one collection.
//!
//! Each collection is planned once ([`Plans`]: the label text of every series, reused from the
//! previous collection where the table's shape did not change). The eBPF series are read at
//! scrape time, not at collection time: a scrape counts every event the probes saw up to its
//! start, whatever the collection's age.

mod cadence;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::ebpf::{Ebpf, Presence};
use crate::metrics::prerendered::Dropped;
use crate::metrics::{BuildInfo, ErrorCounts, ExportOptions, Inputs, Plans, ProcessStats};
use crate::model::{ErrorReason, Snapshot};
use crate::netns::Collector;

/// Longest a scrape waits for a new collection when an older one can be served.
pub const MAX_WAIT: Duration = Duration::from_secs(8);

/// The name sources asked after each collection (docs/names.md).
pub struct NameSources {
    /// `--names.file`, shared with the SIGHUP handler.
    pub file: Option<Arc<Mutex<crate::names::file::FileSource>>>,
    /// The Docker Engine API refresher (`--docker.host`).
    pub docker: Option<crate::names::docker::Handle>,
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

/// One finished collection, planned.
#[derive(Debug)]
pub struct Collected {
    /// The netlink collection of every namespace.
    pub snapshot: Arc<Snapshot>,
    /// The rendered label text of its series.
    pub plans: Arc<Plans>,
    /// Failed collections so far, including this one.
    pub errors: ErrorCounts,
    /// What the eBPF join needs of this collection.
    presence: Presence,
    /// The names of its services and destinations.
    pub names: Arc<crate::names::NameState>,
    /// When the collection began.
    pub started: Instant,
    /// When it was ready to serve.
    pub finished: Instant,
    /// For a collection begun ahead of an expected scrape: until when it serves scrapes.
    ahead_until: Option<Instant>,
}

/// Bookkeeping across collections.
#[derive(Default)]
struct History {
    errors: ErrorCounts,
    last_state: HashMap<String, Option<String>>,
    dropped: Dropped,
}

/// The daemon's telemetry: collections on demand plus the live eBPF side.
pub struct Telemetry {
    collector: tokio::sync::Mutex<Collector>,
    ebpf: Ebpf,
    names: Arc<NameSources>,
    max_age: Duration,
    ahead: bool,
    cadences: Mutex<cadence::Cadences>,
    precollected: AtomicU64,
    options: Arc<ExportOptions>,
    build: BuildInfo,
    latest: watch::Sender<Option<Arc<Collected>>>,
    running: AtomicBool,
    history: Mutex<History>,
}

/// Resets the in-flight flag when a collection task ends, whatever way it ends.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Telemetry {
    /// The telemetry of `collector` and `ebpf`; nothing is collected until [`Telemetry::start`]
    /// or the first scrape. `ahead`: learn steady scrapers' cadence and collect ahead of them.
    pub fn new(
        collector: Collector,
        ebpf: Ebpf,
        names: NameSources,
        max_age: Duration,
        ahead: bool,
        options: ExportOptions,
    ) -> Arc<Telemetry> {
        Arc::new(Telemetry {
            collector: tokio::sync::Mutex::new(collector),
            ebpf,
            names: Arc::new(names),
            max_age,
            ahead,
            cadences: Mutex::default(),
            precollected: AtomicU64::new(0),
            options: Arc::new(options),
            build: BuildInfo::current(),
            latest: watch::channel(None).0,
            running: AtomicBool::new(false),
            history: Mutex::new(History::default()),
        })
    }

    /// Starts the first collection.
    pub fn start(self: &Arc<Self>) {
        self.kick(None);
    }

    /// The eBPF side (the JSON API reads its windowed figures).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Whether a collection has finished.
    pub fn ready(&self) -> bool {
        self.latest.borrow().is_some()
    }

    /// A collection that began less than `--collection.max-age` ago, or that was begun ahead
    /// of this scrape, or that finished after this call: the latest one, or the one in flight,
    /// or a new one. `client`: the scraper's address, to learn its cadence (`None`: not a
    /// scrape to learn from).
    pub async fn collected(self: &Arc<Self>, client: Option<IpAddr>) -> Arc<Collected> {
        let asked = Instant::now();
        let expected = match client {
            Some(ip) if self.ahead => self
                .cadences
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(ip, asked)
                .map(|e| (ip, e)),
            _ => None,
        };
        let c = self.fresh(asked).await;
        if c.finished <= asked && c.ahead_until.is_some_and(|u| asked <= u) {
            self.precollected.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((ip, e)) = expected {
            self.schedule(ip, e, &c);
        }
        c
    }

    /// Scrapes served at once from a collection begun ahead of them, since start.
    pub fn precollected(&self) -> u64 {
        self.precollected.load(Ordering::Relaxed)
    }

    /// The collection a scrape asked at `asked` is served: see [`Telemetry::collected`]. When
    /// an older one exists, waits at most [`MAX_WAIT`] for a new one, then serves the older.
    async fn fresh(self: &Arc<Self>, asked: Instant) -> Arc<Collected> {
        let mut rx = self.latest.subscribe();
        let give_up = tokio::time::Instant::from_std(asked + MAX_WAIT);
        loop {
            let latest = rx.borrow_and_update().clone();
            if let Some(c) = &latest
                && (c.finished >= asked
                    || asked.saturating_duration_since(c.started) < self.max_age
                    || c.ahead_until
                        .is_some_and(|u| c.started <= asked && asked <= u))
            {
                return c.clone();
            }
            self.kick(None);
            let changed = match &latest {
                Some(_) => tokio::time::timeout_at(give_up, rx.changed()).await,
                None => Ok(rx.changed().await),
            };
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The sender lives as long as `self`: not reached.
                    std::future::pending::<()>().await;
                }
                Err(_) => {
                    if let Some(old) = latest {
                        tracing::debug!(
                            "collection slower than {MAX_WAIT:?}: serving the previous one"
                        );
                        return old;
                    }
                }
            }
        }
    }

    /// What one scrape encodes: a fresh enough collection, the eBPF series as of now and the
    /// process's own figures. CPU-bound (the eBPF join): call from a blocking thread.
    pub fn inputs(&self, c: &Collected) -> Arc<Inputs> {
        Arc::new(Inputs {
            snapshot: c.snapshot.clone(),
            ebpf: Arc::new(self.ebpf.snapshot_present(&c.presence)),
            errors: c.errors.clone(),
            process: ProcessStats::read(),
            precollected: self.precollected(),
            build: self.build,
            names: c.names.clone(),
        })
    }

    /// Starts a collection ahead of `client`'s expected scrape `e`, unless that client scrapes
    /// again first. `last`: the collection just served (its duration sets how far ahead).
    fn schedule(self: &Arc<Self>, client: IpAddr, e: cadence::Expected, last: &Collected) {
        let took = last.finished.saturating_duration_since(last.started);
        let lead = (took + took / 4 + Duration::from_millis(250)).min(e.interval * 3 / 4);
        let slack = (e.interval / 10).max(self.max_age);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((e.at - lead).into()).await;
            let again = me
                .cadences
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .scraped_since(client, e.after);
            let covered = me.latest.borrow().as_ref().is_some_and(|c| {
                c.ahead_until.is_some_and(|u| u >= e.at)
                    || e.at.saturating_duration_since(c.started) < me.max_age
            });
            if !again && !covered {
                tracing::debug!(%client, interval = ?e.interval, ?lead, "collecting ahead of a scrape");
                me.kick(Some(e.at + slack));
            }
        });
    }

    /// Starts a collection unless one is in flight; `ahead_until`: begun ahead of a scrape, it
    /// serves scrapes until then.
    fn kick(self: &Arc<Self>, ahead_until: Option<Instant>) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.collect_once(ahead_until).await });
    }

    async fn collect_once(self: Arc<Self>, ahead_until: Option<Instant>) {
        let running = Running(&self.running);
        let started = Instant::now();
        let snapshot = self.collector.lock().await.collect().await;
        let errors = {
            let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            log_changes(&snapshot, &mut h.last_state);
            count_errors(&snapshot, &mut h.errors);
            h.errors.clone()
        };
        let snapshot = Arc::new(snapshot);
        let previous = self.latest.borrow().clone();
        let options = self.options.clone();
        let s = snapshot.clone();
        let sources = self.names.clone();
        // Rendering the label text of a large table takes a while, and the names file may be
        // read again: off the async workers.
        let planned = tokio::task::spawn_blocking(move || {
            let names = Arc::new(sources.resolve(&s));
            let plans = Plans::new(s, options, previous.as_ref().map(|c| &*c.plans));
            (plans, names)
        })
        .await;
        let (plans, names) = match planned {
            Ok((p, n)) => (Arc::new(p), n),
            Err(e) => {
                tracing::error!(error = %e, "planning the exposition failed");
                return;
            }
        };
        self.log_dropped(plans.dropped);
        let presence = self.ebpf.presence(&snapshot);
        tracing::debug!(
            took = ?started.elapsed(),
            label_bytes = plans.bytes(),
            "collected"
        );
        let collected = Arc::new(Collected {
            snapshot,
            plans,
            errors,
            presence,
            names,
            started,
            finished: Instant::now(),
            ahead_until,
        });
        // Clear the flag before publishing, so that a scrape that finds this collection too old
        // starts the next one rather than waiting for a collection nobody runs.
        drop(running);
        // The previous collection goes now (unless a scrape still holds it): hand its memory
        // back rather than keep the peak.
        self.latest.send_replace(Some(collected));
        let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
    }

    /// Logs when the series cap starts or stops dropping, or drops a different amount.
    fn log_dropped(&self, now: Dropped) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.dropped == now {
            return;
        }
        if now == Dropped::default() {
            tracing::info!("--metrics.max-series: every series fits again");
        } else {
            tracing::warn!(
                max_series = self.options.max_series,
                services_without_destination_series = now.destination_groups,
                destination_series_dropped = now.destination_series,
                services_dropped = now.services,
                "--metrics.max-series: leaving series out, from the end of the namespace and \
                 service order (see ipvs_telemetry_series_dropped)"
            );
        }
        h.dropped = now;
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

/// What [`log_changes`] says about a namespace where the ip_vs module is not loaded: a state
/// (`ipvs_up 0`, `reason="module_not_loaded"`, no alert), not a failure.
const NOT_LOADED_HINT: &str = "ip_vs module not loaded in this namespace: nothing to collect \
     until it is (ipvs_up 0, not an error); whatever creates IPVS services loads it (ipvsadm, \
     keepalived, kube-proxy, Docker), or `modprobe ip_vs`";

/// Logs a namespace's failure when it starts or changes, and its recovery: not every collection.
/// A namespace without the ip_vs module is an info line with a hint, once.
fn log_changes(snapshot: &Snapshot, last: &mut HashMap<String, Option<String>>) {
    for change in changes(snapshot, last) {
        match change {
            Change::Collecting(netns) => tracing::info!(%netns, "collecting namespace"),
            Change::Readable(netns) => tracing::info!(%netns, "namespace readable again"),
            Change::NotLoaded(netns) => tracing::info!(%netns, "{NOT_LOADED_HINT}"),
            Change::Failing(netns, error) => tracing::warn!(%netns, %error, "cannot read IPVS"),
        }
    }
}

/// A namespace's collection outcome that changed since the previous collection.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Read for the first time.
    Collecting(String),
    /// Read again after a failure.
    Readable(String),
    /// The ip_vs module is not loaded there (a state).
    NotLoaded(String),
    /// A failure started or changed: the message.
    Failing(String, String),
}

/// The changes of `snapshot` against `last` (each namespace's last failure message), which it
/// updates; namespaces gone are forgotten.
fn changes(snapshot: &Snapshot, last: &mut HashMap<String, Option<String>>) -> Vec<Change> {
    let mut out = Vec::new();
    for ns in &snapshot.namespaces {
        let name = ns.netns.name.clone();
        let now = ns.ipvs.as_ref().err().map(|f| f.message.clone());
        let before = last.insert(name.clone(), now.clone());
        let changed = before.as_ref().and_then(|x| x.as_ref()) != now.as_ref();
        match (&ns.ipvs, before) {
            (Ok(_), None) => out.push(Change::Collecting(name)),
            (Ok(_), Some(Some(_))) => out.push(Change::Readable(name)),
            (Err(f), _) if changed && f.reason == ErrorReason::ModuleNotLoaded => {
                out.push(Change::NotLoaded(name))
            }
            (Err(f), _) if changed => out.push(Change::Failing(name, f.message.clone())),
            _ => {}
        }
    }
    last.retain(|name, _| snapshot.namespaces.iter().any(|n| &n.netns.name == name));
    out
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

    /// A namespace without ip_vs is said once, as a state; a real failure after it is a
    /// failure; recovery is said.
    #[test]
    fn module_not_loaded_is_said_once_as_a_state() {
        let not_loaded = |name: &str| {
            let mut n = ns(name, false);
            n.ipvs = Err(CollectFailure {
                reason: ErrorReason::ModuleNotLoaded,
                message: "ip_vs module not loaded".into(),
            });
            n
        };
        let snap = |n: Vec<NamespaceSnapshot>| Snapshot { namespaces: n };
        let mut last = HashMap::new();
        assert_eq!(
            changes(&snap(vec![not_loaded("cp"), ns("b", true)]), &mut last),
            [
                Change::NotLoaded("cp".into()),
                Change::Collecting("b".into())
            ]
        );
        assert_eq!(changes(&snap(vec![not_loaded("cp")]), &mut last), []);
        assert_eq!(
            changes(&snap(vec![ns("cp", false)]), &mut last),
            [Change::Failing("cp".into(), "timed out".into())]
        );
        assert_eq!(changes(&snap(vec![ns("cp", false)]), &mut last), []);
        assert_eq!(
            changes(&snap(vec![ns("cp", true)]), &mut last),
            [Change::Readable("cp".into())]
        );
    }
}
