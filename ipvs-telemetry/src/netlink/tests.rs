//! Codec tests on hand-built byte buffers (every byte written here, not by the codec) and on
//! replies captured from the lab kernels (`fixtures/`).

use std::net::IpAddr;

use netlink_packet_core::{Emitable, NlaBuffer, Parseable};

use super::*;
use crate::model::{
    Destination, Family, ForwardMethod, Protocol, Service, ServiceAddress, TunnelType,
};

/// One attribute: length, type, value, padding to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&((value.len() + 4) as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(value);
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b
}

fn u16n(v: u16) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn u32n(v: u32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn u64n(v: u64) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn addr16(ip: IpAddr) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    match ip {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b.copy_from_slice(&a.octets()),
    }
    b
}

/// A `STATS` block: u32 conns/packets/rates, u64 bytes, as the kernel's `ip_vs_genl_fill_stats`.
fn stats32(base: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(nla(1, &u32n(base + 1))); // CONNS
    b.extend(nla(2, &u32n(base + 2))); // INPKTS
    b.extend(nla(3, &u32n(base + 3))); // OUTPKTS
    b.extend(nla(4, &u64n(base as u64 + 4))); // INBYTES
    b.extend(nla(5, &u64n(base as u64 + 5))); // OUTBYTES
    for k in 6..=10 {
        b.extend(nla(k, &u32n(base + k as u32))); // CPS..OUTBPS
    }
    b
}

/// A `STATS64` block: every value u64, with a PAD attribute first as `nla_put_u64_64bit` may add.
fn stats64(base: u64) -> Vec<u8> {
    let mut b = nla(11, &[]); // PAD
    for k in 1..=10u16 {
        b.extend(nla(k, &u64n(base + k as u64)));
    }
    b
}

fn service_v4_tcp(with_stats64: bool) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend(nla(1, &u16n(2))); // AF_INET
    s.extend(nla(2, &u16n(6))); // TCP
    s.extend(nla(3, &addr16("10.0.0.1".parse().unwrap())));
    s.extend(nla(4, &80u16.to_be_bytes())); // port, network order
    s.extend(nla(6, b"wrr\0"));
    let mut flags = u32n(0x0001 | 0x0002); // persistent | hashed
    flags.extend(u32n(u32::MAX));
    s.extend(nla(7, &flags));
    s.extend(nla(8, &u32n(300))); // timeout
    s.extend(nla(9, &[255, 255, 255, 0])); // netmask, network order
    s.extend(nla(10, &stats32(100)));
    if with_stats64 {
        s.extend(nla(12, &stats64(1 << 33)));
    }
    s.extend(nla(99, &[1, 2, 3])); // unknown to this build
    s
}

fn parse_service(bytes: &[u8]) -> Vec<IpvsServiceAttribute> {
    parse_nested(bytes, IpvsServiceAttribute::parse).unwrap()
}

fn parse_dest(bytes: &[u8]) -> Vec<IpvsDestAttribute> {
    parse_nested(bytes, IpvsDestAttribute::parse).unwrap()
}

fn emit_all<T: Nla>(attrs: &[T]) -> Vec<u8> {
    let mut out = vec![0u8; attrs.buffer_len()];
    attrs.emit(&mut out);
    out
}

use netlink_packet_core::Nla;

#[test]
fn service_prefers_stats64_and_keeps_unknown_attributes() {
    let bytes = service_v4_tcp(true);
    let attrs = parse_service(&bytes);
    assert!(matches!(attrs.last(), Some(IpvsServiceAttribute::Other(nla)) if nla.kind() == 99));
    assert!(attrs.contains(&IpvsServiceAttribute::Port(80)));
    // Faithful: emitting gives the kernel's bytes back.
    assert_eq!(emit_all(&attrs), bytes);
    let svc = Service::try_from(attrs.as_slice()).unwrap();
    assert_eq!(svc.family, Family::Inet);
    assert_eq!(
        svc.address,
        ServiceAddress::Inet {
            protocol: Protocol::Tcp,
            address: "10.0.0.1".parse().unwrap(),
            port: 80
        }
    );
    assert_eq!(svc.scheduler, "wrr");
    assert_eq!(svc.flags, 3);
    assert_eq!(svc.timeout, 300);
    assert_eq!(svc.netmask, 0xffff_ff00);
    // Values above 2^32 come from STATS64.
    assert_eq!(svc.stats.conns, (1 << 33) + 1);
    assert_eq!(svc.stats.inbytes, (1 << 33) + 4);
    assert_eq!(svc.stats.outbps, (1 << 33) + 10);
}

