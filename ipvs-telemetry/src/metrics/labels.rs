//! Typed label sets shared by every family, encoded by both the OpenMetrics encoder (through
//! prometheus-client's `EncodeLabelSet`) and the 0.0.4 encoder (through [`LabelPairs`]).
//!
//! One struct per label set keeps the names and their order identical on every series: the
//! service labels of a destination series *are* its service's labels, so PromQL joins on
//! `on(netns, family, protocol, virtual_address, virtual_port, fwmark)` always match, and the
//! eBPF series use the very same structs.

use std::fmt;

use prometheus_client::encoding::{
    EncodeLabelKey, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder,
};

use crate::model::{Destination, ForwardMethod, NetnsId, Service, ServiceAddress};

/// A label set as `(name, value)` pairs in a fixed order; drives both text encoders.
pub trait LabelPairs {
    /// Calls `f` with every label, in order.
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result;
}

/// Implements prometheus-client's `EncodeLabelSet` from [`LabelPairs`], so that both encoders
/// read the one definition.
macro_rules! encode_label_set_via_pairs {
    ($($t:ty),* $(,)?) => {$(
        impl EncodeLabelSet for $t {
            fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
                encode_pairs(self, encoder)
            }
        }
    )*};
}

/// prometheus-client's encoding of a [`LabelPairs`] set.
fn encode_pairs(set: &dyn LabelPairs, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
    set.pairs(&mut |name, value| {
        let mut label = encoder.encode_label();
        let mut key = label.encode_label_key()?;
        EncodeLabelKey::encode(&name, &mut key)?;
        let mut val = key.encode_label_value()?;
        EncodeLabelValue::encode(&value, &mut val)?;
        val.finish()
    })
}

/// No labels at all (`ipvs_ebpf_up`, `process_*`).
#[derive(Debug, Clone, Copy)]
pub struct NoLabels;

impl LabelPairs for NoLabels {
    fn pairs(&self, _f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        Ok(())
    }
}

/// `netns` only: the namespace series.
#[derive(Debug, Clone)]
pub struct NetnsLabels<'a> {
    /// Namespace name.
    pub netns: &'a str,
}

impl LabelPairs for NetnsLabels<'_> {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        f("netns", self.netns)
    }
}

/// `netns` plus one more label (`version`, `reason`, `device`).
#[derive(Debug, Clone)]
pub struct NetnsAndLabel<'a> {
    /// Namespace name.
    pub netns: &'a str,
    /// Name of the second label.
    pub name: &'static str,
    /// Its value.
    pub value: &'a str,
}

impl LabelPairs for NetnsAndLabel<'_> {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        f("netns", self.netns)?;
        f(self.name, self.value)
    }
}

/// Free-form constant labels of the daemon series (`build_info`, `ebpf_info`, `kind`).
#[derive(Debug, Clone)]
pub struct StaticLabels<'a>(pub &'a [(&'static str, &'a str)]);

impl LabelPairs for StaticLabels<'_> {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        self.0.iter().try_for_each(|(k, v)| f(k, v))
    }
}

/// The service labels (S of docs/metrics.md) with `netns`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceLabels {
    /// Namespace name.
    pub netns: String,
    /// `inet` or `inet6`.
    pub family: &'static str,
    /// `tcp`, `udp`, `sctp`; empty for fwmark services without a published port.
    pub protocol: String,
    /// Canonical VIP; empty for fwmark services.
    pub virtual_address: String,
    /// Decimal port; empty for fwmark services without a published port.
    pub virtual_port: String,
    /// Decimal mark; empty for non-fwmark services.
    pub fwmark: String,
}

impl ServiceLabels {
    /// Labels of `service` in namespace `netns`; `published` is the protocol/port the
    /// namespace's mangle rules map a fwmark service to, when exactly one.
    pub fn new(
        netns: &NetnsId,
        family: crate::model::Family,
        address: &ServiceAddress,
        published: Option<(crate::model::Protocol, u16)>,
    ) -> Self {
        let (protocol, virtual_address, virtual_port, fwmark) = match *address {
            ServiceAddress::Inet {
                protocol,
                address,
                port,
            } => (
                protocol.label(),
                address.to_string(),
                port.to_string(),
                String::new(),
            ),
            ServiceAddress::Fwmark { mark } => match published {
                Some((p, port)) => (p.label(), String::new(), port.to_string(), mark.to_string()),
                None => (
                    String::new(),
                    String::new(),
                    String::new(),
                    mark.to_string(),
                ),
            },
        };
        ServiceLabels {
            netns: netns.name.clone(),
            family: family.as_str(),
            protocol,
            virtual_address,
            virtual_port,
            fwmark,
        }
    }
}

