//! The ipvs-telemetry probes.
//!
//! `ip_vs_conn_new_ret`, a kretprobe on `ip_vs_conn_new`, emits one [`Event`] per connection
//! IPVS schedules to a destination. Persistence templates and connections without a destination
//! (bypass) are skipped, and sync-created connections (a backup director's copies of the
//! master's) are reported as their own kind, so the new-connection count per destination equals
//! the kernel's own `conns` counter. Struct member offsets come from the daemon (BTF) through
//! the `OFFSETS` global: Rust eBPF has no CO-RE relocations.
//!
//! First response: `ip_vs_conn_new_ret` also stores the creation time of each counted
//! connection in the LRU hash `STARTS` (keyed by the connection pointer). `tcp_state`,
//! `udp_state` and `sctp_state`, kprobes on the protocol state handlers, take the entry out at
//! the connection's first packet in the output direction (from the real server) and emit an
//! event of kind `KIND_FIRST_RESPONSE` with the delay; removing the entry makes each connection
//! measured at most once. The argument positions of `cp` and `direction` come from the daemon
//! (`STATE_ARGS`, read from the handlers' BTF prototypes).
//!
//! Unanswered: `ip_vs_conn_expire`, a kprobe on the function that releases connections, takes
//! the entry out when a connection still in `STARTS` is about to be released and emits
//! `KIND_UNANSWERED`. Whichever of the two probes removes the entry reports the connection, so
//! each one ends in exactly one of them (or is still waiting). A connection already answered
//! costs the release probe one hash miss, and nothing per packet beyond the miss it already
//! cost (the entry is gone once measured).
//!
//! Unschedulable: `ip_vs_scheduler_err`, a kprobe on the function every scheduler calls when it
//! finds no destination, emits `KIND_UNSCHEDULABLE` with the service's identity.

#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{kprobe, kretprobe, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::{debug, info, warn};
use ipvs_telemetry_common::{
    Event, IP_VS_CONN_F_FWD_MASK, IP_VS_CONN_F_LOCALNODE, IP_VS_CONN_F_ONE_PACKET,
    IP_VS_CONN_F_SYNC, IP_VS_CONN_F_TEMPLATE, IP_VS_DIR_OUTPUT, KIND_FIRST_RESPONSE,
    KIND_NEW_CONNECTION, KIND_SYNCED, KIND_UNANSWERED, KIND_UNSCHEDULABLE, KINDS, Offsets,
    RING_BYTES, STARTS_ENTRIES, StateArgs, WAKEUP_BYTES,
};

/// Events for the daemon.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// `bpf_ringbuf_output` flags (`BPF_RB_NO_WAKEUP`, `BPF_RB_FORCE_WAKEUP`) and the
/// `bpf_ringbuf_query` flag `BPF_RB_AVAIL_DATA`, from `linux/bpf.h`.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Wakes the consumer only when [`WAKEUP_BYTES`] are waiting; it drains by itself otherwise.
#[inline(always)]
fn wakeup_flag() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Events the ring buffer had no room for, per CPU, indexed by kind.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(KINDS, 0);

/// Kernel reads that failed, per CPU, indexed by kind.
#[map]
static READ_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KINDS, 0);

/// Slot of [`LOGGED`] set once the first event was logged (one log line per probe instance,
/// proving the log path).
const LOGGED_FIRST_EVENT: u32 = 0;
/// Slot of [`LOGGED`] set once the first failed read was logged: later ones are only counted
/// in [`READ_ERRORS`] (a wrong offset would fail at every connection).
const LOGGED_READ_ERROR: u32 = 1;

/// Log lines already written, by slot.
#[map]
static LOGGED: Array<u32> = Array::with_max_entries(2, 0);

/// Whether `slot` of [`LOGGED`] was not set yet; sets it. A race between CPUs at most logs
/// twice.
#[inline(always)]
fn first_time(slot: u32) -> bool {
    match LOGGED.get_ptr_mut(slot) {
        // SAFETY: a valid map slot.
        Some(p) if unsafe { *p } == 0 => {
            unsafe { *p = 1 };
            true
        }
        _ => false,
    }
}

