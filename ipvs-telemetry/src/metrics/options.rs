//! What the exposition carries: the cardinality controls of docs/sizing.md.
//!
//! - family groups that can be left out (`--metrics.exclude`) and the kernel estimator gauges,
//!   which are opt-in (`--metrics.estimator`);
//! - which services get per-destination series (`--metrics.destinations`): every service keeps
//!   its own series and its destination counts;
//! - a cap on the service and destination series of one scrape (`--metrics.max-series`) that
//!   drops whole groups from the end of a fixed order, never a random subset.

use std::net::IpAddr;

use crate::model::{Protocol, Service, ServiceAddress};

/// A family group `--metrics.exclude` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// `ipvs_service_info`.
    ServiceInfo,
    /// `ipvs_service_persistence_timeout_seconds`.
    ServicePersistence,
    /// `ipvs_destination_active_connections`, `ipvs_destination_inactive_connections`.
    DestinationConnections,
    /// `ipvs_destination_persistent_connections`.
    DestinationPersistent,
    /// `ipvs_destination_weight`.
    DestinationWeight,
    /// `ipvs_destination_upper_threshold`, `ipvs_destination_lower_threshold`.
    DestinationThresholds,
    /// `ipvs_destination_info`.
    DestinationInfo,
    /// `ipvs_netns_interface_*`.
    ContextInterfaces,
    /// `ipvs_netns_conntrack_entries`.
    ContextConntrack,
}

/// Every group with its name on the command line.
pub const GROUPS: [(Group, &str); 9] = [
    (Group::ServiceInfo, "service.info"),
    (Group::ServicePersistence, "service.persistence"),
    (Group::DestinationConnections, "destination.connections"),
    (Group::DestinationPersistent, "destination.persistent"),
    (Group::DestinationWeight, "destination.weight"),
    (Group::DestinationThresholds, "destination.thresholds"),
    (Group::DestinationInfo, "destination.info"),
    (Group::ContextInterfaces, "context.interfaces"),
    (Group::ContextConntrack, "context.conntrack"),
];

/// Parses one `--metrics.exclude` group name.
pub fn parse_group(s: &str) -> Result<Group, String> {
    GROUPS
        .iter()
        .find(|(_, n)| *n == s)
        .map(|(g, _)| *g)
        .ok_or_else(|| {
            let names: Vec<&str> = GROUPS.iter().map(|(_, n)| *n).collect();
            format!("unknown family group {s:?} (one of {})", names.join(", "))
        })
}

/// One `--metrics.destinations` selector: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `netns=NAME`: the namespace's name, exactly.
    pub netns: Option<String>,
    /// `vip=ADDRESS` or `vip=CIDR`.
    pub vip: Option<(IpAddr, u8)>,
    /// `port=N`: the virtual port (a fwmark service's published port).
    pub port: Option<u16>,
    /// `protocol=tcp|udp|sctp`.
    pub protocol: Option<Protocol>,
    /// `fwmark=N`.
    pub fwmark: Option<u32>,
}

/// Which services get per-destination series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destinations {
    /// Every service (the default).
    All,
    /// No service: per-service series and destination counts only (the large-table mode).
    None,
    /// The services any of these selectors matches.
    Selected(Vec<Selector>),
}

impl Destinations {
    /// Whether the destinations of `svc` in namespace `netns` get their own series.
    pub fn selects(&self, netns: &str, svc: &Service) -> bool {
        match self {
            Destinations::All => true,
            Destinations::None => false,
            Destinations::Selected(v) => v.iter().any(|s| s.matches(netns, svc)),
        }
    }
}

impl Selector {
    /// Whether the service matches every condition.
    pub fn matches(&self, netns: &str, svc: &Service) -> bool {
        if self.netns.as_deref().is_some_and(|n| n != netns) {
            return false;
        }
        let (protocol, vip, port, mark) = match svc.address {
            ServiceAddress::Inet {
                protocol,
                address,
                port,
            } => (Some(protocol), Some(address), Some(port), None),
            ServiceAddress::Fwmark { mark } => (
                svc.published.map(|p| p.0),
                None,
                svc.published.map(|p| p.1),
                Some(mark),
            ),
        };
        if let Some(want) = self.protocol
            && protocol != Some(want)
        {
            return false;
        }
        if let Some(want) = self.port
            && port != Some(want)
        {
            return false;
        }
        if let Some(want) = self.fwmark
            && mark != Some(want)
        {
            return false;
        }
        if let Some((net, len)) = self.vip {
            match vip {
                Some(a) if in_prefix(a, net, len) => {}
                _ => return false,
            }
        }
        true
    }
}

fn in_prefix(a: IpAddr, net: IpAddr, len: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parses one `--metrics.destinations` value: `all`, `none`, or `key=value` conditions joined
/// by `,` (keys `netns`, `vip`, `port`, `protocol`, `fwmark`).
pub fn parse_selector(s: &str) -> Result<Destinations, String> {
    match s {
        "all" => return Ok(Destinations::All),
        "none" => return Ok(Destinations::None),
        "" => return Err("empty selector (all, none, or key=value,...)".into()),
        _ => {}
    }
    let mut sel = Selector::default();
    for cond in s.split(',') {
        let Some((k, v)) = cond.split_once('=') else {
            return Err(format!(
                "{cond:?} is not key=value (keys: netns, vip, port, protocol, fwmark)"
            ));
        };
        let bad = |what: &str| format!("{k}={v:?}: {what}");
        match k {
            "netns" if !v.is_empty() => sel.netns = Some(v.to_string()),
            "netns" => return Err(bad("empty namespace name")),
            "vip" => sel.vip = Some(parse_cidr(v).map_err(|e| bad(&e))?),
            "port" => {
                sel.port = Some(
                    v.parse()
                        .map_err(|_| bad("expected a port number 0-65535"))?,
                )
            }
            "protocol" => {
                sel.protocol = Some(match v {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    "sctp" => Protocol::Sctp,
                    _ => return Err(bad("expected tcp, udp or sctp")),
                })
            }
            "fwmark" => sel.fwmark = Some(v.parse().map_err(|_| bad("expected a number"))?),
            _ => {
                return Err(format!(
                    "unknown selector key {k:?} (keys: netns, vip, port, protocol, fwmark)"
                ));
            }
        }
    }
    Ok(Destinations::Selected(vec![sel]))
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| "expected an address or CIDR".to_string())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("prefix length must be 0-{max}")),
        },
    };
    Ok((addr, len))
}

