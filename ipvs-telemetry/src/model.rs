//! The immutable values that flow through the daemon: what one collection read from one network
//! namespace.
//!
//! Producers (`netlink`, `netns`) build these; consumers (`metrics`, the `snapshot` command, the
//! eBPF label join) only read them. Nothing here does I/O.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Address family of a service or destination (`AF_INET` / `AF_INET6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4, `AF_INET` (2).
    Inet,
    /// IPv6, `AF_INET6` (10).
    Inet6,
}

impl Family {
    /// The label value used by the metric contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }

    /// The kernel's `AF_*` number.
    pub fn af(self) -> u16 {
        match self {
            Family::Inet => libc::AF_INET as u16,
            Family::Inet6 => libc::AF_INET6 as u16,
        }
    }

    /// Maps an `AF_*` number; `None` for anything but IPv4 and IPv6.
    pub fn from_af(af: u16) -> Option<Self> {
        match af as i32 {
            libc::AF_INET => Some(Family::Inet),
            libc::AF_INET6 => Some(Family::Inet6),
            _ => None,
        }
    }
}

/// Transport protocol of a virtual service (`IPPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `IPPROTO_TCP` (6).
    Tcp,
    /// `IPPROTO_UDP` (17).
    Udp,
    /// `IPPROTO_SCTP` (132).
    Sctp,
    /// Any other protocol number the kernel reported.
    Other(u16),
}

impl Protocol {
    /// Maps an `IPPROTO_*` number.
    pub fn from_number(n: u16) -> Self {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            n => Protocol::Other(n),
        }
    }

    /// The `IPPROTO_*` number.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Other(n) => n,
        }
    }

    /// The label value (`tcp`, `udp`, `sctp`, or the number).
    pub fn label(self) -> String {
        match self {
            Protocol::Tcp => "tcp".into(),
            Protocol::Udp => "udp".into(),
            Protocol::Sctp => "sctp".into(),
            Protocol::Other(n) => n.to_string(),
        }
    }
}

/// How a service is addressed: by protocol, VIP and port, or by firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServiceAddress {
    /// `-t/-u/--sctp-service VIP:PORT`.
    Inet {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual IP address.
        address: IpAddr,
        /// Virtual port (host order).
        port: u16,
    },
    /// `-f MARK`.
    Fwmark {
        /// The firewall mark.
        mark: u32,
    },
}

/// The kernel's 64-bit counters and 2-second estimator rates of a service or destination.
///
/// Filled from `IPVS_*_ATTR_STATS64`, or from `IPVS_*_ATTR_STATS` (32-bit fields, 64-bit bytes)
/// on kernels without it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Connections scheduled (`IPVS_STATS_ATTR_CONNS`).
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

/// How IPVS forwards packets to a real server (`IP_VS_CONN_F_FWD_MASK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// NAT (`ipvsadm -m`), `IP_VS_CONN_F_MASQ` (0).
    Masq,
    /// Local node, `IP_VS_CONN_F_LOCALNODE` (1).
    Local,
    /// IP-in-IP or other tunnel (`-i`), `IP_VS_CONN_F_TUNNEL` (2).
    Tunnel,
    /// Direct routing (`-g`), `IP_VS_CONN_F_DROUTE` (3).
    Route,
    /// `IP_VS_CONN_F_BYPASS` (4).
    Bypass,
}

impl ForwardMethod {
    /// Maps the low three bits of the connection flags.
    pub fn from_flags(flags: u32) -> Self {
        match flags & 0x7 {
            0 => ForwardMethod::Masq,
            1 => ForwardMethod::Local,
            2 => ForwardMethod::Tunnel,
            3 => ForwardMethod::Route,
            _ => ForwardMethod::Bypass,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMethod::Masq => "masq",
            ForwardMethod::Local => "local",
            ForwardMethod::Tunnel => "tunnel",
            ForwardMethod::Route => "route",
            ForwardMethod::Bypass => "bypass",
        }
    }
}

/// Encapsulation of a tunnel destination (`IPVS_DEST_ATTR_TUN_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// `IP_VS_CONN_F_TUNNEL_TYPE_IPIP` (0).
    Ipip,
    /// `IP_VS_CONN_F_TUNNEL_TYPE_GUE` (1).
    Gue,
    /// `IP_VS_CONN_F_TUNNEL_TYPE_GRE` (2).
    Gre,
    /// A value this build does not know.
    Other(u8),
}

