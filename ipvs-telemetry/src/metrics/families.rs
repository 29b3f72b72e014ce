//! The metric families of docs/metrics.md written through a [`Sink`]: the namespace, context,
//! eBPF and daemon families (the service and destination ones are pre-rendered, see
//! [`super::prerendered`]).
//!
//! The walk is written once, against the [`Sink`] trait; the OpenMetrics encoder
//! (prometheus-client) and the 0.0.4 encoder each implement it. That keeps names, HELP texts,
//! types and label sets identical between the two formats.

use std::collections::HashMap;
use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;

use super::Inputs;
use super::Plans;
#[cfg(test)]
use super::labels::{DestinationInfoLabels, ServiceInfoLabels};
use super::labels::{
    DestinationLabels, EbpfLabels, LabelPairs, NameLabels, NetnsAndLabel, NetnsLabels, NoLabels,
    ServiceLabels, StaticLabels,
};
use super::options::{ExportOptions, Group};
use super::prerendered::{Dropped, Level, ServiceIndex};
use crate::model::{HistogramSnapshot, NamespaceSnapshot, ServiceAddress};
#[cfg(test)]
use crate::model::{IpvsState, Stats};

/// A label set both encoders can write.
pub(super) trait LabelSet: LabelPairs + EncodeLabelSet {}
impl<T: LabelPairs + EncodeLabelSet> LabelSet for T {}

/// The type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A counter; the name is given without `_total`.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// A sample value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Unsigned integer.
    U(u64),
    /// Signed integer.
    I(i64),
    /// Float.
    F(f64),
}

/// Receives the families, one after the other.
pub(super) trait Sink {
    /// Writes the samples of one family.
    type Family<'s>: Samples
    where
        Self: 's;
    /// Starts a family: `name` without the `_total` of counters.
    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
    ) -> Result<Self::Family<'_>, fmt::Error>;
}

/// Receives the samples of one family.
pub(super) trait Samples {
    /// One counter sample.
    fn counter<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result;
    /// One gauge sample.
    fn gauge<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result;
    /// One histogram.
    fn histogram<L: LabelSet>(&mut self, labels: &L, h: &HistogramSnapshot) -> fmt::Result;
}

/// Labels of one namespace's services and destinations (the reference encoder of the tests).
#[cfg(test)]
struct NsLabels<'a> {
    ipvs: &'a IpvsState,
    services: Vec<ServiceLabels>,
}

/// The families before the service and destination ones: the namespace series.
pub(super) fn walk_head<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
    namespace_families(inputs, sink)
}

/// The families after the service and destination ones: interfaces and conntrack, eBPF (joined
/// with the netlink labels through `index`), and the daemon's own series.
pub(super) fn walk_tail<S: Sink>(inputs: &Inputs, plans: &Plans, sink: &mut S) -> fmt::Result {
    context_families(inputs, plans.options(), sink)?;
    sync_daemon_families(inputs, sink)?;
    ebpf_families(inputs, &plans.index, sink)?;
    name_families(inputs, plans, sink)?;
    daemon_families(inputs, plans.dropped, sink)
}

/// The service and destination families written the straightforward way, through the sink:
/// the reference the pre-rendered encoder is compared with.
#[cfg(test)]
pub(super) fn walk_reference<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
    let namespaces = &inputs.snapshot.namespaces;
    let ns_labels: Vec<NsLabels<'_>> = namespaces
        .iter()
        .filter_map(|ns| {
            let ipvs = ns.ipvs.as_ref().ok()?;
            let services = ipvs
                .services
                .iter()
                .map(|svc| {
                    let published = match svc.address {
                        ServiceAddress::Fwmark { .. } => svc.published,
                        ServiceAddress::Inet { .. } => None,
                    };
                    ServiceLabels::new(&ns.netns, svc.family, &svc.address, published)
                })
                .collect();
            Some(NsLabels { ipvs, services })
        })
        .collect();
    let dest_labels: Vec<Vec<Vec<DestinationLabels<'_>>>> = ns_labels
        .iter()
        .map(|n| {
            n.ipvs
                .services
                .iter()
                .zip(&n.services)
                .map(|(svc, sl)| {
                    svc.destinations
                        .iter()
                        .map(|d| DestinationLabels::new(sl, d.address, d.port))
                        .collect()
                })
                .collect()
        })
        .collect();
    service_families(&ns_labels, sink)?;
    destination_families(&ns_labels, &dest_labels, sink)
}

