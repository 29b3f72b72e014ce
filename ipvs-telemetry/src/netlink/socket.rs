//! The clients: one netlink socket each in the namespace it was opened in (generic netlink for
//! IPVS, `NETLINK_ROUTE` for interfaces), and every system call of this module.
//!
//! Both go through one request path ([`Transport`]). Each request has a hard deadline (non-blocking socket + `poll`), checks the sequence number
//! and port id of every reply (replies to an earlier, timed-out request are dropped), restarts a
//! dump the kernel marks `NLM_F_DUMP_INTR`, and grows the receive buffer (≥ 32 KiB) and restarts
//! when a datagram did not fit (`MSG_TRUNC`). Only GET requests exist in this API.
//!
//! Per request the happy path costs two system calls: `send`, then one `recvmmsg` that takes the
//! reply and the dump's `NLMSG_DONE` together (the kernel builds the next part of a dump while
//! the previous one is being read, so both are queued by then); `poll` only runs when nothing is
//! queued yet. One socket per namespace: the kernel runs every IPVS generic-netlink request under
//! one global lock (the family is not `parallel_ops`), so dumps spread over extra sockets and
//! threads gained no wall time in the lab and doubled the CPU time (BENCHMARKS.md; the
//! experiment lives on in `examples/netlink_collect.rs --sockets N`).

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netlink_packet_core::NLM_F_DUMP_INTR;
use netlink_sys::{
    Socket,
    protocols::{NETLINK_GENERIC, NETLINK_ROUTE},
};

use crate::model::{
    Destination, Family, Info, InterfaceStats, IpvsState, Protocol, Service, ServiceAddress,
    Timeouts,
};

use super::ctrl;
use super::error::Error;
use super::fast;
use super::link;
use super::message::{IPVS_GENL_NAME, IpvsAttribute, IpvsCmd, IpvsMessage};
use super::service::IpvsServiceAttribute;
use super::sync_daemon::IpvsDaemonAttribute;
use super::wire::{self, Kind, Part};

/// Smallest receive buffer: the kernel fills dump datagrams up to 32 KiB.
const MIN_RECV_BUFFER: usize = 32 * 1024;
/// Times a request is restarted (interrupted dump, truncated datagram, family re-resolved).
const MAX_ATTEMPTS: usize = 4;
/// With the `netlink-capture` feature only (never in the shipped binary): a directory where
/// every received datagram is written, for the codec's byte fixtures (the lab's
/// `capture_fixtures` test).
#[cfg(feature = "netlink-capture")]
const DUMP_DIR_ENV: &str = "IPVS_TELEMETRY_NETLINK_DUMP_DIR";

/// The fixture-capture directory: [`DUMP_DIR_ENV`] with the `netlink-capture` feature, else none.
fn capture_dir() -> Option<PathBuf> {
    #[cfg(feature = "netlink-capture")]
    return std::env::var_os(DUMP_DIR_ENV).map(PathBuf::from);
    #[cfg(not(feature = "netlink-capture"))]
    None
}
/// Datagrams one receive call takes: a dump part and the next one (often `NLMSG_DONE`).
const BATCH: usize = 2;
/// The GET requests the client can send; nothing else is representable.
#[derive(Debug, Clone, Copy)]
enum Get<'a> {
    Services,
    Destinations(&'a Service),
    Info,
    Config,
    Daemons,
}

