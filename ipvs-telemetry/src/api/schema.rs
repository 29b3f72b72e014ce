//! The versioned JSON documents of `snapshot --format json` and the JSON API (`docs/web.md`,
//! `docs/api.schema.json`).
//!
//! The model's own shapes (`Result`, `Duration`, tagged enums) are Rust's, not a contract: these
//! types are the contract, built from the model, with plain keys (`error`, not `Err`), durations
//! and timestamps in seconds as numbers, and a [`SCHEMA_VERSION`] in every document. Adding an
//! optional key keeps the version; renaming or removing one, or changing a meaning, bumps it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{self, Family, ServiceAddress};
use crate::names::NetnsNames;

/// Version of the documents' shape; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Seconds since the Unix epoch, as a number (0 for times before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A whole collection: `snapshot --format json` and `GET /api/v1/snapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `snapshot`.
    pub kind: String,
    /// One entry per selected namespace, in collection order.
    pub namespaces: Vec<NamespaceDoc>,
}

/// What one collection read from one namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceDoc {
    /// The `netns` label.
    pub netns: String,
    /// Device of the namespace file.
    pub dev: u64,
    /// Inode of the namespace.
    pub inode: u64,
    /// When the collection of this namespace began, Unix seconds.
    pub collected_at: f64,
    /// How long it took, seconds.
    pub duration_seconds: f64,
    /// Why IPVS could not be read; `null` when it was.
    pub error: Option<ErrorDoc>,
    /// What IPVS holds; `null` when it could not be read.
    pub ipvs: Option<IpvsDoc>,
    /// Interfaces, conntrack and sync daemons of the namespace.
    pub context: ContextDoc,
}

/// A failed collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDoc {
    /// The `reason` label of `ipvs_collection_errors_total`.
    pub reason: String,
    /// One line for a person.
    pub message: String,
}

/// One namespace's IPVS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpvsDoc {
    /// `1.2.1`.
    pub version: String,
    /// Size of the connection hash table.
    pub conn_tab_size: u32,
    /// Connection timeouts, seconds.
    pub timeouts: TimeoutsDoc,
    /// The virtual services, in the kernel's order.
    pub services: Vec<ServiceDoc>,
}

/// `ipvsadm -L --timeout`, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutsDoc {
    /// Established TCP.
    pub tcp: u32,
    /// TCP FIN_WAIT.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// One virtual service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDoc {
    /// The service's key in API queries: `tcp:10.0.0.1:80`, `udp:[2001:db8::1]:53`,
    /// `fwm:260` (IPv4) or `fwm6:260` (IPv6).
    pub id: String,
    /// `inet` or `inet6`.
    pub family: String,
    /// `tcp`, `udp`, `sctp` or the protocol number; `null` for a fwmark service.
    pub protocol: Option<String>,
    /// Virtual IP; `null` for a fwmark service.
    pub address: Option<IpAddr>,
    /// Virtual port; `null` for a fwmark service.
    pub port: Option<u16>,
    /// Firewall mark; `null` for a protocol/address/port service.
    pub fwmark: Option<u32>,
    /// For a fwmark service, the protocol and port its mark is set for by the namespace's
    /// mangle rules (Docker Swarm ingress); `null` otherwise.
    pub published: Option<PublishedDoc>,
    /// Scheduler name.
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` flags as the kernel reports them.
    pub flags: u32,
    /// Persistence timeout, seconds; 0 when not persistent.
    pub persistence_timeout: u32,
    /// Persistence netmask: the IPv4 mask read big-endian, or the IPv6 prefix length.
    pub netmask: u32,
    /// Persistence engine (`sip`), when set.
    pub persistence_engine: Option<String>,
    /// Names of this service (at most one per source); empty when none is known or when
    /// names are not resolved (the `snapshot` command).
    pub names: Vec<NameDoc>,
    /// Counters and estimator rates.
    pub stats: StatsDoc,
    /// Real servers, in the kernel's order.
    pub destinations: Vec<DestinationDoc>,
}

/// A fwmark service's published protocol and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedDoc {
    /// `tcp`, `udp`, `sctp` or the number.
    pub protocol: String,
    /// The published port.
    pub port: u16,
}

/// A name from a source (`docs/names.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameDoc {
    /// `file` or `docker`.
    pub source: String,
    /// The name.
    pub name: String,
    /// A stack or project; may be empty.
    pub namespace: String,
}

