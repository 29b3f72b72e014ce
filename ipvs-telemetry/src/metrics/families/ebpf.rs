//! The eBPF families: events, losses, the per-destination counters and histograms joined
//! with the netlink labels of their service.

use std::collections::HashMap;
use std::fmt;

use super::{Kind, Num, Samples, Sink};
use crate::metrics::Inputs;
use crate::metrics::labels::{
    DestinationLabels, EbpfLabels, NoLabels, ServiceLabels, StaticLabels,
};
use crate::metrics::prerendered::ServiceIndex;
use crate::model::{HistogramSnapshot, ServiceAddress};

pub(super) fn ebpf_families<S: Sink>(
    inputs: &Inputs,
    index: &ServiceIndex,
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
