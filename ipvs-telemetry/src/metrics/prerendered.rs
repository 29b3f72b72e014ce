//! The service and destination families, with each series' labels rendered once per table shape.
//!
//! A director with 10,000 services × 5 destinations has about 700,000 of these series. Their label
//! text only changes when the table's shape does (a service or destination added, removed or
//! reconfigured), so a [`Plans`] renders the label text of every service and destination once
//! per namespace and shape — about 200 bytes each, shared by all the families — and a scrape only
//! writes, per series, the family name, that text and the value: a few `memcpy`s and an integer
//! formatting. A namespace whose shape did not change since the previous collection keeps its
//! rendered text.
//!
//! The plan also applies the cardinality controls ([`ExportOptions`]): the groups left out, the
//! services with per-destination series, and the series cap, which drops whole groups from the end
//! of a fixed order (namespace name, then service address): first the destination series of the
//! last services, then, only if services alone exceed it, the last services themselves.

use std::collections::HashMap;
use std::fmt::{self, Write};
use std::sync::{Arc, OnceLock};

use super::families::{Kind, Num};
use super::labels::{DestinationLabels, ServiceLabels, netmask_text, service_flags};
use super::options::{ExportOptions, Group};
use super::protobuf::{
    family_header, label_pair, value_metric, value_metric_len, write_label_pairs,
};
use super::text::{write_escaped, write_labels, write_num};
use super::{Format, Out};
use crate::model::{
    Destination, Family, ForwardMethod, IpvsState, NamespaceSnapshot, Service, ServiceAddress,
    Snapshot,
};

/// How a family's value is read.
#[derive(Clone, Copy)]
enum Value {
    Service(fn(&Service) -> Num),
    Destination(fn(&Destination) -> Num),
    ServiceInfo,
    DestinationInfo,
}

/// One family of this module.
struct Def {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// The group that can leave it out; `None`: always there.
    group: Option<Group>,
    /// A kernel estimator gauge (opt-in).
    estimator: bool,
    value: Value,
}

const fn def(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    group: Option<Group>,
    estimator: bool,
    value: Value,
) -> Def {
    Def {
        name,
        help,
        kind,
        group,
        estimator,
        value,
    }
}

use Kind::{Counter, Gauge};

