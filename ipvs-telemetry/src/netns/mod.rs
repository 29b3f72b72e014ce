//! Network namespace selection and concurrent per-namespace collection.
//!
//! Each collection rescans the `--netns` files and `--netns.discover` directories
//! ([`select`](self::select)), keeps one worker thread per namespace identity (device + inode of
//! the namespace file) — started when a namespace appears, dropped when it disappears or its
//! file is re-created with a new inode — and asks every worker for one collection.
//!
//! Concurrency: at most [`concurrency`] namespaces are read at once (twice the CPUs, between 4
//! and 16): reads are short kernel-bound dumps, so more in flight would only contend for the
//! same CPUs and netlink locks. Each namespace has its own timeout counted from the moment its
//! read starts; a namespace that exceeds it gives its slot back, reports `ipvs_up 0` with reason
//! `timeout`, and reports `timeout` again without being asked while its thread is still stuck, so
//! it never holds up the others.
//!
//! This module is the only place that calls `setns` (in [`worker`]).

mod mangle;
mod select;
mod worker;

#[cfg(test)]
mod host_tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tracing::{debug, warn};

pub use self::select::{Identity, NameFilter};
use self::select::{Kind, ScanConfig, Target};
use self::worker::{DeviceFilter, Unavailable, Worker, WorkerConfig};
use crate::cli::CommonOpts;
use crate::model::{
    CollectFailure, ErrorReason, NamespaceSnapshot, NetnsContext, NetnsId, Snapshot,
};

/// Extra time the collector waits beyond the per-namespace timeout, so that a read that gives
/// up on its own timeout reports its own, more precise, error.
const GRACE: Duration = Duration::from_millis(250);

/// How many namespaces are read at the same time.
pub fn concurrency() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cpus * 2).clamp(4, 16)
}

