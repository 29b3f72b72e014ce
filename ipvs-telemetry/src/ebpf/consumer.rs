//! The consumer task that drains the probes' ring buffer into the aggregator.
//!
//! The ring buffer ([`ipvs_telemetry_common::RING_BYTES`], 4 MiB = 43,690 events) is read with
//! tokio's `AsyncFd`: on each wake-up the consumer drains it completely (in chunks of
//! [`CHUNK`] events per lock hold, so [`super::Ebpf::snapshot`] never waits long) before
//! clearing readiness, so no wake-up is missed.

use std::sync::Arc;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use ipvs_telemetry_common::{DRAIN_INTERVAL_MS, Event, KINDS};
use tokio::io::unix::AsyncFd;

use super::{Drains, Shared, lock};

/// Events handled per lock hold.
const CHUNK: usize = 4096;

/// Drains the ring buffer into the aggregator every [`DRAIN_INTERVAL_MS`], whenever the
/// probes wake it (they do once [`ipvs_telemetry_common::WAKEUP_BYTES`] are waiting), and when a
/// scrape asks.
pub(super) async fn consume(
    shared: Shared,
    mut fd: AsyncFd<RingBuf<MapData>>,
    drains: Arc<Drains>,
) {
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