fn namespace_families<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
    let namespaces = &inputs.snapshot.namespaces;
    fn netns(ns: &NamespaceSnapshot) -> NetnsLabels<'_> {
        NetnsLabels {
            netns: &ns.netns.name,
        }
    }
    {
        let mut f = sink.family(
            "ipvs_up",
            "1 if the IPVS state of the namespace was read in the last collection, else 0.",
            Kind::Gauge,
        )?;
        for ns in namespaces {
            f.gauge(&netns(ns), Num::U(ns.ipvs.is_ok() as u64))?;
        }
    }
    {
        let mut f = sink.family(
            "ipvs_services",
            "Number of IPVS virtual services in the namespace.",
            Kind::Gauge,
        )?;
        for ns in namespaces {
            if let Ok(ipvs) = &ns.ipvs {
                f.gauge(&netns(ns), Num::U(ipvs.services.len() as u64))?;
            }
        }
    }
    {
        let mut f = sink.family(
            "ipvs_connection_table_size",
            "Size of the IPVS connection hash table (IPVS_INFO_ATTR_CONN_TAB_SIZE).",
            Kind::Gauge,
        )?;
        for ns in namespaces {
            if let Ok(ipvs) = &ns.ipvs {
                f.gauge(&netns(ns), Num::U(ipvs.info.conn_tab_size.into()))?;
            }
        }
    }
    {
        let mut f = sink.family(
            "ipvs_info",
            "IPVS version of the namespace's kernel, always 1.",
            Kind::Gauge,
        )?;
        for ns in namespaces {
            if let Ok(ipvs) = &ns.ipvs {
                let version = ipvs.info.version_string();
                let l = NetnsAndLabel {
                    netns: &ns.netns.name,
                    name: "version",
                    value: &version,
                };
                f.gauge(&l, Num::U(1))?;
            }
        }
    }
    {
        let mut f = sink.family(
            "ipvs_collection_duration_seconds",
            "Wall time of the last netlink collection of the namespace.",
            Kind::Gauge,
        )?;
        for ns in namespaces {
            f.gauge(&netns(ns), Num::F(ns.duration.as_secs_f64()))?;
        }
    }
    {
        let mut f = sink.family(
            "ipvs_last_collection_timestamp_seconds",
            "Unix time at which the served values of the namespace were read.",
            Kind::Gauge,
        )?;
        for ns in namespaces {
            let t = ns
                .timestamp
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            f.gauge(&netns(ns), Num::F(t))?;
        }
    }
    {
        let mut f = sink.family(
            "ipvs_collection_errors",
            "Failed collections of the namespace since the daemon started, by cause.",
            Kind::Counter,
        )?;
        for ((netns, reason), n) in &inputs.errors {
            let l = NetnsAndLabel {
                netns,
                name: "reason",
                value: reason,
            };
            f.counter(&l, Num::U(*n))?;
        }
    }
    Ok(())
}

#[cfg(test)]
/// The five counters and five estimator rates of [`Stats`], as (suffix, help, getter).
type StatField = (&'static str, &'static str, fn(&Stats) -> u64);

#[cfg(test)]
const SERVICE_COUNTERS: [StatField; 5] = [
    (
        "ipvs_service_connections",
        "Connections scheduled by the virtual service (kernel counter).",
        |s| s.conns,
    ),
    (
        "ipvs_service_incoming_packets",
        "Packets received by the virtual service.",
        |s| s.inpkts,
    ),
    (
        "ipvs_service_outgoing_packets",
        "Packets sent by the virtual service.",
        |s| s.outpkts,
    ),
    (
        "ipvs_service_incoming_bytes",
        "Bytes received by the virtual service.",
        |s| s.inbytes,
    ),
    (
        "ipvs_service_outgoing_bytes",
        "Bytes sent by the virtual service.",
        |s| s.outbytes,
    ),
];

