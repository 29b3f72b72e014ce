//! Fuzzes the client's fast destination decoder (`netlink/fast.rs`, the hot path of a
//! collection): never a panic, and whenever it answers, the codec (`decode_datagram` and the
//! typed conversion) gives the same destination. It may give up (`None`) on anything; the client
//! then decodes with the codec.
//!
//! Input: one byte choosing the service family, then a generic-netlink payload (the 4-byte
//! generic header and the attributes), as the kernel sends in a `GET_DEST` reply.

#![no_main]

use ipvs_telemetry::model::{Destination, Family};
use ipvs_telemetry::netlink::{IpvsAttribute, decode_datagram, decode_destination_fast};
use libfuzzer_sys::fuzz_target;

/// Any family id but the netlink control types decodes as IPVS.
const FAMILY_ID: u16 = 0x23;

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    let family = if which & 1 == 0 {
        Family::Inet
    } else {
        Family::Inet6
    };
    let Some(fast) = decode_destination_fast(payload, family) else {
        return;
    };
    assert_eq!(codec(payload, family), Some(fast));
});

/// What the codec makes of `payload` wrapped in a netlink header: the first destination, if
/// every step decodes.
fn codec(payload: &[u8], family: Family) -> Option<Destination> {
    let total = 16 + payload.len();
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&u32::try_from(total).ok()?.to_ne_bytes());
    buf.extend_from_slice(&FAMILY_ID.to_ne_bytes());
    buf.extend_from_slice(&[0; 10]);
    buf.extend_from_slice(payload);
    let messages = decode_datagram(&buf, FAMILY_ID).ok()?;
    let m = messages.first()?;
    m.attributes.iter().find_map(|a| match a {
        IpvsAttribute::Dest(attrs) => Destination::try_from((attrs.as_slice(), family)).ok(),
        _ => None,
    })
}
