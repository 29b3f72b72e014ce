//! One long-lived OS thread per namespace, the only code that calls `setns`.
//!
//! The thread enters its namespace once, right after it starts, and never leaves it: every
//! socket it opens (IPVS generic netlink, rtnetlink), every `/proc/sys/net` file it reads and
//! every process it starts (`iptables-save`) belongs to that namespace, and no async task ever
//! runs on it. A thread that stays inside (rather than entering, opening a socket and returning)
//! also serves what a socket cannot carry: sysctl files resolve against the reading thread's
//! namespace and a child process inherits its parent thread's. Threads are cheap next to the
//! namespaces they serve (a small stack each); the thread ends when the collector drops the
//! worker, which releases the namespace.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::sched::{CloneFlags, setns};
use regex::Regex;
use tracing::{debug, warn};

use super::mangle::{self, PortMap, SaveCommand};
use super::select::Identity;
use crate::model::{
    CollectFailure, ErrorReason, Family, IpvsState, NetnsContext, ServiceAddress, SyncDaemon,
};

/// Interface filter of `--netns.devices.include/exclude`; exclude wins.
#[derive(Debug, Clone)]
pub(super) struct DeviceFilter {
    /// Only devices that match, when set.
    pub include: Option<Regex>,
    /// Never devices that match.
    pub exclude: Regex,
}

impl DeviceFilter {
    /// Whether the interface appears in the series.
    pub(super) fn allows(&self, device: &str) -> bool {
        !self.exclude.is_match(device) && self.include.as_ref().is_none_or(|r| r.is_match(device))
    }
}

/// A stand-in for the IPVS read of the calling thread's namespace (host tests use one: the test
/// host has no IPVS).
pub(super) type IpvsReader = fn(Duration) -> Result<IpvsState, CollectFailure>;

/// Settings shared by every worker.
#[derive(Debug, Clone)]
pub(super) struct WorkerConfig {
    /// Time one namespace's collection may take.
    pub timeout: Duration,
    /// Interface filter.
    pub devices: DeviceFilter,
    /// `None`: the worker's own netlink client (always, outside host tests).
    pub reader: Option<IpvsReader>,
    /// Whether fwmark services get their port from the mangle rules (`--no-iptables-save`).
    pub iptables_save: bool,
}

/// What one collection of one namespace produced.
#[derive(Debug)]
pub(super) struct Outcome {
    /// IPVS state (fwmark services' `published` filled) or why not.
    pub ipvs: Result<IpvsState, CollectFailure>,
    /// Interfaces and conntrack.
    pub context: NetnsContext,
    /// Time the collection took on the worker.
    pub duration: Duration,
    /// When the values were read.
    pub timestamp: SystemTime,
}

type Reply = tokio::sync::oneshot::Sender<Outcome>;

