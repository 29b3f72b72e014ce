//! Interface counters over rtnetlink: the `RTM_GETLINK` dump request and its `RTM_NEWLINK`
//! replies, encoded and decoded with netlink-packet-route, read into [`InterfaceStats`].
//!
//! Values are the ones `ip -s -j link` prints: `IFLA_STATS64` (or the 32-bit `IFLA_STATS` on
//! kernels without it) and the operational state. Only the four attributes used here are parsed:
//! an attribute the codec does not understand on some link kind (tunnels, VFs, new kernels) does
//! not cost the namespace its interface series.

use netlink_packet_core::{
    DecodeError, ErrorContext, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, Nla, NlasIterator, ParseableParametrized,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    LinkAttribute, LinkFlags, LinkHeader, LinkMessage, LinkMessageBuffer, State, Stats, Stats64,
};

use crate::model::InterfaceStats;

/// The request's name in errors, by kernel constant.
pub(crate) const REQUEST: &str = "RTM_GETLINK";

/// The netlink message type of the replies (`RTM_NEWLINK`), from the codec.
pub(crate) fn reply_type() -> u16 {
    RouteNetlinkMessage::NewLink(LinkMessage::default()).message_type()
}

/// Serialises an `RTM_GETLINK` dump of every interface (`AF_UNSPEC`) into `out` (cleared first).
pub(crate) fn emit_dump_request(out: &mut Vec<u8>, sequence: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = sequence;
    let payload = RouteNetlinkMessage::GetLink(LinkMessage::default());
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    msg.finalize();
    out.clear();
    out.resize(msg.buffer_len(), 0);
    msg.serialize(out);
}

/// The attribute kinds read here, as the codec numbers them.
fn wanted(kind: u16) -> bool {
    [
        LinkAttribute::IfName(String::new()),
        LinkAttribute::OperState(State::Unknown),
        LinkAttribute::Stats64(Stats64::default()),
        LinkAttribute::Stats(Stats::default()),
    ]
    .iter()
    .any(|a| a.kind() == kind)
}

/// Decodes one `RTM_NEWLINK` payload (`struct ifinfomsg` and attributes); `None` when it names
/// no interface.
pub(crate) fn decode_link(payload: &[u8]) -> Result<Option<InterfaceStats>, DecodeError> {
    let header = LinkHeader::parse(payload).context("RTM_NEWLINK: short ifinfomsg")?;
    let attributes = payload
        .get(size_of::<LinkMessageBuffer>()..)
        .unwrap_or_default();
    let mut name = None;
    let mut state = None;
    let mut stats64 = None;
    let mut stats32 = None;
    for nla in NlasIterator::new(attributes) {
        let nla = nla.context("RTM_NEWLINK: attribute length out of bounds")?;
        if !wanted(nla.kind()) {
            continue;
        }
        match LinkAttribute::parse_with_param(&nla, header.interface_family)? {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::OperState(s) => state = Some(s),
            LinkAttribute::Stats64(s) => stats64 = Some(s),
            LinkAttribute::Stats(s) => stats32 = Some(s),
            _ => {}
        }
    }
    let Some(device) = name else {
        return Ok(None);
    };
    let up = is_up(state, header.flags);
    Ok(Some(match (stats64, stats32) {
        (Some(s), _) => InterfaceStats {
            device,
            up,
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            rx_dropped: s.rx_dropped,
            tx_dropped: s.tx_dropped,
        },
        (None, Some(s)) => InterfaceStats {
            device,
            up,
            rx_packets: s.rx_packets.into(),
            tx_packets: s.tx_packets.into(),
            rx_bytes: s.rx_bytes.into(),
            tx_bytes: s.tx_bytes.into(),
            rx_dropped: s.rx_dropped.into(),
            tx_dropped: s.tx_dropped.into(),
        },
        (None, None) => InterfaceStats {
            device,
            up,
            rx_packets: 0,
            tx_packets: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_dropped: 0,
            tx_dropped: 0,
        },
    }))
}

