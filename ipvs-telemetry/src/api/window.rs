//! Windowed per-destination figures for the JSON API and `top`: new connections, first
//! responses and unanswered connections over the last [`WINDOW`], and first-response quantiles
//! from HdrHistograms (3 significant digits).
//!
//! State exists only for destinations a client asked for: a request names destinations
//! ([`Windows::track`]), and from then on the eBPF consumer feeds their events here as well
//! ([`Windows::tap`]). At most [`MAX_TRACKED`] destinations are tracked at once; one that nobody
//! asked for during [`EXPIRE`] is forgotten, and when the table is full the least recently
//! asked one gives way, unless it was asked within [`BUSY`] (then the new one is not tracked
//! and the answer counts it as `untracked`). So 100,000 destinations known cost nothing here;
//! a full table costs at most [`MAX_TRACKED`] × [`SLOTS`] histograms.
//!
//! The window is [`SLOTS`] slots of `WINDOW / SLOTS`: the slot being filled and the
//! `SLOTS - 1` before it, so an answer covers between 75 % and 100 % of [`WINDOW`]
//! (`covered_seconds` says how much exactly, and less for a destination tracked more recently).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use ipvs_telemetry_common::{Event, KIND_FIRST_RESPONSE, KIND_NEW_CONNECTION, KIND_UNANSWERED};

use crate::cli::Granularity;
use crate::ebpf::aggregate::{KeyHasher, RawKey};

/// Length of the window the API's figures cover.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Slots of a window.
pub const SLOTS: usize = 4;
/// Most destinations tracked at once.
pub const MAX_TRACKED: usize = 256;
/// A tracked destination nobody asked for this long is forgotten.
pub const EXPIRE: Duration = Duration::from_secs(60);
/// A destination asked for this recently is never evicted to make room.
pub const BUSY: Duration = Duration::from_secs(5);
/// Largest first-response time recorded (longer ones count as this): a minute, which bounds a
/// histogram at 17 Ki counters (68 KB) and a full table at 256 × 4 of them.
const MAX_NS: u64 = 60_000_000_000;
/// Smallest first-response time told apart (1 µs).
const MIN_NS: u64 = 1_000;

const SLOT_NS: u64 = WINDOW.as_nanos() as u64 / SLOTS as u64;

/// One slot of a tracked destination.
#[derive(Debug, Default)]
struct Slot {
    /// Slot number (monotonic time / slot length) these counts belong to.
    number: u64,
    new_connections: u64,
    first_responses: u64,
    unanswered: u64,
    /// First-response times (ns), allocated at the slot's first response.
    first_response: Option<Histogram<u32>>,
}

impl Slot {
    /// The slot for `number`, reset when it held an older one; `None` for an event older
    /// than the slot holds (it fell out of the window).
    fn at(&mut self, number: u64) -> Option<&mut Slot> {
        if number < self.number {
            return None;
        }
        if number > self.number {
            self.number = number;
            self.new_connections = 0;
            self.first_responses = 0;
            self.unanswered = 0;
            if let Some(h) = &mut self.first_response {
                h.reset();
            }
        }
        Some(self)
    }
}

/// A destination being tracked.
#[derive(Debug)]
struct Tracked {
    /// When it was last asked for (monotonic ns).
    asked_ns: u64,
    /// When tracking began (monotonic ns).
    since_ns: u64,
    slots: [Slot; SLOTS],
}

fn new_histogram() -> Histogram<u32> {
    // Bounds and precision are constants that hdrhistogram accepts.
    let mut h = Histogram::new_with_bounds(MIN_NS, 2 * MIN_NS, 3).expect("valid bounds");
    // Grows to the largest value recorded (a 50 ms backend: 8 Ki counters, 32 KB).
    h.auto(true);
    h
}

/// What a destination did over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// How much of the window the figures cover.
    pub covered: Duration,
    /// New connections.
    pub new_connections: u64,
    /// First responses.
    pub first_responses: u64,
    /// Connections released without a response.
    pub unanswered: u64,
    /// First-response quantiles, seconds: p50, p90, p99, p99.9, max; `None` without a response.
    pub first_response: Option<[f64; 5]>,
}

/// The tracked destinations (see the module documentation).
#[derive(Debug, Default)]
pub struct Windows {
    /// Number tracked, read by the consumer without the lock.
    len: AtomicUsize,
    inner: Mutex<HashMap<RawKey, Tracked, BuildHasherDefault<KeyHasher>>>,
}

/// The consumer's hold on [`Windows`] while it drains a chunk of events.
pub struct Tap<'a>(MutexGuard<'a, HashMap<RawKey, Tracked, BuildHasherDefault<KeyHasher>>>);

