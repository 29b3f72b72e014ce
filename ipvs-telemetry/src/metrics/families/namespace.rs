//! The namespace families: `ipvs_up`, the collection's duration and errors, and each
//! namespace's IPVS table size and settings.

use std::fmt;

use super::{Kind, Num, Samples, Sink};
use crate::metrics::Inputs;
use crate::metrics::labels::{NetnsAndLabel, NetnsLabels};
use crate::model::NamespaceSnapshot;

pub(super) fn namespace_families<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
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