impl LabelPairs for ServiceLabels {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        f("netns", &self.netns)?;
        f("family", self.family)?;
        f("protocol", &self.protocol)?;
        f("virtual_address", &self.virtual_address)?;
        f("virtual_port", &self.virtual_port)?;
        f("fwmark", &self.fwmark)
    }
}

/// The destination labels (D = S plus the real server), shared with the eBPF series.
#[derive(Debug, Clone)]
pub struct DestinationLabels<'a> {
    /// The labels of the destination's service.
    pub service: &'a ServiceLabels,
    /// Canonical real server address.
    pub real_address: String,
    /// Decimal real server port.
    pub real_port: String,
}

impl<'a> DestinationLabels<'a> {
    /// Labels of `dest` under `service`.
    pub fn new(service: &'a ServiceLabels, address: std::net::IpAddr, port: u16) -> Self {
        DestinationLabels {
            service,
            real_address: address.to_string(),
            real_port: port.to_string(),
        }
    }
}

impl LabelPairs for DestinationLabels<'_> {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        self.service.pairs(f)?;
        f("real_address", &self.real_address)?;
        f("real_port", &self.real_port)
    }
}

/// `ipvs_service_info`: S plus scheduler, flags, netmask and persistence engine.
#[derive(Debug, Clone)]
pub struct ServiceInfoLabels<'a> {
    /// The service's labels.
    pub service: &'a ServiceLabels,
    /// Scheduler name.
    pub scheduler: &'a str,
    /// Comma list of flags without `hashed`.
    pub flags: String,
    /// IPv4 dotted mask or IPv6 prefix length.
    pub netmask: String,
    /// Persistence engine, empty when none.
    pub persistence_engine: &'a str,
}

impl<'a> ServiceInfoLabels<'a> {
    /// Info labels of `svc`.
    pub fn new(service: &'a ServiceLabels, svc: &'a Service) -> Self {
        ServiceInfoLabels {
            service,
            scheduler: &svc.scheduler,
            flags: service_flags(svc.flags),
            netmask: netmask_text(svc.family, svc.netmask),
            persistence_engine: svc.persistence_engine.as_deref().unwrap_or(""),
        }
    }
}

impl LabelPairs for ServiceInfoLabels<'_> {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        self.service.pairs(f)?;
        f("scheduler", self.scheduler)?;
        f("flags", &self.flags)?;
        f("netmask", &self.netmask)?;
        f("persistence_engine", self.persistence_engine)
    }
}

/// `ipvs_destination_info`: D plus forwarding method and tunnel type.
#[derive(Debug, Clone)]
pub struct DestinationInfoLabels<'a> {
    /// The destination's labels.
    pub destination: &'a DestinationLabels<'a>,
    /// `masq`, `local`, `tunnel`, `route`, `bypass`.
    pub forwarding_method: &'static str,
    /// `ipip`, `gue`, `gre`, or empty.
    pub tunnel_type: String,
}

impl<'a> DestinationInfoLabels<'a> {
    /// Info labels of `dest`.
    pub fn new(destination: &'a DestinationLabels<'a>, dest: &Destination) -> Self {
        let tunnel_type = match (dest.forward, dest.tunnel_type) {
            (ForwardMethod::Tunnel, Some(t)) => t.label(),
            _ => String::new(),
        };
        DestinationInfoLabels {
            destination,
            forwarding_method: dest.forward.as_str(),
            tunnel_type,
        }
    }
}

impl LabelPairs for DestinationInfoLabels<'_> {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        self.destination.pairs(f)?;
        f("forwarding_method", self.forwarding_method)?;
        f("tunnel_type", &self.tunnel_type)
    }
}

/// Labels of an eBPF series: S or D by `--ebpf.granularity`.
#[derive(Debug, Clone)]
pub enum EbpfLabels<'a> {
    /// `--ebpf.granularity service`.
    Service(&'a ServiceLabels),
    /// `--ebpf.granularity destination`.
    Destination(DestinationLabels<'a>),
}

impl LabelPairs for EbpfLabels<'_> {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        match self {
            EbpfLabels::Service(s) => s.pairs(f),
            EbpfLabels::Destination(d) => d.pairs(f),
        }
    }
}

/// `ipvs_service_name_info` / `ipvs_destination_name_info`: S or D plus `source`, `name`,
/// `namespace` and the source's own labels.
#[derive(Debug, Clone)]
pub struct NameLabels<'a, L> {
    /// The service's or destination's labels.
    pub series: &'a L,
    /// The name.
    pub name: &'a crate::names::Name,
}