impl Tap<'_> {
    /// Counts an event of a tracked destination; others cost one hash lookup.
    #[inline]
    pub fn record(&mut self, e: &Event) {
        let key = RawKey::of_event(e, Granularity::Destination);
        let Some(t) = self.0.get_mut(&key) else {
            return;
        };
        // A first response or release belongs to the slot of the time it happened.
        let number = e.timestamp_ns / SLOT_NS;
        let Some(slot) = t.slots[(number % SLOTS as u64) as usize].at(number) else {
            return;
        };
        match e.kind {
            KIND_NEW_CONNECTION => slot.new_connections += 1,
            KIND_FIRST_RESPONSE => {
                slot.first_responses += 1;
                let h = slot.first_response.get_or_insert_with(new_histogram);
                // Grows the histogram to the value (at most MAX_NS); fails only when a counter
                // would pass u32::MAX in one slot, and then that sample is dropped.
                let _ = h.record(e.value.clamp(MIN_NS, MAX_NS));
            }
            KIND_UNANSWERED => slot.unanswered += 1,
            _ => {}
        }
    }
}

impl Windows {
    /// The consumer's hold for one chunk of events; `None` (no lock taken) when nothing is
    /// tracked.
    #[inline]
    pub fn tap(&self) -> Option<Tap<'_>> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(Tap(self.lock()))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RawKey, Tracked, BuildHasherDefault<KeyHasher>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of destinations tracked.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks `keys` as asked for at `now_ns` (monotonic) and returns each one's figures, `None`
    /// for those that could not be tracked (the table is full of recently asked ones). A key
    /// tracked from now on has no figures yet (zero coverage).
    pub fn track(&self, keys: &[RawKey], now_ns: u64) -> Vec<Option<Figures>> {
        let mut map = self.lock();
        let expire = EXPIRE.as_nanos() as u64;
        map.retain(|_, t| now_ns.saturating_sub(t.asked_ns) < expire);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if !map.contains_key(key) && map.len() >= MAX_TRACKED {
                let busy = BUSY.as_nanos() as u64;
                let oldest = map
                    .iter()
                    .filter(|(_, t)| now_ns.saturating_sub(t.asked_ns) >= busy)
                    .min_by_key(|(_, t)| t.asked_ns)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => {
                        map.remove(&k);
                    }
                    None => {
                        out.push(None);
                        continue;
                    }
                }
            }
            let t = map.entry(*key).or_insert_with(|| Tracked {
                asked_ns: now_ns,
                since_ns: now_ns,
                slots: Default::default(),
            });
            t.asked_ns = now_ns;
            out.push(Some(figures(t, now_ns)));
        }
        self.len.store(map.len(), Ordering::Relaxed);
        out
    }
}

