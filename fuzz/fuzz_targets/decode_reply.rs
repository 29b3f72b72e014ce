//! Fuzzes the decoding of a received netlink datagram: splitting into messages, the IPVS codec,
//! the typed conversion, and re-emitting what was decoded (which must decode to the same value).
//! Never a panic, whatever the kernel (or anyone) sends.

#![no_main]

use ipvs_telemetry::model::{Destination, Family, Info, Service, Timeouts};
use ipvs_telemetry::netlink::{IpvsAttribute, IpvsMessage, decode_datagram};
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::Emitable;

/// The family id the seeds were captured with does not matter: messages of any type but the
/// netlink control types are decoded as IPVS.
const FAMILY: u16 = 0x23;

fuzz_target!(|data: &[u8]| {
    let family = data
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .filter(|t| *t >= 0x10)
        .unwrap_or(FAMILY);
    let Ok(messages) = decode_datagram(data, family) else {
        return;
    };
    for m in &messages {
        let _ = Info::try_from(m.attributes.as_slice());
        let _ = Timeouts::try_from(m.attributes.as_slice());
        for a in &m.attributes {
            match a {
                IpvsAttribute::Service(attrs) => {
                    let _ = Service::try_from(attrs.as_slice());
                }
                IpvsAttribute::Dest(attrs) => {
                    let _ = Destination::try_from((attrs.as_slice(), Family::Inet));
                    let _ = Destination::try_from((attrs.as_slice(), Family::Inet6));
                }
                _ => {}
            }
        }
        round_trip(m, family);
    }
});

/// Emits `m` as a netlink message and decodes it again. The result must be stable: emitting
/// the decoded value once more gives the same value. (Not always `m` itself: netlink-packet-core's
/// `DefaultNla` rewrites the NLA_F_NESTED / NLA_F_NET_BYTEORDER bits of unknown attributes,
/// which the kernel never sets on IPVS attributes.)
fn round_trip(m: &IpvsMessage, family: u16) {
    let Some(once) = emit_and_decode(m, family) else {
        return;
    };
    if let Some(twice) = emit_and_decode(&once, family) {
        assert_eq!(twice, once);
    }
}

fn emit_and_decode(m: &IpvsMessage, family: u16) -> Option<IpvsMessage> {
    // Re-emitting may add a NUL to a string; an attribute past netlink's 16-bit length could
    // then not be written at all.
    if m.attributes.iter().any(|a| a.buffer_len() > usize::from(u16::MAX)) {
        return None;
    }
    let total = 16 + 4 + m.buffer_len();
    let mut buf = vec![0u8; total];
    buf[..4].copy_from_slice(&(total as u32).to_ne_bytes());
    buf[4..6].copy_from_slice(&family.to_ne_bytes());
    buf[16] = u8::from(m.cmd);
    buf[17] = 1;
    m.emit(&mut buf[20..]);
    let mut again = decode_datagram(&buf, family).expect("re-emitted message decodes");
    assert_eq!(again.len(), 1);
    again.pop()
}
