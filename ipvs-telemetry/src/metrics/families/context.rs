//! The context families: interface and conntrack counters of each namespace.

use std::fmt;

use super::{Kind, Num, Samples, Sink};
use crate::metrics::Inputs;
use crate::metrics::labels::{NetnsAndLabel, NetnsLabels};
use crate::metrics::options::{ExportOptions, Group};

pub(super) fn context_families<S: Sink>(
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