/// Counts a failed kernel read of a probe emitting `kind` events.
#[inline(always)]
fn count_read_error(kind: u32) {
    if let Some(p) = READ_ERRORS.get_ptr_mut(kind) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

/// Creation time (ns) of counted NAT/local connections awaiting their first reply, by
/// connection pointer.
#[map]
static STARTS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(STARTS_ENTRIES, 0);

/// Positions of `cp` and `direction` in the state handlers, overridden by the daemon.
#[unsafe(no_mangle)]
static STATE_ARGS: StateArgs = StateArgs {
    cp: [0; 3],
    direction: [1; 3],
};

/// Struct member offsets, overridden by the daemon at load time.
#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets {
    valid: 0,
    conn_af: 0,
    conn_flags: 0,
    conn_dest: 0,
    conn_ipvs: 0,
    ipvs_net: 0,
    net_inum: 0,
    dest_af: 0,
    dest_port: 0,
    dest_addr: 0,
    dest_protocol: 0,
    dest_vport: 0,
    dest_vaddr: 0,
    dest_vfwmark: 0,
    conn_timer: 0,
    conn_refcnt: 0,
    conn_n_control: 0,
    svc_af: 0,
    svc_protocol: 0,
    svc_addr: 0,
    svc_port: 0,
    svc_fwmark: 0,
    svc_ipvs: 0,
    _pad: 0,
};

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// Runs when `ip_vs_conn_new` returns.
#[kretprobe]
pub fn ip_vs_conn_new_ret(ctx: RetProbeContext) -> u32 {
    if let Err(e) = try_conn_new(&ctx) {
        count_read_error(KIND_NEW_CONNECTION);
        if first_time(LOGGED_READ_ERROR) {
            warn!(
                &ctx,
                "ip_vs_conn_new: reading the connection failed ({}); further failures are only counted (ipvs_ebpf_read_errors_total)",
                e
            );
        }
    }
    0
}

