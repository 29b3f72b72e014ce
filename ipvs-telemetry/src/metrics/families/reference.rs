//! The service and destination families written the straightforward way, through the sink:
//! the reference the pre-rendered encoder ([`crate::metrics::prerendered`]) is compared with
//! in the tests.

use std::fmt;

use super::{Kind, Num, Samples, Sink};
use crate::metrics::Inputs;
use crate::metrics::labels::{
    DestinationInfoLabels, DestinationLabels, ServiceInfoLabels, ServiceLabels,
};
use crate::model::{IpvsState, ServiceAddress, Stats};

/// Labels of one namespace's services and destinations (the reference encoder of the tests).
struct NsLabels<'a> {
    ipvs: &'a IpvsState,
    services: Vec<ServiceLabels>,
}

/// The service and destination families written the straightforward way, through the sink:
/// the reference the pre-rendered encoder is compared with.
pub(in crate::metrics) fn walk_reference<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
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
