//! Every metric family of METRICS.md, walked once over the collection's values.
//!
//! The walk is written once, against the [`Sink`] trait; the OpenMetrics encoder
//! (prometheus-client) and the 0.0.4 encoder each implement it. That keeps names, HELP texts,
//! types and label sets identical between the two formats.

use std::collections::HashMap;
use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;

use super::Inputs;
use super::labels::{
    DestinationInfoLabels, DestinationLabels, EbpfLabels, LabelPairs, NetnsAndLabel, NetnsLabels,
    NoLabels, ServiceInfoLabels, ServiceLabels, StaticLabels,
};
use crate::model::{
    Family, HistogramSnapshot, IpvsState, NamespaceSnapshot, ServiceAddress, Stats,
};

/// A label set both encoders can write.
pub trait LabelSet: LabelPairs + EncodeLabelSet {}
impl<T: LabelPairs + EncodeLabelSet> LabelSet for T {}

/// The type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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
pub trait Sink {
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
pub trait Samples {
    /// One counter sample.
    fn counter<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result;
    /// One gauge sample.
    fn gauge<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result;
    /// One histogram.
    fn histogram<L: LabelSet>(&mut self, labels: &L, h: &HistogramSnapshot) -> fmt::Result;
}

/// Labels of one namespace's services and destinations, built once per encoding.
struct NsLabels<'a> {
    ns: &'a NamespaceSnapshot,
    ipvs: &'a IpvsState,
    services: Vec<ServiceLabels>,
}

/// Writes every family of `inputs` into `sink`.
pub fn walk<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
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
            Some(NsLabels { ns, ipvs, services })
        })
        .collect();
    // Destination labels borrow the service labels above.
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

    namespace_families(inputs, sink)?;
    service_families(&ns_labels, sink)?;
    destination_families(&ns_labels, &dest_labels, sink)?;
    ebpf_families(inputs, &ns_labels, &dest_labels, sink)?;
    context_families(inputs, sink)?;
    sync_daemon_families(inputs, sink)?;
    daemon_families(inputs, sink)
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

/// The five counters and five estimator rates of [`Stats`], as (suffix, help, getter).
type StatField = (&'static str, &'static str, fn(&Stats) -> u64);

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

fn ebpf_families<S: Sink>(
    inputs: &Inputs,
    ns_labels: &[NsLabels<'_>],
    dest_labels: &[Vec<Vec<DestinationLabels<'_>>>],
    sink: &mut S,
) -> fmt::Result {
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
    // deleted since) are left out, so eBPF series never outlive their netlink series.
    type SvcKey = (u64, Family, ServiceAddress);
    let mut services: HashMap<SvcKey, (usize, usize)> = HashMap::new();
    for (ni, n) in ns_labels.iter().enumerate() {
        for (si, svc) in n.ipvs.services.iter().enumerate() {
            services
                .entry((n.ns.netns.inode, svc.family, svc.address))
                .or_insert((ni, si));
        }
    }
    let unschedulable: Vec<(&ServiceLabels, u64)> = ebpf
        .unschedulable
        .iter()
        .filter_map(|(k, n)| {
            let &(ni, si) = services.get(&(k.netns_inode, k.family, k.service))?;
            Some((&ns_labels[ni].services[si], *n))
        })
        .collect();
    if !unschedulable.is_empty() {
        let mut f = sink.family(
            "ipvs_ebpf_service_unschedulable",
            crate::ebpf::aggregate::UNSCHEDULABLE_HELP,
            Kind::Counter,
        )?;
        for (l, n) in &unschedulable {
            f.counter(*l, Num::U(*n))?;
        }
    }
    let labelled: Vec<(EbpfLabels<'_>, &crate::model::EbpfSeries)> = ebpf
        .series
        .iter()
        .filter_map(|s| {
            let &(ni, si) = services.get(&(s.key.netns_inode, s.key.family, s.key.service))?;
            let labels = match s.key.destination {
                None => EbpfLabels::Service(&ns_labels[ni].services[si]),
                Some((addr, port)) => {
                    let svc = &ns_labels[ni].ipvs.services[si];
                    let di = svc
                        .destinations
                        .iter()
                        .position(|d| d.address == addr && d.port == port)?;
                    EbpfLabels::Destination(dest_labels[ni][si][di].clone())
                }
            };
            Some((labels, s))
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

fn context_families<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
    let namespaces = &inputs.snapshot.namespaces;
    let ifaces = || {
        namespaces
            .iter()
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
    if namespaces
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

fn daemon_families<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
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