/// Up as an operator reads `ip link`: operational state `UP`, or state `UNKNOWN` (drivers
/// without operstate: `dummy`, `lo`, many tunnels) with the flags `UP` and `LOWER_UP`.
pub(crate) fn is_up(state: Option<State>, flags: LinkFlags) -> bool {
    match state {
        Some(State::Up) => true,
        Some(State::Unknown) | None => flags.contains(LinkFlags::Up | LinkFlags::LowerUp),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    //! Byte fixtures built by hand from `include/uapi/linux/if_link.h` and `rtnetlink.h` (the
    //! numbers are literals on purpose: they check the codec, not repeat it).

    use super::*;
    use crate::netlink::wire::{self, Part};

    const RTM_NEWLINK: u16 = 16;
    const NLMSG_DONE: u16 = 3;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_MULTI: u16 = 0x2;
    const NLM_F_DUMP_INTR: u16 = 0x10;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_STATS: u16 = 7;
    const IFLA_OPERSTATE: u16 = 16;
    const IFLA_STATS64: u16 = 23;
    const IFF_UP: u32 = 0x1;
    const IFF_LOWER_UP: u32 = 0x1_0000;
    const IF_OPER_UNKNOWN: u8 = 0;
    const IF_OPER_DOWN: u8 = 2;
    const IF_OPER_UP: u8 = 6;

    fn align4(n: usize) -> usize {
        (n + 3) & !3
    }

    /// Appends one attribute (header, value, padding).
    fn nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
    }

    /// The payload of one RTM_NEWLINK message as the kernel sends it in a dump.
    fn newlink_payload(name: &str, flags: u32, oper: u8, stats: Option<[u64; 8]>) -> Vec<u8> {
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
            v.extend_from_slice(&[0xee; 17 * 8]);
            nla(&mut payload, IFLA_STATS64, &v);
        }
        // IFLA_LINKINFO, nested, with a body the codec cannot parse: skipped, not an error.
        nla(&mut payload, 0x8000 | 18, &[0xff; 4]);
        payload
    }

    fn message(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&99u32.to_ne_bytes()); // port id
        msg.extend_from_slice(payload);
        msg
    }

    fn newlink(name: &str, flags: u32, oper: u8, stats: Option<[u64; 8]>) -> Vec<u8> {
        message(
            RTM_NEWLINK,
            NLM_F_MULTI,
            &newlink_payload(name, flags, oper, stats),
        )
    }

    /// Decodes a datagram as the client does: links, whether it ended, whether interrupted.
    fn decode(buf: &[u8]) -> Result<(Vec<InterfaceStats>, bool, bool), String> {
        let (mut links, mut done, mut interrupted) = (Vec::new(), false, false);
        for item in wire::messages(buf, reply_type()) {
            match item.map_err(|e| e.to_string())?.part {
                Part::Data { flags, payload } => {
                    interrupted |= flags & NLM_F_DUMP_INTR != 0;
                    links.extend(decode_link(payload).map_err(|e| e.to_string())?);
                }
                Part::Done(0) => done = true,
                Part::Done(code) | Part::Error(code) => return Err(format!("errno {code}")),
                _ => {}
            }
        }
        Ok((links, done, interrupted))
    }

    #[test]
    fn request_is_a_getlink_dump() {
        let mut r = Vec::new();
        emit_dump_request(&mut r, 5);
        assert_eq!(r.len(), 32);
        assert_eq!(r[0..4], 32u32.to_ne_bytes());
        assert_eq!(r[4..6], 18u16.to_ne_bytes()); // RTM_GETLINK
        assert_eq!(r[6..8], 0x301u16.to_ne_bytes()); // NLM_F_REQUEST | NLM_F_DUMP
        assert_eq!(r[8..12], 5u32.to_ne_bytes());
        assert!(r[12..].iter().all(|&b| b == 0), "{r:?}");
        assert_eq!(reply_type(), RTM_NEWLINK);
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
            IF_OPER_DOWN,
            Some([u64::MAX, 0, 0, 0, 0, 0, 0, 0]),
        ));
        buf.extend(message(NLMSG_DONE, NLM_F_MULTI, &0i32.to_ne_bytes()));
        let (links, done, interrupted) = decode(&buf).unwrap();
        assert!(done);
        assert!(!interrupted);
        assert_eq!(
            links[0],
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
        assert_eq!(links[1].device, "dummy0");
        assert!(links[1].up);
        assert_eq!(links[1].rx_bytes, 0);
        assert!(!links[2].up);
        assert_eq!(links[2].rx_packets, u64::MAX);
    }

    #[test]
    fn falls_back_to_32_bit_stats() {
        let mut payload = newlink_payload("old0", IFF_UP, IF_OPER_DOWN, None);
        let v: Vec<u8> = (1u32..=23).flat_map(|x| x.to_ne_bytes()).collect();
        nla(&mut payload, IFLA_STATS, &v);
        let (links, done, _) = decode(&message(RTM_NEWLINK, NLM_F_MULTI, &payload)).unwrap();
        assert!(!done);
        let l = &links[0];
        assert_eq!(
            (l.rx_packets, l.tx_bytes, l.rx_dropped, l.tx_dropped),
            (1, 4, 7, 8)
        );
    }

    #[test]
    fn flags_interrupted_dumps_and_kernel_errors() {
        let msg = message(
            RTM_NEWLINK,
            NLM_F_MULTI | NLM_F_DUMP_INTR,
            &newlink_payload("a", 0, IF_OPER_DOWN, None),
        );
        assert!(decode(&msg).unwrap().2);
        let err = message(NLMSG_ERROR, 0, &(-1i32).to_ne_bytes());
        assert!(decode(&err).is_err());
    }

    #[test]
    fn rejects_truncated_messages_without_panicking() {
        let msg = newlink("veth0", 0, IF_OPER_UP, Some([1; 8]));
        for cut in 0..msg.len() {
            let mut m = msg[..cut].to_vec();
            if cut >= 4 {
                // keep the header's length consistent with the cut so attributes get truncated
                m[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            let _ = decode(&m);
        }
        let mut bad = msg.clone();
        bad[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn up_follows_ip_link() {
        let flags = LinkFlags::from_bits_retain;
        assert!(is_up(Some(State::Up), flags(0)));
        assert!(is_up(Some(State::Unknown), flags(IFF_UP | IFF_LOWER_UP)));
        assert!(is_up(None, flags(IFF_UP | IFF_LOWER_UP)));
        assert!(!is_up(Some(State::Unknown), flags(IFF_UP)));
        assert!(!is_up(Some(State::Down), flags(IFF_UP | IFF_LOWER_UP)));
        assert!(!is_up(Some(State::Dormant), flags(IFF_UP)));
    }
}