/// Every family of this module, in exposition order.
static DEFS: [Def; 30] = [
    def(
        "ipvs_service_connections",
        "Connections scheduled by the virtual service (kernel counter).",
        Counter,
        None,
        false,
        Value::Service(|s| Num::U(s.stats.conns)),
    ),
    def(
        "ipvs_service_incoming_packets",
        "Packets received by the virtual service.",
        Counter,
        None,
        false,
        Value::Service(|s| Num::U(s.stats.inpkts)),
    ),
    def(
        "ipvs_service_outgoing_packets",
        "Packets sent by the virtual service.",
        Counter,
        None,
        false,
        Value::Service(|s| Num::U(s.stats.outpkts)),
    ),
    def(
        "ipvs_service_incoming_bytes",
        "Bytes received by the virtual service.",
        Counter,
        None,
        false,
        Value::Service(|s| Num::U(s.stats.inbytes)),
    ),
    def(
        "ipvs_service_outgoing_bytes",
        "Bytes sent by the virtual service.",
        Counter,
        None,
        false,
        Value::Service(|s| Num::U(s.stats.outbytes)),
    ),
    def(
        "ipvs_service_estimated_connections_per_second",
        "Connection rate of the virtual service by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Service(|s| Num::U(s.stats.cps)),
    ),
    def(
        "ipvs_service_estimated_incoming_packets_per_second",
        "Incoming packet rate of the virtual service by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Service(|s| Num::U(s.stats.inpps)),
    ),
    def(
        "ipvs_service_estimated_outgoing_packets_per_second",
        "Outgoing packet rate of the virtual service by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Service(|s| Num::U(s.stats.outpps)),
    ),
    def(
        "ipvs_service_estimated_incoming_bytes_per_second",
        "Incoming byte rate of the virtual service by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Service(|s| Num::U(s.stats.inbps)),
    ),
    def(
        "ipvs_service_estimated_outgoing_bytes_per_second",
        "Outgoing byte rate of the virtual service by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Service(|s| Num::U(s.stats.outbps)),
    ),
    def(
        "ipvs_service_destinations",
        "Number of real servers of the virtual service.",
        Gauge,
        None,
        false,
        Value::Service(|s| Num::U(s.destinations.len() as u64)),
    ),
    def(
        "ipvs_service_available_destinations",
        "Real servers of the virtual service that can be scheduled: weight above 0 and active plus inactive connections below a non-zero upper threshold.",
        Gauge,
        None,
        false,
        Value::Service(|s| Num::U(s.destinations.iter().filter(|d| available(d)).count() as u64)),
    ),
    def(
        "ipvs_service_persistence_timeout_seconds",
        "Persistence timeout of the virtual service, 0 when not persistent.",
        Gauge,
        Some(Group::ServicePersistence),
        false,
        Value::Service(|s| Num::U(s.timeout.into())),
    ),
    def(
        "ipvs_service_info",
        "Configuration of the virtual service (scheduler, flags, persistence), always 1.",
        Gauge,
        Some(Group::ServiceInfo),
        false,
        Value::ServiceInfo,
    ),
    def(
        "ipvs_destination_connections",
        "Connections scheduled to the real server (kernel counter).",
        Counter,
        None,
        false,
        Value::Destination(|d| Num::U(d.stats.conns)),
    ),
    def(
        "ipvs_destination_incoming_packets",
        "Packets received for the real server.",
        Counter,
        None,
        false,
        Value::Destination(|d| Num::U(d.stats.inpkts)),
    ),
    def(
        "ipvs_destination_outgoing_packets",
        "Packets sent from the real server.",
        Counter,
        None,
        false,
        Value::Destination(|d| Num::U(d.stats.outpkts)),
    ),
    def(
        "ipvs_destination_incoming_bytes",
        "Bytes received for the real server.",
        Counter,
        None,
        false,
        Value::Destination(|d| Num::U(d.stats.inbytes)),
    ),
    def(
        "ipvs_destination_outgoing_bytes",
        "Bytes sent from the real server.",
        Counter,
        None,
        false,
        Value::Destination(|d| Num::U(d.stats.outbytes)),
    ),
    def(
        "ipvs_destination_estimated_connections_per_second",
        "Connection rate of the real server by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Destination(|d| Num::U(d.stats.cps)),
    ),
    def(
        "ipvs_destination_estimated_incoming_packets_per_second",
        "Incoming packet rate of the real server by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Destination(|d| Num::U(d.stats.inpps)),
    ),
    def(
        "ipvs_destination_estimated_outgoing_packets_per_second",
        "Outgoing packet rate of the real server by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Destination(|d| Num::U(d.stats.outpps)),
    ),
    def(
        "ipvs_destination_estimated_incoming_bytes_per_second",
        "Incoming byte rate of the real server by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Destination(|d| Num::U(d.stats.inbps)),
    ),
    def(
        "ipvs_destination_estimated_outgoing_bytes_per_second",
        "Outgoing byte rate of the real server by the kernel's 2 s estimator.",
        Gauge,
        None,
        true,
        Value::Destination(|d| Num::U(d.stats.outbps)),
    ),
    def(
        "ipvs_destination_active_connections",
        "Active connections to the real server (live, not estimator-delayed).",
        Gauge,
        Some(Group::DestinationConnections),
        false,
        Value::Destination(|d| Num::U(d.active_connections.into())),
    ),
    def(
        "ipvs_destination_inactive_connections",
        "Inactive connections to the real server.",
        Gauge,
        Some(Group::DestinationConnections),
        false,
        Value::Destination(|d| Num::U(d.inactive_connections.into())),
    ),
    def(
        "ipvs_destination_persistent_connections",
        "Persistence templates pointing at the real server.",
        Gauge,
        Some(Group::DestinationPersistent),
        false,
        Value::Destination(|d| Num::U(d.persistent_connections.into())),
    ),
    def(
        "ipvs_destination_weight",
        "Scheduling weight of the real server.",
        Gauge,
        Some(Group::DestinationWeight),
        false,
        Value::Destination(|d| Num::I(d.weight.into())),
    ),
    def(
        "ipvs_destination_upper_threshold",
        "Upper connection threshold of the real server, 0 when none.",
        Gauge,
        Some(Group::DestinationThresholds),
        false,
        Value::Destination(|d| Num::U(d.upper_threshold.into())),
    ),
    def(
        "ipvs_destination_lower_threshold",
        "Lower connection threshold of the real server.",
        Gauge,
        Some(Group::DestinationThresholds),
        false,
        Value::Destination(|d| Num::U(d.lower_threshold.into())),
    ),
];

/// `ipvs_destination_info`, last.
static DEST_INFO: Def = def(
    "ipvs_destination_info",
    "Forwarding method and tunnel type of the real server, always 1.",
    Gauge,
    Some(Group::DestinationInfo),
    false,
    Value::DestinationInfo,
);