/// One real server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationDoc {
    /// The destination's key in API queries: `10.0.1.2:8080`, `[2001:db8::20]:53`.
    pub id: String,
    /// `inet` or `inet6`.
    pub family: String,
    /// Real server address.
    pub address: IpAddr,
    /// Real server port.
    pub port: u16,
    /// `masq`, `local`, `tunnel`, `route` or `bypass`.
    pub forward: String,
    /// Scheduling weight.
    pub weight: i32,
    /// Upper connection threshold, 0 = none.
    pub upper_threshold: u32,
    /// Lower connection threshold.
    pub lower_threshold: u32,
    /// Active connections.
    pub active_connections: u32,
    /// Inactive connections.
    pub inactive_connections: u32,
    /// Persistence templates.
    pub persistent_connections: u32,
    /// `ipip`, `gue`, `gre` or the number; `null` when not reported.
    pub tunnel_type: Option<String>,
    /// Tunnel port (GUE); `null` when not reported.
    pub tunnel_port: Option<u16>,
    /// Tunnel flags; `null` when not reported.
    pub tunnel_flags: Option<u16>,
    /// Names of this destination (at most one per source).
    pub names: Vec<NameDoc>,
    /// Counters and estimator rates.
    pub stats: StatsDoc,
}

/// The kernel's counters and its 2-second estimator rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsDoc {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
    /// Estimated connections per second.
    pub cps: u64,
    /// Estimated incoming packets per second.
    pub inpps: u64,
    /// Estimated outgoing packets per second.
    pub outpps: u64,
    /// Estimated incoming bytes per second.
    pub inbps: u64,
    /// Estimated outgoing bytes per second.
    pub outbps: u64,
}

/// Interfaces, conntrack and sync daemons of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextDoc {
    /// Interfaces and their counters.
    pub interfaces: Vec<InterfaceDoc>,
    /// Conntrack entries; `null` when unknown.
    pub conntrack_entries: Option<u64>,
    /// Running sync daemons.
    pub sync_daemons: Vec<SyncDaemonDoc>,
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceDoc {
    /// Interface name.
    pub device: String,
    /// Operationally up.
    pub up: bool,
    /// Received bytes.
    pub rx_bytes: u64,
    /// Sent bytes.
    pub tx_bytes: u64,
    /// Received packets.
    pub rx_packets: u64,
    /// Sent packets.
    pub tx_packets: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

/// One sync daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDaemonDoc {
    /// `master` or `backup`.
    pub role: String,
    /// Multicast interface.
    pub interface: String,
    /// Sync ID.
    pub sync_id: u32,
}

/// Windowed per-destination figures: `GET /api/v1/destinations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationsDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `destinations`.
    pub kind: String,
    /// Length of the window, seconds.
    pub window_seconds: f64,
    /// Whether the probes are attached.
    pub ebpf: bool,
    /// Destinations asked for but not tracked (the tracking table is full).
    pub untracked: u64,
    /// The destinations asked for and tracked.
    pub destinations: Vec<WindowDoc>,
}

/// One destination's figures over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowDoc {
    /// The `netns` label.
    pub netns: String,
    /// The service's `id`.
    pub service: String,
    /// The destination's `id`.
    pub destination: String,
    /// How much of the window the figures cover, seconds.
    pub covered_seconds: f64,
    /// New connections (eBPF).
    pub new_connections: u64,
    /// New connections per second over the covered time.
    pub new_connections_per_second: f64,
    /// First responses.
    pub first_responses: u64,
    /// Connections released without a response.
    pub unanswered: u64,
    /// First-response quantiles; `null` without a response.
    pub first_response_seconds: Option<QuantilesDoc>,
}