impl TunnelType {
    /// The label value.
    pub fn label(self) -> String {
        match self {
            TunnelType::Ipip => "ipip".into(),
            TunnelType::Gue => "gue".into(),
            TunnelType::Gre => "gre".into(),
            TunnelType::Other(n) => n.to_string(),
        }
    }
}

/// One real server of a virtual service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Destination {
    /// Address family of the real server (may differ from the service's on new kernels).
    pub family: Family,
    /// Real server address.
    pub address: IpAddr,
    /// Real server port (host order; 0 for fwmark services without a port).
    pub port: u16,
    /// Forwarding method.
    pub forward: ForwardMethod,
    /// Scheduling weight (`IPVS_DEST_ATTR_WEIGHT`; the kernel keeps an int).
    pub weight: i32,
    /// Upper connection threshold, 0 = none.
    pub upper_threshold: u32,
    /// Lower connection threshold.
    pub lower_threshold: u32,
    /// Live active connections.
    pub active_connections: u32,
    /// Live inactive connections.
    pub inactive_connections: u32,
    /// Persistence templates pointing at this destination.
    pub persistent_connections: u32,
    /// Tunnel encapsulation, only meaningful for `ForwardMethod::Tunnel` (kernel ≥ 5.2).
    pub tunnel_type: Option<TunnelType>,
    /// Tunnel destination port (GUE), host order.
    pub tunnel_port: Option<u16>,
    /// Tunnel flags (GUE/GRE checksum options).
    pub tunnel_flags: Option<u16>,
    /// Counters and rates.
    pub stats: Stats,
}

/// One virtual service with its destinations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// Address family of the service.
    pub family: Family,
    /// Protocol/VIP/port or fwmark.
    pub address: ServiceAddress,
    /// Scheduler name (`rr`, `wrr`, `sh`, ...).
    pub scheduler: String,
    /// Service flags (`IP_VS_SVC_F_*`), as the kernel reports them (including `hashed`).
    pub flags: u32,
    /// Persistence timeout in seconds, 0 when not persistent.
    pub timeout: u32,
    /// Persistence netmask. IPv4: the mask's 4 bytes read big-endian, so that
    /// `Ipv4Addr::from(netmask)` is the dotted mask; IPv6: the prefix length.
    pub netmask: u32,
    /// Persistence engine name (`sip`), when set.
    pub persistence_engine: Option<String>,
    /// Counters and rates.
    pub stats: Stats,
    /// The real servers, in the kernel's order.
    pub destinations: Vec<Destination>,
    /// For a fwmark service: the one protocol and destination port its mark is set for by the
    /// namespace's mangle rules (Docker Swarm ingress publishes ports this way); `None` for
    /// other services, when no rule sets the mark, or when rules set it for several ports.
    ///
    /// The netlink client leaves it `None`; the `netns` module fills it. Metrics use it for the
    /// `protocol` and `virtual_port` labels of fwmark services.
    pub published: Option<(Protocol, u16)>,
}

/// `IPVS_CMD_GET_INFO`: the IPVS version and connection table size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Info {
    /// Version encoded as the kernel does (`1.2.1` = 0x010201).
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_tab_size: u32,
}

impl Info {
    /// The version as text, e.g. `1.2.1`.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

/// `IPVS_CMD_GET_CONFIG`: connection timeouts in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Established TCP timeout.
    pub tcp: u32,
    /// TCP FIN_WAIT timeout.
    pub tcp_fin: u32,
    /// UDP timeout.
    pub udp: u32,
}

/// Everything one collection read from one namespace's IPVS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpvsState {
    /// Version and table size.
    pub info: Info,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Services with their destinations, in the kernel's order.
    pub services: Vec<Service>,
}

/// Which network namespace a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NetnsId {
    /// The `netns` label: `host`, the file name, or the name given with `--netns NAME=PATH`.
    pub name: String,
    /// Device of the namespace file (`st_dev`).
    pub dev: u64,
    /// Inode of the namespace (`st_ino`), the same number as `ns.inum` in the kernel.
    pub inode: u64,
}