impl<L: LabelPairs> LabelPairs for NameLabels<'_, L> {
    fn pairs(&self, f: &mut dyn FnMut(&'static str, &str) -> fmt::Result) -> fmt::Result {
        self.series.pairs(f)?;
        f("source", self.name.source)?;
        f("name", &self.name.name)?;
        f("namespace", &self.name.namespace)?;
        self.name.labels.iter().try_for_each(|(k, v)| f(k, v))
    }
}

impl<L: LabelPairs> EncodeLabelSet for NameLabels<'_, L> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        encode_pairs(self, encoder)
    }
}

encode_label_set_via_pairs!(
    NoLabels,
    NetnsLabels<'_>,
    NetnsAndLabel<'_>,
    StaticLabels<'_>,
    ServiceLabels,
    DestinationLabels<'_>,
    ServiceInfoLabels<'_>,
    DestinationInfoLabels<'_>,
    EbpfLabels<'_>,
);

const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
const IP_VS_SVC_F_ONEPACKET: u32 = 0x0004;
const IP_VS_SVC_F_SCHED1: u32 = 0x0008;
const IP_VS_SVC_F_SCHED2: u32 = 0x0010;
const IP_VS_SVC_F_SCHED3: u32 = 0x0020;

/// The `flags` label: `persistent`, `onepacket`, `sched1`..`sched3`, comma separated, without
/// `hashed` (an internal state bit). `sh-fallback` and `sh-port` are `sched1` and `sched2`.
pub fn service_flags(flags: u32) -> String {
    let names = [
        (IP_VS_SVC_F_PERSISTENT, "persistent"),
        (IP_VS_SVC_F_ONEPACKET, "onepacket"),
        (IP_VS_SVC_F_SCHED1, "sched1"),
        (IP_VS_SVC_F_SCHED2, "sched2"),
        (IP_VS_SVC_F_SCHED3, "sched3"),
    ];
    let mut out = String::new();
    for (bit, name) in names {
        if flags & bit != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
        }
    }
    out
}

/// The `netmask` label: IPv4 as a dotted mask (`model::Service::netmask` holds the 4 bytes as a
/// big-endian number), IPv6 as a prefix length.
pub fn netmask_text(family: crate::model::Family, netmask: u32) -> String {
    match family {
        crate::model::Family::Inet => std::net::Ipv4Addr::from(netmask).to_string(),
        crate::model::Family::Inet6 => netmask.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, Protocol};

    fn id() -> NetnsId {
        NetnsId {
            name: "host".into(),
            dev: 4,
            inode: 4026531840,
        }
    }

    #[test]
    fn flags_leave_out_hashed() {
        assert_eq!(service_flags(0x0002), "");
        assert_eq!(service_flags(0x0003), "persistent");
        assert_eq!(
            service_flags(0x0001 | 0x0004 | 0x0008 | 0x0010 | 0x0020),
            "persistent,onepacket,sched1,sched2,sched3"
        );
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask_text(Family::Inet, 0xffff_ff00), "255.255.255.0");
        assert_eq!(netmask_text(Family::Inet, u32::MAX), "255.255.255.255");
        assert_eq!(netmask_text(Family::Inet6, 128), "128");
    }

    #[test]
    fn service_labels_canonical() {
        let l = ServiceLabels::new(
            &id(),
            Family::Inet6,
            &ServiceAddress::Inet {
                protocol: Protocol::Udp,
                address: "2001:db8:0:0:0:0:0:1".parse().unwrap(),
                port: 53,
            },
            None,
        );
        assert_eq!(l.virtual_address, "2001:db8::1");
        assert_eq!(l.protocol, "udp");
        assert_eq!(l.fwmark, "");
        let f = ServiceLabels::new(
            &id(),
            Family::Inet,
            &ServiceAddress::Fwmark { mark: 7 },
            None,
        );
        assert_eq!(
            (
                f.protocol.as_str(),
                f.virtual_port.as_str(),
                f.fwmark.as_str()
            ),
            ("", "", "7")
        );
        let p = ServiceLabels::new(
            &id(),
            Family::Inet,
            &ServiceAddress::Fwmark { mark: 7 },
            Some((Protocol::Tcp, 8080)),
        );
        assert_eq!(
            (
                p.protocol.as_str(),
                p.virtual_port.as_str(),
                p.virtual_address.as_str()
            ),
            ("tcp", "8080", "")
        );
    }
}