/// Why the [`Collector`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectorError {
    /// The daemon's own network namespace (`/proc/thread-self/ns/net`, else
    /// `/proc/self/ns/net`) could not be identified, so the host namespace cannot be told apart
    /// from the others.
    #[error("cannot stat the daemon's network namespace: {source}")]
    HostNamespace {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Collects every selected namespace.
pub struct Collector {
    scan: Arc<ScanConfig>,
    config: Arc<WorkerConfig>,
    workers: HashMap<Identity, Worker>,
    /// Discovered paths that were not namespace files at the last scan.
    suspects: HashSet<PathBuf>,
    /// Problems already logged, so a lasting one is logged once.
    logged: HashSet<String>,
    slots: Arc<Semaphore>,
}

impl Collector {
    /// Builds the collector from the namespace flags.
    pub fn new(opts: &CommonOpts, timeout: Duration) -> Result<Self, CollectorError> {
        let host = Identity::of(std::path::Path::new("/proc/thread-self/ns/net"))
            .or_else(|_| Identity::of(std::path::Path::new("/proc/self/ns/net")))
            .map_err(|source| CollectorError::HostNamespace { source })?;
        let scan = ScanConfig {
            explicit: opts
                .netns
                .iter()
                .map(|a| (a.name.clone(), a.path.clone()))
                .collect(),
            discover: opts.netns_discover.clone(),
            include_host: opts.include_host(),
            host,
            filter: NameFilter {
                include: opts.netns_include.clone(),
                exclude: opts.netns_exclude.clone(),
            },
        };
        Ok(Collector {
            scan: Arc::new(scan),
            config: Arc::new(WorkerConfig {
                timeout,
                devices: DeviceFilter {
                    include: opts.devices_include.clone(),
                    exclude: opts.devices_exclude.clone(),
                },
                reader: None,
                iptables_save: !opts.no_iptables_save,
            }),
            workers: HashMap::new(),
            suspects: HashSet::new(),
            logged: HashSet::new(),
            slots: Arc::new(Semaphore::new(concurrency())),
        })
    }

    /// One collection of every selected namespace, sorted by name.
    pub async fn collect(&mut self) -> Snapshot {
        let targets = self.rescan().await;
        let timeout = self.config.timeout;

        // Workers of namespaces no longer selected (deleted, re-created with a new inode,
        // filtered out) are dropped: their threads end and release the namespace.
        let live: HashSet<Identity> = targets
            .iter()
            .filter_map(|t| match t.kind {
                Kind::Namespace(id) => Some(id),
                Kind::Broken(..) => None,
            })
            .collect();
        self.workers
            .retain(|id, w| live.contains(id) && !w.is_finished());

        let mut tasks = tokio::task::JoinSet::new();
        for (index, target) in targets.iter().enumerate() {
            let id = match &target.kind {
                Kind::Namespace(id) => *id,
                Kind::Broken(..) => continue,
            };
            if !self.workers.contains_key(&id) {
                match Worker::spawn(
                    &target.name,
                    target.path.as_deref(),
                    id,
                    self.config.clone(),
                ) {
                    Ok(w) => {
                        debug!(netns = %target.name, inode = id.ino, "namespace worker started");
                        self.workers.insert(id, w);
                    }
                    Err(failure) => {
                        tasks.spawn(async move { (index, failed(failure)) });
                        continue;
                    }
                }
            }
            let Some(worker) = self.workers.get(&id) else {
                continue;
            };
            let reserved = worker.reserve();
            let slots = self.slots.clone();
            tasks.spawn(async move {
                let ticket = match reserved {
                    Ok(ticket) => ticket,
                    Err(Unavailable::Busy) => {
                        return (
                            index,
                            failed(CollectFailure {
                                reason: ErrorReason::Timeout,
                                message: "the previous collection of this namespace is still \
                                          running"
                                    .into(),
                            }),
                        );
                    }
                    Err(Unavailable::Dead) => return (index, failed(thread_ended())),
                };
                // The slot bounds how many namespaces are read at once; the timeout runs from
                // the moment this namespace's read starts.
                let _slot = slots.acquire_owned().await;
                let started = std::time::Instant::now();
                let Some(rx) = ticket.send() else {
                    return (index, failed(thread_ended()));
                };
                match tokio::time::timeout(timeout + GRACE, rx).await {
                    Ok(Ok(outcome)) => (index, outcome),
                    Ok(Err(_)) => (index, failed(thread_ended())),
                    Err(_) => {
                        let mut outcome = failed(CollectFailure {
                            reason: ErrorReason::Timeout,
                            message: format!("namespace did not answer within {timeout:?}"),
                        });
                        outcome.duration = started.elapsed();
                        (index, outcome)
                    }
                }
            });
        }

        let mut outcomes: Vec<Option<worker::Outcome>> = (0..targets.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, outcome)) = joined {
                outcomes[index] = Some(outcome);
            }
        }

        let namespaces = targets
            .into_iter()
            .zip(outcomes)
            .map(|(target, outcome)| {
                let outcome = match (&target.kind, outcome) {
                    (Kind::Broken(reason, _), _) => failed(CollectFailure {
                        reason: ErrorReason::Namespace,
                        message: format!(
                            "{}: {reason}",
                            target
                                .path
                                .as_deref()
                                .unwrap_or(std::path::Path::new("?"))
                                .display()
                        ),
                    }),
                    (_, Some(o)) => o,
                    (_, None) => failed(CollectFailure {
                        reason: ErrorReason::Io,
                        message: "collection task failed".into(),
                    }),
                };
                let (dev, inode) = match target.kind {
                    Kind::Namespace(id) | Kind::Broken(_, Some(id)) => (id.dev, id.ino),
                    Kind::Broken(_, None) => (0, 0),
                };
                NamespaceSnapshot {
                    netns: NetnsId {
                        name: target.name,
                        dev,
                        inode,
                    },
                    ipvs: outcome.ipvs,
                    context: outcome.context,
                    duration: outcome.duration,
                    timestamp: outcome.timestamp,
                }
            })
            .collect();
        Snapshot { namespaces }
    }

    /// Scans on a blocking thread (a stat on a hung file system must not stall the runtime)
    /// and logs new problems.
    async fn rescan(&mut self) -> Vec<Target> {
        let scan = self.scan.clone();
        let previous = std::mem::take(&mut self.suspects);
        let result =
            tokio::task::spawn_blocking(move || (select::scan(&scan, &previous), previous)).await;
        let result = match result {
            Ok((result, _)) => result,
            Err(e) => {
                warn!(error = %e, "namespace scan failed");
                return Vec::new();
            }
        };
        self.suspects = result.suspects;
        let mut problems = HashSet::new();
        for (dir, error) in &result.unreadable_dirs {
            problems.insert(format!(
                "cannot read --netns.discover directory {}: {error}",
                dir.display()
            ));
        }
        for dir in &result.missing_dirs {
            problems.insert(format!(
                "--netns.discover directory {} does not exist: nothing to discover there until \
                 it is created (Docker creates /var/run/docker/netns with its first container \
                 namespace; check the path, and that it is mounted into the container)",
                dir.display()
            ));
        }
        for (name, path) in &result.selection.name_conflicts {
            problems.insert(format!(
                "namespace {} is left out: another namespace is already named {name:?} \
                 (give one a name with --netns NAME=PATH)",
                path.display()
            ));
        }
        for p in problems.difference(&self.logged) {
            warn!("{p}");
        }
        self.logged = problems;
        result.selection.targets
    }
}

fn failed(failure: CollectFailure) -> worker::Outcome {
    worker::Outcome {
        ipvs: Err(failure),
        context: NetnsContext::default(),
        duration: Duration::ZERO,
        timestamp: SystemTime::now(),
    }
}

fn thread_ended() -> CollectFailure {
    CollectFailure {
        reason: ErrorReason::Io,
        message: "namespace thread ended unexpectedly".into(),
    }
}