/// Why a collection failed; the `reason` label of `ipvs_collection_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The ip_vs module is not loaded in that namespace.
    ModuleNotLoaded,
    /// IPVS refused a netlink command (EPERM): CAP_NET_ADMIN is missing in the initial user
    /// namespace.
    MissingCapNetAdmin,
    /// `setns()` into the namespace was refused (EPERM) and CAP_SYS_ADMIN is not held.
    MissingCapSysAdmin,
    /// A request did not answer in time.
    Timeout,
    /// The kernel's reply could not be decoded.
    MalformedReply,
    /// The namespace file could not be opened or entered (other than for a missing
    /// capability).
    Namespace,
    /// Any other I/O error.
    Io,
}

impl ErrorReason {
    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorReason::ModuleNotLoaded => "module_not_loaded",
            ErrorReason::MissingCapNetAdmin => "missing_cap_net_admin",
            ErrorReason::MissingCapSysAdmin => "missing_cap_sys_admin",
            ErrorReason::Timeout => "timeout",
            ErrorReason::MalformedReply => "malformed_reply",
            ErrorReason::Namespace => "namespace",
            ErrorReason::Io => "io",
        }
    }
}

/// A failed collection: the reason label and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectFailure {
    /// Metric label.
    pub reason: ErrorReason,
    /// Human-readable cause.
    pub message: String,
}

/// Counters of one network interface inside a namespace (rtnetlink `IFLA_STATS64`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceStats {
    /// Interface name.
    pub device: String,
    /// Operational state is up.
    pub up: bool,
    /// Received bytes.
    pub rx_bytes: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Received packets.
    pub rx_packets: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Receive drops.
    pub rx_dropped: u64,
    /// Transmit drops.
    pub tx_dropped: u64,
}

/// Context of a namespace besides IPVS (interfaces, conntrack).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetnsContext {
    /// Interfaces that pass the device filter.
    pub interfaces: Vec<InterfaceStats>,
    /// Conntrack entries, `None` when conntrack is not loaded there.
    pub conntrack_entries: Option<u64>,
    /// The IPVS connection-synchronisation daemons running in the namespace (master and/or
    /// backup), from `IPVS_CMD_GET_DAEMON`; empty when none runs or IPVS could not be read.
    pub sync_daemons: Vec<SyncDaemon>,
}

/// One IPVS sync daemon (`ipvsadm --start-daemon`), as `IPVS_CMD_GET_DAEMON` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncDaemon {
    /// `master` (`IP_VS_STATE_MASTER`, sends), `backup` (`IP_VS_STATE_BACKUP`, receives), or
    /// the number for a state this build does not know.
    pub role: String,
    /// Multicast interface (`--mcast-interface`).
    pub interface: String,
    /// Sync id (`--syncid`).
    pub sync_id: u32,
}

impl SyncDaemon {
    /// The daemon described by the attributes of one `IPVS_CMD_ATTR_DAEMON`; `None` without a
    /// state.
    pub fn from_attributes(attrs: &[crate::netlink::IpvsDaemonAttribute]) -> Option<Self> {
        use crate::netlink::IpvsDaemonAttribute as A;
        let mut d = SyncDaemon {
            role: String::new(),
            interface: String::new(),
            sync_id: 0,
        };
        for a in attrs {
            match a {
                A::State(1) => d.role = "master".into(),
                A::State(2) => d.role = "backup".into(),
                A::State(n) => d.role = n.to_string(),
                A::MulticastInterface(i) => d.interface = i.clone(),
                A::SyncId(id) => d.sync_id = *id,
                _ => {}
            }
        }
        (!d.role.is_empty()).then_some(d)
    }
}

/// The result of one collection of one namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamespaceSnapshot {
    /// Which namespace.
    pub netns: NetnsId,
    /// The IPVS state, or why it could not be read.
    pub ipvs: Result<IpvsState, CollectFailure>,
    /// Interface and conntrack context.
    pub context: NetnsContext,
    /// Wall time the collection took.
    pub duration: Duration,
    /// When the values were read.
    #[serde(skip)]
    pub timestamp: SystemTime,
}

/// One collection of every selected namespace, sorted by namespace name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// One entry per namespace.
    pub namespaces: Vec<NamespaceSnapshot>,
}

