//! Types shared by the probes (`ipvs-telemetry-ebpf`) and the daemon: the ring-buffer event
//! layout and the struct offsets the daemon computes from BTF. `#![no_std]`, `#[repr(C)]`,
//! explicit padding, sizes pinned at compile time.

// Every dependency of the package is used by this crate (see the workspace lints).
#![warn(unused_crate_dependencies)]
#![no_std]

/// Name of the ring buffer carrying [`Event`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array counting events the ring buffer could not take, indexed by kind.
pub const LOST_MAP: &str = "LOST";
/// Name of the per-CPU array counting failed kernel reads of the probes, indexed by kind (the
/// event each probe would have sent). Counted instead of logged: with wrong offsets every
/// connection would fail; the probe logs only the first failure.
pub const READ_ERRORS_MAP: &str = "READ_ERRORS";
/// Name of the global holding the [`Offsets`] (overridden at load time).
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the kretprobe program on `ip_vs_conn_new`.
pub const CONN_NEW_PROGRAM: &str = "ip_vs_conn_new_ret";
/// Kernel function the connection probe attaches to.
pub const CONN_NEW_FUNCTION: &str = "ip_vs_conn_new";

/// Name of the LRU hash holding the creation time (ns) of each counted NAT or local-node
/// connection, keyed by the `struct ip_vs_conn *`, until its first reply or its release
/// (whichever comes first takes the entry out, so a connection ends in exactly one of the two).
/// The daemon never reads it: it counts waiting connections from the events.
pub const STARTS_MAP: &str = "STARTS";
/// Entries of [`STARTS_MAP`]: connections waiting for their first reply. When more are waiting,
/// the least recently created are dropped (and not measured).
pub const STARTS_ENTRIES: u32 = 1 << 16;
/// Name of the global holding the [`StateArgs`] (overridden at load time).
pub const STATE_ARGS_GLOBAL: &str = "STATE_ARGS";
/// The protocol state handlers timed for the first response, with the kprobe program attached
/// to each, in [`StateArgs`] index order (TCP, UDP, SCTP).
pub const STATE_PROBES: [(&str, &str); 3] = [
    ("tcp_state_transition", "tcp_state"),
    ("udp_state_transition", "udp_state"),
    ("sctp_state_transition", "sctp_state"),
];
/// Kernel function the release probe attaches to: the connection timer's callback, also called
/// directly wherever IPVS drops a connection (flush, `expire_nodest_conn`, `drop_entry`, one-packet
/// scheduling); it releases the connection unless the connection is still referenced.
pub const EXPIRE_FUNCTION: &str = "ip_vs_conn_expire";
/// Name of the kprobe program on [`EXPIRE_FUNCTION`].
pub const EXPIRE_PROGRAM: &str = "ip_vs_conn_expire";
/// Kernel function the unschedulable probe attaches to: every IPVS scheduler calls it when it
/// finds no destination for a new connection (the `no destination available` message).
pub const SCHEDULER_ERR_FUNCTION: &str = "ip_vs_scheduler_err";
/// Name of the kprobe program on [`SCHEDULER_ERR_FUNCTION`].
pub const SCHEDULER_ERR_PROGRAM: &str = "ip_vs_scheduler_err";

/// `IP_VS_DIR_OUTPUT`: a packet from the real server (the reply direction).
pub const IP_VS_DIR_OUTPUT: i32 = 1;

/// Ring-buffer size in bytes (a power of two multiple of the page size). Each [`Event`] takes
/// `size_of::<Event>() + 8` bytes (record header), rounded up to 96 bytes, so 2^22 bytes (4 MiB) hold 43,690 events: a burst of
/// that many new connections can wait unread for the consumer without loss.
pub const RING_BYTES: u32 = 1 << 22;

/// Events wake the consumer only once this much is waiting in the ring (1/16 of it, about
/// 2,700 events); below that it drains on its own every [`DRAIN_INTERVAL_MS`]. A wake-up per
/// event costs the connection's CPU an irq_work and often an IPI.
pub const WAKEUP_BYTES: u64 = RING_BYTES as u64 / 16;

