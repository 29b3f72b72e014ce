//! Interface counters over rtnetlink: an `RTM_GETLINK` dump on a `NETLINK_ROUTE` socket of the
//! namespace, decoded into [`InterfaceStats`].
//!
//! The codec ([`dump_request`], [`parse_links`]) is pure and tested on byte fixtures; [`LinkSocket`]
//! is the only I/O. Values are the ones `ip -s -j link` prints: `IFLA_STATS64` (or the 32-bit
//! `IFLA_STATS` on kernels without it) and the operational state.

use std::time::Duration;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::model::InterfaceStats;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 0x1;
#[cfg(test)]
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
const IFLA_STATS: u16 = 7;
const IFLA_IFNAME: u16 = 3;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_STATS64: u16 = 23;
const NLA_TYPE_MASK: u16 = 0x3fff;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x1_0000;
/// `IF_OPER_UNKNOWN` and `IF_OPER_UP` of RFC 2863 as the kernel numbers them.
const IF_OPER_UNKNOWN: u8 = 0;
const IF_OPER_UP: u8 = 6;

/// Errors of the interface dump.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// A socket call failed.
    #[error("rtnetlink {call}")]
    Socket {
        /// The call (`socket`, `send`, `recv`, ...).
        call: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel answered the dump with an error.
    #[error("rtnetlink RTM_GETLINK dump refused")]
    Kernel(#[source] std::io::Error),
    /// The reply could not be decoded.
    #[error("malformed RTM_NEWLINK reply: {0}")]
    Malformed(&'static str),
    /// The link table kept changing during the dump.
    #[error("interface dump interrupted by concurrent changes, retries exhausted")]
    Interrupted,
}

/// The request bytes of an `RTM_GETLINK` dump of every interface.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + IFINFOMSG_LEN) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    b.extend_from_slice(&[0u8; IFINFOMSG_LEN]); // AF_UNSPEC, every interface
    b
}

/// What one receive buffer of a dump held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Interfaces decoded from `RTM_NEWLINK` messages.
    pub links: Vec<InterfaceStats>,
    /// `NLMSG_DONE` was seen: the dump is complete.
    pub done: bool,
    /// A message carried `NLM_F_DUMP_INTR`: the dump is inconsistent and must be repeated.
    pub interrupted: bool,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Decodes one receive buffer of an `RTM_GETLINK` dump (several netlink messages).
pub fn parse_links(buf: &[u8]) -> Result<Batch, RtnlError> {
    let mut batch = Batch::default();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or(RtnlError::Malformed("short nlmsghdr"))? as usize;
        let kind = u16_at(buf, at + 4).ok_or(RtnlError::Malformed("short nlmsghdr"))?;
        let flags = u16_at(buf, at + 6).ok_or(RtnlError::Malformed("short nlmsghdr"))?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(RtnlError::Malformed("nlmsg_len out of bounds"));
        }
        let payload = &buf[at + NLMSG_HDRLEN..at + len];
        if flags & NLM_F_DUMP_INTR != 0 {
            batch.interrupted = true;
        }
        match kind {
            NLMSG_DONE => {
                batch.done = true;
                return Ok(batch);
            }
            NLMSG_ERROR => {
                let errno =
                    u32_at(payload, 0).ok_or(RtnlError::Malformed("short nlmsgerr"))? as i32;
                if errno != 0 {
                    return Err(RtnlError::Kernel(std::io::Error::from_raw_os_error(-errno)));
                }
            }
            RTM_NEWLINK => {
                if let Some(link) = parse_link(payload)? {
                    batch.links.push(link);
                }
            }
            _ => {}
        }
        at += align4(len);
    }
    Ok(batch)
}