/// Whether IPVS can schedule new connections to `d`: weight above 0 and, with an upper
/// threshold, fewer connections than it. The kernel's overload flag has hysteresis (it clears
/// below the lower threshold); netlink does not report the flag, so a destination between the two
/// thresholds that was overloaded counts as available here.
pub fn available(d: &Destination) -> bool {
    d.weight > 0
        && (d.upper_threshold == 0
            || u64::from(d.active_connections) + u64::from(d.inactive_connections)
                < u64::from(d.upper_threshold))
}

fn defs() -> impl Iterator<Item = &'static Def> {
    DEFS.iter().chain(std::iter::once(&DEST_INFO))
}

fn enabled(d: &Def, o: &ExportOptions) -> bool {
    (!d.estimator || o.estimator) && d.group.is_none_or(|g| o.has(g))
}

/// How much of a service the exposition carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing (dropped by the cap).
    Dropped,
    /// Its own series only.
    Service,
    /// Its own series and its destinations'.
    Full,
}

/// Strings kept end to end in one buffer.
#[derive(Debug, Default)]
struct Texts {
    buf: String,
    ends: Vec<u32>,
}

impl Texts {
    fn push(&mut self, f: impl FnOnce(&mut String) -> fmt::Result) {
        // Writing into a String cannot fail.
        let _ = f(&mut self.buf);
        self.ends.push(self.buf.len() as u32);
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    fn shrink(&mut self) {
        self.buf.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    fn bytes(&self) -> usize {
        self.buf.capacity() + self.ends.capacity() * 4
    }
}

/// Strings of which few are distinct (the info labels), each kept once.
#[derive(Debug, Default)]
struct Interned {
    distinct: Texts,
    /// Index into `distinct` of each string pushed.
    of: Vec<u32>,
    /// While building: where each distinct string is.
    seen: HashMap<String, u32>,
}

impl Interned {
    fn push(&mut self, f: impl FnOnce(&mut String) -> fmt::Result) {
        let mut t = String::new();
        // Writing into a String cannot fail.
        let _ = f(&mut t);
        let next = self.seen.len() as u32;
        let i = *self.seen.entry(t).or_insert_with_key(|t| {
            self.distinct.push(|b| b.write_str(t));
            next
        });
        self.of.push(i);
    }

    fn get(&self, i: usize) -> &str {
        self.distinct.get(self.of[i] as usize)
    }

    fn shrink(&mut self) {
        self.seen = HashMap::new();
        self.distinct.shrink();
        self.of.shrink_to_fit();
    }

    fn bytes(&self) -> usize {
        self.distinct.bytes() + self.of.capacity() * 4
    }
}

/// One namespace's rendered label text, for one shape of its table.
///
/// A destination's labels are its service's followed by its own: only its own are kept, with
/// the index of its service's text. The info labels take few distinct values (schedulers,
/// forwarding methods): each is kept once.
#[derive(Debug)]
pub struct NsPlan {
    levels: Vec<Level>,
    /// `{netns="…",…,fwmark="…"` of each service not dropped (no closing brace).
    services: Texts,
    /// `,scheduler="…",…"}` of each service not dropped.
    service_info: Interned,
    /// `,real_address="…",real_port="…"` of each destination of the `Full` services.
    destinations: Texts,
    /// The index in `services` of each destination's service.
    owners: Vec<u32>,
    /// `,forwarding_method="…",tunnel_type="…"}` of the same destinations.
    destination_info: Interned,
    /// The same labels as protobuf bytes, rendered on the first protobuf scrape.
    pb: OnceLock<PbPlan>,
}

/// Byte strings kept end to end in one buffer.
#[derive(Debug, Default)]
struct Blobs {
    buf: Vec<u8>,
    ends: Vec<u32>,
}

impl Blobs {
    fn push(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.buf);
        self.ends.push(self.buf.len() as u32);
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn shrink(&mut self) {
        self.buf.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

/// One namespace's labels as protobuf `LabelPair` fields, for one shape of its table.
#[derive(Debug, Default)]
pub struct PbPlan {
    services: Blobs,
    service_info: Blobs,
    destinations: Blobs,
    destination_info: Blobs,
}

impl PbPlan {
    fn build(ns: &NamespaceSnapshot, ipvs: &IpvsState, levels: &[Level]) -> PbPlan {
        let mut p = PbPlan::default();
        for (svc, &level) in ipvs.services.iter().zip(levels) {
            if level == Level::Dropped {
                continue;
            }
            let sl = service_labels(ns, svc);
            p.services.push(|b| write_label_pairs(b, &sl));
            p.service_info.push(|b| {
                label_pair(b, "scheduler", &svc.scheduler);
                label_pair(b, "flags", &service_flags(svc.flags));
                label_pair(b, "netmask", &netmask_text(svc.family, svc.netmask));
                let engine = svc.persistence_engine.as_deref().unwrap_or("");
                label_pair(b, "persistence_engine", engine);
            });
            if level != Level::Full {
                continue;
            }
            for d in &svc.destinations {
                let dl = DestinationLabels::new(&sl, d.address, d.port);
                p.destinations.push(|b| write_label_pairs(b, &dl));
                p.destination_info.push(|b| {
                    let tunnel = match (d.forward, d.tunnel_type) {
                        (ForwardMethod::Tunnel, Some(t)) => t.label(),
                        _ => String::new(),
                    };
                    label_pair(b, "forwarding_method", d.forward.as_str());
                    label_pair(b, "tunnel_type", &tunnel);
                });
            }
        }
        p.services.shrink();
        p.service_info.shrink();
        p.destinations.shrink();
        p.destination_info.shrink();
        p
    }

    /// The labels (and the info labels after them) of series `k` of family `d`.
    fn labels(&self, d: &Def, k: usize) -> (&[u8], &[u8]) {
        match d.value {
            Value::Service(_) => (self.services.get(k), &[]),
            Value::ServiceInfo => (self.services.get(k), self.service_info.get(k)),
            Value::Destination(_) => (self.destinations.get(k), &[]),
            Value::DestinationInfo => (self.destinations.get(k), self.destination_info.get(k)),
        }
    }

    /// Bytes of the `Metric` fields of family `d` in this namespace.
    fn family_bytes(&self, d: &Def) -> usize {
        let n = match d.value {
            Value::Service(_) | Value::ServiceInfo => self.services.len(),
            Value::Destination(_) | Value::DestinationInfo => self.destinations.len(),
        };
        (0..n)
            .map(|k| {
                let (a, b) = self.labels(d, k);
                value_metric_len(a.len() + b.len())
            })
            .sum()
    }
}

impl NsPlan {
    fn build(ns: &NamespaceSnapshot, ipvs: &IpvsState, levels: Vec<Level>) -> NsPlan {
        let mut p = NsPlan {
            levels,
            services: Texts::default(),
            service_info: Interned::default(),
            destinations: Texts::default(),
            owners: Vec::new(),
            destination_info: Interned::default(),
            pb: OnceLock::new(),
        };
        for (svc, &level) in ipvs.services.iter().zip(&p.levels) {
            if level == Level::Dropped {
                continue;
            }
            let sl = service_labels(ns, svc);
            let owner = p.services.ends.len() as u32;
            p.services.push(|b| write_labels(b, &sl).map(|_| ()));
            p.service_info.push(|b| {
                write_pair(b, "scheduler", &svc.scheduler)?;
                write_pair(b, "flags", &service_flags(svc.flags))?;
                write_pair(b, "netmask", &netmask_text(svc.family, svc.netmask))?;
                write_pair(
                    b,
                    "persistence_engine",
                    svc.persistence_engine.as_deref().unwrap_or(""),
                )?;
                b.write_char('}')
            });
            if level != Level::Full {
                continue;
            }
            for d in &svc.destinations {
                let dl = DestinationLabels::new(&sl, d.address, d.port);
                p.destinations.push(|b| {
                    let mut t = String::new();
                    write_labels(&mut t, &dl)?;
                    // The service's labels are kept once, in `services`.
                    debug_assert!(t.starts_with(p.services.get(owner as usize)));
                    b.push_str(&t[p.services.get(owner as usize).len()..]);
                    Ok(())
                });
                p.owners.push(owner);
                p.destination_info.push(|b| {
                    let tunnel = match (d.forward, d.tunnel_type) {
                        (ForwardMethod::Tunnel, Some(t)) => t.label(),
                        _ => String::new(),
                    };
                    write_pair(b, "forwarding_method", d.forward.as_str())?;
                    write_pair(b, "tunnel_type", &tunnel)?;
                    b.write_char('}')
                });
            }
        }
        p.services.shrink();
        p.service_info.shrink();
        p.destinations.shrink();
        p.owners.shrink_to_fit();
        p.destination_info.shrink();
        p
    }

    /// The labels of destination `k`: its service's, then its own.
    fn destination(&self, k: usize) -> [&str; 2] {
        [
            self.services.get(self.owners[k] as usize),
            self.destinations.get(k),
        ]
    }

    /// Bytes of rendered text held.
    fn bytes(&self) -> usize {
        self.services.bytes()
            + self.service_info.bytes()
            + self.destinations.bytes()
            + self.owners.capacity() * 4
            + self.destination_info.bytes()
            + self.levels.capacity()
            + self.pb.get().map_or(0, |p| {
                [
                    &p.services,
                    &p.service_info,
                    &p.destinations,
                    &p.destination_info,
                ]
                .iter()
                .map(|t| t.buf.capacity() + t.ends.capacity() * 4)
                .sum()
            })
    }

    /// The protobuf labels, rendered the first time they are asked for.
    fn pb(&self, ns: &NamespaceSnapshot, ipvs: &IpvsState) -> &PbPlan {
        self.pb
            .get_or_init(|| PbPlan::build(ns, ipvs, &self.levels))
    }
}

fn service_labels(ns: &NamespaceSnapshot, svc: &Service) -> ServiceLabels {
    let published = match svc.address {
        ServiceAddress::Fwmark { .. } => svc.published,
        ServiceAddress::Inet { .. } => None,
    };
    ServiceLabels::new(&ns.netns, svc.family, &svc.address, published)
}

fn write_pair(b: &mut String, k: &str, v: &str) -> fmt::Result {
    b.push(',');
    b.push_str(k);
    b.push_str("=\"");
    write_escaped(b, v, true)?;
    b.push('"');
    Ok(())
}

/// Whether two tables render the same label text (everything but the values is equal).
fn same_shape(a: &IpvsState, b: &IpvsState) -> bool {
    a.services.len() == b.services.len()
        && a.services.iter().zip(&b.services).all(|(x, y)| {
            x.family == y.family
                && x.address == y.address
                && x.scheduler == y.scheduler
                && x.flags == y.flags
                && x.netmask == y.netmask
                && x.persistence_engine == y.persistence_engine
                && x.published == y.published
                && x.destinations.len() == y.destinations.len()
                && x.destinations.iter().zip(&y.destinations).all(|(d, e)| {
                    d.address == e.address
                        && d.port == e.port
                        && d.forward == e.forward
                        && d.tunnel_type == e.tunnel_type
                })
        })
}

/// What the series cap left out of one collection's exposition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Services whose destination series were left out.
    pub destination_groups: usize,
    /// Destination series left out.
    pub destination_series: usize,
    /// Services left out entirely.
    pub services: usize,
    /// Service series left out.
    pub service_series: usize,
}

/// Where a service is in a snapshot: namespace index, service index.
pub type ServiceIndex = HashMap<(u64, Family, ServiceAddress), (usize, usize)>;

/// The rendered label text of every namespace of one collection.
#[derive(Debug)]
pub struct Plans {
    snapshot: Arc<Snapshot>,
    options: Arc<ExportOptions>,
    /// Index-aligned with `snapshot.namespaces`; `None` where the namespace was not read.
    namespaces: Vec<Option<Arc<NsPlan>>>,
    /// What the cap left out.
    pub dropped: Dropped,
    /// Services by namespace inode and address, for the eBPF join.
    pub index: ServiceIndex,
}

impl Plans {
    /// Plans `snapshot`, reusing the rendered text of `previous` for every namespace whose
    /// shape and levels did not change.
    pub fn new(
        snapshot: Arc<Snapshot>,
        options: Arc<ExportOptions>,
        previous: Option<&Plans>,
    ) -> Plans {
        let (levels, dropped) = levels(&snapshot, &options);
        let mut index = ServiceIndex::new();
        let namespaces = snapshot
            .namespaces
            .iter()
            .zip(levels)
            .enumerate()
            .map(|(ni, (ns, levels))| {
                let ipvs = ns.ipvs.as_ref().ok()?;
                for (si, svc) in ipvs.services.iter().enumerate() {
                    index
                        .entry((ns.netns.inode, svc.family, svc.address))
                        .or_insert((ni, si));
                }
                if let Some(old) = previous.and_then(|p| p.reusable(ns, ipvs, &levels, &options)) {
                    return Some(old);
                }
                Some(Arc::new(NsPlan::build(ns, ipvs, levels)))
            })
            .collect();
        Plans {
            snapshot,
            options,
            namespaces,
            dropped,
            index,
        }
    }

    fn reusable(
        &self,
        ns: &NamespaceSnapshot,
        ipvs: &IpvsState,
        levels: &[Level],
        options: &Arc<ExportOptions>,
    ) -> Option<Arc<NsPlan>> {
        if !Arc::ptr_eq(&self.options, options) && *self.options != **options {
            return None;
        }
        let i = self
            .snapshot
            .namespaces
            .iter()
            .position(|o| o.netns.name == ns.netns.name)?;
        let old = self.namespaces[i].as_ref()?;
        let old_ipvs = self.snapshot.namespaces[i].ipvs.as_ref().ok()?;
        (old.levels == levels && same_shape(old_ipvs, ipvs)).then(|| old.clone())
    }

    /// How much of service `si` of namespace `ni` the exposition carries.
    pub fn level(&self, ni: usize, si: usize) -> Level {
        self.namespaces
            .get(ni)
            .and_then(|p| p.as_ref())
            .and_then(|p| p.levels.get(si).copied())
            .unwrap_or(Level::Dropped)
    }

    /// The snapshot planned.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The options planned with.
    pub fn options(&self) -> &ExportOptions {
        &self.options
    }

    /// Whether namespace `i` kept the rendered text of `other` (tests).
    #[cfg(test)]
    pub fn shares_namespace_with(&self, other: &Plans, i: usize) -> bool {
        match (&self.namespaces[i], &other.namespaces[i]) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Bytes of rendered label text held (shared text counted once per namespace).
    pub fn bytes(&self) -> usize {
        self.namespaces.iter().flatten().map(|p| p.bytes()).sum()
    }

    /// Writes every enabled family of this module.
    pub fn write(&self, format: Format, out: &mut dyn Out) -> fmt::Result {
        if format == Format::Protobuf {
            return self.write_protobuf(out);
        }
        for d in defs().filter(|d| enabled(d, &self.options)) {
            if !self.any_series(d) {
                continue;
            }
            header(d, format, out)?;
            for (ns, plan) in self.snapshot.namespaces.iter().zip(&self.namespaces) {
                let (Some(plan), Ok(ipvs)) = (plan, &ns.ipvs) else {
                    continue;
                };
                write_namespace(d, plan, ipvs, out)?;
            }
        }
        Ok(())
    }

    /// The namespaces with a plan, each with its protobuf labels.
    fn pb_namespaces(&self) -> impl Iterator<Item = (usize, &Arc<NsPlan>, &IpvsState, &PbPlan)> {
        self.snapshot
            .namespaces
            .iter()
            .zip(&self.namespaces)
            .enumerate()
            .filter_map(|(ni, (ns, plan))| {
                let (Some(plan), Ok(ipvs)) = (plan, &ns.ipvs) else {
                    return None;
                };
                Some((ni, plan, ipvs, plan.pb(ns, ipvs)))
            })
    }

    /// The delimiter, name, help and type of family `d` in protobuf.
    fn pb_header(&self, d: &Def, out: &mut Vec<u8>) {
        let metrics = self
            .pb_namespaces()
            .map(|(.., pb)| pb.family_bytes(d))
            .sum();
        family_header(out, d.name, d.help, d.kind, metrics);
    }

    fn write_protobuf(&self, out: &mut dyn Out) -> fmt::Result {
        let mut buf = Vec::with_capacity(super::CHUNK + 1024);
        let mut values = Vec::new();
        for d in defs().filter(|d| enabled(d, &self.options)) {
            if !self.any_series(d) {
                continue;
            }
            self.pb_header(d, &mut buf);
            for (_, plan, ipvs, pb) in self.pb_namespaces() {
                values.clear();
                block_values(d, plan, ipvs, &mut values);
                for (k, v) in values.iter().enumerate() {
                    let (labels, more) = pb.labels(d, k);
                    value_metric(&mut buf, d.kind, labels, more, *v);
                    if buf.len() >= super::CHUNK {
                        out.put(&buf)?;
                        buf.clear();
                    }
                }
            }
        }
        out.put(&buf)
    }

    fn any_series(&self, d: &Def) -> bool {
        let services = matches!(d.value, Value::Service(_) | Value::ServiceInfo);
        self.snapshot
            .namespaces
            .iter()
            .zip(&self.namespaces)
            .any(|(ns, plan)| match (plan, &ns.ipvs) {
                (Some(p), Ok(ipvs)) => {
                    ipvs.services
                        .iter()
                        .zip(&p.levels)
                        .any(|(s, l)| match services {
                            true => *l != Level::Dropped,
                            false => *l == Level::Full && !s.destinations.is_empty(),
                        })
                }
                _ => false,
            })
    }
}

/// What [`Plans::for_each_block`] visits.
pub enum Item<'a> {
    /// A family's HELP and TYPE lines (its delimiter, name, help and type in protobuf).
    Header(&'a [u8]),
    /// A family's series in one namespace.
    Block(Block<'a>),
}

/// One family's series in one namespace, as the gzip segment cache sees them.
pub struct Block<'a> {
    /// Index of the family (stable for a build of the daemon).
    pub family: usize,
    /// Index of the namespace in the snapshot.
    pub namespace: usize,
    /// The rendered label text this block is written from.
    pub plan: &'a Arc<NsPlan>,
    /// Its protobuf labels (protobuf walks only).
    pb: Option<&'a PbPlan>,
    def: &'static Def,
    /// Every series' value, in order.
    pub values: Vec<Num>,
}

impl Block<'_> {
    /// Writes series `range` of the block in protobuf (a block of a protobuf walk).
    pub fn write_protobuf(&self, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        let Some(pb) = self.pb else { return };
        for k in range {
            let (labels, more) = pb.labels(self.def, k);
            value_metric(out, self.def.kind, labels, more, self.values[k]);
        }
    }

    /// Writes series `range` of the block.
    pub fn write(&self, range: std::ops::Range<usize>, out: &mut dyn Write) -> fmt::Result {
        let d = self.def;
        let p = self.plan;
        let suffix = if d.kind == Kind::Counter {
            "_total"
        } else {
            ""
        };
        for k in range {
            match d.value {
                Value::Service(_) => sample(
                    out,
                    d.name,
                    suffix,
                    [p.services.get(k), ""],
                    "} ",
                    self.values[k],
                )?,
                Value::Destination(_) => {
                    sample(out, d.name, suffix, p.destination(k), "} ", self.values[k])?
                }
                Value::ServiceInfo => {
                    sample_info(out, d.name, [p.services.get(k), ""], p.service_info.get(k))?
                }
                Value::DestinationInfo => {
                    sample_info(out, d.name, p.destination(k), p.destination_info.get(k))?
                }
            }
        }
        Ok(())
    }
}

impl Plans {
    /// Walks the enabled families as the segment cache needs them: each family's HELP/TYPE
    /// text, then each namespace's block of its series.
    pub fn for_each_block(
        &self,
        format: Format,
        visit: &mut dyn FnMut(Item<'_>) -> fmt::Result,
    ) -> fmt::Result {
        for (i, d) in defs().enumerate() {
            if !enabled(d, &self.options) || !self.any_series(d) {
                continue;
            }
            let mut h = Vec::new();
            match format {
                Format::Protobuf => self.pb_header(d, &mut h),
                _ => {
                    let mut t = String::new();
                    header(d, format, &mut t)?;
                    h = t.into_bytes();
                }
            }
            visit(Item::Header(&h))?;
            for (ni, (ns, plan)) in self
                .snapshot
                .namespaces
                .iter()
                .zip(&self.namespaces)
                .enumerate()
            {
                let (Some(plan), Ok(ipvs)) = (plan, &ns.ipvs) else {
                    continue;
                };
                let mut values = Vec::new();
                block_values(d, plan, ipvs, &mut values);
                if values.is_empty() {
                    continue;
                }
                let pb = (format == Format::Protobuf).then(|| plan.pb(ns, ipvs));
                visit(Item::Block(Block {
                    family: i,
                    namespace: ni,
                    plan,
                    pb,
                    def: d,
                    values,
                }))?;
            }
        }
        Ok(())
    }
}

/// The values of family `d` in one namespace, in series order (1 for info series).
fn block_values(d: &Def, plan: &NsPlan, ipvs: &IpvsState, out: &mut Vec<Num>) {
    for (svc, &level) in ipvs.services.iter().zip(&plan.levels) {
        if level == Level::Dropped {
            continue;
        }
        match d.value {
            Value::Service(get) => out.push(get(svc)),
            Value::ServiceInfo => out.push(Num::U(1)),
            Value::Destination(get) if level == Level::Full => {
                out.extend(svc.destinations.iter().map(get))
            }
            Value::DestinationInfo if level == Level::Full => {
                out.extend(svc.destinations.iter().map(|_| Num::U(1)))
            }
            Value::Destination(_) | Value::DestinationInfo => {}
        }
    }
}

fn header(d: &Def, format: Format, out: &mut dyn Write) -> fmt::Result {
    let (suffix, t) = match d.kind {
        Kind::Counter => ("_total", "counter"),
        Kind::Gauge => ("", "gauge"),
        Kind::Histogram => ("", "histogram"),
    };
    // OpenMetrics names the family without `_total`; 0.0.4 names the sample.
    let suffix = if format == Format::OpenMetrics {
        ""
    } else {
        suffix
    };
    out.write_str("# HELP ")?;
    out.write_str(d.name)?;
    out.write_str(suffix)?;
    out.write_char(' ')?;
    write_escaped(out, d.help, false)?;
    out.write_str("\n# TYPE ")?;
    out.write_str(d.name)?;
    out.write_str(suffix)?;
    out.write_char(' ')?;
    out.write_str(t)?;
    out.write_char('\n')
}

fn write_namespace(d: &Def, plan: &NsPlan, ipvs: &IpvsState, out: &mut dyn Write) -> fmt::Result {
    let suffix = if d.kind == Kind::Counter {
        "_total"
    } else {
        ""
    };
    let services = ipvs.services.iter().zip(&plan.levels);
    let (mut s, mut k) = (0, 0);
    for (svc, &level) in services {
        if level == Level::Dropped {
            continue;
        }
        match d.value {
            Value::Service(get) => {
                sample(
                    out,
                    d.name,
                    suffix,
                    [plan.services.get(s), ""],
                    "} ",
                    get(svc),
                )?;
            }
            Value::ServiceInfo => {
                let l = [plan.services.get(s), ""];
                sample_info(out, d.name, l, plan.service_info.get(s))?;
            }
            Value::Destination(get) if level == Level::Full => {
                for dest in &svc.destinations {
                    sample(out, d.name, suffix, plan.destination(k), "} ", get(dest))?;
                    k += 1;
                }
            }
            Value::DestinationInfo if level == Level::Full => {
                for _ in &svc.destinations {
                    let (l, i) = (plan.destination(k), plan.destination_info.get(k));
                    sample_info(out, d.name, l, i)?;
                    k += 1;
                }
            }
            Value::Destination(_) | Value::DestinationInfo => {}
        }
        s += 1;
    }
    Ok(())
}

fn sample(
    out: &mut dyn Write,
    name: &str,
    suffix: &str,
    labels: [&str; 2],
    close: &str,
    v: Num,
) -> fmt::Result {
    out.write_str(name)?;
    out.write_str(suffix)?;
    out.write_str(labels[0])?;
    out.write_str(labels[1])?;
    out.write_str(close)?;
    write_num(out, v)?;
    out.write_char('\n')
}

fn sample_info(out: &mut dyn Write, name: &str, labels: [&str; 2], info: &str) -> fmt::Result {
    out.write_str(name)?;
    out.write_str(labels[0])?;
    out.write_str(labels[1])?;
    out.write_str(info)?;
    out.write_str(" 1\n")
}

/// Each service's level under the options, and what the cap dropped.
fn levels(snapshot: &Snapshot, o: &ExportOptions) -> (Vec<Vec<Level>>, Dropped) {
    let mut levels: Vec<Vec<Level>> = snapshot
        .namespaces
        .iter()
        .map(|ns| match &ns.ipvs {
            Ok(ipvs) => ipvs
                .services
                .iter()
                .map(|svc| match o.destinations.selects(&ns.netns.name, svc) {
                    true => Level::Full,
                    false => Level::Service,
                })
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect();
    let per_service = DEFS
        .iter()
        .filter(|d| matches!(d.value, Value::Service(_) | Value::ServiceInfo) && enabled(d, o))
        .count();
    let per_destination = defs()
        .filter(|d| {
            matches!(d.value, Value::Destination(_) | Value::DestinationInfo) && enabled(d, o)
        })
        .count();
    let mut dropped = Dropped::default();
    if o.max_series == 0 {
        return (levels, dropped);
    }
    let services = |ni: usize| match &snapshot.namespaces[ni].ipvs {
        Ok(ipvs) => &ipvs.services[..],
        Err(_) => &[],
    };
    let mut total = 0usize;
    for (ni, lv) in levels.iter().enumerate() {
        for (svc, l) in services(ni).iter().zip(lv) {
            total += per_service;
            if *l == Level::Full {
                total += per_destination * svc.destinations.len();
            }
        }
    }
    if total <= o.max_series {
        return (levels, dropped);
    }
    // The fixed order: namespaces by name (the snapshot's order), services by address.
    let mut order: Vec<(usize, usize)> = Vec::new();
    for (ni, _) in levels.iter().enumerate() {
        let svcs = services(ni);
        let mut idx: Vec<usize> = (0..svcs.len()).collect();
        idx.sort_by_key(|&i| (svcs[i].family, svcs[i].address));
        order.extend(idx.into_iter().map(|si| (ni, si)));
    }
    for &(ni, si) in order.iter().rev() {
        if total <= o.max_series {
            break;
        }
        if levels[ni][si] == Level::Full {
            let n = per_destination * services(ni)[si].destinations.len();
            levels[ni][si] = Level::Service;
            total -= n;
            if n > 0 {
                dropped.destination_groups += 1;
                dropped.destination_series += n;
            }
        }
    }
    for &(ni, si) in order.iter().rev() {
        if total <= o.max_series {
            break;
        }
        levels[ni][si] = Level::Dropped;
        total -= per_service;
        dropped.services += 1;
        dropped.service_series += per_service;
    }
    (levels, dropped)
}
