//! The eBPF side: probe loading with BTF-derived offsets, the ring-buffer consumer and the
//! per-destination histograms.
//!
//! [`Ebpf::start`] checks what the kernel offers (kprobes, lockdown, BTF), then a supervisor
//! task attaches the probes whenever `ip_vs` is loaded: at start, when the module appears
//! later, and again after `rmmod`/`modprobe` (it polls `/sys/module/ip_vs` once a second, one
//! `stat`). The consumer task drains the ring buffer into the [`aggregate::Aggregator`];
//! [`Ebpf::snapshot`] reads it at each collection.

pub mod aggregate;
/// The consumer microbenchmark and the synthetic events the tests share: test code only.
#[cfg(test)]
mod bench;
pub mod btf;
mod consumer;
mod loader;
mod logbridge;
pub mod native;
pub mod offsets;
pub mod state_args;

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipvs_telemetry_common::KINDS;

use crate::cli::{EbpfMode, Granularity, ServeOpts};
use crate::model::{EbpfSeries, EbpfSnapshot, Snapshot};
use aggregate::{Aggregator, RawKey, Seen};
use loader::Attached;
pub use loader::Failure;

/// Label values of the `kind` label of the event counters, indexed by event kind.
pub const KIND_LABELS: [&str; KINDS as usize] = [
    "new_connection",
    "first_response",
    "unanswered",
    "unschedulable",
    "synced",
];

/// How often the supervisor checks whether `ip_vs` was loaded, unloaded or reloaded.
const MODULE_POLL: Duration = Duration::from_secs(1);

/// State shared by the supervisor, the consumer and [`Ebpf::snapshot`].
struct State {
    up: bool,
    reason: String,
    agg: Aggregator,
    /// Events taken from the ring buffer, by kind.
    events: [u64; KINDS as usize],
    /// Lost events of probe instances already unloaded (module reloads), by kind.
    lost_base: [u64; KINDS as usize],
    /// The live instance's per-CPU lost counters.
    lost: Option<loader::LostMap>,
    /// Failed kernel reads of instances already unloaded, by kind.
    read_errors_base: [u64; KINDS as usize],
    /// The live instance's per-CPU failed-read counters.
    read_errors: Option<loader::LostMap>,
    /// First-response probes: `attached`, or why (some of) them are not.
    first_response: String,
    /// Drains on demand, so that a scrape sees every event queued before it.
    drains: Arc<Drains>,
    /// The JSON API's windowed figures, fed by the consumer for the destinations asked for.
    windows: Arc<crate::api::window::Windows>,
}

/// Drain requests from scrapes to the consumer: request `n` is served once a drain that began
/// after it has ended.
#[derive(Debug, Default)]
pub(crate) struct Drains {
    wake: tokio::sync::Notify,
    requested: std::sync::atomic::AtomicU64,
    served: Mutex<u64>,
    done: std::sync::Condvar,
}

/// How long a scrape waits for the consumer's drain before reading without it.
const DRAIN_WAIT: Duration = Duration::from_millis(200);

impl Drains {
    /// Asks the consumer for a drain and waits (a blocking thread) until one that began after
    /// this call ends, for at most [`DRAIN_WAIT`]; `false` when it did not happen in time.
    fn request_and_wait(&self) -> bool {
        use std::sync::atomic::Ordering;
        let n = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        let served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let (served, _) = self
            .done
            .wait_timeout_while(served, DRAIN_WAIT, |s| *s < n)
            .unwrap_or_else(|e| e.into_inner());
        *served >= n
    }