/// Decodes one `RTM_NEWLINK` payload; `None` when it names no interface.
fn parse_link(payload: &[u8]) -> Result<Option<InterfaceStats>, RtnlError> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(RtnlError::Malformed("short ifinfomsg"));
    }
    let flags = u32_at(payload, 8).unwrap_or(0);
    let mut name = None;
    let mut operstate = None;
    let mut stats64 = None;
    let mut stats32 = None;
    let mut at = IFINFOMSG_LEN;
    while at + 4 <= payload.len() {
        let len = u16_at(payload, at).unwrap_or(0) as usize;
        let kind = u16_at(payload, at + 2).unwrap_or(0) & NLA_TYPE_MASK;
        if len < 4 || at + len > payload.len() {
            return Err(RtnlError::Malformed("attribute length out of bounds"));
        }
        let value = &payload[at + 4..at + len];
        match kind {
            IFLA_IFNAME => {
                let raw = value.split(|&c| c == 0).next().unwrap_or_default();
                name = Some(String::from_utf8_lossy(raw).into_owned());
            }
            IFLA_OPERSTATE => operstate = value.first().copied(),
            IFLA_STATS64 => stats64 = Some(value),
            IFLA_STATS => stats32 = Some(value),
            _ => {}
        }
        at += align4(len);
    }
    let Some(device) = name else {
        return Ok(None);
    };
    // struct rtnl_link_stats64 / rtnl_link_stats: rx_packets, tx_packets, rx_bytes, tx_bytes,
    // rx_errors, tx_errors, rx_dropped, tx_dropped, ... (the same order, u64 or u32 fields).
    let counters: [u64; 8] = if let Some(v) = stats64 {
        let mut c = [0; 8];
        for (i, slot) in c.iter_mut().enumerate() {
            *slot = u64_at(v, i * 8).ok_or(RtnlError::Malformed("short IFLA_STATS64"))?;
        }
        c
    } else if let Some(v) = stats32 {
        let mut c = [0; 8];
        for (i, slot) in c.iter_mut().enumerate() {
            *slot = u32_at(v, i * 4).ok_or(RtnlError::Malformed("short IFLA_STATS"))? as u64;
        }
        c
    } else {
        [0; 8]
    };
    Ok(Some(InterfaceStats {
        device,
        up: is_up(operstate, flags),
        rx_packets: counters[0],
        tx_packets: counters[1],
        rx_bytes: counters[2],
        tx_bytes: counters[3],
        rx_dropped: counters[6],
        tx_dropped: counters[7],
    }))
}

/// Up as an operator reads `ip link`: operational state `UP`, or state `UNKNOWN` (drivers
/// without operstate: `dummy`, `lo`, many tunnels) with the flags `UP` and `LOWER_UP`.
pub fn is_up(operstate: Option<u8>, flags: u32) -> bool {
    match operstate {
        Some(IF_OPER_UP) => true,
        Some(IF_OPER_UNKNOWN) | None => flags & IFF_UP != 0 && flags & IFF_LOWER_UP != 0,
        Some(_) => false,
    }
}

/// A `NETLINK_ROUTE` socket, created in (and bound to) the namespace of the thread that opened it.
pub struct LinkSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl LinkSocket {
    /// Opens the socket in the calling thread's namespace; receives give up after `timeout`.
    pub fn open(timeout: Duration) -> Result<Self, RtnlError> {
        let err = |call| move |source| RtnlError::Socket { call, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(err("socket"))?;
        socket.bind_auto().map_err(err("bind"))?;
        let tv = nix::sys::time::TimeVal::new(
            timeout.as_secs() as _,
            timeout.subsec_micros().max(1) as _,
        );
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| RtnlError::Socket {
                call: "setsockopt(SO_RCVTIMEO)",
                source: e.into(),
            })?;
        Ok(LinkSocket {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Dumps every interface of the socket's namespace.
    pub fn links(&mut self) -> Result<Vec<InterfaceStats>, RtnlError> {
        for _ in 0..3 {
            self.seq = self.seq.wrapping_add(1);
            self.socket
                .send(&dump_request(self.seq), 0)
                .map_err(|source| RtnlError::Socket {
                    call: "send",
                    source,
                })?;
            let mut links = Vec::new();
            let mut interrupted = false;
            loop {
                let n = self
                    .socket
                    .recv(&mut &mut self.buf[..], 0)
                    .map_err(|source| RtnlError::Socket {
                        call: "recv",
                        source,
                    })?;
                let batch = parse_links(&self.buf[..n])?;
                links.extend(batch.links);
                interrupted |= batch.interrupted;
                if batch.done {
                    break;
                }
            }
            if !interrupted {
                return Ok(links);
            }
        }
        Err(RtnlError::Interrupted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends one attribute (header, value, padding).
    fn nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
    }

    /// One RTM_NEWLINK message as the kernel sends it in a dump.
    fn newlink(name: &str, flags: u32, oper: u8, stats: Option<[u64; 8]>) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.push(0); // ifi_family AF_UNSPEC
        payload.push(0); // pad
        payload.extend_from_slice(&1u16.to_ne_bytes()); // ifi_type ARPHRD_ETHER
        payload.extend_from_slice(&7i32.to_ne_bytes()); // ifi_index
        payload.extend_from_slice(&flags.to_ne_bytes()); // ifi_flags
        payload.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
        let mut ifname = name.as_bytes().to_vec();
        ifname.push(0);
        nla(&mut payload, IFLA_IFNAME, &ifname);
        nla(&mut payload, 4, &1500u32.to_ne_bytes()); // IFLA_MTU: ignored
        nla(&mut payload, IFLA_OPERSTATE, &[oper]);
        if let Some(s) = stats {
            // rtnl_link_stats64 has 24 or more u64 fields; the ones after the 8th are ignored.
            let mut v: Vec<u8> = s.iter().flat_map(|x| x.to_ne_bytes()).collect();
            v.extend_from_slice(&[0xee; 16 * 8]);
            nla(&mut payload, IFLA_STATS64, &v);
        }
        nla(&mut payload, 0x8000 | 18, &[0; 4]); // a nested attribute (IFLA_LINKINFO): ignored
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&99u32.to_ne_bytes()); // port id
        msg.extend_from_slice(&payload);
        msg
    }

    fn done() -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&20u32.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        msg.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&99u32.to_ne_bytes());
        msg.extend_from_slice(&0i32.to_ne_bytes());
        msg
    }