/// Handle on a namespace's thread; dropping it ends the thread after its current job.
pub(super) struct Worker {
    jobs: mpsc::Sender<Reply>,
    busy: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Why a worker cannot take a job now.
pub(super) enum Unavailable {
    /// The previous job is still running (the namespace is stuck beyond its timeout).
    Busy,
    /// The thread is gone.
    Dead,
}

/// The right to hand a worker one job, taken while it is idle; dropping it unused gives it back.
pub(super) struct Ticket {
    jobs: mpsc::Sender<Reply>,
    busy: Arc<AtomicBool>,
    sent: bool,
}

impl Ticket {
    /// Hands the thread its job; `None` when the thread is gone.
    pub(super) fn send(mut self) -> Option<tokio::sync::oneshot::Receiver<Outcome>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.sent = self.jobs.send(tx).is_ok();
        self.sent.then_some(rx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.sent {
            self.busy.store(false, Ordering::Release);
        }
    }
}

impl Worker {
    /// Starts the thread for a namespace; `path: None` serves the daemon's own namespace
    /// without entering anything.
    ///
    /// The file is opened here and checked against `identity`, so a path replaced between the
    /// scan and now is not entered by mistake.
    pub(super) fn spawn(
        name: &str,
        path: Option<&Path>,
        identity: Identity,
        config: Arc<WorkerConfig>,
    ) -> Result<Worker, CollectFailure> {
        let file = match path {
            None => None,
            Some(p) => Some(open_namespace(p, identity)?),
        };
        let (tx, rx) = mpsc::channel::<Reply>();
        let busy = Arc::new(AtomicBool::new(false));
        let thread_busy = busy.clone();
        let label = name.to_string();
        let path_text = path.map(|p| p.display().to_string());
        // Thread names are cut to 15 bytes by the kernel; "ns:" keeps them recognisable in top.
        let thread_name: String = format!("ns:{name}").chars().take(15).collect();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .stack_size(512 * 1024)
            .spawn(move || {
                let entered = match file {
                    None => Ok(()),
                    Some(f) => setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        setns_failure(
                            path_text.as_deref().unwrap_or("?"),
                            e,
                            crate::caps::holds(crate::caps::SYS_ADMIN),
                        )
                    }),
                    // The file is closed here: the thread's own reference keeps the
                    // namespace alive while we are inside it.
                };
                let mut state = State::new(label, config);
                while let Ok(reply) = rx.recv() {
                    let outcome = match &entered {
                        Ok(()) => state.collect(),
                        Err(failure) => Outcome {
                            ipvs: Err(failure.clone()),
                            context: NetnsContext::default(),
                            duration: Duration::ZERO,
                            timestamp: SystemTime::now(),
                        },
                    };
                    thread_busy.store(false, Ordering::Release);
                    let _ = reply.send(outcome);
                }
            })
            .map_err(|e| CollectFailure {
                reason: ErrorReason::Io,
                message: format!("cannot start namespace thread: {e}"),
            })?;
        Ok(Worker {
            jobs: tx,
            busy,
            thread,
        })
    }

    /// Reserves the thread for one collection, unless it is still busy with the previous one.
    pub(super) fn reserve(&self) -> Result<Ticket, Unavailable> {
        if self.thread.is_finished() {
            return Err(Unavailable::Dead);
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(Unavailable::Busy);
        }
        Ok(Ticket {
            jobs: self.jobs.clone(),
            busy: self.busy.clone(),
            sent: false,
        })
    }

    /// Whether the thread has ended (it panicked); the collector then starts a new one.
    pub(super) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Why `setns()` into the namespace at `path` failed with `errno`. EPERM means CAP_SYS_ADMIN
/// is missing unless the daemon holds it (`holds_sys_admin`; `None`: unknown), in which case a
/// seccomp filter or security module refused.
pub(super) fn setns_failure(
    path: &str,
    errno: nix::errno::Errno,
    holds_sys_admin: Option<bool>,
) -> CollectFailure {
    match (errno, holds_sys_admin) {
        (nix::errno::Errno::EPERM, Some(false) | None) => CollectFailure {
            reason: ErrorReason::MissingCapSysAdmin,
            message: format!(
                "cannot enter network namespace {path}: setns needs CAP_SYS_ADMIN: {errno}"
            ),
        },
        (nix::errno::Errno::EPERM, Some(true)) => CollectFailure {
            reason: ErrorReason::Namespace,
            message: format!(
                "cannot enter network namespace {path}: {errno} although CAP_SYS_ADMIN is held \
                 (a seccomp filter or security module refused setns)"
            ),
        },
        _ => CollectFailure {
            reason: ErrorReason::Namespace,
            message: format!("cannot enter network namespace {path}: {errno}"),
        },
    }
}

/// Opens a namespace file and checks it still is the namespace the scan saw.
fn open_namespace(path: &Path, identity: Identity) -> Result<File, CollectFailure> {
    let fail = |message: String| CollectFailure {
        reason: ErrorReason::Namespace,
        message,
    };
    let file =
        File::open(path).map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat {}: {e}", path.display())))?;
    if (meta.dev(), meta.ino()) != (identity.dev, identity.ino) {
        return Err(fail(format!(
            "{} was replaced while being opened",
            path.display()
        )));
    }
    Ok(file)
}

