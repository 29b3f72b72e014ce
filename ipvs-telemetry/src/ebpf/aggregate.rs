//! The consumer's hot path: ring-buffer events into per-destination counters and histograms.
//!
//! Per event: one hash-map lookup keyed by a compact 56-byte key, a counter increment, one
//! inter-arrival bucket increment and, when a rate window closes, one rate bucket increment.
//! Nothing allocates after a destination's first event.
//!
//! Rate windows tile the time since a destination's first connection, computed lazily: a window
//! lasts `--ebpf.rate-window` and closes (one observation: its connections divided by the window
//! length) when a later event falls past its end, or at the next collection if its end has
//! passed. The idle windows that follow are observed as 0/s all at once, in O(1), when the next
//! event or collection comes; after an idle gap the next window starts at the next connection
//! (the partial idle window before it is dropped), so a burst is never split by a grid line. An
//! idle destination therefore costs nothing per window, and the histogram describes the share
//! of windows at each rate, idle ones included.
//!
//! Histograms are accumulated directly into their fixed Prometheus buckets (see
//! [`RATE_BUCKETS`], [`INTERARRIVAL_BUCKETS`]): exact at every bucket boundary and 8 bytes per
//! bucket, so `--ebpf.max-destinations` (default 100,000) destinations stay within tens of MB.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipvs_telemetry_common::Event;

use super::native::NativeBuckets;
use crate::cli::Granularity;
use crate::model::{EbpfKey, Family, HistogramSnapshot, Protocol, ServiceAddress};

/// Upper bounds (connections per second) of `ipvs_ebpf_destination_connection_rate_per_second`.
pub const RATE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5,
    5e5, 1e6,
];

/// Upper bounds (seconds) of `ipvs_ebpf_destination_connection_interarrival_seconds`.
pub const INTERARRIVAL_BUCKETS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Upper bounds (seconds) of `ipvs_ebpf_destination_first_response_seconds`: 50 µs to 10 s,
/// in 1-1.2-1.5-2-2.5-3-4-5-6-8 steps from 1 ms to 1 s and in coarser 1-2.5-5 steps below
/// 1 ms and above 1 s. From 1 ms to 1 s neighbours are at most 4/3 apart: a quantile
/// interpolated inside a bucket (`histogram_quantile`) is never off by more than a third, and
/// a median by at most 1/6 (about 17 %) when one bucket holds nearly all the values, as for a
/// steady backend.
pub const FIRST_RESPONSE_BUCKETS: &[f64] = &[
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1.2e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3, 4e-3, 5e-3, 6e-3, 8e-3,
    0.01, 0.012, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3,
    0.4, 0.5, 0.6, 0.8, 1.0, 2.5, 5.0, 10.0,
];

/// HELP text of `ipvs_ebpf_destination_unanswered_connections_total`.
pub const UNANSWERED_HELP: &str = "Connections to the destination that IPVS released (expired, flushed or dropped) without a single packet from the real server through the director. NAT (masquerading) and local forwarding only: with direct routing and tunnels replies bypass the director and this cannot be known (always 0).";

/// HELP text of `ipvs_ebpf_destination_waiting_connections`.
pub const WAITING_HELP: &str = "Open connections to the destination that have waited longer than --ebpf.unanswered-after (to within an eighth of it) for their first packet from the real server. NAT (masquerading) and local forwarding only, as for the unanswered counter.";

/// HELP text of `ipvs_ebpf_destination_synced_connections_total`.
pub const SYNCED_HELP: &str = "Connections to the destination created on this (backup) director from the master's sync messages (IP_VS_CONN_F_SYNC), as they happen; not part of the new-connection counter.";

/// HELP text of `ipvs_ebpf_service_unschedulable_total`.
pub const UNSCHEDULABLE_HELP: &str = "New connections of the service for which the scheduler found no destination (every destination removed, at weight 0 or over its upper threshold), counted as they happen (ip_vs_scheduler_err). A client's retransmission is a new attempt.";

/// HELP text of `ipvs_ebpf_destination_first_response_seconds`.
pub const FIRST_RESPONSE_HELP: &str = "Seconds from the creation of a connection (ip_vs_conn_new) to the first packet from the real server passing the director. Only NAT (masquerading) and local forwarding are measured: direct-routing and tunnel replies bypass the director.";

const FIRST_RESPONSE_SLOTS: usize = FIRST_RESPONSE_BUCKETS.len() + 1;
const RATE_SLOTS: usize = RATE_BUCKETS.len() + 1;
const INTERARRIVAL_SLOTS: usize = INTERARRIVAL_BUCKETS.len() + 1;

/// A histogram with fixed bounds, accumulated in integer units (window connections, or ns).
/// `N` slots: one per bound plus `+Inf`; stored inline so a destination is one allocation.
#[derive(Debug, Clone)]
struct Buckets<const N: usize> {
    /// Non-cumulative counts; the last slot is `+Inf`.
    counts: [u64; N],
    /// Sum of the recorded values, in the recording unit.
    sum: u64,
    /// The same observations in native buckets (exported unit).
    native: NativeBuckets,
}

impl<const N: usize> Buckets<N> {
    fn new() -> Self {
        Buckets {
            counts: [0; N],
            sum: 0,
            native: NativeBuckets::default(),
        }
    }