#[test]
fn service_falls_back_to_32_bit_stats() {
    let attrs = parse_service(&service_v4_tcp(false));
    let svc = Service::try_from(attrs.as_slice()).unwrap();
    assert_eq!(svc.stats.conns, 101);
    assert_eq!(svc.stats.inpkts, 102);
    assert_eq!(svc.stats.outpkts, 103);
    assert_eq!(svc.stats.inbytes, 104);
    assert_eq!(svc.stats.outbytes, 105);
    assert_eq!(svc.stats.cps, 106);
    assert_eq!(svc.stats.outbps, 110);
    // 32-bit values keep their width on the wire.
    let Some(IpvsServiceAttribute::Stats(s)) = attrs
        .iter()
        .find(|a| matches!(a, IpvsServiceAttribute::Stats(_)))
    else {
        panic!("no STATS")
    };
    assert_eq!(s[0], IpvsStatsAttribute::Conns(StatsValue::U32(101)));
    assert_eq!(s[3], IpvsStatsAttribute::InBytes(StatsValue::U64(104)));
}

#[test]
fn ipv6_and_fwmark_services() {
    let mut s = Vec::new();
    s.extend(nla(1, &u16n(10))); // AF_INET6
    s.extend(nla(2, &u16n(17))); // UDP
    s.extend(nla(3, &addr16("2001:db8::1".parse().unwrap())));
    s.extend(nla(4, &53u16.to_be_bytes()));
    s.extend(nla(6, b"sh\0"));
    s.extend(nla(9, &u32n(64))); // IPv6 netmask: a prefix length in host order
    s.extend(nla(12, &stats64(0)));
    let svc = Service::try_from(parse_service(&s).as_slice()).unwrap();
    assert_eq!(svc.family, Family::Inet6);
    assert_eq!(
        svc.address,
        ServiceAddress::Inet {
            protocol: Protocol::Udp,
            address: "2001:db8::1".parse().unwrap(),
            port: 53
        }
    );
    assert_eq!(svc.netmask, 64);

    for (af, family) in [(2u16, Family::Inet), (10, Family::Inet6)] {
        let mut s = Vec::new();
        s.extend(nla(1, &u16n(af)));
        s.extend(nla(5, &u32n(260))); // FWMARK: no protocol/address/port
        s.extend(nla(6, b"rr\0"));
        s.extend(nla(12, &stats64(7)));
        let svc = Service::try_from(parse_service(&s).as_slice()).unwrap();
        assert_eq!(svc.family, family);
        assert_eq!(svc.address, ServiceAddress::Fwmark { mark: 260 });
        assert_eq!(svc.stats.conns, 8);
    }
}

fn dest_v4(with_family: bool) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(nla(1, &addr16("192.168.1.2".parse().unwrap())));
    d.extend(nla(2, &8080u16.to_be_bytes()));
    d.extend(nla(3, &u32n(2))); // tunnel
    d.extend(nla(4, &u32n(0))); // weight 0
    d.extend(nla(5, &u32n(1000))); // upper
    d.extend(nla(6, &u32n(10))); // lower
    d.extend(nla(7, &u32n(3)));
    d.extend(nla(8, &u32n(4)));
    d.extend(nla(9, &u32n(5)));
    d.extend(nla(10, &stats32(0)));
    if with_family {
        d.extend(nla(11, &u16n(2)));
    }
    d.extend(nla(12, &stats64(u32::MAX as u64)));
    d.extend(nla(13, &[1])); // GUE
    d.extend(nla(14, &6080u16.to_be_bytes()));
    d.extend(nla(15, &u16n(1)));
    d
}