/// The figures of `t` over the window ending at `now_ns`.
fn figures(t: &Tracked, now_ns: u64) -> Figures {
    let current = now_ns / SLOT_NS;
    let first = current.saturating_sub(SLOTS as u64 - 1);
    let start = (first * SLOT_NS).max(t.since_ns);
    let mut f = Figures {
        covered: Duration::from_nanos(now_ns.saturating_sub(start)),
        new_connections: 0,
        first_responses: 0,
        unanswered: 0,
        first_response: None,
    };
    let mut merged: Option<Histogram<u32>> = None;
    for s in t
        .slots
        .iter()
        .filter(|s| (first..=current).contains(&s.number))
    {
        f.new_connections += s.new_connections;
        f.first_responses += s.first_responses;
        f.unanswered += s.unanswered;
        if let Some(h) = s.first_response.as_ref().filter(|h| !h.is_empty()) {
            let m = merged.get_or_insert_with(new_histogram);
            // Same bounds, auto-resizing: adding cannot fail.
            let _ = m.add(h);
        }
    }
    f.first_response = merged.map(|h| {
        let s = |ns: u64| ns as f64 / 1e9;
        [
            s(h.value_at_quantile(0.5)),
            s(h.value_at_quantile(0.9)),
            s(h.value_at_quantile(0.99)),
            s(h.value_at_quantile(0.999)),
            s(h.max()),
        ]
    });
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u32, ts: u64, value: u64, last: u8) -> Event {
        let mut e = Event {
            timestamp_ns: ts,
            conn: 1,
            value,
            kind,
            netns_inode: 7,
            flags: 0,
            fwmark: 0,
            af: libc::AF_INET as u16,
            daf: libc::AF_INET as u16,
            protocol: 6,
            vport: 80u16.to_be(),
            dport: 8080u16.to_be(),
            _pad: [0; 6],
            vaddr: [0; 16],
            daddr: [0; 16],
        };
        e.vaddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 0, 1, last]);
        e
    }

    fn key(last: u8) -> RawKey {
        RawKey::of_event(&event(0, 0, 0, last), Granularity::Destination)
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn counts_and_quantiles_of_tracked_destinations_only() {
        let w = Windows::default();
        let t0 = 1000 * S;
        assert!(w.tap().is_none(), "nothing tracked: no lock");
        let first = w.track(&[key(2)], t0);
        assert_eq!(first[0].as_ref().map(|f| f.new_connections), Some(0));
        {
            let mut tap = w.tap().expect("tracked");
            for i in 0..1000u64 {
                let ts = t0 + i * 5_000_000; // 200/s for 5 s
                tap.record(&event(KIND_NEW_CONNECTION, ts, 0, 2));
                // 10 ms, 2 % at 50 ms.
                let rtt = if i % 50 == 49 { 50_000_000 } else { 10_000_000 };
                tap.record(&event(KIND_FIRST_RESPONSE, ts + rtt, rtt, 2));
                tap.record(&event(KIND_NEW_CONNECTION, ts, 0, 3)); // untracked
            }
            tap.record(&event(KIND_UNANSWERED, t0 + 4 * S, 3 * S, 2));
        }
        let f = w.track(&[key(2)], t0 + 5 * S)[0].clone().unwrap();
        assert_eq!(f.new_connections, 1000);
        assert_eq!(f.unanswered, 1);
        assert_eq!(f.covered, Duration::from_secs(5));
        assert!(f.first_responses >= 998, "{f:?}");
        let q = f.first_response.unwrap();
        assert!((q[0] - 0.010).abs() < 0.010 * 0.001, "p50 {q:?}");
        assert!((q[2] - 0.050).abs() < 0.050 * 0.001, "p99 {q:?}");
        assert!((q[4] - 0.050).abs() < 0.050 * 0.001, "max {q:?}");
        // The window slides: 20 s later nothing is left.
        let f = w.track(&[key(2)], t0 + 25 * S)[0].clone().unwrap();
        assert_eq!((f.new_connections, f.first_response), (0, None));
        assert_eq!(
            f.covered,
            Duration::from_millis(7500),
            "3 slots and the current one"
        );
    }

    #[test]
    fn bounded_with_eviction_of_the_least_recently_asked() {
        let w = Windows::default();
        let keys: Vec<RawKey> = (0..MAX_TRACKED as u32 + 10)
            .map(|i| {
                let mut e = event(0, 0, 0, 0);
                e.daddr[..4].copy_from_slice(&i.to_be_bytes());
                RawKey::of_event(&e, Granularity::Destination)
            })
            .collect();
        let t0 = 1000 * S;
        let got = w.track(&keys, t0);
        assert_eq!(
            got.iter().filter(|f| f.is_none()).count(),
            10,
            "full: not tracked"
        );
        assert_eq!(w.len(), MAX_TRACKED);
        // Later, the first 10 are asked again: the least recently asked others give way.
        let got = w.track(&keys[..10], t0 + BUSY.as_nanos() as u64);
        assert!(got.iter().all(Option::is_some));
        let got = w.track(&keys[MAX_TRACKED..], t0 + BUSY.as_nanos() as u64);
        assert!(got.iter().all(Option::is_some));
        assert_eq!(w.len(), MAX_TRACKED);
        // Nobody asks: forgotten.
        w.track(&[], t0 + 2 * EXPIRE.as_nanos() as u64);
        assert!(w.is_empty());
    }

    /// The bound docs/web.md states: a full table of destinations whose every slot saw a first
    /// response as long as the clamp (1 min) holds 256 × 4 histograms of the largest size;
    /// figures printed for BENCHMARKS.md (`cargo test -p ipvs-telemetry window -- --nocapture`).
    #[test]
    fn a_full_table_stays_within_its_memory_bound() {
        let bytes_at = |value: u64| {
            let w = Windows::default();
            let t0 = 1000 * S;
            let keys: Vec<RawKey> = (0..MAX_TRACKED).map(|i| key(i as u8)).collect();
            assert_eq!(w.track(&keys, t0).iter().flatten().count(), MAX_TRACKED);
            {
                let mut tap = w.tap().expect("tracked");
                for slot in 0..SLOTS as u64 {
                    for i in 0..MAX_TRACKED {
                        let ts = t0 + slot * SLOT_NS;
                        tap.record(&event(KIND_FIRST_RESPONSE, ts, value, i as u8));
                        tap.record(&event(KIND_FIRST_RESPONSE, ts, MIN_NS, i as u8));
                    }
                }
            }
            let map = w.lock();
            let histograms: Vec<&Histogram<u32>> = map
                .values()
                .flat_map(|t| t.slots.iter().filter_map(|s| s.first_response.as_ref()))
                .collect();
            assert_eq!(histograms.len(), MAX_TRACKED * SLOTS);
            let counters: usize = histograms.iter().map(|h| h.distinct_values()).sum();
            counters * std::mem::size_of::<u32>()
                + map.len() * std::mem::size_of::<Tracked>()
                + histograms.len() * std::mem::size_of::<Histogram<u32>>()
        };
        let at_50ms = bytes_at(50_000_000);
        let at_clamp = bytes_at(MAX_NS * 2);
        eprintln!(
            "windowed state, {MAX_TRACKED} destinations x {SLOTS} slots: {:.1} MB with 50 ms \
             first responses, {:.1} MB at the 1 min clamp",
            at_50ms as f64 / 1e6,
            at_clamp as f64 / 1e6
        );
        assert!(at_50ms < at_clamp);
        assert!(at_clamp <= 100_000_000, "{at_clamp} bytes");
    }
}
