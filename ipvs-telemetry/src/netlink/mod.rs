//! The IPVS generic-netlink codec, the rtnetlink interface dump, and read-only clients bound to
//! one socket each, sharing one request path.
//!
//! The codec (`message`, `service`, `dest`, `stats`, `sync_daemon`) is faithful to the wire of the
//! kernel's `include/uapi/linux/ip_vs.h`: every attribute has a variant, unknown ones are kept as
//! `Other`. `typed` builds [`model`](crate::model) values from it; `fast` decodes destination replies
//! straight into the model on the client's hot path (falling back to the codec). `link` encodes the `RTM_GETLINK` dump
//! and decodes its replies with netlink-packet-route. `socket` is the only file that does I/O:
//! a [`Client`] (IPVS) or [`LinkClient`] (interfaces) in the namespace it was opened in, that
//! never loads ip_vs and can only send GET requests.

mod ctrl;
mod dest;
mod error;
mod fast;
mod link;
mod message;
mod service;
mod socket;
mod stats;
mod sync_daemon;
mod typed;
mod wire;

use netlink_packet_core::{DecodeError, NlaBuffer, NlasIterator};

pub use dest::IpvsDestAttribute;
pub use error::Error;
pub use message::{IPVS_GENL_NAME, IpvsAttribute, IpvsCmd, IpvsInfoAttribute, IpvsMessage};
pub use service::{IpvsServiceAttribute, IpvsServiceFlags};
pub use socket::{Client, LinkClient};
pub use stats::{IpvsStatsAttribute, StatsValue};
pub use sync_daemon::IpvsDaemonAttribute;
pub use typed::MalformedAttribute;

/// Decodes every IPVS message of a received datagram (any family id but the controller's):
/// the raw messages, or the first decoding error. Used by fixture tests and the fuzz target.
pub fn decode_datagram(buf: &[u8], family_id: u16) -> Result<Vec<IpvsMessage>, DecodeError> {
    let mut out = Vec::new();
    for item in wire::messages(buf, family_id) {
        if let wire::Part::Data { payload, .. } = item?.part {
            out.push(wire::decode_ipvs(payload)?);
        }
    }
    Ok(out)
}

/// The client's fast destination decoder on one generic-netlink payload (header and
/// attributes): the destination, or `None` when it leaves the reply to the codec. For the fuzz
/// target `decode_destination`, which checks it against the codec; not an API.
#[doc(hidden)]
pub fn decode_destination_fast(
    payload: &[u8],
    family: crate::model::Family,
) -> Option<crate::model::Destination> {
    fast::destination(payload, family)
}

/// Parses a sequence of attributes with `parse`, naming nothing: callers add the context.
fn parse_nested<'a, T>(
    value: &'a [u8],
    parse: impl Fn(&NlaBuffer<&'a [u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    // One allocation: count first (a walk over the attribute headers).
    let mut out = Vec::with_capacity(NlasIterator::new(value).count());
    for nla in NlasIterator::new(value) {
        out.push(parse(&nla?)?);
    }
    Ok(out)
}

/// Writes `s` NUL-terminated into a buffer of `s.len() + 1` bytes.
fn emit_string(buffer: &mut [u8], s: &str) {
    let n = s.len().min(buffer.len());
    buffer[..n].copy_from_slice(&s.as_bytes()[..n]);
    if let Some(last) = buffer.get_mut(n) {
        *last = 0;
    }
}

#[cfg(test)]
mod tests;