impl Get<'_> {
    fn name(&self) -> &'static str {
        match self {
            Get::Services => "IPVS_CMD_GET_SERVICE",
            Get::Destinations(_) => "IPVS_CMD_GET_DEST",
            Get::Info => "IPVS_CMD_GET_INFO",
            Get::Config => "IPVS_CMD_GET_CONFIG",
            Get::Daemons => "IPVS_CMD_GET_DAEMON",
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Get::Services | Get::Destinations(_) | Get::Daemons => Kind::Dump,
            Get::Info | Get::Config => Kind::Single,
        }
    }

    fn message(&self) -> IpvsMessage {
        match self {
            Get::Services => IpvsMessage {
                cmd: IpvsCmd::GetService,
                attributes: Vec::new(),
            },
            Get::Destinations(service) => IpvsMessage {
                cmd: IpvsCmd::GetDest,
                attributes: vec![IpvsAttribute::Service(service_key(service))],
            },
            Get::Info => IpvsMessage {
                cmd: IpvsCmd::GetInfo,
                attributes: Vec::new(),
            },
            Get::Config => IpvsMessage {
                cmd: IpvsCmd::GetConfig,
                attributes: Vec::new(),
            },
            Get::Daemons => IpvsMessage {
                cmd: IpvsCmd::GetDaemon,
                attributes: Vec::new(),
            },
        }
    }
}

/// The attributes that identify a service in a `GET_DEST` request.
fn service_key(service: &Service) -> Vec<IpvsServiceAttribute> {
    let mut key = vec![IpvsServiceAttribute::AddressFamily(service.family.af())];
    match service.address {
        ServiceAddress::Fwmark { mark } => key.push(IpvsServiceAttribute::Fwmark(mark)),
        ServiceAddress::Inet {
            protocol,
            address,
            port,
        } => {
            let mut bytes = vec![0u8; 16];
            match address {
                std::net::IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
                std::net::IpAddr::V6(a) => bytes.copy_from_slice(&a.octets()),
            }
            key.push(IpvsServiceAttribute::Protocol(Protocol::number(protocol)));
            key.push(IpvsServiceAttribute::Address(bytes));
            key.push(IpvsServiceAttribute::Port(port));
        }
    }
    key
}

/// Handles one data message (header flags, generic-netlink payload); says whether the kernel
/// marked it `NLM_F_DUMP_INTR`.
type OnData<'a> = dyn FnMut(u16, &[u8]) -> Result<bool, Error> + 'a;

/// How one exchange ended.
enum Outcome {
    Complete,
    /// The kernel marked the dump inconsistent, or a datagram was truncated: ask again.
    Restart,
}

/// One netlink socket and the request path every request takes, whatever the protocol: a
/// deadline, the sequence and port check, `MSG_TRUNC` growth and restart, `NLM_F_DUMP_INTR`
/// reported to the caller, and leftovers of an abandoned request drained.
#[derive(Debug)]
struct Transport {
    socket: Socket,
    port: u32,
    sequence: u32,
    timeout: Duration,
    /// `BATCH` slots of `slot` bytes each.
    recv_buf: Vec<u8>,
    slot: usize,
    send_buf: Vec<u8>,
    dump_dir: Option<PathBuf>,
    dumped: u64,
    dirty: bool,
}

/// A read-only IPVS client bound to one generic-netlink socket.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    family: Option<u16>,
}

/// A read-only rtnetlink client bound to one `NETLINK_ROUTE` socket: interface counters.
#[derive(Debug)]
pub struct LinkClient {
    transport: Transport,
}

impl Client {
    /// Opens a socket in the calling thread's current network namespace. Sends nothing.
    pub fn open(timeout: Duration) -> Result<Self, Error> {
        Ok(Client {
            transport: Transport::open(NETLINK_GENERIC, "socket(NETLINK_GENERIC)", timeout)?,
            family: None,
        })
    }

    /// Reads version, timeouts, services and their destinations.
    pub fn read_state(&mut self) -> Result<IpvsState, Error> {
        let info = self.info()?;
        let timeouts = self.timeouts()?;
        let mut services = self.services()?;
        self.fill_destinations(&mut services)?;
        Ok(IpvsState {
            info,
            timeouts,
            services,
        })
    }

    /// Dumps the destinations of every service.
    fn fill_destinations(&mut self, services: &mut [Service]) -> Result<(), Error> {
        for service in services.iter_mut() {
            service.destinations = self.destinations(service)?;
        }
        Ok(())
    }

