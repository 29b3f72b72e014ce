//! The name families: service and destination names, and the state of the name sources.

use std::fmt;

use super::{Kind, Num, Samples, Sink};
use crate::metrics::labels::{
    DestinationLabels, NameLabels, NoLabels, ServiceLabels, StaticLabels,
};
use crate::metrics::prerendered::Level;
use crate::metrics::{Inputs, Plans};
use crate::model::{NamespaceSnapshot, ServiceAddress};

/// The names of services and destinations (info series on the very labels of the counters)
/// and the state of the name sources. Names are resolved before encoding
/// ([`crate::names::resolve`]); this only writes them.
pub(super) fn name_families<S: Sink>(inputs: &Inputs, plans: &Plans, sink: &mut S) -> fmt::Result {
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