/// Merges repeated `--metrics.destinations` values: `all` wins, `none` only alone.
pub fn merge_selectors(values: Vec<Destinations>) -> Destinations {
    let mut out: Option<Vec<Selector>> = None;
    let mut none = false;
    for v in values {
        match v {
            Destinations::All => return Destinations::All,
            Destinations::None => none = true,
            Destinations::Selected(s) => out.get_or_insert_with(Vec::new).extend(s),
        }
    }
    match out {
        Some(s) => Destinations::Selected(s),
        None if none => Destinations::None,
        None => Destinations::All,
    }
}

/// What the exposition carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Export the kernel's estimator gauges (`*_estimated_*_per_second`).
    pub estimator: bool,
    /// Family groups left out.
    pub excluded: Vec<Group>,
    /// Which services get per-destination series.
    pub destinations: Destinations,
    /// Most service and destination series in one scrape; 0: no cap.
    pub max_series: usize,
}

/// The default cap on service and destination series per scrape.
pub const DEFAULT_MAX_SERIES: usize = 1_000_000;

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            estimator: false,
            excluded: Vec::new(),
            destinations: Destinations::All,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

impl ExportOptions {
    /// Everything, uncapped (tests and comparisons with `ipvsadm`).
    pub fn everything() -> Self {
        ExportOptions {
            estimator: true,
            excluded: Vec::new(),
            destinations: Destinations::All,
            max_series: 0,
        }
    }

    /// Whether `group` is exported.
    pub fn has(&self, group: Group) -> bool {
        !self.excluded.contains(&group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, Stats};

    fn svc(address: ServiceAddress, published: Option<(Protocol, u16)>) -> Service {
        Service {
            family: Family::Inet,
            address,
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
            netmask: 0,
            persistence_engine: None,
            stats: Stats::default(),
            destinations: vec![],
            published,
        }
    }

    fn inet(a: &str, port: u16, protocol: Protocol) -> Service {
        svc(
            ServiceAddress::Inet {
                protocol,
                address: a.parse().unwrap(),
                port,
            },
            None,
        )
    }

    fn one(s: &str) -> Selector {
        match parse_selector(s).unwrap() {
            Destinations::Selected(mut v) => v.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn selectors_match_each_condition() {
        let web = inet("10.1.2.3", 80, Protocol::Tcp);
        let dns6 = inet("2001:db8::53", 53, Protocol::Udp);
        let mark = svc(
            ServiceAddress::Fwmark { mark: 256 },
            Some((Protocol::Tcp, 8080)),
        );
        assert!(one("vip=10.0.0.0/8").matches("host", &web));
        assert!(!one("vip=10.0.0.0/16").matches("host", &web));
        assert!(one("vip=10.1.2.3").matches("host", &web));
        assert!(!one("vip=10.0.0.0/8").matches("host", &dns6));
        assert!(one("vip=2001:db8::/32,protocol=udp").matches("host", &dns6));
        assert!(!one("vip=2001:db8::/32,protocol=tcp").matches("host", &dns6));
        assert!(one("port=80,netns=host").matches("host", &web));
        assert!(!one("port=80,netns=ns1").matches("host", &web));
        assert!(one("fwmark=256").matches("ingress_sbox", &mark));
        assert!(one("port=8080,protocol=tcp").matches("ingress_sbox", &mark));
        assert!(!one("fwmark=256").matches("host", &web));
        assert!(!one("vip=0.0.0.0/0").matches("host", &mark));
        assert!(one("vip=0.0.0.0/0").matches("host", &web));
    }

    #[test]
    fn bad_selectors_say_why() {
        for (s, want) in [
            ("", "empty selector"),
            ("vip", "not key=value"),
            ("vip=10.0.0.0/33", "prefix length must be 0-32"),
            ("vip=nope", "expected an address"),
            ("port=70000", "expected a port"),
            ("protocol=icmp", "expected tcp, udp or sctp"),
            ("colour=red", "unknown selector key"),
            ("netns=", "empty namespace name"),
        ] {
            let e = parse_selector(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn merging() {
        let p = |s| parse_selector(s).unwrap();
        assert_eq!(merge_selectors(vec![]), Destinations::All);
        assert_eq!(merge_selectors(vec![p("none")]), Destinations::None);
        assert_eq!(
            merge_selectors(vec![p("none"), p("all")]),
            Destinations::All
        );
        match merge_selectors(vec![p("port=80"), p("none"), p("port=443")]) {
            Destinations::Selected(v) => assert_eq!(v.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn groups() {
        assert_eq!(
            parse_group("destination.thresholds"),
            Ok(Group::DestinationThresholds)
        );
        let e = parse_group("thresholds").unwrap_err();
        assert!(e.contains("destination.thresholds"), "{e}");
    }
}