#[test]
fn destination_fields_and_family_fallback() {
    let bytes = dest_v4(false);
    let attrs = parse_dest(&bytes);
    assert_eq!(emit_all(&attrs), bytes);
    let d = Destination::try_from((attrs.as_slice(), Family::Inet)).unwrap();
    assert_eq!(d.family, Family::Inet);
    assert_eq!(d.address, "192.168.1.2".parse::<IpAddr>().unwrap());
    assert_eq!(d.port, 8080);
    assert_eq!(d.forward, ForwardMethod::Tunnel);
    assert_eq!(d.weight, 0);
    assert_eq!((d.upper_threshold, d.lower_threshold), (1000, 10));
    assert_eq!(
        (
            d.active_connections,
            d.inactive_connections,
            d.persistent_connections
        ),
        (3, 4, 5)
    );
    assert_eq!(d.tunnel_type, Some(TunnelType::Gue));
    assert_eq!(d.tunnel_port, Some(6080));
    assert_eq!(d.tunnel_flags, Some(1));
    assert_eq!(d.stats.conns, u32::MAX as u64 + 1);
    assert_eq!(d.stats.inbytes, u32::MAX as u64 + 4);

    // An IPv4 real server behind an IPv6 service says so with ADDR_FAMILY.
    let attrs = parse_dest(&dest_v4(true));
    let d = Destination::try_from((attrs.as_slice(), Family::Inet6)).unwrap();
    assert_eq!(d.family, Family::Inet);
    assert_eq!(d.address, "192.168.1.2".parse::<IpAddr>().unwrap());
    // Without it, the service's family decides how the 16 bytes are read.
    let attrs = parse_dest(&dest_v4(false));
    let d = Destination::try_from((attrs.as_slice(), Family::Inet6)).unwrap();
    assert_eq!(d.address, "c0a8:102::".parse::<IpAddr>().unwrap());
}

#[test]
fn malformed_attributes_are_named() {
    // A 3-byte port.
    let mut s = nla(1, &u16n(2));
    s.extend(nla(4, &[0, 80, 0]));
    let err = parse_nested(&s, IpvsServiceAttribute::parse).unwrap_err();
    assert!(err.to_string().contains("IPVS_SVC_ATTR_PORT"), "{err}");
    // A STATS64 counter of 3 bytes, nested in a service.
    let mut s = nla(1, &u16n(2));
    s.extend(nla(12, &nla(1, &[1, 2, 3])));
    let err = parse_nested(&s, IpvsServiceAttribute::parse).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("IPVS_SVC_ATTR_STATS64") && msg.contains("IPVS_STATS_ATTR_CONNS"),
        "{msg}"
    );
    // Missing attributes.
    let attrs = parse_service(&nla(2, &u16n(6)));
    let err = Service::try_from(attrs.as_slice()).unwrap_err();
    assert_eq!(err.attribute, "IPVS_SVC_ATTR_AF");
    let err = Service::try_from(parse_service(&nla(1, &u16n(7))).as_slice()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "IPVS_SVC_ATTR_AF: unsupported address family 7"
    );
    // An IPv6 address of 4 bytes.
    let mut s = nla(1, &u16n(10));
    s.extend(nla(2, &u16n(6)));
    s.extend(nla(3, &[1, 2, 3, 4]));
    s.extend(nla(4, &80u16.to_be_bytes()));
    s.extend(nla(6, b"rr\0"));
    s.extend(nla(12, &stats64(0)));
    let err = Service::try_from(parse_service(&s).as_slice()).unwrap_err();
    assert_eq!(err.attribute, "IPVS_SVC_ATTR_ADDR");
    // A truncated attribute header.
    assert!(parse_nested(&[8, 0, 1], IpvsServiceAttribute::parse).is_err());
}

/// A netlink message: header (length, type, flags, seq, port), genl header, attributes.
fn nlmsg(ty: u16, flags: u16, seq: u32, port: u32, cmd: u8, attrs: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(u32n((16 + 4 + attrs.len()) as u32));
    b.extend(u16n(ty));
    b.extend(u16n(flags));
    b.extend(u32n(seq));
    b.extend(u32n(port));
    b.extend([cmd, 1, 0, 0]);
    b.extend_from_slice(attrs);
    b
}

fn nlmsg_code(ty: u16, seq: u32, port: u32, code: i32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(u32n(20));
    b.extend(u16n(ty));
    b.extend(u16n(2)); // NLM_F_MULTI
    b.extend(u32n(seq));
    b.extend(u32n(port));
    b.extend(code.to_ne_bytes());
    b
}