/// The per-namespace state that lives on the worker thread.
struct State {
    name: String,
    config: Arc<WorkerConfig>,
    /// The namespace's IPVS client, kept open between polls (one socket per namespace).
    ipvs: Option<crate::netlink::Client>,
    links: Option<crate::netlink::LinkClient>,
    /// Published ports of fwmark services, by family, and the fwmark set they were read for.
    ports: Ports,
    /// Last context error logged, to log a persisting problem once.
    last_context_error: Option<String>,
}

/// Cache of the mangle-rule port maps.
#[derive(Default)]
struct Ports {
    /// The `(family, mark)` set of fwmark services at the last refresh.
    marks: BTreeSet<(Family, u32)>,
    v4: PortMap,
    v6: PortMap,
    refreshed: Option<Instant>,
    last_error: Option<String>,
}

/// One family's mangle rules as read by one refresh.
#[derive(Debug)]
enum Read {
    /// Every table read.
    Full(PortMap),
    /// The nft tables read, the legacy ones present but unreadable (why).
    Partial(PortMap, String),
    /// Nothing read (why).
    Failed(String),
}

impl Read {
    fn error(&self) -> Option<&str> {
        match self {
            Read::Full(_) => None,
            Read::Partial(_, e) | Read::Failed(e) => Some(e),
        }
    }

    /// The map to use given the last one: a failed read keeps the last good map, a partial
    /// one adds what it read to it, a full one replaces it. A failed or slow `iptables-save`
    /// must not strip `protocol`/`virtual_port` from every fwmark series (new series, broken
    /// `rate()`s) until the next refresh.
    fn merge(self, last: PortMap) -> PortMap {
        match self {
            Read::Full(map) => map,
            Read::Partial(map, _) => {
                let mut merged = last;
                merged.extend(map);
                merged
            }
            Read::Failed(_) => last,
        }
    }
}

impl Ports {
    /// Puts a refresh's reads in force for `marks`.
    fn update(
        &mut self,
        marks: &BTreeSet<(Family, u32)>,
        v4: Read,
        v6: Read,
        error: Option<String>,
        now: Instant,
    ) {
        self.v4 = v4.merge(std::mem::take(&mut self.v4));
        self.v6 = v6.merge(std::mem::take(&mut self.v6));
        self.marks = marks.clone();
        self.refreshed = Some(now);
        self.last_error = error;
    }
}

/// How long a mark without a published port waits before the rules are read again, in case the
/// rule was added after the service (the service set alone would never trigger a refresh).
const UNMAPPED_RETRY: Duration = Duration::from_secs(30);

impl State {
    fn new(name: String, config: Arc<WorkerConfig>) -> Self {
        State {
            name,
            config,
            ipvs: None,
            links: None,
            ports: Ports::default(),
            last_context_error: None,
        }
    }

    fn collect(&mut self) -> Outcome {
        let start = Instant::now();
        let timestamp = SystemTime::now();
        let timeout = self.config.timeout;
        let mut ipvs = self.read_ipvs(timeout);
        if let Ok(state) = &mut ipvs {
            let remaining = timeout.saturating_sub(start.elapsed());
            self.annotate(state, remaining);
        }
        let mut context = self.context(timeout);
        if ipvs.is_ok() {
            context.sync_daemons = self.sync_daemons();
        }
        Outcome {
            ipvs,
            context,
            duration: start.elapsed(),
            timestamp,
        }
    }

    /// Reads IPVS with the namespace's client, opening it on first use. After an error the
    /// client is dropped and the next poll opens a fresh socket and looks the IPVS family up
    /// again (it changes when ip_vs is reloaded; a reply may still be queued on the old socket).
    fn read_ipvs(&mut self, timeout: Duration) -> Result<IpvsState, CollectFailure> {
        if let Some(read) = self.config.reader {
            return read(timeout);
        }
        let mut client = match self.ipvs.take() {
            Some(client) => client,
            None => crate::netlink::Client::open(timeout).map_err(|e| e.failure())?,
        };
        let state = client.read_state().map_err(|e| e.failure())?;
        self.ipvs = Some(client);
        Ok(state)
    }