    /// `IPVS_CMD_GET_INFO`: version and connection table size.
    pub fn info(&mut self) -> Result<Info, Error> {
        let mut out = Vec::with_capacity(1);
        self.request(Get::Info, &mut out, |m| {
            Info::try_from(m.attributes.as_slice()).map(Some)
        })?;
        out.pop().ok_or(Error::Malformed {
            request: "IPVS_CMD_GET_INFO",
            detail: "no reply message".into(),
        })
    }

    /// `IPVS_CMD_GET_CONFIG`: connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts, Error> {
        let mut out = Vec::with_capacity(1);
        self.request(Get::Config, &mut out, |m| {
            Timeouts::try_from(m.attributes.as_slice()).map(Some)
        })?;
        out.pop().ok_or(Error::Malformed {
            request: "IPVS_CMD_GET_CONFIG",
            detail: "no reply message".into(),
        })
    }

    /// `IPVS_CMD_GET_DAEMON`: the connection-synchronisation daemons, as raw attributes.
    pub fn daemons(&mut self) -> Result<Vec<Vec<IpvsDaemonAttribute>>, Error> {
        let mut out = Vec::new();
        self.request(Get::Daemons, &mut out, |m| {
            for a in m.attributes {
                if let IpvsAttribute::Daemon(attrs) = a {
                    return Ok(Some(attrs));
                }
            }
            Ok(None)
        })?;
        Ok(out)
    }

    /// Dumps every service (with empty `destinations`).
    pub fn services(&mut self) -> Result<Vec<Service>, Error> {
        let mut out = Vec::new();
        self.request(Get::Services, &mut out, |m| {
            for a in &m.attributes {
                if let IpvsAttribute::Service(attrs) = a {
                    return Service::try_from(attrs.as_slice()).map(Some);
                }
            }
            Ok(None)
        })?;
        Ok(out)
    }

    /// Dumps the destinations of one service.
    pub fn destinations(&mut self, service: &Service) -> Result<Vec<Destination>, Error> {
        let family: Family = service.family;
        let mut out = Vec::new();
        self.request_raw(
            Get::Destinations(service),
            &mut out,
            |payload| fast::destination(payload, family),
            &mut |m| {
                for a in &m.attributes {
                    if let IpvsAttribute::Dest(attrs) = a {
                        return Destination::try_from((attrs.as_slice(), family)).map(Some);
                    }
                }
                Ok(None)
            },
        )?;
        Ok(out)
    }

    /// Sends `get` and collects the converted replies into `out`, with restarts and one family
    /// re-resolution after ENOENT (the module was reloaded and the id changed).
    fn request<T>(
        &mut self,
        get: Get<'_>,
        out: &mut Vec<T>,
        mut convert: impl FnMut(IpvsMessage) -> Result<Option<T>, super::MalformedAttribute>,
    ) -> Result<(), Error> {
        self.request_raw(get, out, |_| None, &mut convert)
    }

    /// [`request`](Self::request) with a shortcut: `fast` may convert a message straight from
    /// its generic-netlink payload; when it returns `None` the message goes through the codec
    /// and `convert`.
    fn request_raw<T>(
        &mut self,
        get: Get<'_>,
        out: &mut Vec<T>,
        mut fast: impl FnMut(&[u8]) -> Option<T>,
        convert: &mut dyn FnMut(IpvsMessage) -> Result<Option<T>, super::MalformedAttribute>,
    ) -> Result<(), Error> {
        let name = get.name();
        let deadline = Instant::now() + self.transport.timeout;
        let mut resolved_again = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let family = match self.family {
                Some(id) => id,
                None => {
                    let id = self.resolve_family(deadline)?;
                    self.family = Some(id);
                    id
                }
            };
            out.clear();
            let sequence = self.transport.next_sequence();
            wire::emit_request(
                &mut self.transport.send_buf,
                get.message(),
                family,
                sequence,
                get.kind(),
            );
            let mut on_data = |flags: u16, payload: &[u8]| -> Result<bool, Error> {
                if let Some(v) = fast(payload) {
                    out.push(v);
                    return Ok(flags & NLM_F_DUMP_INTR != 0);
                }
                let msg = wire::decode_ipvs(payload).map_err(|e| Error::Malformed {
                    request: name,
                    detail: e.to_string(),
                })?;
                if let Some(v) = convert(msg).map_err(|e| Error::Malformed {
                    request: name,
                    detail: e.to_string(),
                })? {
                    out.push(v);
                }
                Ok(flags & NLM_F_DUMP_INTR != 0)
            };
            match self
                .transport
                .exchange(name, family, sequence, deadline, &mut on_data)
            {
                Ok(Outcome::Complete) => return Ok(()),
                Ok(Outcome::Restart) if attempts < MAX_ATTEMPTS => continue,
                Ok(Outcome::Restart) => {
                    return Err(Error::Malformed {
                        request: name,
                        detail: format!("dump still inconsistent after {MAX_ATTEMPTS} attempts"),
                    });
                }
                Err(Error::Kernel { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) && !resolved_again =>
                {
                    // The family id went away: unloaded (then "not loaded") or reloaded.
                    resolved_again = true;
                    self.family = None;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Finds the IPVS family id by listing every family (a dump never loads a module).
    fn resolve_family(&mut self, deadline: Instant) -> Result<u16, Error> {
        const NAME: &str = "CTRL_CMD_GETFAMILY";
        for _ in 0..MAX_ATTEMPTS {
            let sequence = self.transport.next_sequence();
            wire::emit_request(
                &mut self.transport.send_buf,
                ctrl::list_families(),
                ctrl::GENL_ID_CTRL,
                sequence,
                Kind::Dump,
            );
            let mut found = None;
            let mut on_data = |flags: u16, payload: &[u8]| -> Result<bool, Error> {
                if let Some(id) =
                    ctrl::family_id_if_named(payload, IPVS_GENL_NAME).map_err(|e| {
                        Error::Malformed {
                            request: NAME,
                            detail: e.to_string(),
                        }
                    })?
                {
                    found = Some(id);
                }
                Ok(flags & NLM_F_DUMP_INTR != 0)
            };
            match self.transport.exchange(
                NAME,
                ctrl::GENL_ID_CTRL,
                sequence,
                deadline,
                &mut on_data,
            )? {
                Outcome::Complete => return found.ok_or(Error::ModuleNotLoaded),
                Outcome::Restart => continue,
            }
        }
        Err(Error::Malformed {
            request: NAME,
            detail: format!("family dump still inconsistent after {MAX_ATTEMPTS} attempts"),
        })
    }
}

impl LinkClient {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's current network namespace; each
    /// dump must complete within `timeout`. Sends nothing.
    pub fn open(timeout: Duration) -> Result<Self, Error> {
        let mut transport = Transport::open(NETLINK_ROUTE, "socket(NETLINK_ROUTE)", timeout)?;
        // The captured fixtures are the IPVS codec's (netlink-packet-route has its own tests).
        transport.dump_dir = None;
        Ok(LinkClient { transport })
    }

    /// `RTM_GETLINK`: dumps every interface of the socket's namespace.
    pub fn links(&mut self) -> Result<Vec<InterfaceStats>, Error> {
        let deadline = Instant::now() + self.transport.timeout;
        let reply = link::reply_type();
        for _ in 0..MAX_ATTEMPTS {
            let sequence = self.transport.next_sequence();
            link::emit_dump_request(&mut self.transport.send_buf, sequence);
            let mut links = Vec::new();
            let mut on_data = |flags: u16, payload: &[u8]| -> Result<bool, Error> {
                let decoded = link::decode_link(payload).map_err(|e| Error::Malformed {
                    request: link::REQUEST,
                    detail: e.to_string(),
                })?;
                links.extend(decoded);
                Ok(flags & NLM_F_DUMP_INTR != 0)
            };
            match self
                .transport
                .exchange(link::REQUEST, reply, sequence, deadline, &mut on_data)?
            {
                Outcome::Complete => return Ok(links),
                Outcome::Restart => continue,
            }
        }
        Err(Error::Malformed {
            request: link::REQUEST,
            detail: format!("dump still inconsistent after {MAX_ATTEMPTS} attempts"),
        })
    }
}

impl Transport {
    /// Opens and binds a non-blocking netlink socket of `protocol` in the calling thread's
    /// namespace.
    fn open(protocol: isize, call: &'static str, timeout: Duration) -> Result<Self, Error> {
        let mut socket = Socket::new(protocol).map_err(|e| Error::socket(call, e))?;
        let addr = socket.bind_auto().map_err(|e| Error::socket("bind", e))?;
        socket
            .set_non_blocking(true)
            .map_err(|e| Error::socket("fcntl(O_NONBLOCK)", e))?;
        Ok(Transport {
            socket,
            port: addr.port_number(),
            sequence: 0,
            timeout,
            recv_buf: vec![0; MIN_RECV_BUFFER * BATCH],
            slot: MIN_RECV_BUFFER,
            send_buf: Vec::with_capacity(256),
            dump_dir: capture_dir(),
            dumped: 0,
            dirty: false,
        })
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    /// Sends `send_buf` and reads replies of `sequence` until the dump's `NLMSG_DONE` or the
    /// ACK. `on_data` gets each data message (netlink type `data_type`) and says whether it was
    /// marked interrupted.
    fn exchange(
        &mut self,
        name: &'static str,
        data_type: u16,
        sequence: u32,
        deadline: Instant,
        on_data: &mut OnData<'_>,
    ) -> Result<Outcome, Error> {
        if self.dirty {
            // An earlier request stopped half-way (timeout, error): drop its leftovers so the
            // kernel does not refuse a new dump with EBUSY.
            self.drain();
        }
        self.dirty = true;
        self.send(name)?;
        let mut interrupted = false;
        let mut failure = None;
        let mut lengths = [0usize; BATCH];
        loop {
            let count = self.recv(name, deadline, &mut lengths)?;
            if lengths[..count].iter().any(|&n| n > self.slot) {
                // A datagram was cut and its rest is lost: grow and ask again.
                let longest = lengths[..count].iter().copied().max().unwrap_or(0);
                self.slot = longest.next_multiple_of(4096).max(self.slot * 2);
                self.recv_buf.resize(self.slot * BATCH, 0);
                self.drain();
                return Ok(Outcome::Restart);
            }
            let mut finished = false;
            for (i, &n) in lengths[..count].iter().enumerate() {
                let start = i * self.slot;
                self.dump_datagram(name, start, n);
                for item in wire::messages(&self.recv_buf[start..start + n], data_type) {
                    let item = item.map_err(|e| Error::Malformed {
                        request: name,
                        detail: e.to_string(),
                    })?;
                    if item.sequence != sequence || item.port != self.port {
                        continue; // a late reply to an earlier request
                    }
                    match item.part {
                        Part::Data { flags, payload } => {
                            // Once a message failed to decode, skip the rest but keep reading
                            // to the end so the socket is clean for the next request.
                            if failure.is_none() {
                                match on_data(flags, payload) {
                                    Ok(intr) => interrupted |= intr,
                                    Err(e) => failure = Some(e),
                                }
                            }
                        }
                        Part::Done(code) => {
                            if code < 0 {
                                return Err(Error::from_kernel(name, code));
                            }
                            finished = true;
                        }
                        Part::Error(0) => finished = true,
                        Part::Error(code) => return Err(Error::from_kernel(name, code)),
                        Part::Overrun => {
                            return Err(Error::Kernel {
                                request: name,
                                source: io::Error::other("NLMSG_OVERRUN"),
                            });
                        }
                        Part::Ignore => {}
                    }
                }
            }
            if finished {
                break;
            }
        }
        self.dirty = false;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(if interrupted {
            Outcome::Restart
        } else {
            Outcome::Complete
        })
    }

    fn send(&mut self, name: &'static str) -> Result<(), Error> {
        loop {
            match self.socket.send(&self.send_buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(match e.raw_os_error() {
                        Some(libc::EPERM) => Error::PermissionDenied { request: name },
                        _ => Error::socket("send", e),
                    });
                }
            }
        }
    }

    /// Receives up to [`BATCH`] datagrams from the kernel, datagram `i` into slot `i` of
    /// `recv_buf`; their full lengths go to `lengths` (a length above `slot` means the datagram
    /// was truncated). Returns how many; waits (`poll`) only when none is queued yet.
    fn recv(
        &mut self,
        name: &'static str,
        deadline: Instant,
        lengths: &mut [usize; BATCH],
    ) -> Result<usize, Error> {
        let fd = self.socket.as_raw_fd();
        let slot = self.slot;
        loop {
            // SAFETY: all-zero sockaddr_nl and mmsghdr values are valid.
            let mut addrs: [libc::sockaddr_nl; BATCH] = unsafe { std::mem::zeroed() };
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            let base = self.recv_buf.as_mut_ptr();
            for i in 0..BATCH {
                // SAFETY: `recv_buf` holds BATCH slots of `slot` bytes; this is slot i.
                iovs[i].iov_base = unsafe { base.add(i * slot) }.cast();
                iovs[i].iov_len = slot;
                msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_nl).cast();
                msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as _;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every header describes one slot of `recv_buf` and one sockaddr_nl, all of
            // which outlive the call; no timeout.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    BATCH as _,
                    (libc::MSG_TRUNC | libc::MSG_DONTWAIT) as _,
                    std::ptr::null_mut(),
                )
            };
            if n > 0 {
                // Keep the datagrams from the kernel, packed to the front (a datagram from
                // another socket cannot reach a netlink socket bound to its own port id, but
                // such a datagram is dropped all the same).
                let mut kept = 0;
                for i in 0..n as usize {
                    if addrs[i].nl_pid != 0 {
                        continue;
                    }
                    if kept != i {
                        let len = (msgs[i].msg_len as usize).min(slot);
                        self.recv_buf
                            .copy_within(i * slot..i * slot + len, kept * slot);
                    }
                    lengths[kept] = msgs[i].msg_len as usize;
                    kept += 1;
                }
                if kept > 0 {
                    return Ok(kept);
                }
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => self.wait_readable(name, deadline)?,
                Some(libc::EPERM) => return Err(Error::PermissionDenied { request: name }),
                _ => return Err(Error::socket("recvmmsg", err)),
            }
        }
    }

    /// Waits until the socket is readable or the deadline passed.
    fn wait_readable(&self, name: &'static str, deadline: Instant) -> Result<(), Error> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    request: name,
                    timeout: self.timeout,
                });
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                return Ok(());
            }
            if r < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINTR) {
                    return Err(Error::socket("poll", err));
                }
            }
        }
    }

    /// Drops whatever is queued (the rest of a dump being restarted).
    fn drain(&mut self) {
        let fd = self.socket.as_raw_fd();
        loop {
            // SAFETY: as in `recv`, without an address.
            let n = unsafe {
                libc::recv(
                    fd,
                    self.recv_buf.as_mut_ptr().cast(),
                    self.recv_buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                return;
            }
        }
    }

    fn dump_datagram(&mut self, name: &str, start: usize, n: usize) {
        if let Some(dir) = &self.dump_dir {
            self.dumped += 1;
            let path = dir.join(format!("{:06}-{}.bin", self.dumped, name));
            if let Err(e) = std::fs::write(&path, &self.recv_buf[start..start + n]) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write netlink dump");
            }
        }
    }
}