/// How often the consumer drains the ring without being woken, in milliseconds. Every scrape
/// also has it drain first, so this only bounds how long a trickle of events (fewer than
/// [`WAKEUP_BYTES`] worth) waits; every value is computed from the events' kernel timestamps.
/// Each tick costs an idle daemon a wake-up: once a second keeps an idle daemon near zero CPU.
pub const DRAIN_INTERVAL_MS: u64 = 1000;

/// [`Event::kind`]: a connection was scheduled to a destination (`ip_vs_conn_new` returned).
pub const KIND_NEW_CONNECTION: u32 = 0;
/// [`Event::kind`]: the first packet from the real server passed the director (latency issue);
/// [`Event::value`] carries the delay since the connection was created (ns).
pub const KIND_FIRST_RESPONSE: u32 = 1;
/// [`Event::kind`]: a connection waiting for its first reply was released by IPVS (expired,
/// flushed or dropped) without one; [`Event::value`] carries how long it waited (ns).
pub const KIND_UNANSWERED: u32 = 2;
/// [`Event::kind`]: a scheduler found no destination for a new connection of the service;
/// only the service fields are set (`daf`, `daddr`, `dport` are 0).
pub const KIND_UNSCHEDULABLE: u32 = 3;
/// [`Event::kind`]: the sync daemon of a backup director created a connection from the
/// master's sync messages (`IP_VS_CONN_F_SYNC`; not counted as a new connection).
pub const KIND_SYNCED: u32 = 4;
/// Number of event kinds (size of the lost-events array).
pub const KINDS: u32 = 5;

/// `IP_VS_CONN_F_FWD_MASK`: the forwarding method bits of the connection flags.
pub const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
/// `IP_VS_CONN_F_LOCALNODE`: forwarding method "local node"; `IP_VS_CONN_F_MASQ` is 0. Only
/// these two (values up to this one) send the real server's reply back through the director.
pub const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
/// `IP_VS_CONN_F_SYNC`: connection created by the sync daemon.
pub const IP_VS_CONN_F_SYNC: u32 = 0x0020;
/// `IP_VS_CONN_F_TEMPLATE`: persistence template.
pub const IP_VS_CONN_F_TEMPLATE: u32 = 0x1000;
/// `IP_VS_CONN_F_ONE_PACKET`: one-packet scheduling (`ipvsadm -o`); the connection is released
/// after its first packet and never sees a reply.
pub const IP_VS_CONN_F_ONE_PACKET: u32 = 0x2000;

/// One ring-buffer record.
///
/// The service identity (`fwmark`, `protocol`, `vaddr`, `vport`) and the real server
/// (`daf`, `daddr`, `dport`) are read from the connection's `struct ip_vs_dest`, so a fwmark
/// service is identified by its mark (a connection's own `vport` is the packet's port).
/// Addresses are in network order, IPv4 in the first four bytes; ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub timestamp_ns: u64,
    /// The `struct ip_vs_conn *` (identifies the connection across event kinds).
    pub conn: u64,
    /// Kind-specific value: nanoseconds since the connection's creation for
    /// [`KIND_FIRST_RESPONSE`] and [`KIND_UNANSWERED`] (so `timestamp_ns - value` is the
    /// timestamp of its [`KIND_NEW_CONNECTION`] event), 0 otherwise.
    pub value: u64,
    /// One of the `KIND_*` constants.
    pub kind: u32,
    /// `ns.inum` of the connection's network namespace.
    pub netns_inode: u32,
    /// Connection flags (`cp->flags`).
    pub flags: u32,
    /// Firewall mark of the service (`dest->vfwmark`), 0 for address services.
    pub fwmark: u32,
    /// Family of the service (`cp->af`).
    pub af: u16,
    /// Family of the real server (`dest->af`).
    pub daf: u16,
    /// Protocol of the service (`dest->protocol`).
    pub protocol: u16,
    /// Virtual port of the service (`dest->vport`), network order.
    pub vport: u16,
    /// Port of the real server (`dest->port`), network order.
    pub dport: u16,
    /// Explicit padding, always zero.
    pub _pad: [u8; 6],
    /// Virtual address of the service (`dest->vaddr`).
    pub vaddr: [u8; 16],
    /// Address of the real server (`dest->addr`).
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<Event>() == 88);
const _: () = assert!(core::mem::align_of::<Event>() == 8);

