//! Loading and attaching the probes, classifying failures into the `ipvs_ebpf_info` reasons,
//! and the consumer task that drains the ring buffer.
//!
//! The ring buffer ([`ipvs_telemetry_common::RING_BYTES`], 4 MiB = 43,690 events) is read with
//! tokio's `AsyncFd`: on each wake-up the consumer drains it completely (in chunks of
//! [`CHUNK`] events per lock hold, so [`super::Ebpf::snapshot`] never waits long) before
//! clearing readiness, so no wake-up is missed.

use std::io;
use std::path::Path;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::KProbe;
use aya::{EbpfLoader, include_bytes_aligned};
use aya_log::EbpfLogger;
use ipvs_telemetry_common::{
    CONN_NEW_FUNCTION, CONN_NEW_PROGRAM, EVENTS_MAP, Event, KINDS, LOST_MAP, OFFSETS_GLOBAL,
};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::{Shared, lock, logbridge::TracingLog, offsets};

/// The probe object, built by `cargo xtask build-ebpf`.
static OBJECT: &[u8] = include_bytes_aligned!(env!("IPVS_TELEMETRY_EBPF_OBJECT"));

/// Events handled per lock hold.
const CHUNK: usize = 4096;

/// The per-CPU lost-event counters of one loaded instance.
pub type LostMap = PerCpuArray<MapData, u64>;

/// Why the probes are not attached: the `reason` label and a one-line message.
#[derive(Debug)]
pub struct Failure {
    /// `ipvs_ebpf_info` reason.
    pub reason: &'static str,
    /// One line for the log (and the exit message with `--ebpf on`).
    pub message: String,
}

fn failure(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
    }
}

/// A loaded and attached probe instance with its tasks.
pub struct Attached {
    /// Keeps programs and links alive; dropping it detaches.
    _ebpf: aya::Ebpf,
    consumer: JoinHandle<()>,
    logger: Option<JoinHandle<()>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.consumer.abort();
        if let Some(l) = &self.logger {
            l.abort();
        }
    }
}

/// Checks what does not depend on `ip_vs`: kprobe support, lockdown, vmlinux BTF.
pub fn preflight() -> Result<(), Failure> {
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err(failure(
            "kprobes unavailable",
            "kprobes unavailable: /sys/bus/event_source/devices/kprobe does not exist (kernel without CONFIG_KPROBES)",
        ));
    }
    if let Ok(l) = std::fs::read_to_string("/sys/kernel/security/lockdown")
        && l.contains("[confidentiality]")
    {
        return Err(failure(
            "kernel lockdown",
            "kernel lockdown: confidentiality mode forbids eBPF reads of kernel memory",
        ));
    }
    if let Err(e) = std::fs::metadata("/sys/kernel/btf/vmlinux") {
        return Err(failure(
            "btf unavailable",
            format!(
                "btf unavailable: /sys/kernel/btf/vmlinux: {e} (kernel without CONFIG_DEBUG_INFO_BTF)"
            ),
        ));
    }
    Ok(())
}

/// First line of an error chain, with `EPERM` mapped to the capability reason.
fn classify(what: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return failure(
                "missing CAP_BPF/CAP_PERFMON",
                format!("missing CAP_BPF/CAP_PERFMON: {what}: {io}"),
            );
        }
        cur = err.source();
    }
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    failure("attach failed", format!("{what}: {line}"))
}