#[test]
fn datagram_with_services_and_done() {
    let family = 0x23;
    let mut dg = nlmsg(family, 2, 7, 99, 1, &nla(1, &service_v4_tcp(true)));
    dg.extend(nlmsg(family, 2, 7, 99, 1, &nla(1, &service_v4_tcp(false))));
    dg.extend(nlmsg_code(3, 7, 99, 0)); // NLMSG_DONE
    let items: Vec<_> = wire::messages(&dg, family).map(|r| r.unwrap()).collect();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.sequence == 7 && i.port == 99));
    assert!(matches!(items[2].part, wire::Part::Done(0)));
    let msgs = decode_datagram(&dg, family).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].cmd, IpvsCmd::NewService);
    let IpvsAttribute::Service(attrs) = &msgs[0].attributes[0] else {
        panic!("not a service")
    };
    assert_eq!(
        Service::try_from(attrs.as_slice()).unwrap().stats.conns,
        (1 << 33) + 1
    );
    // An error reply carries the negative errno.
    let err = nlmsg_code(2, 8, 99, -libc::EPERM);
    let items: Vec<_> = wire::messages(&err, family).map(|r| r.unwrap()).collect();
    assert!(matches!(items[0].part, wire::Part::Error(c) if c == -libc::EPERM));
    // A length beyond the datagram is an error, not a panic.
    let mut bad = dg.clone();
    bad[0] = 0xff;
    bad[1] = 0x7f;
    assert!(decode_datagram(&bad, family).is_err());
}

#[test]
fn info_and_config_replies() {
    let family = 0x23;
    let mut a = nla(1, &u32n(0x010201));
    a.extend(nla(2, &u32n(4096)));
    let msgs = decode_datagram(&nlmsg(family, 0, 1, 1, 14, &a), family).unwrap();
    assert_eq!(msgs[0].cmd, IpvsCmd::SetInfo);
    let info = crate::model::Info::try_from(msgs[0].attributes.as_slice()).unwrap();
    assert_eq!(
        (info.version_string().as_str(), info.conn_tab_size),
        ("1.2.1", 4096)
    );

    let mut a = nla(4, &u32n(900));
    a.extend(nla(5, &u32n(120)));
    a.extend(nla(6, &u32n(300)));
    let msgs = decode_datagram(&nlmsg(family, 0, 1, 1, 12, &a), family).unwrap();
    let t = crate::model::Timeouts::try_from(msgs[0].attributes.as_slice()).unwrap();
    assert_eq!((t.tcp, t.tcp_fin, t.udp), (900, 120, 300));
}

#[test]
fn daemon_attributes_round_trip() {
    let mut d = nla(1, &u32n(1));
    d.extend(nla(2, b"eth0\0"));
    d.extend(nla(3, &u32n(5)));
    d.extend(nla(4, &u16n(1472)));
    d.extend(nla(5, &[224, 0, 0, 81]));
    d.extend(nla(7, &u16n(8848)));
    d.extend(nla(8, &[1]));
    let attrs = parse_nested(&d, IpvsDaemonAttribute::parse).unwrap();
    assert_eq!(
        attrs[1],
        IpvsDaemonAttribute::MulticastInterface("eth0".into())
    );
    assert_eq!(
        attrs[4],
        IpvsDaemonAttribute::MulticastGroup([224, 0, 0, 81])
    );
    assert_eq!(emit_all(&attrs), d);
}

#[test]
fn commands_round_trip_and_unknown_is_other() {
    for n in 0..=255u8 {
        assert_eq!(u8::from(IpvsCmd::from(n)), n);
    }
    assert_eq!(IpvsCmd::from(0), IpvsCmd::Other(0));
    assert_eq!(IpvsCmd::from(200), IpvsCmd::Other(200));
}