    /// Fills `published` of fwmark services from the namespace's mangle rules.
    fn annotate(&mut self, state: &mut IpvsState, budget: Duration) {
        let marks: BTreeSet<(Family, u32)> = state
            .services
            .iter()
            .filter_map(|s| match s.address {
                ServiceAddress::Fwmark { mark } => Some((s.family, mark)),
                ServiceAddress::Inet { .. } => None,
            })
            .collect();
        if marks.is_empty() || !self.config.iptables_save {
            self.ports = Ports::default();
            return;
        }
        let lookup = |p: &Ports, family: Family, mark: u32| match family {
            Family::Inet => p.v4.get(&mark).copied(),
            Family::Inet6 => p.v6.get(&mark).copied(),
        };
        let unmapped = marks
            .iter()
            .any(|&(f, m)| lookup(&self.ports, f, m).is_none());
        let retry = unmapped || self.ports.last_error.is_some();
        let stale = self
            .ports
            .refreshed
            .is_none_or(|t| retry && t.elapsed() >= UNMAPPED_RETRY);
        if marks != self.ports.marks || stale {
            self.refresh_ports(&marks, budget);
        }
        for service in &mut state.services {
            if let ServiceAddress::Fwmark { mark } = service.address {
                service.published = lookup(&self.ports, service.family, mark);
            }
        }
    }

    fn refresh_ports(&mut self, marks: &BTreeSet<(Family, u32)>, budget: Duration) {
        let budget = budget.max(Duration::from_millis(500));
        let read = |family: Family, command: SaveCommand| -> Read {
            if !marks.iter().any(|&(f, _)| f == family) {
                return Read::Full(PortMap::new());
            }
            match mangle::read_rules(command, budget) {
                Ok(rules) => {
                    let map = mangle::parse_marks(&rules.text);
                    match rules.legacy_error {
                        None => Read::Full(map),
                        Some(e) => Read::Partial(map, e.to_string()),
                    }
                }
                Err(e) => Read::Failed(e.to_string()),
            }
        };
        let v4 = read(Family::Inet, SaveCommand::V4);
        let v6 = read(Family::Inet6, SaveCommand::V6);
        let error = [&v4, &v6]
            .iter()
            .find_map(|r| r.error().map(str::to_string));
        if let Some(e) = &error
            && self.ports.last_error.as_ref() != Some(e)
        {
            warn!(netns = %self.name, error = %e,
                "cannot read mangle rules; fwmark services keep the protocol and virtual_port \
                 last read (none when never read)");
        }
        self.ports.update(marks, v4, v6, error, Instant::now());
        debug!(netns = %self.name, v4 = ?self.ports.v4, v6 = ?self.ports.v6, "fwmark ports refreshed");
    }

    /// The sync daemons, read with the IPVS client; a failure is logged (once while it lasts)
    /// and gives none.
    fn sync_daemons(&mut self) -> Vec<SyncDaemon> {
        let Some(client) = self.ipvs.as_mut() else {
            return Vec::new();
        };
        match client.daemons() {
            Ok(list) => list
                .iter()
                .filter_map(|a| SyncDaemon::from_attributes(a))
                .collect(),
            Err(e) => {
                // Same rule as for the IPVS read: a socket after an error is not reused.
                self.ipvs = None;
                let text = error_chain(&e);
                if self.last_context_error.as_ref() != Some(&text) {
                    warn!(netns = %self.name, error = %text, "cannot read the sync daemons");
                    self.last_context_error = Some(text);
                }
                Vec::new()
            }
        }
    }

    /// Interfaces and conntrack count; a failure is logged (once while it lasts) and leaves the
    /// part empty, the IPVS series are unaffected.
    fn context(&mut self, timeout: Duration) -> NetnsContext {
        let mut context = NetnsContext {
            interfaces: Vec::new(),
            conntrack_entries: read_conntrack_count(),
            sync_daemons: Vec::new(),
        };
        let links = match self.links.as_mut() {
            Some(socket) => socket.links(),
            None => crate::netlink::LinkClient::open(timeout).and_then(|mut s| {
                let links = s.links();
                self.links = Some(s);
                links
            }),
        };
        match links {
            Ok(mut links) => {
                links.retain(|l| self.config.devices.allows(&l.device));
                links.sort_by(|a, b| a.device.cmp(&b.device));
                context.interfaces = links;
                self.last_context_error = None;
            }
            Err(e) => {
                // A socket in an unknown state (a reply may still be queued) is not reused.
                self.links = None;
                let text = error_chain(&e);
                if self.last_context_error.as_ref() != Some(&text) {
                    warn!(netns = %self.name, error = %text, "cannot read interface counters");
                    self.last_context_error = Some(text);
                }
            }
        }
        context
    }
}