/// First-response quantiles, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantilesDoc {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// The canonical id of a service id a client wrote (`tcp:10.0.0.1:80`, `udp:[2001:db8::1]:53`,
/// `fwm:260`, `fwm6:260`, a protocol number for others); `Err` says what is wrong, one line.
pub fn parse_service_id(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "service {s:?}: expected PROTOCOL:ADDRESS:PORT or fwm:MARK (tcp:10.0.0.1:80, udp:[2001:db8::1]:53, fwm:260)"
        )
    };
    let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
    match kind {
        "fwm" | "fwm6" => {
            let mark: u32 = rest.parse().map_err(|_| bad())?;
            Ok(format!("{kind}:{mark}"))
        }
        "tcp" | "udp" | "sctp" => parse_destination_id(rest)
            .map(|d| format!("{kind}:{d}"))
            .map_err(|_| bad()),
        n if n.parse::<u8>().is_ok() => parse_destination_id(rest)
            .map(|d| format!("{n}:{d}"))
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The canonical id of a destination id a client wrote (`10.0.1.2:8080`, `[2001:db8::20]:53`).
pub fn parse_destination_id(s: &str) -> Result<String, String> {
    s.parse::<std::net::SocketAddr>()
        .map(|a| addr_port(a.ip(), a.port()))
        .map_err(|_| {
            format!("destination {s:?}: expected ADDRESS:PORT (10.0.1.2:8080, [2001:db8::20]:53)")
        })
}

/// `tcp:10.0.0.1:80`, `udp:[2001:db8::1]:53`, `fwm:260`, `fwm6:260`.
pub fn service_id(family: Family, address: &ServiceAddress) -> String {
    match *address {
        ServiceAddress::Fwmark { mark } if family == Family::Inet6 => format!("fwm6:{mark}"),
        ServiceAddress::Fwmark { mark } => format!("fwm:{mark}"),
        ServiceAddress::Inet {
            protocol,
            address,
            port,
        } => format!("{}:{}", protocol.label(), addr_port(address, port)),
    }
}

/// `10.0.1.2:8080`, `[2001:db8::20]:53`.
pub fn addr_port(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn stats(s: &model::Stats) -> StatsDoc {
    StatsDoc {
        conns: s.conns,
        inpkts: s.inpkts,
        outpkts: s.outpkts,
        inbytes: s.inbytes,
        outbytes: s.outbytes,
        cps: s.cps,
        inpps: s.inpps,
        outpps: s.outpps,
        inbps: s.inbps,
        outbps: s.outbps,
    }
}

fn name(n: &crate::names::Name) -> NameDoc {
    NameDoc {
        source: n.source.to_string(),
        name: n.name.clone(),
        namespace: n.namespace.clone(),
    }
}

fn destination(d: &model::Destination, names: Vec<NameDoc>) -> DestinationDoc {
    DestinationDoc {
        id: addr_port(d.address, d.port),
        family: d.family.as_str().into(),
        address: d.address,
        port: d.port,
        forward: d.forward.as_str().into(),
        weight: d.weight,
        upper_threshold: d.upper_threshold,
        lower_threshold: d.lower_threshold,
        active_connections: d.active_connections,
        inactive_connections: d.inactive_connections,
        persistent_connections: d.persistent_connections,
        tunnel_type: d.tunnel_type.map(|t| t.label()),
        tunnel_port: d.tunnel_port,
        tunnel_flags: d.tunnel_flags,
        names,
        stats: stats(&d.stats),
    }
}

fn service(si: usize, s: &model::Service, names: Option<&NetnsNames>) -> ServiceDoc {
    let service_names = names
        .map(|n| {
            n.services
                .iter()
                .filter(|(i, _)| *i == si)
                .map(|(_, n)| name(n))
                .collect()
        })
        .unwrap_or_default();
    let dest_names = |di: usize| -> Vec<NameDoc> {
        names
            .map(|n| {
                n.destinations
                    .iter()
                    .filter(|(s, d, _)| *s == si && *d == di)
                    .map(|(_, _, n)| name(n))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (protocol, address, port, fwmark) = match s.address {
        ServiceAddress::Inet {
            protocol,
            address,
            port,
        } => (Some(protocol.label()), Some(address), Some(port), None),
        ServiceAddress::Fwmark { mark } => (None, None, None, Some(mark)),
    };
    ServiceDoc {
        id: service_id(s.family, &s.address),
        family: s.family.as_str().into(),
        protocol,
        address,
        port,
        fwmark,
        published: s.published.map(|(p, port)| PublishedDoc {
            protocol: p.label(),
            port,
        }),
        scheduler: s.scheduler.clone(),
        flags: s.flags,
        persistence_timeout: s.timeout,
        netmask: s.netmask,
        persistence_engine: s.persistence_engine.clone(),
        names: service_names,
        stats: stats(&s.stats),
        destinations: s
            .destinations
            .iter()
            .enumerate()
            .map(|(di, d)| destination(d, dest_names(di)))
            .collect(),
    }
}

/// One namespace's document; `names` (by service and destination index) when resolved.
pub fn namespace(ns: &model::NamespaceSnapshot, names: Option<&NetnsNames>) -> NamespaceDoc {
    let (error, ipvs) = match &ns.ipvs {
        Ok(state) => (
            None,
            Some(IpvsDoc {
                version: state.info.version_string(),
                conn_tab_size: state.info.conn_tab_size,
                timeouts: TimeoutsDoc {
                    tcp: state.timeouts.tcp,
                    tcp_fin: state.timeouts.tcp_fin,
                    udp: state.timeouts.udp,
                },
                services: state
                    .services
                    .iter()
                    .enumerate()
                    .map(|(i, s)| service(i, s, names))
                    .collect(),
            }),
        ),
        Err(f) => (
            Some(ErrorDoc {
                reason: f.reason.as_str().into(),
                message: f.message.clone(),
            }),
            None,
        ),
    };
    NamespaceDoc {
        netns: ns.netns.name.clone(),
        dev: ns.netns.dev,
        inode: ns.netns.inode,
        collected_at: unix_seconds(ns.timestamp),
        duration_seconds: seconds(ns.duration),
        error,
        ipvs,
        context: ContextDoc {
            interfaces: ns
                .context
                .interfaces
                .iter()
                .map(|i| InterfaceDoc {
                    device: i.device.clone(),
                    up: i.up,
                    rx_bytes: i.rx_bytes,
                    tx_bytes: i.tx_bytes,
                    rx_packets: i.rx_packets,
                    tx_packets: i.tx_packets,
                    rx_dropped: i.rx_dropped,
                    tx_dropped: i.tx_dropped,
                })
                .collect(),
            conntrack_entries: ns.context.conntrack_entries,
            sync_daemons: ns
                .context
                .sync_daemons
                .iter()
                .map(|d| SyncDaemonDoc {
                    role: d.role.clone(),
                    interface: d.interface.clone(),
                    sync_id: d.sync_id,
                })
                .collect(),
        },
    }
}

/// A duration in seconds.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The snapshot document of `snapshot`; `names` when resolved (the daemon), keyed by `netns`.
/// `only` keeps one namespace.
pub fn snapshot(
    s: &model::Snapshot,
    names: Option<&crate::names::NameState>,
    only: Option<&str>,
) -> SnapshotDoc {
    SnapshotDoc {
        schema_version: SCHEMA_VERSION,
        kind: "snapshot".into(),
        namespaces: s
            .namespaces
            .iter()
            .filter(|ns| only.is_none_or(|o| ns.netns.name == o))
            .map(|ns| namespace(ns, names.and_then(|n| n.netns.get(&ns.netns.name))))
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::fixtures::{destination, service};
    use crate::model::{
        CollectFailure, ErrorReason, Info, InterfaceStats, IpvsState, NamespaceSnapshot,
        NetnsContext, NetnsId, Protocol, Snapshot, SyncDaemon, Timeouts,
    };

    /// The JSON Schema of every document (`docs/api.schema.json`).
    pub(crate) const SCHEMA: &str = include_str!("../../../docs/api.schema.json");

    /// Validates `doc` against `docs/api.schema.json`; `Err` says where and why.
    pub(crate) fn validate(doc: &serde_json::Value) -> Result<(), String> {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler
            .add_resource("https://ipvs-telemetry.invalid/api.schema.json", schema)
            .expect("the schema is added");
        let index = compiler
            .compile(
                "https://ipvs-telemetry.invalid/api.schema.json",
                &mut schemas,
            )
            .expect("the schema compiles");
        schemas.validate(doc, index).map_err(|e| format!("{e:#}"))
    }

    /// A snapshot with every shape the schema allows: a failed namespace, IPv4/IPv6, fwmark
    /// with a published port, tunnel fields, names, interfaces and sync daemons.
    pub(crate) fn sample() -> (Snapshot, crate::names::NameState) {
        let mut tunnel = destination("10.0.1.3", 0);
        tunnel.forward = model::ForwardMethod::Tunnel;
        tunnel.tunnel_type = Some(model::TunnelType::Gue);
        tunnel.tunnel_port = Some(6080);
        tunnel.tunnel_flags = Some(1);
        let mut fwm = service(
            Family::Inet,
            ServiceAddress::Fwmark { mark: 260 },
            vec![tunnel],
        );
        fwm.published = Some((Protocol::Tcp, 8080));
        let mut web = service(
            Family::Inet,
            ServiceAddress::Inet {
                protocol: Protocol::Tcp,
                address: "10.0.0.1".parse().unwrap(),
                port: 80,
            },
            vec![destination("10.0.1.2", 8080), destination("10.0.1.4", 8080)],
        );
        web.stats.conns = 7;
        web.persistence_engine = Some("sip".into());
        let v6 = service(
            Family::Inet6,
            ServiceAddress::Inet {
                protocol: Protocol::Udp,
                address: "2001:db8::1".parse().unwrap(),
                port: 53,
            },
            vec![destination("2001:db8::20", 53)],
        );
        let snapshot = Snapshot {
            namespaces: vec![
                NamespaceSnapshot {
                    netns: NetnsId {
                        name: "host".into(),
                        dev: 4,
                        inode: 4026531840,
                    },
                    ipvs: Ok(IpvsState {
                        info: Info {
                            version: 0x010201,
                            conn_tab_size: 4096,
                        },
                        timeouts: Timeouts {
                            tcp: 900,
                            tcp_fin: 120,
                            udp: 300,
                        },
                        services: vec![web, fwm, v6],
                    }),
                    context: NetnsContext {
                        interfaces: vec![InterfaceStats {
                            device: "eth0".into(),
                            up: true,
                            rx_bytes: 1,
                            tx_bytes: 2,
                            rx_packets: 3,
                            tx_packets: 4,
                            rx_dropped: 0,
                            tx_dropped: 0,
                        }],
                        conntrack_entries: Some(12),
                        sync_daemons: vec![SyncDaemon {
                            role: "master".into(),
                            interface: "eth1".into(),
                            sync_id: 3,
                        }],
                    },
                    duration: Duration::from_micros(133),
                    timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_733_370_000_250),
                },
                NamespaceSnapshot {
                    netns: NetnsId {
                        name: "blue".into(),
                        dev: 4,
                        inode: 4026532000,
                    },
                    ipvs: Err(CollectFailure {
                        reason: ErrorReason::ModuleNotLoaded,
                        message: "ip_vs is not loaded".into(),
                    }),
                    context: NetnsContext::default(),
                    duration: Duration::from_millis(2),
                    timestamp: SystemTime::UNIX_EPOCH,
                },
            ],
        };
        let web_name = std::sync::Arc::new(crate::names::Name {
            source: "file",
            name: "web".into(),
            namespace: "shop".into(),
            labels: vec![],
        });
        let mut names = crate::names::NameState::default();
        names.netns.insert(
            "host".into(),
            NetnsNames {
                services: vec![(0, web_name.clone())],
                destinations: vec![(0, 1, web_name)],
            },
        );
        (snapshot, names)
    }

    #[test]
    fn plain_keys_seconds_and_version() {
        let (snapshot, names) = sample();
        let doc = serde_json::to_value(super::snapshot(&snapshot, Some(&names), None)).unwrap();
        assert_eq!(doc["schema_version"], 1);
        assert_eq!(doc["kind"], "snapshot");
        let host = &doc["namespaces"][0];
        assert_eq!(host["duration_seconds"], 0.000133);
        assert_eq!(host["collected_at"], 1_733_370_000.25);
        assert!(host["error"].is_null());
        let svc = &host["ipvs"]["services"][0];
        assert_eq!(svc["id"], "tcp:10.0.0.1:80");
        assert_eq!(svc["names"][0]["name"], "web");
        assert_eq!(svc["destinations"][1]["names"][0]["namespace"], "shop");
        assert_eq!(svc["destinations"][0]["names"], serde_json::json!([]));
        assert_eq!(host["ipvs"]["services"][1]["id"], "fwm:260");
        assert_eq!(
            host["ipvs"]["services"][1]["published"],
            serde_json::json!({"protocol": "tcp", "port": 8080})
        );
        assert_eq!(host["ipvs"]["services"][2]["id"], "udp:[2001:db8::1]:53");
        let blue = &doc["namespaces"][1];
        assert_eq!(blue["error"]["reason"], "module_not_loaded");
        assert!(blue["ipvs"].is_null());
        // No Rust shapes leak.
        let text = doc.to_string();
        for leak in ["\"Ok\"", "\"Err\"", "\"secs\"", "\"nanos\""] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }

    #[test]
    fn snapshot_document_matches_the_schema() {
        let (snapshot, names) = sample();
        for names in [None, Some(&names)] {
            let doc = serde_json::to_value(super::snapshot(&snapshot, names, None)).unwrap();
            validate(&doc).unwrap();
        }
    }

    #[test]
    fn the_schema_rejects_what_it_should() {
        let (snapshot, _) = sample();
        let good = serde_json::to_value(super::snapshot(&snapshot, None, None)).unwrap();
        let mut bad = good.clone();
        bad["schema_version"] = 2.into();
        assert!(validate(&bad).is_err(), "another version");
        let mut bad = good.clone();
        bad["namespaces"][0]["duration"] = serde_json::json!({"secs": 0, "nanos": 133});
        assert!(validate(&bad).is_err(), "an unknown key");
        let mut bad = good.clone();
        bad["namespaces"][0]["ipvs"]["services"][0]["stats"]["conns"] = "7".into();
        assert!(validate(&bad).is_err(), "a string counter");
        let mut bad = good;
        bad["namespaces"][1]["error"] = serde_json::Value::Null;
        assert!(validate(&bad).is_err(), "neither ipvs nor error");
    }
}