fn try_conn_new(ctx: &RetProbeContext) -> Result<(), i32> {
    let cp: *const u8 = ctx.ret();
    if cp.is_null() {
        return Ok(());
    }
    // SAFETY: OFFSETS is a plain global; the volatile read keeps the compiler from folding the
    // compiled-in zeros, since the loader rewrites the value.
    let off: Offsets = unsafe { core::ptr::read_volatile(&OFFSETS) };
    if off.valid == 0 {
        return Ok(());
    }
    let flags: u32 = read(cp, off.conn_flags)?;
    if flags & IP_VS_CONN_F_TEMPLATE != 0 {
        return Ok(());
    }
    let dest: *const u8 = read(cp, off.conn_dest)?;
    if dest.is_null() {
        return Ok(());
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if flags & IP_VS_CONN_F_SYNC != 0 {
        // Created on a backup from the master's sync messages: a separate count, never
        // forwarded here, so never waiting for a reply.
        let event = event_of(cp, dest, &off, KIND_SYNCED, now, 0, flags)?;
        if EVENTS.output::<Event>(&event, wakeup_flag()).is_err() {
            count_lost(KIND_SYNCED);
        }
        return Ok(());
    }
    let event = event_of(cp, dest, &off, KIND_NEW_CONNECTION, now, 0, flags)?;
    // Only NAT and local-node connections see their replies; DR and tunnel ones would only
    // take room in the map, as would one-packet connections (released after their first
    // packet, never matched by a reply). A failed insert only loses this connection's
    // measurement.
    if flags & IP_VS_CONN_F_FWD_MASK <= IP_VS_CONN_F_LOCALNODE
        && flags & IP_VS_CONN_F_ONE_PACKET == 0
    {
        let _ = STARTS.insert(cp as u64, now, 0);
    }
    if EVENTS.output::<Event>(&event, wakeup_flag()).is_err() {
        count_lost(KIND_NEW_CONNECTION);
    }
    if first_time(LOGGED_FIRST_EVENT) {
        info!(
            ctx,
            "first connection seen (netns {}, flags {:x})", event.netns_inode, flags
        );
    }
    Ok(())
}

/// The event for connection `cp` with destination `dest` (identity read from the destination).
#[inline(always)]
fn event_of(
    cp: *const u8,
    dest: *const u8,
    off: &Offsets,
    kind: u32,
    timestamp_ns: u64,
    value: u64,
    flags: u32,
) -> Result<Event, i32> {
    let ipvs: *const u8 = read(cp, off.conn_ipvs)?;
    let net: *const u8 = read(ipvs, off.ipvs_net)?;
    Ok(Event {
        timestamp_ns,
        conn: cp as u64,
        value,
        kind,
        netns_inode: read(net, off.net_inum)?,
        flags,
        fwmark: read(dest, off.dest_vfwmark)?,
        af: read(cp, off.conn_af)?,
        daf: read(dest, off.dest_af)?,
        protocol: read(dest, off.dest_protocol)?,
        vport: read(dest, off.dest_vport)?,
        dport: read(dest, off.dest_port)?,
        _pad: [0; 6],
        vaddr: read(dest, off.dest_vaddr)?,
        daddr: read(dest, off.dest_addr)?,
    })
}

/// Kprobe on `tcp_state_transition`.
#[kprobe]
pub fn tcp_state(ctx: ProbeContext) -> u32 {
    state_transition(&ctx, 0)
}

/// Kprobe on `udp_state_transition`.
#[kprobe]
pub fn udp_state(ctx: ProbeContext) -> u32 {
    state_transition(&ctx, 1)
}

/// Kprobe on `sctp_state_transition`.
#[kprobe]
pub fn sctp_state(ctx: ProbeContext) -> u32 {
    state_transition(&ctx, 2)
}

#[inline(always)]
fn state_transition(ctx: &ProbeContext, proto: usize) -> u32 {
    if let Err(e) = try_state(ctx, proto) {
        count_read_error(KIND_FIRST_RESPONSE);
        if first_time(LOGGED_READ_ERROR) {
            warn!(
                ctx,
                "state transition: reading the connection failed ({}); further failures are only counted (ipvs_ebpf_read_errors_total)",
                e
            );
        }
    }
    0
}

#[inline(always)]
fn try_state(ctx: &ProbeContext, proto: usize) -> Result<(), i32> {
    // SAFETY: plain globals, rewritten by the loader (see `try_conn_new`).
    let args: StateArgs = unsafe { core::ptr::read_volatile(&STATE_ARGS) };
    let off: Offsets = unsafe { core::ptr::read_volatile(&OFFSETS) };
    if off.valid == 0 || proto > 2 {
        return Ok(());
    }
    // SAFETY: a kprobe's context is the probed function's `pt_regs`; direct loads at constant
    // offsets (no indexing by a runtime value, which the verifier refuses for the context).
    let regs = unsafe { &*ctx.regs };
    let values = [regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9];
    let pick = |n: u32| -> u64 {
        let mut v = 0;
        for (i, r) in values.iter().enumerate() {
            if i as u32 == n {
                v = *r;
            }
        }
        v
    };
    let direction = pick(args.direction[proto]);
    if direction as u32 as i32 != IP_VS_DIR_OUTPUT {
        return Ok(());
    }
    let cp = pick(args.cp[proto]);
    if cp == 0 {
        return Ok(());
    }
    // SAFETY: the value is copied out at once; a concurrent update at worst gives a stale time.
    let Some(start) = (unsafe { STARTS.get(cp) }).copied() else {
        return Ok(());
    };
    // Only the CPU whose removal succeeds measures the connection.
    if STARTS.remove(cp).is_err() {
        return Ok(());
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let cp = cp as *const u8;
    let dest: *const u8 = read(cp, off.conn_dest)?;
    if dest.is_null() {
        return Ok(());
    }
    let flags: u32 = read(cp, off.conn_flags)?;
    let event = event_of(
        cp,
        dest,
        &off,
        KIND_FIRST_RESPONSE,
        now,
        now.saturating_sub(start),
        flags,
    )?;
    if EVENTS.output::<Event>(&event, wakeup_flag()).is_err() {
        count_lost(KIND_FIRST_RESPONSE);
    }
    Ok(())
}

/// Kprobe on `ip_vs_conn_expire(struct timer_list *t)`: a connection is being released.
#[kprobe]
pub fn ip_vs_conn_expire(ctx: ProbeContext) -> u32 {
    if let Err(e) = try_expire(&ctx) {
        warn!(
            &ctx,
            "ip_vs_conn_expire: reading the connection failed ({})", e
        );
    }
    0
}

fn try_expire(ctx: &ProbeContext) -> Result<(), i32> {
    // SAFETY: plain global, rewritten by the loader (see `try_conn_new`).
    let off: Offsets = unsafe { core::ptr::read_volatile(&OFFSETS) };
    if off.valid == 0 {
        return Ok(());
    }
    let Some(timer) = ctx.arg::<u64>(0) else {
        return Ok(());
    };
    // `from_timer`: the timer is a member of the connection.
    let cp = timer.wrapping_sub(off.conn_timer as u64);
    // The common case, a connection answered long ago (or never stored): one hash miss.
    // SAFETY: the value is copied out at once.
    let Some(start) = (unsafe { STARTS.get(cp) }).copied() else {
        return Ok(());
    };
    // `ip_vs_conn_expire` releases the connection only if it controls no other connection and
    // holds the last reference (`refcount_dec_if_one`); otherwise it re-arms the timer and the
    // connection lives on (and may still be answered).
    let p = cp as *const u8;
    let n_control: i32 = read(p, off.conn_n_control)?;
    let refcnt: i32 = read(p, off.conn_refcnt)?;
    if n_control != 0 || refcnt != 1 {
        debug!(
            ctx,
            "ip_vs_conn_expire: connection still referenced (refcnt {}, n_control {}), not released",
            refcnt,
            n_control
        );
        return Ok(());
    }
    // Only the CPU whose removal succeeds reports the connection (a reply racing with the
    // release is counted by whichever probe removes the entry first).
    if STARTS.remove(cp).is_err() {
        return Ok(());
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let dest: *const u8 = read(p, off.conn_dest)?;
    if dest.is_null() {
        return Ok(());
    }
    let flags: u32 = read(p, off.conn_flags)?;
    let event = event_of(
        p,
        dest,
        &off,
        KIND_UNANSWERED,
        now,
        now.saturating_sub(start),
        flags,
    )?;
    if EVENTS.output::<Event>(&event, wakeup_flag()).is_err() {
        count_lost(KIND_UNANSWERED);
    }
    Ok(())
}

/// Kprobe on `ip_vs_scheduler_err(struct ip_vs_service *svc, const char *msg)`: the scheduler
/// found no destination for a new connection.
#[kprobe]
pub fn ip_vs_scheduler_err(ctx: ProbeContext) -> u32 {
    if let Err(e) = try_scheduler_err(&ctx) {
        warn!(
            &ctx,
            "ip_vs_scheduler_err: reading the service failed ({})", e
        );
    }
    0
}

fn try_scheduler_err(ctx: &ProbeContext) -> Result<(), i32> {
    // SAFETY: plain global, rewritten by the loader (see `try_conn_new`).
    let off: Offsets = unsafe { core::ptr::read_volatile(&OFFSETS) };
    if off.valid == 0 {
        return Ok(());
    }
    let Some(svc) = ctx.arg::<*const u8>(0) else {
        return Ok(());
    };
    if svc.is_null() {
        return Ok(());
    }
    let ipvs: *const u8 = read(svc, off.svc_ipvs)?;
    let net: *const u8 = read(ipvs, off.ipvs_net)?;
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let event = Event {
        timestamp_ns: now,
        conn: 0,
        value: 0,
        kind: KIND_UNSCHEDULABLE,
        netns_inode: read(net, off.net_inum)?,
        flags: 0,
        fwmark: read(svc, off.svc_fwmark)?,
        af: read(svc, off.svc_af)?,
        daf: 0,
        protocol: read(svc, off.svc_protocol)?,
        vport: read(svc, off.svc_port)?,
        dport: 0,
        _pad: [0; 6],
        vaddr: read(svc, off.svc_addr)?,
        daddr: [0; 16],
    };
    if EVENTS.output::<Event>(&event, wakeup_flag()).is_err() {
        count_lost(KIND_UNSCHEDULABLE);
    }
    Ok(())
}

/// Counts an event the ring buffer could not take.
#[inline(always)]
fn count_lost(kind: u32) {
    if let Some(p) = LOST.get_ptr_mut(kind) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