#[test]
fn get_dest_request_bytes() {
    // What the client sends for the destinations of TCP 10.0.0.1:80.
    let key = vec![
        IpvsServiceAttribute::AddressFamily(2),
        IpvsServiceAttribute::Protocol(6),
        IpvsServiceAttribute::Address(addr16("10.0.0.1".parse().unwrap())),
        IpvsServiceAttribute::Port(80),
    ];
    let msg = IpvsMessage {
        cmd: IpvsCmd::GetDest,
        attributes: vec![IpvsAttribute::Service(key)],
    };
    let mut out = Vec::new();
    wire::emit_request(&mut out, msg, 0x23, 5, wire::Kind::Dump);
    let mut inner = nla(1, &u16n(2));
    inner.extend(nla(2, &u16n(6)));
    inner.extend(nla(3, &addr16("10.0.0.1".parse().unwrap())));
    inner.extend(nla(4, &[0, 80]));
    // NLM_F_REQUEST | NLM_F_DUMP, seq 5, port 0 (the kernel fills it in), cmd 8, version 1.
    assert_eq!(out, nlmsg(0x23, 0x301, 5, 0, 8, &nla(1, &inner)));
}

#[test]
fn controller_reply_gives_the_ipvs_id_only() {
    let mut a = nla(1, &u16n(0x24));
    a.extend(nla(2, b"IPVS\0"));
    let mut payload = vec![1, 2, 0, 0];
    payload.extend(&a);
    assert_eq!(
        ctrl::family_id_if_named(&payload, "IPVS").unwrap(),
        Some(0x24)
    );
    let mut b = nla(1, &u16n(0x25));
    b.extend(nla(2, b"IPVSX\0"));
    let mut payload = vec![1, 2, 0, 0];
    payload.extend(&b);
    assert_eq!(ctrl::family_id_if_named(&payload, "IPVS").unwrap(), None);
}

#[test]
fn errors_map_to_reasons_with_one_line() {
    use crate::model::ErrorReason;
    let e = Error::from_kernel("IPVS_CMD_GET_SERVICE", -libc::EPERM);
    let f = e.failure();
    assert_eq!(f.reason, ErrorReason::MissingCapNetAdmin);
    assert_eq!(f.reason.as_str(), "missing_cap_net_admin");
    assert_eq!(
        f.message,
        "IPVS_CMD_GET_SERVICE needs CAP_NET_ADMIN in the initial user namespace"
    );
    assert_eq!(
        Error::ModuleNotLoaded.failure().reason,
        ErrorReason::ModuleNotLoaded
    );
    assert_eq!(
        Error::ModuleNotLoaded.to_string(),
        "ip_vs module not loaded"
    );
    let f = Error::from_kernel("IPVS_CMD_GET_DEST", -libc::ENOMEM).failure();
    assert_eq!(f.reason, ErrorReason::Io);
    assert!(
        f.message.starts_with("IPVS_CMD_GET_DEST failed: "),
        "{}",
        f.message
    );
    assert!(!f.message.contains('\n'));
    let t = Error::Timeout {
        request: "IPVS_CMD_GET_INFO",
        timeout: std::time::Duration::from_secs(1),
    };
    assert_eq!(t.failure().reason, ErrorReason::Timeout);
}

#[test]
fn nla_buffer_kind_masks_flags() {
    // A nested flag on a STATS64 attribute does not hide it.
    let mut b = nla(12, &stats64(0));
    b[3] |= 0x80; // NLA_F_NESTED in the high byte of the type (little endian)
    let attr = IpvsServiceAttribute::parse(&NlaBuffer::new(&b[..])).unwrap();
    assert!(matches!(attr, IpvsServiceAttribute::Stats64(_)));
}

/// Replies captured from the lab kernels (`capture_fixtures` in tests/tests/netlink.rs): every
/// datagram of one `snapshot`, named `<n>-<request>.bin`, and the JSON that run printed.
mod captured {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::model::{Info, IpvsState, Timeouts};

