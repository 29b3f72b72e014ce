//! Host microbenchmark of the consumer's hot path (`cargo xtask bench ebpf`, part b): synthetic
//! events into [`Aggregator`] on one core, no kernel needed.

use std::time::Duration;

use ipvs_telemetry_common::Event;

use super::aggregate::Aggregator;
use crate::cli::Granularity;

/// A new-connection event at `ts` (ns) from TCP 10.0.0.1:80 to 10.0.1.1:`dport` in the
/// initial namespace: the benchmark's and the aggregator tests' input.
pub(super) fn synthetic_event(ts: u64, dport: u16) -> Event {
    let mut vaddr = [0; 16];
    vaddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    let mut daddr = [0; 16];
    daddr[..4].copy_from_slice(&[10, 0, 1, 1]);
    Event {
        timestamp_ns: ts,
        // A distinct connection pointer per (time, real server).
        conn: 0xffff_8880_0000_0000u64
            .wrapping_add(ts << 16)
            .wrapping_add(dport as u64),
        value: 0,
        kind: 0,
        netns_inode: 4026531840,
        flags: 0,
        fwmark: 0,
        af: 2,
        daf: 2,
        protocol: 6,
        vport: 80u16.to_be(),
        dport: dport.to_be(),
        _pad: [0; 6],
        vaddr,
        daddr,
    }
}

/// Microbenchmark of [`Aggregator::record`]: `events` synthetic events spread over
/// `destinations` destinations, 1 µs apart. Returns a one-line report with events/s.
fn bench_events_per_second(destinations: u16, events: u64) -> String {
    let mut a = Aggregator::new(
        Granularity::Destination,
        Duration::from_millis(100),
        100_000,
    );
    let mut e = synthetic_event(0, 0);
    let start = std::time::Instant::now();
    let mut x: u32 = 1;
    for i in 0..events {
        // xorshift picks the destination so the map access pattern is not sequential
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        e.dport = (x % destinations.max(1) as u32) as u16;
        e.timestamp_ns = 1_000_000_000 + i * 1_000;
        a.record(std::hint::black_box(&e));
    }
    let secs = start.elapsed().as_secs_f64();
    let total: u64 = a
        .collect(u64::MAX / 2, |_| super::aggregate::Seen::Present)
        .iter()
        .map(|(_, v)| v.count)
        .sum();
    format!(
        "ebpf consumer: {} events over {} destinations in {:.3} s = {:.2} M events/s on one core",
        total,
        destinations,
        secs,
        total as f64 / secs / 1e6
    )
}

#[cfg(test)]
mod tests {
    /// Run with `cargo test --release -p ipvs-telemetry ebpf::bench -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn consumer_events_per_second() {
        println!("{}", super::bench_events_per_second(1_000, 20_000_000));
        println!("{}", super::bench_events_per_second(65_000, 20_000_000));
    }
}
