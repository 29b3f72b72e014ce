//! Loading and attaching the probes, classifying failures into the `ipvs_ebpf_info` reasons,
//! and the consumer task that drains the ring buffer.
//!
//! The ring buffer ([`ipvs_telemetry_common::RING_BYTES`], 4 MiB = 43,690 events) is read with
//! tokio's `AsyncFd`: on each wake-up the consumer drains it completely (in chunks of
//! [`CHUNK`] events per lock hold, so [`super::Ebpf::snapshot`] never waits long) before
//! clearing readiness, so no wake-up is missed.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::KProbe;
use aya::{EbpfLoader, include_bytes_aligned};
use aya_log::EbpfLogger;
use ipvs_telemetry_common::{
    CONN_NEW_FUNCTION, CONN_NEW_PROGRAM, DRAIN_INTERVAL_MS, EVENTS_MAP, EXPIRE_FUNCTION,
    EXPIRE_PROGRAM, Event, KINDS, LOST_MAP, OFFSETS_GLOBAL, READ_ERRORS_MAP,
    SCHEDULER_ERR_FUNCTION, SCHEDULER_ERR_PROGRAM, STATE_ARGS_GLOBAL, STATE_PROBES,
};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::{Drains, Shared, lock, logbridge::TracingLog, offsets, state_args};
use crate::caps::{self, CapSet};

/// The probe object, built by `cargo xtask build-ebpf`.
static OBJECT: &[u8] = include_bytes_aligned!(env!("IPVS_TELEMETRY_EBPF_OBJECT"));

/// Events handled per lock hold.
const CHUNK: usize = 4096;

/// Per-CPU counters of one loaded instance, indexed by event kind (lost events, failed reads).
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

/// The reason when `kernel.perf_event_paranoid` is above 2: Debian's and Ubuntu's kernels then
/// let only `CAP_SYS_ADMIN` open perf events, `CAP_PERFMON` is not enough.
pub const PARANOID_REASON: &str = "missing CAP_SYS_ADMIN (perf_event_paranoid 3)";

/// The capability reason for a permission error, given the effective set (`CapEff` of
/// `/proc/self/status`) and whether the refused operation opened a perf event while
/// `kernel.perf_event_paranoid` is above 2 (`paranoid_attach`): names the one missing when it
/// can tell (`CAP_SYS_ADMIN` stands in for both on kernels before 5.8), else both.
pub fn missing_capability(cap_eff: Option<u64>, paranoid_attach: bool) -> &'static str {
    let Some(eff) = cap_eff.map(CapSet) else {
        return "missing CAP_BPF/CAP_PERFMON";
    };
    if eff.has(caps::SYS_ADMIN) {
        return "missing CAP_BPF/CAP_PERFMON";
    }
    match (eff.has(caps::BPF), eff.has(caps::PERFMON)) {
        (false, true) => "missing CAP_BPF",
        (true, false) => "missing CAP_PERFMON",
        (true, true) if paranoid_attach => PARANOID_REASON,
        _ => "missing CAP_BPF/CAP_PERFMON",
    }
}

/// `kernel.perf_event_paranoid`, when readable.
fn perf_event_paranoid() -> Option<i64> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// First line of an error chain, with `EPERM`/`EACCES` mapped to the capability reason.
fn classify(what: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            let paranoid = perf_event_paranoid();
            let paranoid_attach = what.starts_with("attaching") && paranoid.is_some_and(|p| p > 2);
            let reason = missing_capability(CapSet::effective().map(|s| s.0), paranoid_attach);
            if reason == PARANOID_REASON {
                return failure(
                    reason,
                    format!(
                        "{reason}: {what}: {io}: kernel.perf_event_paranoid is {}, under which \
                         only CAP_SYS_ADMIN may open perf events (a Debian/Ubuntu kernel patch); \
                         grant CAP_SYS_ADMIN or set kernel.perf_event_paranoid=2",
                        paranoid.unwrap_or(3)
                    ),
                );
            }
            return failure(reason, format!("{reason}: {what}: {io}"));
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
    let handlers = state_args::resolve(Path::new("/sys/kernel/btf"), Path::new("/proc/kallsyms"));
    let mut ebpf = EbpfLoader::new()
        .override_global(OFFSETS_GLOBAL, &offsets, true)
        .override_global(STATE_ARGS_GLOBAL, &handlers.args, true)
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
    let read_errors: LostMap = ebpf
        .take_map(READ_ERRORS_MAP)
        .ok_or_else(|| failure("attach failed", "probe object has no read-error counters"))?
        .try_into()
        .map_err(|e| classify("opening the read-error counters", &e))?;
    // SAFETY: the RingBuf owns its map fd and returns the same fd until dropped.
    let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| classify("polling the event ring", &e))?;
    {
        let mut st = lock(shared);
        st.up = true;
        st.reason = "attached".into();
        st.lost = Some(lost);
        st.read_errors = Some(read_errors);
    }
    tracing::info!("ebpf: probes attached to ip_vs_conn_new");
    let first_response = attach_state_probes(&mut ebpf, &handlers);
    lock(shared).first_response = first_response;
    for (function, program, what) in [
        (EXPIRE_FUNCTION, EXPIRE_PROGRAM, "unanswered-connection"),
        (
            SCHEDULER_ERR_FUNCTION,
            SCHEDULER_ERR_PROGRAM,
            "unschedulable",
        ),
    ] {
        match attach_kprobe(&mut ebpf, program, function) {
            Ok(()) => tracing::info!("ebpf: {what} probe attached to {function}"),
            Err(e) => tracing::warn!("ebpf: {what} probe unavailable: {function}: {e}"),
        }
    }
    let drains = lock(shared).drains.clone();
    Ok(Attached {
        _ebpf: ebpf,
        consumer: tokio::spawn(consume(shared.clone(), fd, drains)),
        logger,
    })
}