/// Byte offsets of the kernel struct members the probes read, computed by the daemon from
/// `/sys/kernel/btf/vmlinux` and `/sys/kernel/btf/ip_vs` (Rust eBPF has no CO-RE), handed to
/// the probes as the global `OFFSETS`. `valid` is 0 in the compiled-in default, so probes that
/// somehow run without overridden offsets do nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// 1 when filled from BTF.
    pub valid: u32,
    /// `struct ip_vs_conn`: `af` (u16).
    pub conn_af: u32,
    /// `struct ip_vs_conn`: `flags` (u32).
    pub conn_flags: u32,
    /// `struct ip_vs_conn`: `dest` (pointer).
    pub conn_dest: u32,
    /// `struct ip_vs_conn`: `ipvs` (pointer to `struct netns_ipvs`).
    pub conn_ipvs: u32,
    /// `struct netns_ipvs`: `net` (pointer to `struct net`).
    pub ipvs_net: u32,
    /// `struct net`: `ns.inum` (u32).
    pub net_inum: u32,
    /// `struct ip_vs_dest`: `af` (u16).
    pub dest_af: u32,
    /// `struct ip_vs_dest`: `port` (u16).
    pub dest_port: u32,
    /// `struct ip_vs_dest`: `addr` (16 bytes).
    pub dest_addr: u32,
    /// `struct ip_vs_dest`: `protocol` (u16).
    pub dest_protocol: u32,
    /// `struct ip_vs_dest`: `vport` (u16).
    pub dest_vport: u32,
    /// `struct ip_vs_dest`: `vaddr` (16 bytes).
    pub dest_vaddr: u32,
    /// `struct ip_vs_dest`: `vfwmark` (u32).
    pub dest_vfwmark: u32,
    /// `struct ip_vs_conn`: `timer` (the `struct timer_list` the expiry callback receives).
    pub conn_timer: u32,
    /// `struct ip_vs_conn`: `refcnt` (`refcount_t`, an int).
    pub conn_refcnt: u32,
    /// `struct ip_vs_conn`: `n_control` (`atomic_t`).
    pub conn_n_control: u32,
    /// `struct ip_vs_service`: `af` (u16).
    pub svc_af: u32,
    /// `struct ip_vs_service`: `protocol` (u16).
    pub svc_protocol: u32,
    /// `struct ip_vs_service`: `addr` (16 bytes).
    pub svc_addr: u32,
    /// `struct ip_vs_service`: `port` (u16, network order).
    pub svc_port: u32,
    /// `struct ip_vs_service`: `fwmark` (u32).
    pub svc_fwmark: u32,
    /// `struct ip_vs_service`: `ipvs` (pointer to `struct netns_ipvs`).
    pub svc_ipvs: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Offsets>() == 96);

/// Argument positions (0-based) of `cp` and `direction` in each protocol state handler,
/// indexed like [`STATE_PROBES`]. They differ between kernels (stable kernels added an argument),
/// so the daemon reads them from the function prototypes in the module BTF. The default is the
/// 6.1 layout `(cp, direction, skb, pd)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateArgs {
    /// Position of `struct ip_vs_conn *cp`.
    pub cp: [u32; 3],
    /// Position of `int direction`.
    pub direction: [u32; 3],
}

impl Default for StateArgs {
    fn default() -> Self {
        StateArgs {
            cp: [0; 3],
            direction: [1; 3],
        }
    }
}

const _: () = assert!(core::mem::size_of::<StateArgs>() == 24);

#[cfg(feature = "user")]
// SAFETY: as below.
unsafe impl aya::Pod for StateArgs {}

#[cfg(feature = "user")]
// SAFETY: both are `#[repr(C)]`, contain only integers and have no implicit padding (sizes are
// pinned above), so every bit pattern is valid.
unsafe impl aya::Pod for Event {}

#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for Offsets {}