#[cfg(test)]
const SERVICE_RATES: [StatField; 5] = [
    (
        "ipvs_service_estimated_connections_per_second",
        "Connection rate of the virtual service by the kernel's 2 s estimator.",
        |s| s.cps,
    ),
    (
        "ipvs_service_estimated_incoming_packets_per_second",
        "Incoming packet rate of the virtual service by the kernel's 2 s estimator.",
        |s| s.inpps,
    ),
    (
        "ipvs_service_estimated_outgoing_packets_per_second",
        "Outgoing packet rate of the virtual service by the kernel's 2 s estimator.",
        |s| s.outpps,
    ),
    (
        "ipvs_service_estimated_incoming_bytes_per_second",
        "Incoming byte rate of the virtual service by the kernel's 2 s estimator.",
        |s| s.inbps,
    ),
    (
        "ipvs_service_estimated_outgoing_bytes_per_second",
        "Outgoing byte rate of the virtual service by the kernel's 2 s estimator.",
        |s| s.outbps,
    ),
];

#[cfg(test)]
const DESTINATION_COUNTERS: [StatField; 5] = [
    (
        "ipvs_destination_connections",
        "Connections scheduled to the real server (kernel counter).",
        |s| s.conns,
    ),
    (
        "ipvs_destination_incoming_packets",
        "Packets received for the real server.",
        |s| s.inpkts,
    ),
    (
        "ipvs_destination_outgoing_packets",
        "Packets sent from the real server.",
        |s| s.outpkts,
    ),
    (
        "ipvs_destination_incoming_bytes",
        "Bytes received for the real server.",
        |s| s.inbytes,
    ),
    (
        "ipvs_destination_outgoing_bytes",
        "Bytes sent from the real server.",
        |s| s.outbytes,
    ),
];

#[cfg(test)]
const DESTINATION_RATES: [StatField; 5] = [
    (
        "ipvs_destination_estimated_connections_per_second",
        "Connection rate of the real server by the kernel's 2 s estimator.",
        |s| s.cps,
    ),
    (
        "ipvs_destination_estimated_incoming_packets_per_second",
        "Incoming packet rate of the real server by the kernel's 2 s estimator.",
        |s| s.inpps,
    ),
    (
        "ipvs_destination_estimated_outgoing_packets_per_second",
        "Outgoing packet rate of the real server by the kernel's 2 s estimator.",
        |s| s.outpps,
    ),
    (
        "ipvs_destination_estimated_incoming_bytes_per_second",
        "Incoming byte rate of the real server by the kernel's 2 s estimator.",
        |s| s.inbps,
    ),
    (
        "ipvs_destination_estimated_outgoing_bytes_per_second",
        "Outgoing byte rate of the real server by the kernel's 2 s estimator.",
        |s| s.outbps,
    ),
];

