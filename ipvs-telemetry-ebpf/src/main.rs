//! The ipvs-telemetry probes.

#![no_std]
#![no_main]

use aya_ebpf::{macros::kretprobe, programs::RetProbeContext};

/// Runs when `ip_vs_conn_new` returns.
#[kretprobe]
pub fn ip_vs_conn_new_ret(_ctx: RetProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