/// Computes the offsets, loads the probes, attaches them and starts the consumer.
pub fn attach(shared: &Shared) -> Result<Attached, Failure> {
    let offsets = offsets::from_sysfs(Path::new("/sys/kernel/btf"))
        .map_err(|e| failure("btf unavailable", format!("btf unavailable: {e}")))?;
    tracing::debug!(?offsets, "ebpf: struct offsets from btf");
    let mut ebpf = EbpfLoader::new()
        .override_global(OFFSETS_GLOBAL, &offsets, true)
        .load(OBJECT)
        .map_err(|e| classify("loading the probes", &e))?;
    let logger = match EbpfLogger::init_with_logger(&mut ebpf, TracingLog) {
        Ok(l) => Some(spawn_logger(l)),
        Err(e) => {
            tracing::warn!("ebpf: probe log unavailable: {e}");
            None
        }
    };
    let program: &mut KProbe = ebpf
        .program_mut(CONN_NEW_PROGRAM)
        .ok_or_else(|| failure("attach failed", "probe object has no connection program"))?
        .try_into()
        .map_err(|e| classify("loading the probes", &e))?;
    program
        .load()
        .map_err(|e| classify("loading the probes", &e))?;
    program
        .attach(CONN_NEW_FUNCTION, 0)
        .map_err(|e| classify("attaching to ip_vs_conn_new", &e))?;
    let ring: RingBuf<MapData> = ebpf
        .take_map(EVENTS_MAP)
        .ok_or_else(|| failure("attach failed", "probe object has no event ring"))?
        .try_into()
        .map_err(|e| classify("opening the event ring", &e))?;
    let lost: LostMap = ebpf
        .take_map(LOST_MAP)
        .ok_or_else(|| failure("attach failed", "probe object has no lost counters"))?
        .try_into()
        .map_err(|e| classify("opening the lost counters", &e))?;
    // SAFETY: the RingBuf owns its map fd and returns the same fd until dropped.
    let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| classify("polling the event ring", &e))?;
    {
        let mut st = lock(shared);
        st.up = true;
        st.reason = "attached".into();
        st.lost = Some(lost);
    }
    tracing::info!("ebpf: probes attached to ip_vs_conn_new");
    Ok(Attached {
        _ebpf: ebpf,
        consumer: tokio::spawn(consume(shared.clone(), fd)),
        logger,
    })
}

/// Stops the consumer, unloads the probes and keeps their lost counts.
pub fn detach(shared: &Shared, a: Attached) {
    drop(a);
    let mut st = lock(shared);
    if let Some(map) = st.lost.take() {
        let n = read_lost(&map);
        for (b, n) in st.lost_base.iter_mut().zip(n) {
            *b += n;
        }
    }
    st.up = false;
}

/// Sums a per-CPU lost-event array, by kind.
pub fn read_lost(map: &LostMap) -> [u64; KINDS as usize] {
    let mut out = [0; KINDS as usize];
    for (kind, slot) in out.iter_mut().enumerate() {
        if let Ok(values) = map.get(&(kind as u32), 0) {
            *slot = values.iter().sum();
        }
    }
    out
}

/// Drains the ring buffer into the aggregator on every wake-up.
async fn consume(shared: Shared, mut fd: AsyncFd<RingBuf<MapData>>) {
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("ebpf: polling the event ring failed: {e}");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        loop {
            let mut st = lock(&shared);
            let mut n = 0;
            while n < CHUNK {
                let Some(item) = ring.next() else { break };
                if let Some(e) = parse(&item) {
                    st.events[(e.kind as usize).min(KINDS as usize - 1)] += 1;
                    if e.kind == ipvs_telemetry_common::KIND_NEW_CONNECTION {
                        st.agg.record(&e);
                    }
                }
                n += 1;
            }
            drop(st);
            if n < CHUNK {
                break;
            }
        }
        guard.clear_ready();
    }
}

/// Copies an event out of a ring-buffer record (records are not guaranteed to be aligned).
#[inline]
fn parse(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: the length is checked; Event is plain integers (any bit pattern is valid) and the
    // unaligned read does not assume alignment.
    Some(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

/// Forwards probe log records (aya-log) to the daemon's log.
fn spawn_logger(logger: EbpfLogger<TracingLog>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // SAFETY: the logger owns its ring-buffer fd and returns the same fd until dropped.
        let registered =
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
        let mut fd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!("ebpf: probe log unavailable: {e}");
                return;
            }
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    })
}