    /// Records `value` (recording unit); `scale` converts it to the exported unit.
    #[inline]
    fn record(&mut self, thresholds: &[u64], value: u64, scale: f64) {
        let i = thresholds.partition_point(|&t| t < value);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum = self.sum.wrapping_add(value);
        self.native.observe(value as f64 * scale);
    }

    /// Records `n` observations of 0 (idle rate windows) at once: 0 is at or below every
    /// bound, so they all fall into the first bucket.
    #[inline]
    fn record_zeros(&mut self, n: u64) {
        if let Some(c) = self.counts.first_mut() {
            *c += n;
        }
        self.native.observe_zeros(n);
    }

    /// Cumulative buckets, converting the sum with `scale` (unit to exported unit).
    fn snapshot(&self, bounds: &[f64], scale: f64) -> HistogramSnapshot {
        let mut acc = 0;
        let buckets = bounds
            .iter()
            .zip(self.counts.iter())
            .map(|(&b, &c)| {
                acc += c;
                (b, acc)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: self.counts.iter().sum(),
            sum: self.sum as f64 * scale,
            native: Some(self.native.snapshot()),
        }
    }
}

/// Identity of a destination (or service) as the probe reports it; the hash-map key.
/// Addresses and ports in network order, as in [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RawKey {
    netns: u32,
    fwmark: u32,
    af: u16,
    daf: u16,
    protocol: u16,
    vport: u16,
    dport: u16,
    vaddr: [u8; 16],
    daddr: [u8; 16],
}

impl Hash for RawKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let w = |b: &[u8; 16]| {
            let (lo, hi) = b.split_at(8);
            (
                u64::from_ne_bytes(lo.try_into().unwrap_or_default()),
                u64::from_ne_bytes(hi.try_into().unwrap_or_default()),
            )
        };
        let (v0, v1) = w(&self.vaddr);
        let (d0, d1) = w(&self.daddr);
        let words = [
            (self.netns as u64) << 32 | self.fwmark as u64,
            (self.af as u64) << 48
                | (self.daf as u64) << 32
                | (self.protocol as u64) << 16
                | self.vport as u64,
            self.dport as u64,
            v0,
            v1,
            d0,
            d1,
        ];
        let mut h: u64 = 0;
        for x in words {
            h = (h.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        state.write_u64(h);
    }
}