    /// The consumer's side: the request number a drain starting now serves.
    pub(crate) fn begin(&self) -> u64 {
        self.requested.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The consumer's side: a drain that began at `begun` ended.
    pub(crate) fn end(&self, begun: u64) {
        let mut s = self.served.lock().unwrap_or_else(|e| e.into_inner());
        *s = (*s).max(begun);
        self.done.notify_all();
    }

    /// The consumer's side: resolves when a scrape asks for a drain.
    pub(crate) async fn requested(&self) {
        self.wake.notified().await
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain counters behind: keep serving them.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running eBPF side (probes, consumer, histograms).
pub struct Ebpf {
    mode: EbpfMode,
    granularity: Granularity,
    shared: Shared,
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Ebpf {
    fn drop(&mut self) {
        if let Some(h) = self.supervisor.take() {
            h.abort();
        }
    }
}

/// Identity of the loaded `ip_vs` module: the inode of `/sys/module/ip_vs`, which changes when
/// the module is unloaded and loaded again. `None` when not loaded.
fn module_identity() -> Option<u64> {
    std::fs::metadata("/sys/module/ip_vs").ok().map(|m| m.ino())
}

impl Ebpf {
    /// Loads and attaches the probes per `--ebpf`. `Err` only with `--ebpf on`; with `auto` a
    /// failure is reported through [`Ebpf::snapshot`].
    ///
    /// With `--ebpf on`, `ip_vs` not being loaded yet is not an error: the probes attach when it
    /// appears (the kernel's kprobe, BTF and permission checks are done at start).
    pub async fn start(opts: &ServeOpts) -> Result<Ebpf, Failure> {
        let mut ebpf = Ebpf {
            mode: opts.ebpf,
            granularity: opts.ebpf_granularity,
            shared: Arc::new(Mutex::new(State {
                up: false,
                reason: "disabled".into(),
                agg: {
                    let mut agg = Aggregator::new(
                        opts.ebpf_granularity,
                        opts.ebpf_rate_window,
                        opts.ebpf_max_destinations,
                    );
                    agg.set_unanswered_after(opts.ebpf_unanswered_after);
                    agg
                },
                events: [0; KINDS as usize],
                lost_base: [0; KINDS as usize],
                lost: None,
                read_errors_base: [0; KINDS as usize],
                read_errors: None,
                first_response: "not attached".into(),
                drains: Arc::default(),
                windows: Arc::default(),
            })),
            supervisor: None,
        };
        if opts.ebpf == EbpfMode::Off {
            return Ok(ebpf);
        }
        let fail = |f: Failure, ebpf: &Ebpf| {
            tracing::warn!(reason = f.reason, "ebpf: {}", f.message);
            lock(&ebpf.shared).reason = f.reason.into();
            f
        };
        if let Err(f) = loader::preflight() {
            let f = fail(f, &ebpf);
            return match opts.ebpf {
                EbpfMode::On => Err(f),
                _ => Ok(ebpf),
            };
        }
        let mut attached = None;
        let module = module_identity();
        match module {
            None => {
                lock(&ebpf.shared).reason = "ip_vs not loaded".into();
                tracing::info!("ebpf: ip_vs is not loaded; the probes attach when it is");
            }
            Some(_) => match loader::attach(&ebpf.shared) {
                Ok(a) => attached = Some(a),
                Err(f) => {
                    let f = fail(f, &ebpf);
                    if opts.ebpf == EbpfMode::On {
                        return Err(f);
                    }
                }
            },
        }
        let shared = ebpf.shared.clone();
        ebpf.supervisor = Some(tokio::spawn(supervise(shared, attached, module)));
        Ok(ebpf)
    }

    /// The current series; destinations absent from `netlink` (twice in a row, in reads that
    /// began after their last connection) are forgotten.
    pub fn snapshot(&self, netlink: &Snapshot) -> EbpfSnapshot {
        self.snapshot_present(&self.presence(netlink))
    }

    /// Which destinations and namespaces `netlink` holds, computed once per collection and used
    /// by every [`Ebpf::snapshot_present`] until the next one.
    pub fn presence(&self, netlink: &Snapshot) -> Presence {
        presence(netlink, self.granularity)
    }

    /// The current series, joined with a collection's [`Presence`]. With the probes attached,
    /// first has the consumer drain the ring (waiting at most 200 ms), so the series hold every
    /// event queued before this call. Blocks: call from a blocking thread.
    pub fn snapshot_present(&self, present: &Presence) -> EbpfSnapshot {
        let drains = {
            let st = lock(&self.shared);
            st.up.then(|| st.drains.clone())
        };
        if let Some(d) = drains
            && !d.request_and_wait()
        {
            tracing::debug!("ebpf: the consumer did not drain within 200 ms; reading without it");
        }
        self.snapshot_with(|k| {
            if present.keys.contains(k) {
                return Seen::Present;
            }
            match present.namespaces.get(&k.netns()) {
                Some(Some(read_at_ns)) => Seen::Absent {
                    read_at_ns: *read_at_ns,
                },
                // Namespace unreadable this time: keep.
                Some(None) => Seen::Unknown,
                // Not selected (or not discovered yet, in which case it is newer than this
                // collection's start).
                None => Seen::Absent {
                    read_at_ns: present.started_ns,
                },
            }
        })
    }

    /// The windowed per-destination figures the consumer feeds (the JSON API's).
    pub fn windows(&self) -> Arc<crate::api::window::Windows> {
        lock(&self.shared).windows.clone()
    }

    /// With the probes attached, has the consumer drain the ring and waits for it (at most
    /// 200 ms), so that what is read next holds every event queued before this call. Blocks:
    /// call from a blocking thread.
    pub fn drain(&self) {
        let drains = {
            let st = lock(&self.shared);
            st.up.then(|| st.drains.clone())
        };
        if let Some(d) = drains {
            let _ = d.request_and_wait();
        }
    }

    /// Whether the probes are attached.
    pub fn is_up(&self) -> bool {
        lock(&self.shared).up
    }

    /// Asks the consumer for a drain without waiting for it (for callers on the consumer's own
    /// runtime thread, such as `examples/ebpf-dump.rs`).
    pub fn request_drain(&self) {
        let st = lock(&self.shared);
        if st.up {
            st.drains
                .requested
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            st.drains.wake.notify_one();
        }
    }

    /// Every tracked series without the netlink join (nothing is forgotten): for diagnostics
    /// (`examples/ebpf-dump.rs`) and tests.
    pub fn snapshot_all(&self) -> EbpfSnapshot {
        self.snapshot_with(|_| Seen::Unknown)
    }

    fn snapshot_with(&self, present: impl FnMut(&RawKey) -> Seen) -> EbpfSnapshot {
        let now = monotonic_ns();
        let mut st = lock(&self.shared);
        let lost_now = st.lost.as_ref().map(loader::read_lost).unwrap_or_default();
        let lost: Vec<(String, u64)> = KIND_LABELS
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), st.lost_base[i] + lost_now[i]))
            .collect();
        let errors_now = st
            .read_errors
            .as_ref()
            .map(loader::read_lost)
            .unwrap_or_default();
        let read_errors = KIND_LABELS
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), st.read_errors_base[i] + errors_now[i]))
            .collect();
        let events = KIND_LABELS
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), st.events[i]))
            .collect();
        let series = st
            .agg
            .collect(now, present)
            .into_iter()
            .filter_map(|(k, v)| {
                Some(EbpfSeries {
                    key: k.to_model()?,
                    new_connections: v.count,
                    connection_rate: v.rate,
                    peak_connection_rate: v.peak_rate,
                    interarrival: v.interarrival,
                    first_response: v.first_response,
                    unanswered: v.unanswered,
                    synced: v.synced,
                    waiting: v.waiting,
                })
            })
            .collect();
        let unschedulable = st
            .agg
            .unschedulable()
            .into_iter()
            .filter_map(|(k, n)| Some((k.to_model()?, n)))
            .collect();
        EbpfSnapshot {
            up: st.up,
            mode: self.mode.as_str().into(),
            reason: st.reason.clone(),
            first_response: if st.up {
                st.first_response.clone()
            } else {
                "not attached".into()
            },
            events,
            lost,
            read_errors,
            overflow: st.agg.overflow,
            series,
            unschedulable,
        }
    }
}