    fn kernels() -> Vec<PathBuf> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/netlink/fixtures");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .expect("fixtures directory")
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        assert!(
            dirs.len() >= 2,
            "fixtures of both lab kernels expected in {root:?}"
        );
        dirs
    }

    /// Datagrams of one capture: (request name, sequence number of its messages, bytes).
    fn datagrams(dir: &PathBuf) -> Vec<(String, u32, Vec<u8>)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                let name = p.file_stem().unwrap().to_str().unwrap();
                let request = name.split_once('-').unwrap().1.to_string();
                let seq = u32::from_ne_bytes(bytes[8..12].try_into().unwrap());
                (request, seq, bytes)
            })
            .collect()
    }

    fn family_of(bytes: &[u8]) -> u16 {
        u16::from_ne_bytes([bytes[4], bytes[5]])
    }

    /// Rebuilds the state from the captured bytes alone, the way the client does: the services
    /// dump has sequence number S, the destinations of service i were asked with S + 1 + i.
    fn rebuild(dir: &PathBuf) -> IpvsState {
        let mut info = None;
        let mut timeouts = None;
        let mut services: Vec<Service> = Vec::new();
        let mut services_seq = 0;
        let mut dests: BTreeMap<u32, Vec<Vec<IpvsDestAttribute>>> = BTreeMap::new();
        for (request, seq, bytes) in datagrams(dir) {
            if request == "CTRL_CMD_GETFAMILY" {
                continue;
            }
            let msgs = decode_datagram(&bytes, family_of(&bytes)).unwrap();
            for m in msgs {
                match request.as_str() {
                    "IPVS_CMD_GET_INFO" => {
                        info = Some(Info::try_from(m.attributes.as_slice()).unwrap())
                    }
                    "IPVS_CMD_GET_CONFIG" => {
                        timeouts = Some(Timeouts::try_from(m.attributes.as_slice()).unwrap())
                    }
                    "IPVS_CMD_GET_SERVICE" => {
                        services_seq = seq;
                        let IpvsAttribute::Service(a) = &m.attributes[0] else {
                            panic!("not a service: {m:?}")
                        };
                        services.push(Service::try_from(a.as_slice()).unwrap());
                    }
                    "IPVS_CMD_GET_DEST" => {
                        let IpvsAttribute::Dest(a) = &m.attributes[0] else {
                            panic!("not a destination: {m:?}")
                        };
                        dests.entry(seq).or_default().push(a.clone());
                    }
                    other => panic!("unexpected capture {other}"),
                }
            }
        }
        for (i, svc) in services.iter_mut().enumerate() {
            let seq = services_seq + 1 + i as u32;
            svc.destinations = dests
                .remove(&seq)
                .unwrap_or_default()
                .iter()
                .map(|a| Destination::try_from((a.as_slice(), svc.family)).unwrap())
                .collect();
        }
        assert!(dests.is_empty(), "destinations of no service: {dests:?}");
        IpvsState {
            info: info.unwrap(),
            timeouts: timeouts.unwrap(),
            services,
        }
    }

    /// The bytes of every kernel decode to exactly what the live snapshot printed.
    #[test]
    fn captured_replies_decode_to_the_live_snapshot() {
        for dir in kernels() {
            let state = rebuild(&dir);
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("snapshot.json")).unwrap()).unwrap();
            let live = &json["namespaces"][0]["ipvs"];
            if live.get("Ok").is_some() {
                // Captured before the versioned schema (issue 18): the model's own shape.
                assert_eq!(
                    &serde_json::to_value(&state).unwrap(),
                    &live["Ok"],
                    "{dir:?}"
                );
            } else {
                let ns = crate::model::NamespaceSnapshot {
                    netns: crate::model::NetnsId {
                        name: "host".into(),
                        dev: 0,
                        inode: 0,
                    },
                    ipvs: Ok(state.clone()),
                    context: Default::default(),
                    duration: Default::default(),
                    timestamp: std::time::SystemTime::UNIX_EPOCH,
                };
                let doc = crate::api::schema::namespace(&ns, None);
                assert_eq!(&serde_json::to_value(&doc.ipvs).unwrap(), live, "{dir:?}");
            }
            // The scenario's kinds are all there.
            let has = |f: &dyn Fn(&Service) -> bool| state.services.iter().any(f);
            assert!(has(&|s| s.family == crate::model::Family::Inet6
                && matches!(s.address, ServiceAddress::Inet { .. })));
            assert!(has(&|s| s.family == crate::model::Family::Inet6
                && matches!(s.address, ServiceAddress::Fwmark { mark: 7 })));
            assert!(has(&|s| matches!(
                s.address,
                ServiceAddress::Fwmark { mark: 260 }
            )));
            assert!(has(&|s| s
                .destinations
                .iter()
                .any(|d| d.tunnel_type == Some(TunnelType::Gue))));
            assert!(has(&|s| s.stats.outpkts > 0));
        }
    }

    /// Finds the first nested attribute `kind` inside `bytes[start..end]`: (value start, len).
    fn find(bytes: &[u8], start: usize, end: usize, kind: u16) -> Option<(usize, usize)> {
        let mut at = start;
        while at + 4 <= end {
            let len = u16::from_ne_bytes([bytes[at], bytes[at + 1]]) as usize;
            let k = u16::from_ne_bytes([bytes[at + 2], bytes[at + 3]]) & 0x3fff;
            if len < 4 {
                return None;
            }
            if k == kind {
                return Some((at + 4, len - 4));
            }
            at += (len + 3) & !3;
        }
        None
    }

    /// Counters above 2^32: a captured destination reply with its STATS64 values patched (no lab
    /// can push 2^32 packets): the decoded values are the 64-bit ones, not the 32-bit block's.
    #[test]
    fn stats64_above_2_pow_32_from_a_patched_capture() {
        for dir in kernels() {
            let (_, _, mut bytes) = datagrams(&dir)
                .into_iter()
                .find(|(r, _, b)| r == "IPVS_CMD_GET_DEST" && b.len() > 100)
                .expect("a destination reply");
            // netlink header 16 + genl header 4, then IPVS_CMD_ATTR_DEST (2).
            let (dest, dest_len) = find(&bytes, 20, bytes.len(), 2).unwrap();
            let (s64, s64_len) = find(&bytes, dest, dest + dest_len, 12).unwrap();
            let (s32, s32_len) = find(&bytes, dest, dest + dest_len, 10).unwrap();
            let patched = [(1u16, (1u64 << 32) + 5), (2, 1 << 40), (4, u64::MAX - 1)];
            for (kind, value) in patched {
                let (v, len) = find(&bytes, s64, s64 + s64_len, kind).unwrap();
                assert_eq!(len, 8);
                bytes[v..v + 8].copy_from_slice(&value.to_ne_bytes());
            }
            let (c32, _) = find(&bytes, s32, s32 + s32_len, 1).unwrap();
            let conns32 = u32::from_ne_bytes(bytes[c32..c32 + 4].try_into().unwrap());
            let family = family_of(&bytes);
            let msgs = decode_datagram(&bytes, family).unwrap();
            let IpvsAttribute::Dest(a) = &msgs[0].attributes[0] else {
                panic!()
            };
            let d = Destination::try_from((a.as_slice(), crate::model::Family::Inet)).unwrap();
            assert_eq!(d.stats.conns, (1 << 32) + 5);
            assert_eq!(d.stats.inpkts, 1 << 40);
            assert_eq!(d.stats.inbytes, u64::MAX - 1);
            assert_ne!(u64::from(conns32), d.stats.conns);
        }
    }
}