/// Passes a precomputed 64-bit hash through, finished with a multiply-xorshift.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let x = self.0;
        (x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

fn addr_bytes(a: IpAddr) -> [u8; 16] {
    let mut out = [0; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

fn addr_of(af: u16, b: &[u8; 16]) -> Option<IpAddr> {
    match Family::from_af(af)? {
        Family::Inet => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        Family::Inet6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
    }
}

impl RawKey {
    /// The key of an event at `granularity`.
    #[inline]
    pub fn of_event(e: &Event, granularity: Granularity) -> Self {
        let mut k = RawKey {
            netns: e.netns_inode,
            fwmark: e.fwmark,
            af: e.af,
            daf: e.daf,
            protocol: e.protocol,
            vport: e.vport,
            dport: e.dport,
            vaddr: e.vaddr,
            daddr: e.daddr,
        };
        k.normalize(granularity);
        k
    }

    /// The key of a netlink service/destination, comparable with [`RawKey::of_event`].
    pub fn of_netlink(
        netns: u64,
        family: Family,
        service: &ServiceAddress,
        destination: Option<(Family, IpAddr, u16)>,
        granularity: Granularity,
    ) -> Self {
        let mut k = RawKey {
            netns: netns as u32,
            fwmark: 0,
            af: family.af(),
            daf: 0,
            protocol: 0,
            vport: 0,
            dport: 0,
            vaddr: [0; 16],
            daddr: [0; 16],
        };
        match *service {
            ServiceAddress::Inet {
                protocol,
                address,
                port,
            } => {
                k.protocol = protocol.number();
                k.vaddr = addr_bytes(address);
                k.vport = port.to_be();
            }
            ServiceAddress::Fwmark { mark } => k.fwmark = mark,
        }
        if let Some((f, a, p)) = destination {
            k.daf = f.af();
            k.daddr = addr_bytes(a);
            k.dport = p.to_be();
        }
        k.normalize(granularity);
        k
    }

    /// Fwmark services are identified by mark alone; service granularity drops the real server.
    #[inline]
    fn normalize(&mut self, granularity: Granularity) {
        if self.fwmark != 0 {
            self.protocol = 0;
            self.vport = 0;
            self.vaddr = [0; 16];
        }
        if granularity == Granularity::Service {
            self.daf = 0;
            self.dport = 0;
            self.daddr = [0; 16];
        }
    }

    /// The namespace inode.
    pub fn netns(&self) -> u32 {
        self.netns
    }

    /// The model's key; `None` for families other than IPv4/IPv6.
    pub fn to_model(&self) -> Option<EbpfKey> {
        let family = Family::from_af(self.af)?;
        let service = if self.fwmark != 0 {
            ServiceAddress::Fwmark { mark: self.fwmark }
        } else {
            ServiceAddress::Inet {
                protocol: Protocol::from_number(self.protocol),
                address: addr_of(self.af, &self.vaddr)?,
                port: u16::from_be(self.vport),
            }
        };
        let destination = if self.daf == 0 {
            None
        } else {
            Some((addr_of(self.daf, &self.daddr)?, u16::from_be(self.dport)))
        };
        Some(EbpfKey {
            netns_inode: self.netns as u64,
            family,
            service,
            destination,
        })
    }
}

/// What the latest netlink snapshot says about a tracked key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The key's destination (or service) is in it.
    Present,
    /// Not in it; its namespace was read (or found unselected) from `read_at_ns` on
    /// (`CLOCK_MONOTONIC`).
    Absent {
        /// When the read of the key's namespace began.
        read_at_ns: u64,
    },
    /// Nothing known this time (the namespace could not be read): the key is kept as it is.
    Unknown,
}

/// Slots of [`Waiting`]: the age of a waiting connection is known to within
/// `--ebpf.unanswered-after` / `WAITING_SLOTS`.
pub const WAITING_SLOTS: usize = 8;

/// The NAT/local connections of one destination waiting for their first reply, counted by age
/// without any per-connection state: a new connection adds one to the slot of its creation
/// time; its first response or release (whose event carries the delay since creation) takes
/// one from the slot of that same creation time. Slots cover the last `WAITING_SLOTS` slot
/// widths; older ones are folded into `old`, the connections waiting longer than the threshold.
#[derive(Debug, Clone, Default)]
struct Waiting {
    slots: [u32; WAITING_SLOTS],
    /// Slot number (time / width) of the newest slot.
    newest: u64,
    /// Connections created before the oldest slot, still waiting.
    old: u64,
}

impl Waiting {
    /// Moves the slots forward to `now` (ns), folding those that age out into `old`.
    #[inline]
    fn advance(&mut self, width: u64, now: u64) {
        let cur = now / width;
        if cur <= self.newest {
            return;
        }
        let n = WAITING_SLOTS as u64;
        // The ring holds slots newest-n+1 ..= newest; those up to cur-n age out (at most n).
        if cur >= n {
            let from = (self.newest + 1).saturating_sub(n);
            let to = (cur - n).min(self.newest);
            if to >= from {
                for slot in from..=to {
                    let i = (slot % n) as usize;
                    self.old += u64::from(self.slots[i]);
                    self.slots[i] = 0;
                }
            }
        }
        self.newest = cur;
    }

    /// A connection created at `ts`.
    #[inline]
    fn start(&mut self, width: u64, ts: u64) {
        self.advance(width, ts);
        let slot = ts / width;
        if slot + (WAITING_SLOTS as u64) <= self.newest {
            self.old += 1;
        } else {
            let s = &mut self.slots[(slot % WAITING_SLOTS as u64) as usize];
            *s = s.saturating_add(1);
        }
    }

    /// The end (first response or release) of the connection of event `e`, created
    /// `e.value` ns before it.
    #[inline]
    fn end(&mut self, width: u64, e: &Event) {
        self.advance(width, e.timestamp_ns);
        let slot = e.timestamp_ns.saturating_sub(e.value) / width;
        if slot + (WAITING_SLOTS as u64) <= self.newest {
            self.old = self.old.saturating_sub(1);
        } else {
            let s = &mut self.slots[(slot % WAITING_SLOTS as u64) as usize];
            *s = s.saturating_sub(1);
        }
    }

    /// Connections waiting longer than the threshold at `now`.
    fn old(&mut self, width: u64, now: u64) -> u64 {
        self.advance(width, now);
        self.old
    }
}

/// State of one destination.
#[derive(Debug, Clone)]
pub struct DestState {
    /// New connections seen.
    pub count: u64,
    last_ts: u64,
    win_start: u64,
    win_count: u64,
    /// Largest closed window count since the previous collection.
    peak: u64,
    rate: Buckets<RATE_SLOTS>,
    interarrival: Buckets<INTERARRIVAL_SLOTS>,
    first_response: Buckets<FIRST_RESPONSE_SLOTS>,
    /// Connections released without a reply.
    unanswered: u64,
    /// Connections created from sync messages (backup director).
    synced: u64,
    /// NAT/local connections waiting for their first reply, by age.
    waiting: Waiting,
    /// Absent from the previous netlink snapshot (forgotten if absent again).
    missing: bool,
}

/// Unschedulable attempts of one service.
#[derive(Debug, Clone, Default)]
struct ServiceState {
    unschedulable: u64,
    last_ts: u64,
    missing: bool,
}

/// One destination's values at a collection, in exported units.
#[derive(Debug, Clone, PartialEq)]
pub struct DestValues {
    /// New connections.
    pub count: u64,
    /// Rate histogram (connections per second).
    pub rate: HistogramSnapshot,
    /// Highest window rate since the previous collection.
    pub peak_rate: f64,
    /// Inter-arrival histogram (seconds).
    pub interarrival: HistogramSnapshot,
    /// First-response histogram (seconds).
    pub first_response: HistogramSnapshot,
    /// Connections released without a reply.
    pub unanswered: u64,
    /// Connections created from sync messages.
    pub synced: u64,
    /// Open connections waiting for their first reply longer than the threshold.
    pub waiting: u64,
}

/// All destinations.
pub struct Aggregator {
    granularity: Granularity,
    window_ns: u64,
    max: usize,
    rate_thresholds: Vec<u64>,
    interarrival_thresholds: Vec<u64>,
    first_response_thresholds: Vec<u64>,
    map: HashMap<RawKey, DestState, BuildHasherDefault<KeyHasher>>,
    /// Unschedulable attempts per service key.
    services: HashMap<RawKey, ServiceState, BuildHasherDefault<KeyHasher>>,
    /// Width of one [`Waiting`] slot: `--ebpf.unanswered-after` / [`WAITING_SLOTS`].
    waiting_slot_ns: u64,
    /// Events dropped because `max` destinations were already tracked.
    pub overflow: u64,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(granularity: Granularity, window: Duration, max_destinations: usize) -> Self {
        let window_ns = (window.as_nanos() as u64).max(1);
        let secs = window_ns as f64 / 1e9;
        Aggregator {
            granularity,
            window_ns,
            max: max_destinations,
            // rate <= bound  <=>  count <= bound * window (in seconds)
            rate_thresholds: RATE_BUCKETS
                .iter()
                .map(|b| (b * secs + 1e-9).floor() as u64)
                .collect(),
            interarrival_thresholds: INTERARRIVAL_BUCKETS
                .iter()
                .map(|b| (b * 1e9).round() as u64)
                .collect(),
            first_response_thresholds: FIRST_RESPONSE_BUCKETS
                .iter()
                .map(|b| (b * 1e9).round() as u64)
                .collect(),
            map: HashMap::default(),
            services: HashMap::default(),
            waiting_slot_ns: 5_000_000_000 / WAITING_SLOTS as u64,
            overflow: 0,
        }
    }

    /// Sets `--ebpf.unanswered-after` (default 5 s).
    pub fn set_unanswered_after(&mut self, after: Duration) {
        self.waiting_slot_ns = (after.as_nanos() as u64 / WAITING_SLOTS as u64).max(1);
    }

    /// Tracked destinations.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No destination tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The state of `key`, created if there is room (else counted in `overflow`).
    #[inline]
    fn state<'a>(
        map: &'a mut HashMap<RawKey, DestState, BuildHasherDefault<KeyHasher>>,
        overflow: &mut u64,
        max: usize,
        key: RawKey,
    ) -> Option<&'a mut DestState> {
        // The length first: a second lookup only once the cap is reached.
        if map.len() >= max && !map.contains_key(&key) {
            *overflow += 1;
            return None;
        }
        Some(map.entry(key).or_insert_with(|| DestState {
            count: 0,
            last_ts: 0,
            win_start: 0,
            win_count: 0,
            peak: 0,
            rate: Buckets::new(),
            interarrival: Buckets::new(),
            first_response: Buckets::new(),
            unanswered: 0,
            synced: 0,
            waiting: Waiting::default(),
            missing: false,
        }))
    }

    /// Records an event of either kind.
    #[inline]
    pub fn record_event(&mut self, e: &Event) {
        match e.kind {
            ipvs_telemetry_common::KIND_NEW_CONNECTION => self.record(e),
            ipvs_telemetry_common::KIND_FIRST_RESPONSE => self.record_first_response(e),
            ipvs_telemetry_common::KIND_UNANSWERED => self.record_unanswered(e),
            ipvs_telemetry_common::KIND_UNSCHEDULABLE => self.record_unschedulable(e),
            ipvs_telemetry_common::KIND_SYNCED => self.record_synced(e),
            _ => {}
        }
    }

    /// Records the first response of a connection (`e.value` ns after its creation).
    #[inline]
    pub fn record_first_response(&mut self, e: &Event) {
        let key = RawKey::of_event(e, self.granularity);
        let d = Self::state(&mut self.map, &mut self.overflow, self.max, key);
        if let Some(d) = d {
            d.first_response
                .record(&self.first_response_thresholds, e.value, 1e-9);
            d.waiting.end(self.waiting_slot_ns, e);
        }
    }

    /// Records a connection released without a reply.
    #[inline]
    pub fn record_unanswered(&mut self, e: &Event) {
        let key = RawKey::of_event(e, self.granularity);
        if let Some(d) = Self::state(&mut self.map, &mut self.overflow, self.max, key) {
            d.unanswered += 1;
            d.waiting.end(self.waiting_slot_ns, e);
        }
    }

    /// Records a connection a backup's sync daemon created.
    pub fn record_synced(&mut self, e: &Event) {
        let key = RawKey::of_event(e, self.granularity);
        if let Some(d) = Self::state(&mut self.map, &mut self.overflow, self.max, key) {
            d.synced += 1;
            d.last_ts = d.last_ts.max(e.timestamp_ns);
        }
    }

    /// Records a new connection of a service that found no destination.
    pub fn record_unschedulable(&mut self, e: &Event) {
        let key = RawKey::of_event(e, Granularity::Service);
        if self.services.len() >= self.max && !self.services.contains_key(&key) {
            self.overflow += 1;
            return;
        }
        let s = self.services.entry(key).or_default();
        s.unschedulable += 1;
        s.last_ts = s.last_ts.max(e.timestamp_ns);
    }

    /// Records one new connection.
    #[inline]
    pub fn record(&mut self, e: &Event) {
        let ts = e.timestamp_ns;
        let key = RawKey::of_event(e, self.granularity);
        let d = Self::state(&mut self.map, &mut self.overflow, self.max, key);
        let Some(d) = d else { return };
        // The probe's filter for `STARTS`: NAT or local node, not one-packet.
        use ipvs_telemetry_common::{
            IP_VS_CONN_F_FWD_MASK, IP_VS_CONN_F_LOCALNODE, IP_VS_CONN_F_ONE_PACKET,
        };
        if e.flags & IP_VS_CONN_F_FWD_MASK <= IP_VS_CONN_F_LOCALNODE
            && e.flags & IP_VS_CONN_F_ONE_PACKET == 0
        {
            d.waiting.start(self.waiting_slot_ns, ts);
        }
        if d.count > 0 {
            d.interarrival.record(
                &self.interarrival_thresholds,
                ts.saturating_sub(d.last_ts),
                1e-9,
            );
        }
        d.count += 1;
        d.last_ts = d.last_ts.max(ts);
        if d.count == 1 {
            d.win_start = ts;
            d.win_count = 1;
        } else if ts < d.win_start.saturating_add(self.window_ns) {
            // In the open window (or slightly older, from another CPU's ring position).
            d.win_count += 1;
        } else {
            Self::close_windows(&self.rate_thresholds, self.window_ns, d, ts);
            // The next window starts at this connection.
            d.win_start = ts;
            d.win_count = 1;
        }
    }

    /// Closes the open window of `d` (its end is at or before `now`) and observes every whole
    /// idle window between its end and `now` as 0/s. Leaves `d.win_start` at the end of the
    /// last observed window, with an empty open window.
    #[inline]
    fn close_windows(thresholds: &[u64], window_ns: u64, d: &mut DestState, now: u64) {
        d.rate
            .record(thresholds, d.win_count, 1e9 / window_ns as f64);
        d.peak = d.peak.max(d.win_count);
        let end = d.win_start.saturating_add(window_ns);
        let idle = now.saturating_sub(end) / window_ns;
        if idle > 0 {
            d.rate.record_zeros(idle);
        }
        d.win_start = end.saturating_add(idle.saturating_mul(window_ns));
        d.win_count = 0;
    }

    /// Closes windows that ended before `now_ns`, forgets destinations absent from two
    /// consecutive netlink snapshots (`seen` says what the current one holds of a key), and
    /// returns every remaining destination's values. Resets the peaks.
    ///
    /// An absence only counts when the netlink read began after the key's last connection: a
    /// destination (or namespace) that appeared while or after its namespace was read keeps
    /// its counts until a later read can show it.
    pub fn collect(
        &mut self,
        now_ns: u64,
        mut seen: impl FnMut(&RawKey) -> Seen,
    ) -> Vec<(RawKey, DestValues)> {
        let secs = self.window_ns as f64 / 1e9;

        let mut out = Vec::with_capacity(self.map.len());
        self.map.retain(|k, d| match seen(k) {
            Seen::Present => {
                d.missing = false;
                true
            }
            Seen::Absent { read_at_ns } if read_at_ns > d.last_ts => {
                let forget = d.missing;
                d.missing = true;
                !forget
            }
            Seen::Absent { .. } | Seen::Unknown => true,
        });
        self.services.retain(|k, s| match seen(k) {
            Seen::Present => {
                s.missing = false;
                true
            }
            Seen::Absent { read_at_ns } if read_at_ns > s.last_ts => {
                let forget = s.missing;
                s.missing = true;
                !forget
            }
            Seen::Absent { .. } | Seen::Unknown => true,
        });
        for (k, d) in &mut self.map {
            if d.count > 0 && now_ns >= d.win_start.saturating_add(self.window_ns) {
                Self::close_windows(&self.rate_thresholds, self.window_ns, d, now_ns);
            }
            let peak = d.peak.max(d.win_count);
            d.peak = 0;
            out.push((
                *k,
                DestValues {
                    count: d.count,
                    rate: d.rate.snapshot(RATE_BUCKETS, 1.0 / secs),
                    peak_rate: peak as f64 / secs,
                    interarrival: d.interarrival.snapshot(INTERARRIVAL_BUCKETS, 1e-9),
                    first_response: d.first_response.snapshot(FIRST_RESPONSE_BUCKETS, 1e-9),
                    unanswered: d.unanswered,
                    synced: d.synced,
                    waiting: d.waiting.old(self.waiting_slot_ns, now_ns),
                },
            ));
        }
        out.sort_by_key(|a| a.0);
        out
    }

    /// Forgets every waiting connection: the probes were detached (`ip_vs` unloaded, which
    /// releases every connection unseen), so none of them will be reported again.
    pub fn clear_pending(&mut self) {
        for d in self.map.values_mut() {
            d.waiting = Waiting::default();
        }
    }

    /// Unschedulable attempts per service key (forgotten like destinations by
    /// [`Aggregator::collect`], which should run first).
    pub fn unschedulable(&self) -> Vec<(RawKey, u64)> {
        let mut out: Vec<(RawKey, u64)> = self
            .services
            .iter()
            .map(|(k, s)| (*k, s.unschedulable))
            .collect();
        out.sort_by_key(|a| a.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn event(ts: u64, dport: u16) -> Event {
        crate::ebpf::bench::synthetic_event(ts, dport)
    }

    fn bucket(h: &HistogramSnapshot, le: f64) -> u64 {
        h.buckets
            .iter()
            .find(|(b, _)| *b == le)
            .map(|x| x.1)
            .unwrap()
    }

    #[test]
    fn bursts_of_ten_then_idle_give_known_buckets() {
        // 100 ms windows; 5 bursts of 10 connections 1 ms apart, bursts 1 s apart.
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_millis(100), 10);
        for burst in 0..5u64 {
            for i in 0..10u64 {
                a.record(&event(1_000 * MS + burst * 1_000 * MS + i * MS, 8080));
            }
        }
        let out = a.collect(10_000 * MS, |_| Seen::Present);
        assert_eq!(out.len(), 1);
        let v = &out[0].1;
        assert_eq!(v.count, 50);
        // Five windows of 10 connections in 0.1 s: 100/s each; between bursts 9 idle windows
        // (0.1 s to 1.0 s after each burst's start), after the last one 49 (5.1 s to 10 s).
        assert_eq!(v.rate.count, 5 + 4 * 9 + 49);
        assert_eq!(bucket(&v.rate, 1.0), 4 * 9 + 49);
        assert_eq!(bucket(&v.rate, 50.0), 4 * 9 + 49);
        assert_eq!(bucket(&v.rate, 100.0), 90);
        assert!((v.rate.sum - 500.0).abs() < 1e-9);
        assert!((v.peak_rate - 100.0).abs() < 1e-9);
        // 45 gaps of 1 ms, 4 gaps of 991 ms.
        assert_eq!(v.interarrival.count, 49);
        assert_eq!(bucket(&v.interarrival, 5e-4), 0);
        assert_eq!(bucket(&v.interarrival, 1e-3), 45);
        assert_eq!(bucket(&v.interarrival, 0.5), 45);
        assert_eq!(bucket(&v.interarrival, 1.0), 49);
        assert!((v.interarrival.sum - (45.0 * 0.001 + 4.0 * 0.991)).abs() < 1e-9);
        // The peak resets at each collection.
        let again = a.collect(20_000 * MS, |_| Seen::Present);
        assert_eq!(again[0].1.peak_rate, 0.0);
        assert_eq!(again[0].1.count, 50);
        // Every window from 10 s to 20 s was idle: 100 more observations of 0/s.
        assert_eq!(again[0].1.rate.count, 190);
        assert_eq!(bucket(&again[0].1.rate, 1.0), 185);
        // The native buckets hold the same observations: the idle windows in the zero bucket,
        // the five 100/s windows in the bucket of 100, the gaps in those of 1 ms and 991 ms.
        let native = |h: &HistogramSnapshot| h.native.clone().unwrap();
        let key = |v: f64| (8.0 * v.log2()).ceil() as i32;
        let r = native(&again[0].1.rate);
        assert_eq!((r.schema, r.zero_count), (3, 185));
        assert_eq!((r.offset, r.counts.clone()), (key(100.0), vec![5]));
        let ia = native(&v.interarrival);
        assert_eq!(ia.zero_count, 0);
        assert_eq!(ia.counts.iter().sum::<u64>(), 49);
        assert_eq!(ia.offset, key(0.001));
        assert_eq!((ia.counts[0], *ia.counts.last().unwrap()), (45, 4));
        assert_eq!(ia.offset + ia.counts.len() as i32 - 1, key(0.991));
    }

    #[test]
    fn first_responses_fill_their_own_buckets() {
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_millis(100), 10);
        a.record(&event(MS, 80));
        for (i, v) in [4 * MS, 5 * MS, 5 * MS + 1, 20 * MS, 11_000 * MS]
            .into_iter()
            .enumerate()
        {
            let mut e = event(2 * MS + i as u64, 80);
            e.kind = ipvs_telemetry_common::KIND_FIRST_RESPONSE;
            e.value = v;
            a.record_event(&e);
        }
        let out = a.collect(3 * MS, |_| Seen::Present);
        assert_eq!(out.len(), 1);
        let v = &out[0].1;
        assert_eq!(v.count, 1, "first responses are not connections");
        assert_eq!(v.interarrival.count, 0);
        let fr = &v.first_response;
        assert_eq!(fr.count, 5);
        assert_eq!(fr.buckets.len(), FIRST_RESPONSE_BUCKETS.len());
        assert_eq!(bucket(fr, 4e-3), 1);
        assert_eq!(bucket(fr, 5e-3), 2, "5 ms exactly is in le=0.005");
        assert_eq!(bucket(fr, 6e-3), 3);
        assert_eq!(bucket(fr, 0.02), 4);
        assert_eq!(bucket(fr, 10.0), 4, "11 s is only in +Inf");
        assert!((fr.sum - (0.004 + 0.005 + 0.005 + 1e-9 + 0.02 + 11.0)).abs() < 1e-9);
    }

    /// Each connection ends in exactly one of first response, unanswered or waiting; a
    /// connection counts as waiting once older than the threshold (to within one slot).
    #[test]
    fn unanswered_waiting_and_synced_per_destination() {
        use ipvs_telemetry_common::{KIND_FIRST_RESPONSE, KIND_SYNCED, KIND_UNANSWERED};
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_millis(100), 10);
        // 8 ms threshold: 1 ms slots.
        a.set_unanswered_after(Duration::from_millis(8));
        // Five connections each to ports 80 and 81, created at 1 ms.
        let conns80: Vec<Event> = (0..5).map(|i| event(MS + i, 80)).collect();
        let conns81: Vec<Event> = (0..5).map(|i| event(MS + i, 81)).collect();
        for e in conns80.iter().chain(&conns81) {
            a.record(e);
        }
        // A direct-routing connection never waits.
        let mut dr = event(MS + 9, 81);
        dr.flags = 2;
        a.record(&dr);
        let end = |e: &Event, k: u32, at: u64| {
            let mut x = *e;
            x.kind = k;
            x.timestamp_ns = at;
            x.value = at - e.timestamp_ns;
            x
        };
        // 80: three answered, one released unanswered (at 20 ms, after aging out), one waiting.
        for e in &conns80[..3] {
            a.record_event(&end(e, KIND_FIRST_RESPONSE, 2 * MS));
        }
        // 81: four waiting, one synced connection (not a new one).
        a.record_event(&end(&conns81[1], KIND_SYNCED, 2 * MS));
        let waiting = |a: &mut Aggregator, now: u64| -> Vec<u64> {
            a.collect(now, |_| Seen::Present)
                .iter()
                .map(|(_, v)| v.waiting)
                .collect()
        };
        assert_eq!(waiting(&mut a, 5 * MS), vec![0, 0], "younger than 8 ms");
        assert_eq!(waiting(&mut a, 10 * MS), vec![2, 5], "older than 8 ms");
        a.record_event(&end(&conns80[3], KIND_UNANSWERED, 20 * MS));
        a.record_event(&end(&conns81[0], KIND_UNANSWERED, 20 * MS));
        let out = a.collect(30 * MS, |_| Seen::Present);
        let v: Vec<(u64, u64, u64, u64, u64)> = out
            .iter()
            .map(|(_, v)| {
                (
                    v.count,
                    v.first_response.count,
                    v.unanswered,
                    v.waiting,
                    v.synced,
                )
            })
            .collect();
        assert_eq!(v, vec![(5, 3, 1, 1, 0), (6, 0, 1, 4, 1)]);
        // A connection answered after it aged out leaves the old count; one answered while
        // young leaves its slot.
        let young = event(29 * MS, 80);
        a.record(&young);
        a.record_event(&end(&young, KIND_FIRST_RESPONSE, 30 * MS));
        a.record_event(&end(&conns80[4], KIND_FIRST_RESPONSE, 31 * MS));
        assert_eq!(waiting(&mut a, 100 * MS), vec![0, 4]);
        a.clear_pending();
        assert_eq!(waiting(&mut a, 200 * MS), vec![0, 0]);
    }

    #[test]
    fn waiting_slots_age_over_long_gaps() {
        let mut w = Waiting::default();
        let width = MS;
        w.start(width, 5 * MS);
        w.start(width, 7 * MS);
        assert_eq!(w.old(width, 12 * MS), 0);
        assert_eq!(w.old(width, 13 * MS), 1);
        assert_eq!(w.old(width, 1_000_000 * MS), 2);
        // A late event from another CPU, older than the ring: straight to `old`.
        w.start(width, 5 * MS);
        assert_eq!(w.old(width, 1_000_000 * MS), 3);
    }

    #[test]
    fn unschedulable_attempts_per_service_are_forgotten_like_destinations() {
        use ipvs_telemetry_common::KIND_UNSCHEDULABLE;
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_millis(100), 10);
        let mut e = event(MS, 0);
        e.kind = KIND_UNSCHEDULABLE;
        e.daf = 0;
        e.daddr = [0; 16];
        e.dport = 0;
        for _ in 0..3 {
            a.record_event(&e);
        }
        assert!(a.collect(2 * MS, |_| Seen::Present).is_empty());
        let u = a.unschedulable();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].1, 3);
        let key = u[0].0.to_model().unwrap();
        assert_eq!(key.destination, None);
        let absent = |_: &RawKey| Seen::Absent { read_at_ns: 3 * MS };
        a.collect(4 * MS, absent);
        assert_eq!(a.unschedulable().len(), 1, "one miss is tolerated");
        a.collect(5 * MS, absent);
        assert!(a.unschedulable().is_empty());
    }

    #[test]
    fn first_response_bounds_are_ascending_and_at_most_four_thirds_apart() {
        assert_eq!(FIRST_RESPONSE_BUCKETS[0], 5e-5);
        assert_eq!(*FIRST_RESPONSE_BUCKETS.last().unwrap(), 10.0);
        for w in FIRST_RESPONSE_BUCKETS.windows(2) {
            assert!(w[1] > w[0]);
            if w[0] >= 1e-3 && w[1] <= 1.0 {
                assert!(w[1] / w[0] <= 4.0 / 3.0 + 1e-9, "{w:?}");
            }
        }
    }

    #[test]
    fn open_window_is_observed_once_it_has_ended() {
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_secs(1), 10);
        for i in 0..3 {
            a.record(&event(5_000 * MS + i * 10 * MS, 1));
        }
        let v = &a.collect(5_500 * MS, |_| Seen::Present)[0].1;
        assert_eq!(v.rate.count, 0, "window still open");
        assert!(
            (v.peak_rate - 3.0).abs() < 1e-9,
            "open window counts towards the peak"
        );
        let v = &a.collect(6_000 * MS, |_| Seen::Present)[0].1;
        assert_eq!(v.rate.count, 1);
        assert_eq!(bucket(&v.rate, 2.0), 0);
        assert_eq!(bucket(&v.rate, 5.0), 1);
    }

    #[test]
    fn destinations_are_separate_and_capped() {
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_millis(100), 2);
        a.record(&event(MS, 1));
        a.record(&event(2 * MS, 2));
        a.record(&event(3 * MS, 3));
        a.record(&event(4 * MS, 1));
        assert_eq!(a.len(), 2);
        assert_eq!(a.overflow, 1);
        let out = a.collect(5 * MS, |_| Seen::Present);
        let counts: Vec<u64> = out.iter().map(|(_, v)| v.count).collect();
        assert_eq!(counts, vec![2, 1]);
        let key = out[0].0.to_model().unwrap();
        assert_eq!(key.destination, Some(("10.0.1.1".parse().unwrap(), 1)));
        assert_eq!(
            key.service,
            ServiceAddress::Inet {
                protocol: Protocol::Tcp,
                address: "10.0.0.1".parse().unwrap(),
                port: 80
            }
        );
    }

    #[test]
    fn service_granularity_merges_destinations() {
        let mut a = Aggregator::new(Granularity::Service, Duration::from_millis(100), 10);
        a.record(&event(MS, 1));
        a.record(&event(2 * MS, 2));
        let out = a.collect(3 * MS, |_| Seen::Present);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.count, 2);
        assert_eq!(out[0].0.to_model().unwrap().destination, None);
    }

    #[test]
    fn netlink_keys_match_event_keys_and_absent_ones_are_forgotten() {
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_millis(100), 10);
        let mut fw = event(MS, 8080);
        fw.fwmark = 7;
        fw.vport = 443u16.to_be(); // whatever the packet's port was
        a.record(&fw);
        a.record(&event(MS, 9090));
        let svc = ServiceAddress::Fwmark { mark: 7 };
        let dest = (Family::Inet, "10.0.1.1".parse().unwrap(), 8080);
        let fw_key = RawKey::of_netlink(
            4026531840,
            Family::Inet,
            &svc,
            Some(dest),
            Granularity::Destination,
        );
        let only_fw = |read_at_ns| {
            move |k: &RawKey| {
                if *k == fw_key {
                    Seen::Present
                } else {
                    Seen::Absent { read_at_ns }
                }
            }
        };
        // Reads that began before the last connection (at 1 ms) never count as misses.
        assert_eq!(a.collect(2 * MS, only_fw(MS / 2)).len(), 2);
        assert_eq!(a.collect(3 * MS, only_fw(MS)).len(), 2);
        assert_eq!(
            a.collect(4 * MS, only_fw(2 * MS)).len(),
            2,
            "one miss is tolerated"
        );
        // Present again: the count of misses starts over.
        assert_eq!(a.collect(5 * MS, |_| Seen::Present).len(), 2);
        assert_eq!(a.collect(6 * MS, only_fw(5 * MS)).len(), 2);
        let out = a.collect(7 * MS, only_fw(6 * MS));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, fw_key);
        // Unknown (namespace unreadable) never forgets.
        assert_eq!(a.collect(8 * MS, |_| Seen::Unknown).len(), 1);
        assert_eq!(a.collect(9 * MS, |_| Seen::Unknown).len(), 1);
    }

    /// docs/ebpf.md: the table of the default 100,000 destinations (`--ebpf.max-destinations`)
    /// costs under 115 MB. Measured on the table itself, filled to the limit: the hash map
    /// holds a power of two of slots at most 7/8 full, each one entry plus a control byte.
    #[test]
    fn the_destination_table_at_its_limit_costs_under_115_mb() {
        let max = 100_000;
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_millis(100), max);
        for i in 0..max as u32 + 10 {
            let mut e = event(MS, (i % 60_000) as u16);
            e.daddr[..4].copy_from_slice(&(0x0a00_0000 + i / 60_000).to_be_bytes());
            a.record(&e);
        }
        assert_eq!((a.map.len(), a.overflow), (max, 10));
        let entry = std::mem::size_of::<(RawKey, DestState)>();
        let slots = (a.map.capacity() / 7 * 8).next_power_of_two();
        let bytes = slots * (entry + 1);
        eprintln!("{max} destinations: {slots} slots of {entry} bytes, {bytes} bytes");
        assert!(bytes < 115_000_000, "{bytes} bytes for {max} destinations");
    }

    #[test]
    fn connections_newer_than_the_netlink_read_are_kept() {
        // A destination added after its namespace was read: its connections arrive between the
        // read and the collection, every time, until a read shows it.
        let mut a = Aggregator::new(Granularity::Destination, Duration::from_millis(100), 10);
        for i in 1..=5u64 {
            a.record(&event(i * 10 * MS, 8080));
            let out = a.collect(i * 10 * MS + MS, |_| Seen::Absent {
                read_at_ns: i * 10 * MS - MS,
            });
            assert_eq!(out.len(), 1, "collection {i}");
            assert_eq!(out[0].1.count, i);
        }
    }

    #[test]
    fn ipv6_keys_round_trip() {
        let mut e = event(MS, 80);
        e.af = 10;
        e.daf = 10;
        e.vaddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        e.daddr = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        let k = RawKey::of_event(&e, Granularity::Destination);
        let m = k.to_model().unwrap();
        assert_eq!(m.family, Family::Inet6);
        assert_eq!(m.destination, Some(("2001:db8::2".parse().unwrap(), 80)));
        let n = RawKey::of_netlink(
            4026531840,
            Family::Inet6,
            &ServiceAddress::Inet {
                protocol: Protocol::Tcp,
                address: "2001:db8::1".parse().unwrap(),
                port: 80,
            },
            Some((Family::Inet6, "2001:db8::2".parse().unwrap(), 80)),
            Granularity::Destination,
        );
        assert_eq!(k, n);
    }
}