    #[test]
    fn request_is_a_getlink_dump() {
        let r = dump_request(5);
        assert_eq!(r.len(), 32);
        assert_eq!(u32_at(&r, 0), Some(32));
        assert_eq!(u16_at(&r, 4), Some(RTM_GETLINK));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(5));
        assert!(r[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn parses_names_counters_and_state() {
        let mut buf = newlink(
            "veth0",
            IFF_UP | IFF_LOWER_UP,
            IF_OPER_UP,
            Some([10, 20, 1000, 2000, 1, 2, 3, 4]),
        );
        buf.extend(newlink(
            "dummy0",
            IFF_UP | IFF_LOWER_UP,
            IF_OPER_UNKNOWN,
            None,
        ));
        buf.extend(newlink(
            "down0",
            0,
            2,
            Some([u64::MAX, 0, 0, 0, 0, 0, 0, 0]),
        ));
        buf.extend(done());
        let batch = parse_links(&buf).unwrap();
        assert!(batch.done);
        assert!(!batch.interrupted);
        assert_eq!(
            batch.links[0],
            InterfaceStats {
                device: "veth0".into(),
                up: true,
                rx_packets: 10,
                tx_packets: 20,
                rx_bytes: 1000,
                tx_bytes: 2000,
                rx_dropped: 3,
                tx_dropped: 4,
            }
        );
        assert_eq!(batch.links[1].device, "dummy0");
        assert!(batch.links[1].up);
        assert_eq!(batch.links[1].rx_bytes, 0);
        assert!(!batch.links[2].up);
        assert_eq!(batch.links[2].rx_packets, u64::MAX);
    }

    #[test]
    fn falls_back_to_32_bit_stats() {
        let mut msg = newlink("old0", IFF_UP, 2, None);
        let mut extra = Vec::new();
        let v: Vec<u8> = [1u32, 2, 3, 4, 5, 6, 7, 8]
            .iter()
            .flat_map(|x| x.to_ne_bytes())
            .collect();
        nla(&mut extra, IFLA_STATS, &v);
        msg.extend_from_slice(&extra);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        let batch = parse_links(&msg).unwrap();
        assert!(!batch.done);
        let l = &batch.links[0];
        assert_eq!(
            (l.rx_packets, l.tx_bytes, l.rx_dropped, l.tx_dropped),
            (1, 4, 7, 8)
        );
    }

    #[test]
    fn flags_interrupted_dumps_and_kernel_errors() {
        let mut msg = newlink("a", 0, 2, None);
        msg[6..8].copy_from_slice(&(NLM_F_MULTI | NLM_F_DUMP_INTR).to_ne_bytes());
        assert!(parse_links(&msg).unwrap().interrupted);

        let mut err = done();
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert!(matches!(parse_links(&err), Err(RtnlError::Kernel(_))));
    }

    #[test]
    fn rejects_truncated_messages_without_panicking() {
        let msg = newlink("veth0", 0, 6, Some([1; 8]));
        for cut in 0..msg.len() {
            let mut m = msg[..cut].to_vec();
            if cut >= 4 {
                // keep the header's length consistent with the cut so attributes get truncated
                m[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            let _ = parse_links(&m);
        }
        let mut bad = msg.clone();
        bad[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(parse_links(&bad).is_err());
    }

    #[test]
    fn up_follows_ip_link() {
        assert!(is_up(Some(IF_OPER_UP), 0));
        assert!(is_up(Some(IF_OPER_UNKNOWN), IFF_UP | IFF_LOWER_UP));
        assert!(!is_up(Some(IF_OPER_UNKNOWN), IFF_UP));
        assert!(!is_up(Some(2), IFF_UP | IFF_LOWER_UP)); // DOWN
        assert!(!is_up(Some(7), IFF_UP)); // DORMANT
    }
}
