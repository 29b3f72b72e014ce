//! Typed [`model`](crate::model) values built from the raw attributes.
//!
//! The address family decides how the 16 address bytes are read; `STATS64` wins over `STATS`;
//! a destination without `IPVS_DEST_ATTR_ADDR_FAMILY` (kernels < 4.3) has its service's family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{
    Destination, Family, ForwardMethod, Info, Protocol, Service, ServiceAddress, Stats, Timeouts,
    TunnelType,
};

use super::dest::IpvsDestAttribute;
use super::message::{IpvsAttribute, IpvsInfoAttribute};
use super::service::IpvsServiceAttribute;
use super::stats::{self, IpvsStatsAttribute};

/// Why raw attributes do not make a typed value: the attribute and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: {problem}")]
pub struct MalformedAttribute {
    /// The kernel constant of the attribute.
    pub attribute: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn missing(attribute: &'static str) -> MalformedAttribute {
    MalformedAttribute {
        attribute,
        problem: "missing".into(),
    }
}

fn family(af: u16, attribute: &'static str) -> Result<Family, MalformedAttribute> {
    Family::from_af(af).ok_or_else(|| MalformedAttribute {
        attribute,
        problem: format!("unsupported address family {af}"),
    })
}

fn address(
    family: Family,
    bytes: &[u8],
    attribute: &'static str,
) -> Result<IpAddr, MalformedAttribute> {
    let short = || MalformedAttribute {
        attribute,
        problem: format!("{} bytes is too short for {}", bytes.len(), family.as_str()),
    };
    Ok(match family {
        Family::Inet => {
            let b: [u8; 4] = bytes
                .get(..4)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        Family::Inet6 => {
            let b: [u8; 16] = bytes
                .get(..16)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
    })
}

fn pick_stats<'a>(
    stats64: Option<&'a [IpvsStatsAttribute]>,
    stats32: Option<&'a [IpvsStatsAttribute]>,
    attribute: &'static str,
) -> Result<Stats, MalformedAttribute> {
    stats64
        .or(stats32)
        .map(stats::to_model)
        .ok_or_else(|| missing(attribute))
}

impl TryFrom<&[IpvsServiceAttribute]> for Service {
    type Error = MalformedAttribute;

    /// Builds a service (without destinations) from the attributes of `IPVS_CMD_ATTR_SERVICE`.
    fn try_from(attrs: &[IpvsServiceAttribute]) -> Result<Self, Self::Error> {
        use IpvsServiceAttribute as A;
        let (mut af, mut proto, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
        let (mut sched, mut flags, mut timeout, mut netmask, mut pe) = (None, 0, 0, None, None);
        let (mut s32, mut s64) = (None, None);
        for a in attrs {
            match a {
                A::AddressFamily(v) => af = Some(*v),
                A::Protocol(v) => proto = Some(*v),
                A::Address(v) => addr = Some(v.as_slice()),
                A::Port(v) => port = Some(*v),
                A::Fwmark(v) => fwmark = Some(*v),
                A::SchedulerName(v) => sched = Some(v.clone()),
                A::Flags(f) => flags = f.flags & f.mask,
                A::Timeout(v) => timeout = *v,
                A::Netmask(v) => netmask = Some(*v),
                A::Stats(v) => s32 = Some(v.as_slice()),
                A::PersistenceEngine(v) => pe = Some(v.clone()).filter(|s| !s.is_empty()),
                A::Stats64(v) => s64 = Some(v.as_slice()),
                A::Other(_) => {}
            }
        }
        let family = family(
            af.ok_or_else(|| missing("IPVS_SVC_ATTR_AF"))?,
            "IPVS_SVC_ATTR_AF",
        )?;
        let address = match fwmark {
            Some(mark) if mark != 0 => ServiceAddress::Fwmark { mark },
            _ => ServiceAddress::Inet {
                protocol: Protocol::from_number(
                    proto.ok_or_else(|| missing("IPVS_SVC_ATTR_PROTOCOL"))?,
                ),
                address: address(
                    family,
                    addr.ok_or_else(|| missing("IPVS_SVC_ATTR_ADDR"))?,
                    "IPVS_SVC_ATTR_ADDR",
                )?,
                port: port.ok_or_else(|| missing("IPVS_SVC_ATTR_PORT"))?,
            },
        };
        // IPv4: a mask in network order; IPv6: a prefix length (host order).
        let netmask = match (family, netmask) {
            (Family::Inet, Some(b)) => u32::from_be_bytes(b),
            (Family::Inet6, Some(b)) => u32::from_ne_bytes(b),
            (Family::Inet, None) => u32::MAX,
            (Family::Inet6, None) => 128,
        };
        Ok(Service {
            family,
            address,
            scheduler: sched.ok_or_else(|| missing("IPVS_SVC_ATTR_SCHED_NAME"))?,
            flags,
            timeout,
            netmask,
            persistence_engine: pe,
            stats: pick_stats(s64, s32, "IPVS_SVC_ATTR_STATS")?,
            destinations: Vec::new(),
            published: None,
        })
    }
}

/// The fields of a destination as read from its attributes (a later attribute of the same kind
/// wins), before the checks of [`DestFields::finish`]; filled from the codec's attributes here
/// and straight from the bytes by `fast`.
#[derive(Debug, Default)]
pub(super) struct DestFields<'a> {
    pub(super) af: Option<u16>,
    pub(super) addr: Option<&'a [u8]>,
    pub(super) port: Option<u16>,
    pub(super) fwd: Option<u32>,
    pub(super) weight: Option<u32>,
    pub(super) upper: u32,
    pub(super) lower: u32,
    pub(super) active: u32,
    pub(super) inactive: u32,
    pub(super) persist: u32,
    pub(super) tun_type: Option<u8>,
    pub(super) tun_port: Option<u16>,
    pub(super) tun_flags: Option<u16>,
    pub(super) stats32: Option<Stats>,
    pub(super) stats64: Option<Stats>,
}

impl DestFields<'_> {
    /// The destination, with its service's family when the kernel sends none (< 4.3).
    pub(super) fn finish(self, service_family: Family) -> Result<Destination, MalformedAttribute> {
        let family = match self.af {
            Some(af) => family(af, "IPVS_DEST_ATTR_ADDR_FAMILY")?,
            None => service_family,
        };
        Ok(Destination {
            family,
            address: address(
                family,
                self.addr.ok_or_else(|| missing("IPVS_DEST_ATTR_ADDR"))?,
                "IPVS_DEST_ATTR_ADDR",
            )?,
            port: self.port.ok_or_else(|| missing("IPVS_DEST_ATTR_PORT"))?,
            forward: ForwardMethod::from_flags(
                self.fwd
                    .ok_or_else(|| missing("IPVS_DEST_ATTR_FWD_METHOD"))?,
            ),
            weight: self
                .weight
                .ok_or_else(|| missing("IPVS_DEST_ATTR_WEIGHT"))? as i32,
            upper_threshold: self.upper,
            lower_threshold: self.lower,
            active_connections: self.active,
            inactive_connections: self.inactive,
            persistent_connections: self.persist,
            tunnel_type: self.tun_type.map(|v| match v {
                0 => TunnelType::Ipip,
                1 => TunnelType::Gue,
                2 => TunnelType::Gre,
                n => TunnelType::Other(n),
            }),
            tunnel_port: self.tun_port,
            tunnel_flags: self.tun_flags,
            stats: self
                .stats64
                .or(self.stats32)
                .ok_or_else(|| missing("IPVS_DEST_ATTR_STATS"))?,
        })
    }
}

impl TryFrom<(&[IpvsDestAttribute], Family)> for Destination {
    type Error = MalformedAttribute;