/// Which keys and namespaces a netlink snapshot holds.
#[derive(Debug, Default)]
pub struct Presence {
    keys: std::collections::HashSet<RawKey>,
    /// Each namespace read (by inode): when its read began (`CLOCK_MONOTONIC` ns), or `None`
    /// when it could not be read.
    namespaces: std::collections::HashMap<u32, Option<u64>>,
    /// When the earliest read began (now when there was none).
    started_ns: u64,
}

fn presence(netlink: &Snapshot, granularity: Granularity) -> Presence {
    // Namespace reads are stamped with the wall clock; events with the monotonic one.
    let (mono_now, wall_now) = (monotonic_ns(), std::time::SystemTime::now());
    let to_mono = |t: std::time::SystemTime| {
        let ago = wall_now.duration_since(t).unwrap_or_default().as_nanos() as u64;
        mono_now.saturating_sub(ago)
    };
    let mut p = Presence {
        keys: Default::default(),
        namespaces: Default::default(),
        started_ns: mono_now,
    };
    for ns in &netlink.namespaces {
        let inode = ns.netns.inode;
        let read_at = to_mono(ns.timestamp);
        p.started_ns = p.started_ns.min(read_at);
        let Ok(ipvs) = &ns.ipvs else {
            p.namespaces.insert(inode as u32, None);
            continue;
        };
        p.namespaces.insert(inode as u32, Some(read_at));
        for svc in &ipvs.services {
            p.keys.insert(RawKey::of_netlink(
                inode,
                svc.family,
                &svc.address,
                None,
                Granularity::Service,
            ));
            if granularity == Granularity::Destination {
                for d in &svc.destinations {
                    p.keys.insert(RawKey::of_netlink(
                        inode,
                        svc.family,
                        &svc.address,
                        Some((d.family, d.address, d.port)),
                        granularity,
                    ));
                }
            }
        }
    }
    p
}