/// Attaches the optional first-response kprobes to the protocol state handlers `handlers`
/// found. A handler that is missing or fails to attach is logged and skipped; the connection
/// probe is not affected. Returns `attached`, or the reasons per handler joined by `; `.
fn attach_state_probes(ebpf: &mut aya::Ebpf, handlers: &state_args::Handlers) -> String {
    let mut attached = Vec::new();
    let mut failed = Vec::new();
    for (i, (function, program)) in STATE_PROBES.iter().enumerate() {
        let symbol = match &handlers.symbols[i] {
            Ok(s) => s,
            Err(e) => {
                failed.push(format!("{function}: {e}"));
                continue;
            }
        };
        let result = attach_kprobe(ebpf, program, symbol);
        match result {
            Ok(()) => attached.push(symbol.as_str()),
            Err(e) => failed.push(format!("{function}: {e}")),
        }
    }
    for f in &failed {
        tracing::warn!("ebpf: first-response probe unavailable: {f}");
    }
    if !attached.is_empty() {
        tracing::info!(
            "ebpf: first-response probes attached to {} (args {:?})",
            attached.join(", "),
            handlers.args
        );
    }
    if failed.is_empty() {
        "attached".into()
    } else {
        failed.join("; ")
    }
}

/// Loads the kprobe `program` and attaches it to `symbol`; the error is one line.
fn attach_kprobe(ebpf: &mut aya::Ebpf, program: &str, symbol: &str) -> Result<(), String> {
    let p: &mut KProbe = ebpf
        .program_mut(program)
        .ok_or("probe object has no such program")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load().map_err(|e| match &e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } if io_error.raw_os_error() != Some(libc::EPERM) => {
            let last = verifier_log.to_string();
            let last = last.lines().rev().find(|l| !l.trim().is_empty());
            format!(
                "the verifier refused {program}: {}",
                last.unwrap_or("").trim()
            )
        }
        _ => classify("loading", &e).message,
    })?;
    p.attach(symbol, 0)
        .map_err(|e| classify(&format!("attaching to {symbol}"), &e).message)?;
    Ok(())
}

/// Stops the consumer, unloads the probes and keeps their lost counts.
pub fn detach(shared: &Shared, a: Attached) {
    drop(a);
    let mut st = lock(shared);
    st.agg.clear_pending();
    if let Some(map) = st.lost.take() {
        let n = read_lost(&map);
        for (b, n) in st.lost_base.iter_mut().zip(n) {
            *b += n;
        }
    }
    if let Some(map) = st.read_errors.take() {
        let n = read_lost(&map);
        for (b, n) in st.read_errors_base.iter_mut().zip(n) {
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

/// Drains the ring buffer into the aggregator every [`DRAIN_INTERVAL_MS`], whenever the
/// probes wake it (they do once [`ipvs_telemetry_common::WAKEUP_BYTES`] are waiting), and when a
/// scrape asks.
async fn consume(shared: Shared, mut fd: AsyncFd<RingBuf<MapData>>, drains: Arc<Drains>) {
    let mut tick = tokio::time::interval(Duration::from_millis(DRAIN_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = fd.readable_mut() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!("ebpf: polling the event ring failed: {e}");
                        return;
                    }
                };
                drain(&shared, guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => drain(&shared, fd.get_mut()),
            _ = drains.requested() => {
                let begun = drains.begin();
                drain(&shared, fd.get_mut());
                drains.end(begun);
            }
        }
    }
}

/// Reads every waiting event into the aggregator, [`CHUNK`] per lock hold.
fn drain(shared: &Shared, ring: &mut RingBuf<MapData>) {
    let windows = lock(shared).windows.clone();
    loop {
        let mut st = lock(shared);
        let mut tap = windows.tap();
        let mut n = 0;
        while n < CHUNK {
            let Some(item) = ring.next() else { break };
            if let Some(e) = parse(&item) {
                st.events[(e.kind as usize).min(KINDS as usize - 1)] += 1;
                st.agg.record_event(&e);
                if let Some(t) = &mut tap {
                    t.record(&e);
                }
            }
            n += 1;
        }
        drop(tap);
        drop(st);
        if n < CHUNK {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_capability() {
        let caps = |list: &[u32]| Some(list.iter().fold(0u64, |a, c| a | 1 << c));
        for paranoid in [false, true] {
            assert_eq!(
                missing_capability(caps(&[12, 38]), paranoid),
                "missing CAP_BPF"
            );
            assert_eq!(
                missing_capability(caps(&[12, 39]), paranoid),
                "missing CAP_PERFMON"
            );
            assert_eq!(
                missing_capability(caps(&[12]), paranoid),
                "missing CAP_BPF/CAP_PERFMON"
            );
            assert_eq!(
                missing_capability(caps(&[21]), paranoid),
                "missing CAP_BPF/CAP_PERFMON"
            );
            assert_eq!(
                missing_capability(None, paranoid),
                "missing CAP_BPF/CAP_PERFMON"
            );
        }
        // Both present: with perf_event_paranoid above 2 an attach needs CAP_SYS_ADMIN;
        // otherwise the refusal has another cause: say both.
        assert_eq!(
            missing_capability(caps(&[38, 39]), true),
            "missing CAP_SYS_ADMIN (perf_event_paranoid 3)"
        );
        assert_eq!(
            missing_capability(caps(&[38, 39]), false),
            "missing CAP_BPF/CAP_PERFMON"
        );
    }
}
