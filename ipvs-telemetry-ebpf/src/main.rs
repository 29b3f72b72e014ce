//! The ipvs-telemetry probes.
//!
//! `ip_vs_conn_new_ret`, a kretprobe on `ip_vs_conn_new`, emits one [`Event`] per connection
//! IPVS schedules to a destination. Persistence templates, sync-created connections and
//! connections without a destination (bypass) are skipped, so the count per destination equals
//! the kernel's own `conns` counter. Struct member offsets come from the daemon (BTF) through
//! the `OFFSETS` global: Rust eBPF has no CO-RE relocations.

#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{kretprobe, map},
    maps::{Array, PerCpuArray, RingBuf},
    programs::RetProbeContext,
};
use aya_log_ebpf::{info, warn};
use ipvs_telemetry_common::{
    Event, IP_VS_CONN_F_SYNC, IP_VS_CONN_F_TEMPLATE, KIND_NEW_CONNECTION, KINDS, Offsets,
    RING_BYTES,
};

/// Events for the daemon.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Events the ring buffer had no room for, per CPU, indexed by kind.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(KINDS, 0);

/// Set once the first event was logged (one log line per probe instance, proving the log path).
#[map]
static LOGGED: Array<u32> = Array::with_max_entries(1, 0);

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
        warn!(
            &ctx,
            "ip_vs_conn_new: reading the connection failed ({})", e
        );
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
    if flags & (IP_VS_CONN_F_TEMPLATE | IP_VS_CONN_F_SYNC) != 0 {
        return Ok(());
    }
    let dest: *const u8 = read(cp, off.conn_dest)?;
    if dest.is_null() {
        return Ok(());
    }
    let ipvs: *const u8 = read(cp, off.conn_ipvs)?;
    let net: *const u8 = read(ipvs, off.ipvs_net)?;
    let event = Event {
        // SAFETY: no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        conn: cp as u64,
        value_ns: 0,
        kind: KIND_NEW_CONNECTION,
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
    };
    if EVENTS.output::<Event>(&event, 0).is_err() {
        count_lost(KIND_NEW_CONNECTION);
    }
    if let Some(p) = LOGGED.get_ptr_mut(0) {
        // SAFETY: a valid map slot; a race between CPUs at most logs twice.
        if unsafe { *p } == 0 {
            unsafe { *p = 1 };
            info!(
                ctx,
                "first connection seen (netns {}, flags {:x})", event.netns_inode, flags
            );
        }
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