/// The client's fast path and the codec path give the same destination, or the fast path gives
/// up and leaves the message (and its precise error) to the codec.
mod fast_path {
    use super::*;
    use crate::netlink::fast;

    /// The generic-netlink payload of a destination reply: header, then `attrs`.
    fn payload(cmd: u8, attrs: &[u8]) -> Vec<u8> {
        let mut p = vec![cmd, 1, 0, 0];
        p.extend_from_slice(attrs);
        p
    }

    /// What the client's codec path makes of a payload.
    fn codec(payload: &[u8], family: Family) -> Result<Option<Destination>, String> {
        let m = wire::decode_ipvs(payload).map_err(|e| e.to_string())?;
        for a in &m.attributes {
            if let IpvsAttribute::Dest(attrs) = a {
                return Destination::try_from((attrs.as_slice(), family))
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
        }
        Ok(None)
    }

    /// Checks one payload: when the fast path answers, the codec agrees.
    fn check(payload: &[u8], family: Family) -> Option<Destination> {
        let fast = fast::destination(payload, family);
        if let Some(d) = &fast {
            assert_eq!(codec(payload, family).as_ref(), Ok(&Some(d.clone())));
        }
        fast
    }

    #[test]
    fn plain_replies_take_the_fast_path_with_the_codec_value() {
        for with_family in [false, true] {
            for family in [Family::Inet, Family::Inet6] {
                let p = payload(5, &nla(2, &dest_v4(with_family)));
                let d = check(&p, family).expect("plain reply on the fast path");
                assert_eq!(d.stats.conns, u32::MAX as u64 + 1);
                assert_eq!(d.tunnel_type, Some(TunnelType::Gue));
            }
        }
        // Without STATS64 the 32-bit block is read; unknown attributes and the nested flag on
        // the DEST attribute change nothing.
        let mut d = Vec::new();
        d.extend(nla(1, &addr16("fd00::2".parse().unwrap())));
        d.extend(nla(2, &80u16.to_be_bytes()));
        d.extend(nla(3, &u32n(0)));
        d.extend(nla(4, &u32n(7)));
        d.extend(nla(10, &stats32(100)));
        d.extend(nla(11, &u16n(libc::AF_INET6 as u16)));
        d.extend(nla(99, &[1, 2, 3]));
        let p = payload(5, &nla(2 | 0x8000, &d));
        let got = check(&p, Family::Inet6).expect("fast path");
        assert_eq!(got.address, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(got.weight, 7);
        assert_eq!((got.stats.conns, got.stats.inbytes), (101, 104));
    }

    #[test]
    fn unusual_or_malformed_replies_go_to_the_codec() {
        let dest = dest_v4(true);
        let mut cases: Vec<Vec<u8>> = vec![
            payload(5, &[]),                                         // no destination
            payload(15, &nla(2, &dest)),                             // an info reply
            payload(5, &[nla(2, &dest), nla(2, &dest)].concat()),    // two destinations
            payload(5, &[nla(4, &u32n(1)), nla(2, &dest)].concat()), // another attribute
            vec![5, 1],                                              // short header
        ];
        // A 3-byte port, a missing weight, a truncated attribute.
        let mut bad_port = dest.clone();
        bad_port.extend(nla(2, &[0, 80, 0]));
        cases.push(payload(5, &nla(2, &bad_port)));
        let no_weight: Vec<u8> = {
            let mut d = Vec::new();
            d.extend(nla(1, &addr16("10.0.0.1".parse().unwrap())));
            d.extend(nla(2, &80u16.to_be_bytes()));
            d.extend(nla(3, &u32n(0)));
            d.extend(nla(12, &stats64(1)));
            d
        };
        cases.push(payload(5, &nla(2, &no_weight)));
        let mut cut = payload(5, &nla(2, &dest));
        cut.truncate(cut.len() - 6);
        cases.push(cut);
        for p in &cases {
            assert_eq!(fast::destination(p, Family::Inet), None, "{p:?}");
        }
        // The codec still says what is wrong.
        assert!(
            codec(&payload(5, &nla(2, &no_weight)), Family::Inet)
                .unwrap_err()
                .contains("IPVS_DEST_ATTR_WEIGHT")
        );
    }

    /// Every single-byte change and every truncation of a reply: whatever the fast path accepts,
    /// the codec reads the same.
    #[test]
    fn mutated_replies_never_differ() {
        let base = payload(5, &nla(2, &dest_v4(true)));
        let mut accepted = 0;
        for i in 0..base.len() {
            for v in [0u8, 1, 2, 3, 4, 8, 0x80, 0xff, base[i].wrapping_add(1)] {
                let mut p = base.clone();
                p[i] = v;
                for family in [Family::Inet, Family::Inet6] {
                    accepted += usize::from(check(&p, family).is_some());
                }
            }
            check(&base[..i], Family::Inet);
        }
        assert!(
            accepted > base.len(),
            "the fast path accepted only {accepted}"
        );
    }

    /// Every destination message captured from the lab kernels takes the fast path.
    #[test]
    fn captured_destination_replies_take_the_fast_path() {
        let root =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/netlink/fixtures");
        let mut seen = 0;
        for kernel in std::fs::read_dir(&root).unwrap() {
            let dir = kernel.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&dir).unwrap() {
                let path = file.unwrap().path();
                if !path.to_string_lossy().ends_with("IPVS_CMD_GET_DEST.bin") {
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                let family_id = u16::from_ne_bytes([bytes[4], bytes[5]]);
                for item in wire::messages(&bytes, family_id) {
                    if let wire::Part::Data { payload, .. } = item.unwrap().part {
                        for family in [Family::Inet, Family::Inet6] {
                            assert!(check(payload, family).is_some(), "{path:?}");
                        }
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen >= 10, "only {seen} captured destinations");
    }
}