/// A Prometheus histogram ready to encode: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)`, ascending, without the `+Inf` bucket.
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
    /// The same observations in native (sparse exponential) buckets, for the protobuf
    /// exposition; `None` where only classic buckets are kept.
    pub native: Option<NativeHistogram>,
}

/// The native buckets of a histogram (count and sum are its classic ones).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NativeHistogram {
    /// Bucket `i` holds `(2^((i-1)/2^schema), 2^(i/2^schema)]`.
    pub schema: i32,
    /// Upper bound of the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: u64,
    /// Index of the bucket of `counts[0]`.
    pub offset: i32,
    /// Counts of consecutive buckets (not cumulative), from `offset` on.
    pub counts: Vec<u64>,
}

/// What the probes identify a connection's destination by, before labels are attached.
///
/// The metrics layer joins this with the netlink [`Snapshot`] (namespace inode to name, fwmark
/// to the mangle-rule port) so eBPF and netlink series carry identical labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EbpfKey {
    /// `ns.inum` of the connection's network namespace.
    pub netns_inode: u64,
    /// Family of the service.
    pub family: Family,
    /// The service (fwmark services by mark).
    pub service: ServiceAddress,
    /// The real server, `None` with `--ebpf.granularity service`.
    pub destination: Option<(IpAddr, u16)>,
}

/// eBPF telemetry of one destination (or one service, by granularity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EbpfSeries {
    /// Which destination.
    pub key: EbpfKey,
    /// Exact count of new scheduled connections.
    pub new_connections: u64,
    /// One observation per rate window: connections per second in that window.
    pub connection_rate: HistogramSnapshot,
    /// Highest window rate since the previous collection.
    pub peak_connection_rate: f64,
    /// Seconds between consecutive new connections.
    pub interarrival: HistogramSnapshot,
    /// Seconds from connection creation to the first reply through the director.
    pub first_response: HistogramSnapshot,
    /// Connections released without a reply (NAT and local forwarding only).
    pub unanswered: u64,
    /// Connections created from sync messages (on a backup director).
    pub synced: u64,
    /// Open connections waiting longer than `--ebpf.unanswered-after` for their first reply.
    pub waiting: u64,
}

/// The eBPF side's state at one collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EbpfSnapshot {
    /// Probes attached.
    pub up: bool,
    /// `--ebpf` mode (`auto`, `on`, `off`).
    pub mode: String,
    /// Why eBPF is on or off (`attached`, `kprobes unavailable`, ...).
    pub reason: String,
    /// The first-response probes: `attached`, `not attached` (the connection probe is not
    /// either), or why some are not (per state handler, `; `-separated).
    pub first_response: String,
    /// Events taken from the ring buffer, by kind.
    pub events: Vec<(String, u64)>,
    /// Events the kernel could not queue, by kind.
    pub lost: Vec<(String, u64)>,
    /// Failed kernel reads in the probes (no event sent), by kind.
    pub read_errors: Vec<(String, u64)>,
    /// Events for destinations beyond `--ebpf.max-destinations`.
    pub overflow: u64,
    /// Per destination (or service) series.
    pub series: Vec<EbpfSeries>,
    /// New connections no destination could be found for, per service (`destination` is
    /// `None`).
    pub unschedulable: Vec<(EbpfKey, u64)>,
}

/// Values for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A masq real server with weight 1 and zero counters.
    pub(crate) fn destination(address: &str, port: u16) -> Destination {
        let address: IpAddr = address.parse().expect("a test address");
        Destination {
            family: if address.is_ipv4() {
                Family::Inet
            } else {
                Family::Inet6
            },
            address,
            port,
            forward: ForwardMethod::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            active_connections: 0,
            inactive_connections: 0,
            persistent_connections: 0,
            tunnel_type: None,
            tunnel_port: None,
            tunnel_flags: None,
            stats: Stats::default(),
        }
    }

    /// An `rr` service of `family` at `address` with `destinations` and zero counters.
    pub(crate) fn service(
        family: Family,
        address: ServiceAddress,
        destinations: Vec<Destination>,
    ) -> Service {
        Service {
            family,
            address,
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
            netmask: u32::MAX,
            persistence_engine: None,
            stats: Stats::default(),
            destinations,
            published: None,
        }
    }
}