/// `CLOCK_MONOTONIC` in ns, the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Keeps the probes attached to the current `ip_vs` module instance.
async fn supervise(shared: Shared, mut attached: Option<Attached>, mut seen: Option<u64>) {
    // The module instance an attach attempt failed for: not retried until it changes.
    let mut failed_for = if attached.is_none() { seen } else { None };
    loop {
        tokio::time::sleep(MODULE_POLL).await;
        let now = module_identity();
        if now != seen {
            if let Some(a) = attached.take() {
                tracing::info!("ebpf: ip_vs was unloaded or reloaded; detaching the probes");
                loader::detach(&shared, a);
            }
            if now.is_none() {
                let mut st = lock(&shared);
                st.up = false;
                st.reason = "ip_vs not loaded".into();
            }
            seen = now;
        }
        if attached.is_none() && now.is_some() && failed_for != now {
            match loader::attach(&shared) {
                Ok(a) => {
                    attached = Some(a);
                    failed_for = None;
                }
                Err(f) => {
                    tracing::warn!(reason = f.reason, "ebpf: {}", f.message);
                    lock(&shared).reason = f.reason.into();
                    failed_for = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn opts(mode: &str) -> ServeOpts {
        Cli::try_parse_from(["ipvs-telemetry", "--ebpf", mode])
            .map(|c| c.serve)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `off` starts disabled; where the kernel lacks what the probes need (kprobes, BTF, or it
    /// is locked down; the development host has no kprobes), `on` fails with the check's
    /// one-line cause and `auto` starts and reports the reason. On a kernel that has them the
    /// lab tests attaching (`tests/tests/ebpf.rs`); here `auto` must still start.
    #[tokio::test]
    async fn modes_where_the_kernel_lacks_probes() {
        let off = Ebpf::start(&opts("off")).await.unwrap();
        let s = off.snapshot(&Snapshot::default());
        assert_eq!(
            (s.up, s.mode.as_str(), s.reason.as_str()),
            (false, "off", "disabled")
        );
        let auto = Ebpf::start(&opts("auto")).await.unwrap();
        let s = auto.snapshot(&Snapshot::default());
        assert_eq!(s.mode, "auto");
        assert_eq!(
            s.lost,
            vec![
                ("new_connection".into(), 0),
                ("first_response".into(), 0),
                ("unanswered".into(), 0),
                ("unschedulable".into(), 0),
                ("synced".into(), 0)
            ]
        );
        let Err(f) = loader::preflight() else {
            return;
        };
        assert!(!s.up);
        assert_eq!(s.reason, f.reason);
        let err = Ebpf::start(&opts("on"))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(err, f.message);
        if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
            assert_eq!(
                err,
                "kprobes unavailable: /sys/bus/event_source/devices/kprobe does not exist (kernel without CONFIG_KPROBES)"
            );
        }
    }
}