    /// Builds a destination from the attributes of `IPVS_CMD_ATTR_DEST` and its service's family.
    fn try_from(
        (attrs, service_family): (&[IpvsDestAttribute], Family),
    ) -> Result<Self, Self::Error> {
        use IpvsDestAttribute as A;
        let mut f = DestFields::default();
        for a in attrs {
            match a {
                A::Address(v) => f.addr = Some(v.as_slice()),
                A::Port(v) => f.port = Some(*v),
                A::ForwardMethod(v) => f.fwd = Some(*v),
                A::Weight(v) => f.weight = Some(*v),
                A::UpperThreshold(v) => f.upper = *v,
                A::LowerThreshold(v) => f.lower = *v,
                A::ActiveConnections(v) => f.active = *v,
                A::InactiveConnections(v) => f.inactive = *v,
                A::PersistentConnections(v) => f.persist = *v,
                A::Stats(v) => f.stats32 = Some(stats::to_model(v)),
                A::AddressFamily(v) => f.af = Some(*v),
                A::Stats64(v) => f.stats64 = Some(stats::to_model(v)),
                A::TunnelType(v) => f.tun_type = Some(*v),
                A::TunnelPort(v) => f.tun_port = Some(*v),
                A::TunnelFlags(v) => f.tun_flags = Some(*v),
                A::Other(_) => {}
            }
        }
        f.finish(service_family)
    }
}

impl TryFrom<&[IpvsAttribute]> for Info {
    type Error = MalformedAttribute;

    /// Builds the info from the attributes of a `GET_INFO` reply.
    fn try_from(attrs: &[IpvsAttribute]) -> Result<Self, Self::Error> {
        let (mut version, mut size) = (None, None);
        for a in attrs {
            match a {
                IpvsAttribute::Info(IpvsInfoAttribute::Version(v)) => version = Some(*v),
                IpvsAttribute::Info(IpvsInfoAttribute::ConnTabSize(v)) => size = Some(*v),
                _ => {}
            }
        }
        Ok(Info {
            version: version.ok_or_else(|| missing("IPVS_INFO_ATTR_VERSION"))?,
            conn_tab_size: size.ok_or_else(|| missing("IPVS_INFO_ATTR_CONN_TAB_SIZE"))?,
        })
    }
}

impl TryFrom<&[IpvsAttribute]> for Timeouts {
    type Error = MalformedAttribute;

    /// Builds the timeouts from the attributes of a `GET_CONFIG` reply; a timeout the kernel does
    /// not send (its protocol is compiled out) is 0.
    fn try_from(attrs: &[IpvsAttribute]) -> Result<Self, Self::Error> {
        let (mut tcp, mut fin, mut udp) = (None, None, None);
        for a in attrs {
            match a {
                IpvsAttribute::TimeoutTcp(v) => tcp = Some(*v),
                IpvsAttribute::TimeoutTcpFin(v) => fin = Some(*v),
                IpvsAttribute::TimeoutUdp(v) => udp = Some(*v),
                _ => {}
            }
        }
        Ok(Timeouts {
            tcp: tcp.unwrap_or(0),
            tcp_fin: fin.unwrap_or(0),
            udp: udp.unwrap_or(0),
        })
    }
}