#[cfg(test)]
fn service_families<S: Sink>(ns_labels: &[NsLabels<'_>], sink: &mut S) -> fmt::Result {
    let services = || {
        ns_labels
            .iter()
            .flat_map(|n| n.ipvs.services.iter().zip(&n.services))
    };
    if services().next().is_none() {
        return Ok(());
    }
    for (name, help, get) in SERVICE_COUNTERS {
        let mut f = sink.family(name, help, Kind::Counter)?;
        for (svc, l) in services() {
            f.counter(l, Num::U(get(&svc.stats)))?;
        }
    }
    for (name, help, get) in SERVICE_RATES {
        let mut f = sink.family(name, help, Kind::Gauge)?;
        for (svc, l) in services() {
            f.gauge(l, Num::U(get(&svc.stats)))?;
        }
    }
    {
        let mut f = sink.family(
            "ipvs_service_destinations",
            "Number of real servers of the virtual service.",
            Kind::Gauge,
        )?;
        for (svc, l) in services() {
            f.gauge(l, Num::U(svc.destinations.len() as u64))?;
        }
    }
    {
        let mut f = sink.family(
            "ipvs_service_persistence_timeout_seconds",
            "Persistence timeout of the virtual service, 0 when not persistent.",
            Kind::Gauge,
        )?;
        for (svc, l) in services() {
            f.gauge(l, Num::U(svc.timeout.into()))?;
        }
    }
    let mut f = sink.family(
        "ipvs_service_info",
        "Configuration of the virtual service (scheduler, flags, persistence), always 1.",
        Kind::Gauge,
    )?;
    for (svc, l) in services() {
        f.gauge(&ServiceInfoLabels::new(l, svc), Num::U(1))?;
    }
    Ok(())
}

#[cfg(test)]
fn destination_families<S: Sink>(
    ns_labels: &[NsLabels<'_>],
    dest_labels: &[Vec<Vec<DestinationLabels<'_>>>],
    sink: &mut S,
) -> fmt::Result {
    let dests = || {
        ns_labels.iter().zip(dest_labels).flat_map(|(n, per_svc)| {
            n.ipvs
                .services
                .iter()
                .zip(per_svc)
                .flat_map(|(svc, dl)| svc.destinations.iter().zip(dl))
        })
    };
    if dests().next().is_none() {
        return Ok(());
    }
    for (name, help, get) in DESTINATION_COUNTERS {
        let mut f = sink.family(name, help, Kind::Counter)?;
        for (d, l) in dests() {
            f.counter(l, Num::U(get(&d.stats)))?;
        }
    }
    for (name, help, get) in DESTINATION_RATES {
        let mut f = sink.family(name, help, Kind::Gauge)?;
        for (d, l) in dests() {
            f.gauge(l, Num::U(get(&d.stats)))?;
        }
    }
    type DestField = (
        &'static str,
        &'static str,
        fn(&crate::model::Destination) -> Num,
    );
    const GAUGES: [DestField; 6] = [
        (
            "ipvs_destination_active_connections",
            "Active connections to the real server (live, not estimator-delayed).",
            |d| Num::U(d.active_connections.into()),
        ),
        (
            "ipvs_destination_inactive_connections",
            "Inactive connections to the real server.",
            |d| Num::U(d.inactive_connections.into()),
        ),
        (
            "ipvs_destination_persistent_connections",
            "Persistence templates pointing at the real server.",
            |d| Num::U(d.persistent_connections.into()),
        ),
        (
            "ipvs_destination_weight",
            "Scheduling weight of the real server.",
            |d| Num::I(d.weight.into()),
        ),
        (
            "ipvs_destination_upper_threshold",
            "Upper connection threshold of the real server, 0 when none.",
            |d| Num::U(d.upper_threshold.into()),
        ),
        (
            "ipvs_destination_lower_threshold",
            "Lower connection threshold of the real server.",
            |d| Num::U(d.lower_threshold.into()),
        ),
    ];
    for (name, help, get) in GAUGES {
        let mut f = sink.family(name, help, Kind::Gauge)?;
        for (d, l) in dests() {
            f.gauge(l, get(d))?;
        }
    }
    let mut f = sink.family(
        "ipvs_destination_info",
        "Forwarding method and tunnel type of the real server, always 1.",
        Kind::Gauge,
    )?;
    for (d, l) in dests() {
        f.gauge(&DestinationInfoLabels::new(l, d), Num::U(1))?;
    }
    Ok(())
}

fn ebpf_families<S: Sink>(inputs: &Inputs, index: &ServiceIndex, sink: &mut S) -> fmt::Result {
    let ebpf = &*inputs.ebpf;
    // No mode: there is no eBPF side at all (`snapshot` command), not even a disabled one.
    if ebpf.mode.is_empty() {
        return Ok(());
    }
    {
        let mut f = sink.family(
            "ipvs_ebpf_up",
            "1 when the eBPF probes are attached.",
            Kind::Gauge,
        )?;
        f.gauge(&NoLabels, Num::U(ebpf.up as u64))?;
    }
    {
        let mut f = sink.family(
            "ipvs_ebpf_info",
            "Why the eBPF probes are on or off, always 1.",
            Kind::Gauge,
        )?;
        let l = [
            ("mode", ebpf.mode.as_str()),
            ("reason", ebpf.reason.as_str()),
            ("first_response", ebpf.first_response.as_str()),
        ];
        f.gauge(&StaticLabels(&l), Num::U(1))?;
    }
    for (name, help, values) in [
        (
            "ipvs_ebpf_events",
            "Events taken from the eBPF ring buffer, by kind.",
            &ebpf.events,
        ),
        (
            "ipvs_ebpf_events_lost",
            "Events the kernel could not queue on the full eBPF ring buffer, by kind.",
            &ebpf.lost,
        ),
        (
            "ipvs_ebpf_read_errors",
            "Kernel reads that failed in the eBPF probes (no event sent), by the kind of event.",
            &ebpf.read_errors,
        ),
    ] {
        let mut f = sink.family(name, help, Kind::Counter)?;
        for (kind, n) in values {
            f.counter(&StaticLabels(&[("kind", kind.as_str())]), Num::U(*n))?;
        }
    }
    sink.family(
        "ipvs_ebpf_overflow_events",
        "Events of destinations beyond --ebpf.max-destinations, counted but in no per-destination series.",
        Kind::Counter,
    )?
    .counter(&NoLabels, Num::U(ebpf.overflow))?;
    if ebpf.series.is_empty() && ebpf.unschedulable.is_empty() {
        return Ok(());
    }

    // Join each eBPF key with the netlink labels: namespace inode -> namespace, service
    // address -> service, (address, port) -> destination. Keys that match nothing (a service
    // deleted since) are left out, so eBPF series never outlive their netlink series. Labels are
    // made only for the services that have eBPF series.
    let namespaces = &inputs.snapshot.namespaces;
    let mut service_labels: HashMap<(usize, usize), ServiceLabels> = HashMap::new();
    let mut matched: Vec<(&crate::model::EbpfSeries, (usize, usize))> = Vec::new();
    for s in &ebpf.series {
        let Some(&(ni, si)) = index.get(&(s.key.netns_inode, s.key.family, s.key.service)) else {
            continue;
        };
        let ns = &namespaces[ni];
        let Ok(ipvs) = &ns.ipvs else { continue };
        let svc = &ipvs.services[si];
        if let Some((addr, port)) = s.key.destination
            && !svc
                .destinations
                .iter()
                .any(|d| d.address == addr && d.port == port)
        {
            continue;
        }
        service_labels.entry((ni, si)).or_insert_with(|| {
            let published = match svc.address {
                ServiceAddress::Fwmark { .. } => svc.published,
                ServiceAddress::Inet { .. } => None,
            };
            ServiceLabels::new(&ns.netns, svc.family, &svc.address, published)
        });
        matched.push((s, (ni, si)));
    }
    let unschedulable: Vec<(ServiceLabels, u64)> = ebpf
        .unschedulable
        .iter()
        .filter_map(|(k, n)| {
            let &(ni, si) = index.get(&(k.netns_inode, k.family, k.service))?;
            let ns = &namespaces[ni];
            let svc = ns.ipvs.as_ref().ok()?.services.get(si)?;
            let published = match svc.address {
                ServiceAddress::Fwmark { .. } => svc.published,
                ServiceAddress::Inet { .. } => None,
            };
            let l = ServiceLabels::new(&ns.netns, svc.family, &svc.address, published);
            Some((l, *n))
        })
        .collect();
    if !unschedulable.is_empty() {
        let mut f = sink.family(
            "ipvs_ebpf_service_unschedulable",
            crate::ebpf::aggregate::UNSCHEDULABLE_HELP,
            Kind::Counter,
        )?;
        for (l, n) in &unschedulable {
            f.counter(l, Num::U(*n))?;
        }
    }
    let labelled: Vec<(EbpfLabels<'_>, &crate::model::EbpfSeries)> = matched
        .into_iter()
        .map(|(s, key)| {
            let sl = &service_labels[&key];
            let labels = match s.key.destination {
                None => EbpfLabels::Service(sl),
                Some((addr, port)) => {
                    EbpfLabels::Destination(DestinationLabels::new(sl, addr, port))
                }
            };
            (labels, s)
        })
        .collect();
    if labelled.is_empty() {
        return Ok(());
    }
    {
        let mut f = sink.family(
            "ipvs_ebpf_destination_new_connections",
            "New scheduled connections seen by the eBPF probe (templates, sync and bypass connections excluded).",
            Kind::Counter,
        )?;
        for (l, s) in &labelled {
            f.counter(l, Num::U(s.new_connections))?;
        }
    }
    {
        let mut f = sink.family(
            "ipvs_ebpf_destination_unanswered_connections",
            crate::ebpf::aggregate::UNANSWERED_HELP,
            Kind::Counter,
        )?;
        for (l, s) in &labelled {
            f.counter(l, Num::U(s.unanswered))?;
        }
    }
    {
        let mut f = sink.family(
            "ipvs_ebpf_destination_synced_connections",
            crate::ebpf::aggregate::SYNCED_HELP,
            Kind::Counter,
        )?;
        for (l, s) in &labelled {
            f.counter(l, Num::U(s.synced))?;
        }
    }
    {
        let mut f = sink.family(
            "ipvs_ebpf_destination_waiting_connections",
            crate::ebpf::aggregate::WAITING_HELP,
            Kind::Gauge,
        )?;
        for (l, s) in &labelled {
            f.gauge(l, Num::U(s.waiting))?;
        }
    }
    type Hist = fn(&crate::model::EbpfSeries) -> &HistogramSnapshot;
    let hists: [(&'static str, &'static str, Hist); 3] = [
        (
            "ipvs_ebpf_destination_connection_rate_per_second",
            "New connections per second, one observation per rate window.",
            |s| &s.connection_rate,
        ),
        (
            "ipvs_ebpf_destination_connection_interarrival_seconds",
            "Time between consecutive new connections to the destination.",
            |s| &s.interarrival,
        ),
        (
            "ipvs_ebpf_destination_first_response_seconds",
            crate::ebpf::aggregate::FIRST_RESPONSE_HELP,
            |s| &s.first_response,
        ),
    ];
    for (name, help, get) in hists {
        let mut f = sink.family(name, help, Kind::Histogram)?;
        for (l, s) in &labelled {
            f.histogram(l, get(s))?;
        }
    }
    let mut f = sink.family(
        "ipvs_ebpf_destination_peak_connection_rate_per_second",
        "Highest rate-window connection rate since the previous collection.",
        Kind::Gauge,
    )?;
    for (l, s) in &labelled {
        f.gauge(l, Num::F(s.peak_connection_rate))?;
    }
    Ok(())
}

/// The names of services and destinations (info series on the very labels of the counters)
/// and the state of the name sources. Names are resolved before encoding
/// ([`crate::names::resolve`]); this only writes them.
fn name_families<S: Sink>(inputs: &Inputs, plans: &Plans, sink: &mut S) -> fmt::Result {
    let names = &*inputs.names;
    // (namespace index, namespace, its table, its names)
    type Named<'a> = (
        usize,
        &'a NamespaceSnapshot,
        &'a crate::model::IpvsState,
        &'a crate::names::NetnsNames,
    );
    let named: Vec<Named<'_>> = inputs
        .snapshot
        .namespaces
        .iter()
        .enumerate()
        .filter_map(|(ni, ns)| {
            let ipvs = ns.ipvs.as_ref().ok()?;
            Some((ni, ns, ipvs, names.netns.get(&ns.netns.name)?))
        })
        .collect();
    let service_labels = |ns: &NamespaceSnapshot, svc: &crate::model::Service| {
        let published = match svc.address {
            ServiceAddress::Fwmark { .. } => svc.published,
            ServiceAddress::Inet { .. } => None,
        };
        ServiceLabels::new(&ns.netns, svc.family, &svc.address, published)
    };
    // Positions come from the same snapshot; `get` guards against any mismatch all the same.
    // Names follow their series: none for a service the series cap left out, none for the
    // destinations without series (--metrics.destinations, the cap).
    let services: Vec<(ServiceLabels, &crate::names::Name)> = named
        .iter()
        .flat_map(|&(ni, ns, ipvs, n)| {
            n.services.iter().filter_map(move |(si, name)| {
                let svc = ipvs.services.get(*si)?;
                (plans.level(ni, *si) != Level::Dropped).then(|| (service_labels(ns, svc), &**name))
            })
        })
        .collect();
    if !services.is_empty() {
        let mut f = sink.family(
            "ipvs_service_name_info",
            "Name of the virtual service given by a name source (names file, Docker), always 1.",
            Kind::Gauge,
        )?;
        for (l, name) in &services {
            f.gauge(&NameLabels { series: l, name }, Num::U(1))?;
        }
    }
    let destinations: Vec<(ServiceLabels, std::net::IpAddr, u16, &crate::names::Name)> = named
        .iter()
        .flat_map(|&(ni, ns, ipvs, n)| {
            n.destinations.iter().filter_map(move |(si, di, name)| {
                let svc = ipvs.services.get(*si)?;
                let d = svc.destinations.get(*di)?;
                (plans.level(ni, *si) == Level::Full)
                    .then(|| (service_labels(ns, svc), d.address, d.port, &**name))
            })
        })
        .collect();
    if !destinations.is_empty() {
        let mut f = sink.family(
            "ipvs_destination_name_info",
            "Name of the real server given by a name source (names file, Docker task), always 1.",
            Kind::Gauge,
        )?;
        for (sl, addr, port, name) in &destinations {
            let l = DestinationLabels::new(sl, *addr, *port);
            f.gauge(&NameLabels { series: &l, name }, Num::U(1))?;
        }
    }
    if let Some(file) = &names.file {
        sink.family(
            "ipvs_names_file_last_reload_successful",
            "1 when the last (re)load of --names.file was valid; 0 while the previous names stay in force.",
            Kind::Gauge,
        )?
        .gauge(&NoLabels, Num::U(file.last_reload_ok as u64))?;
        sink.family(
            "ipvs_names_file_reload_failures",
            "Reloads of --names.file that failed (unreadable or invalid) since the daemon started.",
            Kind::Counter,
        )?
        .counter(&NoLabels, Num::U(file.reload_failures))?;
    }
    if let Some(docker) = &names.docker {
        sink.family(
            "ipvs_names_docker_up",
            "1 when the last refresh of the Docker names read the Engine API.",
            Kind::Gauge,
        )?
        .gauge(&NoLabels, Num::U(docker.up as u64))?;
        sink.family(
            "ipvs_names_docker_info",
            "Why the Docker names are present or absent, always 1.",
            Kind::Gauge,
        )?
        .gauge(&StaticLabels(&[("reason", docker.reason)]), Num::U(1))?;
        sink.family(
            "ipvs_names_docker_refreshes",
            "Refreshes of the Docker names (successful or not) since the daemon started.",
            Kind::Counter,
        )?
        .counter(&NoLabels, Num::U(docker.refreshes))?;
    }
    Ok(())
}

/// `ipvs_sync_daemon_info`: one series per sync daemon per namespace.
fn sync_daemon_families<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
    let namespaces = &inputs.snapshot.namespaces;
    if namespaces
        .iter()
        .all(|ns| ns.context.sync_daemons.is_empty())
    {
        return Ok(());
    }
    let mut f = sink.family(
        "ipvs_sync_daemon_info",
        "An IPVS connection-synchronisation daemon running in the namespace (IPVS_CMD_GET_DAEMON): role master or backup, multicast interface and sync id; always 1.",
        Kind::Gauge,
    )?;
    for ns in namespaces {
        for d in &ns.context.sync_daemons {
            let id = d.sync_id.to_string();
            let l = [
                ("netns", ns.netns.name.as_str()),
                ("role", d.role.as_str()),
                ("interface", d.interface.as_str()),
                ("sync_id", id.as_str()),
            ];
            f.gauge(&StaticLabels(&l), Num::U(1))?;
        }
    }
    Ok(())
}

fn context_families<S: Sink>(
    inputs: &Inputs,
    options: &ExportOptions,
    sink: &mut S,
) -> fmt::Result {
    let namespaces = &inputs.snapshot.namespaces;
    let interfaces = options.has(Group::ContextInterfaces);
    let ifaces = move || {
        namespaces
            .iter()
            .filter(move |_| interfaces)
            .flat_map(|ns| ns.context.interfaces.iter().map(move |i| (ns, i)))
    };
    if ifaces().next().is_some() {
        type IfField = (
            &'static str,
            &'static str,
            fn(&crate::model::InterfaceStats) -> u64,
        );
        const COUNTERS: [IfField; 6] = [
            (
                "ipvs_netns_interface_receive_bytes",
                "Bytes received by the interface.",
                |i| i.rx_bytes,
            ),
            (
                "ipvs_netns_interface_transmit_bytes",
                "Bytes transmitted by the interface.",
                |i| i.tx_bytes,
            ),
            (
                "ipvs_netns_interface_receive_packets",
                "Packets received by the interface.",
                |i| i.rx_packets,
            ),
            (
                "ipvs_netns_interface_transmit_packets",
                "Packets transmitted by the interface.",
                |i| i.tx_packets,
            ),
            (
                "ipvs_netns_interface_receive_drops",
                "Received packets dropped by the interface.",
                |i| i.rx_dropped,
            ),
            (
                "ipvs_netns_interface_transmit_drops",
                "Packets dropped on transmission by the interface.",
                |i| i.tx_dropped,
            ),
        ];
        for (name, help, get) in COUNTERS {
            let mut f = sink.family(name, help, Kind::Counter)?;
            for (ns, i) in ifaces() {
                let l = NetnsAndLabel {
                    netns: &ns.netns.name,
                    name: "device",
                    value: &i.device,
                };
                f.counter(&l, Num::U(get(i)))?;
            }
        }
        let mut f = sink.family(
            "ipvs_netns_interface_up",
            "1 when the interface's operational state is up.",
            Kind::Gauge,
        )?;
        for (ns, i) in ifaces() {
            let l = NetnsAndLabel {
                netns: &ns.netns.name,
                name: "device",
                value: &i.device,
            };
            f.gauge(&l, Num::U(i.up as u64))?;
        }
    }
    if options.has(Group::ContextConntrack)
        && namespaces
            .iter()
            .any(|ns| ns.context.conntrack_entries.is_some())
    {
        let mut f = sink.family(
            "ipvs_netns_conntrack_entries",
            "Connection tracking entries in the namespace.",
            Kind::Gauge,
        )?;
        for ns in namespaces {
            if let Some(n) = ns.context.conntrack_entries {
                f.gauge(
                    &NetnsLabels {
                        netns: &ns.netns.name,
                    },
                    Num::U(n),
                )?;
            }
        }
    }
    Ok(())
}

fn daemon_families<S: Sink>(inputs: &Inputs, dropped: Dropped, sink: &mut S) -> fmt::Result {
    {
        let mut f = sink.family(
            "ipvs_telemetry_series_dropped",
            "Service and destination series left out of this exposition by --metrics.max-series, by level.",
            Kind::Gauge,
        )?;
        for (level, n) in [
            ("destination", dropped.destination_series),
            ("service", dropped.service_series),
        ] {
            f.gauge(&StaticLabels(&[("level", level)]), Num::U(n as u64))?;
        }
    }
    sink.family(
        "ipvs_telemetry_scrapes_precollected",
        "Scrapes answered at once from a collection begun ahead of them for a steady scraper (--collection.ahead).",
        Kind::Counter,
    )?
    .counter(&NoLabels, Num::U(inputs.precollected))?;
    {
        let b = &inputs.build;
        let mut f = sink.family(
            "ipvs_telemetry_build_info",
            "Version, git revision and compiler of the ipvs-telemetry binary, always 1.",
            Kind::Gauge,
        )?;
        let l = [
            ("version", b.version),
            ("revision", b.revision),
            ("rustc", b.rustc),
        ];
        f.gauge(&StaticLabels(&l), Num::U(1))?;
    }
    let p = &inputs.process;
    if let Some(v) = p.cpu_seconds {
        sink.family(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            Kind::Counter,
        )?
        .counter(&NoLabels, Num::F(v))?;
    }
    let gauges: [(&'static str, &'static str, Option<Num>); 5] = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_memory_bytes.map(Num::U),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_memory_bytes.map(Num::U),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds.map(Num::U),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds.map(Num::U),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds.map(Num::F),
        ),
    ];
    for (name, help, v) in gauges {
        if let Some(v) = v {
            sink.family(name, help, Kind::Gauge)?.gauge(&NoLabels, v)?;
        }
    }
    Ok(())
}