/// Conntrack entries of the calling thread's namespace; `None` when conntrack is not loaded.
///
/// `/proc/sys/net` resolves against the reading thread's namespace (unlike `/proc/self/net`,
/// which follows the thread-group leader), so this reads the worker's namespace.
fn read_conntrack_count() -> Option<u64> {
    let path = PathBuf::from("/proc/sys/net/netfilter/nf_conntrack_count");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    /// A failed `iptables-save` keeps the last good map, a partial read (legacy tables
    /// unreadable) adds to it, a full read replaces it.
    #[test]
    fn port_maps_survive_failed_reads() {
        let map = |entries: &[(u32, u16)]| -> PortMap {
            entries
                .iter()
                .map(|&(m, p)| (m, (Protocol::Tcp, p)))
                .collect()
        };
        let marks = BTreeSet::from([(Family::Inet, 256), (Family::Inet, 257)]);
        let t = Instant::now();
        let mut ports = Ports::default();
        ports.update(
            &marks,
            Read::Full(map(&[(256, 80), (257, 81)])),
            Read::Full(PortMap::new()),
            None,
            t,
        );
        let error = Some("iptables-save did not finish within 10s".to_string());
        ports.update(
            &marks,
            Read::Failed(error.clone().unwrap()),
            Read::Full(PortMap::new()),
            error.clone(),
            t,
        );
        assert_eq!(ports.v4, map(&[(256, 80), (257, 81)]));
        assert_eq!(ports.last_error, error);
        ports.update(
            &marks,
            Read::Partial(map(&[(257, 82), (258, 83)]), "no CAP_NET_RAW".into()),
            Read::Full(PortMap::new()),
            Some("no CAP_NET_RAW".into()),
            t,
        );
        assert_eq!(ports.v4, map(&[(256, 80), (257, 82), (258, 83)]));
        ports.update(
            &marks,
            Read::Full(map(&[(256, 90)])),
            Read::Full(PortMap::new()),
            None,
            t,
        );
        assert_eq!(ports.v4, map(&[(256, 90)]));
        assert_eq!(ports.last_error, None);
    }

    #[test]
    fn device_filter_exclude_wins() {
        let f = DeviceFilter {
            include: Some(Regex::new("^(eth|lo)").unwrap()),
            exclude: Regex::new("^lo$").unwrap(),
        };
        assert!(f.allows("eth0"));
        assert!(!f.allows("lo"));
        assert!(!f.allows("veth1"));
    }

    #[test]
    fn setns_refusal_names_cap_sys_admin_unless_it_is_held() {
        use nix::errno::Errno;
        let f = setns_failure("/run/netns/blue", Errno::EPERM, Some(false));
        assert_eq!(f.reason, ErrorReason::MissingCapSysAdmin);
        assert_eq!(
            f.message,
            "cannot enter network namespace /run/netns/blue: setns needs CAP_SYS_ADMIN: \
             EPERM: Operation not permitted"
        );
        assert_eq!(
            setns_failure("/x", Errno::EPERM, None).reason,
            ErrorReason::MissingCapSysAdmin
        );
        let f = setns_failure("/x", Errno::EPERM, Some(true));
        assert_eq!(f.reason, ErrorReason::Namespace);
        assert!(
            f.message.contains("although CAP_SYS_ADMIN is held"),
            "{}",
            f.message
        );
        let f = setns_failure("/x", Errno::EINVAL, Some(false));
        assert_eq!(f.reason, ErrorReason::Namespace);
        assert_eq!(
            f.message,
            "cannot enter network namespace /x: EINVAL: Invalid argument"
        );
    }
}
