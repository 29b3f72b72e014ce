//! Splitting a received datagram into netlink messages, and building requests: pure byte work,
//! shared by the socket client, the fixture tests and the fuzz target.

use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_NOOP, NLMSG_OVERRUN, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    ParseableParametrized,
};
use netlink_packet_generic::{GenlHeader, GenlMessage};

use super::message::IpvsMessage;

/// What one netlink message of a reply is.
#[derive(Debug)]
pub(crate) enum Part<'a> {
    /// A message of the requested type (a generic-netlink family id, or `RTM_NEWLINK`): its
    /// header flags and payload.
    Data { flags: u16, payload: &'a [u8] },
    /// `NLMSG_DONE` with the dump's final status (0 or a negative errno).
    Done(i32),
    /// `NLMSG_ERROR`: 0 is an ACK, otherwise a negative errno.
    Error(i32),
    /// `NLMSG_OVERRUN`.
    Overrun,
    /// `NLMSG_NOOP`, or a message type nobody asked for.
    Ignore,
}

/// One netlink message of a datagram: sequence number, port id, and what it is.
#[derive(Debug)]
pub(crate) struct Received<'a> {
    pub(crate) sequence: u32,
    pub(crate) port: u32,
    pub(crate) part: Part<'a>,
}

/// Iterates over the netlink messages of one datagram, checking every length; messages of type
/// `data_type` are [`Part::Data`].
pub(crate) fn messages(
    mut buf: &[u8],
    data_type: u16,
) -> impl Iterator<Item = Result<Received<'_>, DecodeError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let nl = match NetlinkBuffer::new_checked(buf) {
            Ok(nl) => nl,
            Err(e) => {
                buf = &[];
                return Some(Err(e));
            }
        };
        let len = nl.length() as usize;
        let payload = nl.payload();
        let part = match nl.message_type() {
            NLMSG_DONE => Part::Done(read_i32(payload).unwrap_or(0)),
            NLMSG_ERROR => match read_i32(payload) {
                Some(code) => Part::Error(code),
                None => {
                    buf = &[];
                    return Some(Err(DecodeError::from("NLMSG_ERROR shorter than its code")));
                }
            },
            NLMSG_OVERRUN => Part::Overrun,
            NLMSG_NOOP => Part::Ignore,
            t if t == data_type => Part::Data {
                flags: nl.flags(),
                payload,
            },
            _ => Part::Ignore,
        };
        let item = Received {
            sequence: nl.sequence_number(),
            port: nl.port_number(),
            part,
        };
        // Messages are 4-byte aligned; the last one may omit its padding.
        let advance = (len + 3) & !3;
        buf = buf.get(advance..).unwrap_or(&[]);
        Some(Ok(item))
    })
}

fn read_i32(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// Decodes the generic-netlink payload of an IPVS message.
pub(crate) fn decode_ipvs(payload: &[u8]) -> Result<IpvsMessage, DecodeError> {
    let header = GenlHeader::parse(payload)?;
    IpvsMessage::parse_with_param(&payload[4..], header)
}

/// Whether a request expects a multipart dump (`NLM_F_DUMP`) or one reply plus an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dump,
    Single,
}

/// Serialises a request of family `family_id` into `out` (cleared first).
pub(crate) fn emit_request<F>(
    out: &mut Vec<u8>,
    payload: F,
    family_id: u16,
    sequence: u32,
    kind: Kind,
) where
    F: netlink_packet_generic::GenlFamily + Emitable + std::fmt::Debug,
{
    let mut genl = GenlMessage::from_payload(payload);
    genl.set_resolved_family_id(family_id);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST
        | match kind {
            Kind::Dump => NLM_F_DUMP,
            Kind::Single => NLM_F_ACK,
        };
    header.sequence_number = sequence;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(genl));
    msg.finalize();
    out.clear();
    out.resize(msg.buffer_len(), 0);
    msg.serialize(out);
}
