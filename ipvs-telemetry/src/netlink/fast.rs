//! Destination replies decoded straight from the bytes into the model: the client's hot path
//! (a 10,000-service collection decodes 50,000 of them).
//!
//! It handles only the shape the kernel sends — one `IPVS_CMD_ATTR_DEST` and attributes of the
//! sizes the codec accepts — and gives up (`None`) on anything else; the caller then decodes the
//! message with the codec, which yields the same value or the precise error. So this path can
//! never change a result, only skip the codec's intermediate allocations; the tests check that
//! both give the same destination for every captured and generated reply.

use netlink_packet_core::NLA_TYPE_MASK;

use crate::model::{Destination, Family, Stats};

use super::dest::{
    IPVS_DEST_ATTR_ACTIVE_CONNS, IPVS_DEST_ATTR_ADDR, IPVS_DEST_ATTR_ADDR_FAMILY,
    IPVS_DEST_ATTR_FWD_METHOD, IPVS_DEST_ATTR_INACT_CONNS, IPVS_DEST_ATTR_L_THRESH,
    IPVS_DEST_ATTR_PERSIST_CONNS, IPVS_DEST_ATTR_PORT, IPVS_DEST_ATTR_STATS,
    IPVS_DEST_ATTR_STATS64, IPVS_DEST_ATTR_TUN_FLAGS, IPVS_DEST_ATTR_TUN_PORT,
    IPVS_DEST_ATTR_TUN_TYPE, IPVS_DEST_ATTR_U_THRESH, IPVS_DEST_ATTR_WEIGHT,
};
use super::message::{IPVS_CMD_ATTR_DEST, IpvsCmd};
use super::stats::{
    IPVS_STATS_ATTR_CONNS, IPVS_STATS_ATTR_CPS, IPVS_STATS_ATTR_INBPS, IPVS_STATS_ATTR_INBYTES,
    IPVS_STATS_ATTR_INPKTS, IPVS_STATS_ATTR_INPPS, IPVS_STATS_ATTR_OUTBPS,
    IPVS_STATS_ATTR_OUTBYTES, IPVS_STATS_ATTR_OUTPKTS, IPVS_STATS_ATTR_OUTPPS,
};
use super::typed::DestFields;

/// The attributes of `buf`, `(kind, value)`, with the codec's length checks; an attribute that
/// fails them is `None` (and ends the walk).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = Option<(u16, &[u8])>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let parsed = (|| {
            let header = buf.get(..4)?;
            let len = u16::from_ne_bytes([header[0], header[1]]) as usize;
            let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
            let value = buf.get(4..len)?;
            Some((kind, value, len))
        })();
        match parsed {
            Some((kind, value, len)) => {
                buf = buf.get((len + 3) & !3..).unwrap_or(&[]);
                Some(Some((kind, value)))
            }
            None => {
                buf = &[];
                Some(None)
            }
        }
    })
}

fn u16_ne(v: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(v.try_into().ok()?))
}

fn u16_be(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.try_into().ok()?))
}

fn u32_ne(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.try_into().ok()?))
}

/// A statistics block: 4-byte values (`STATS`) or 8-byte ones (`STATS64`), as the codec reads.
fn stats(value: &[u8]) -> Option<Stats> {
    let mut s = Stats::default();
    for attribute in attributes(value) {
        let (kind, v) = attribute?;
        let slot = match kind {
            IPVS_STATS_ATTR_CONNS => &mut s.conns,
            IPVS_STATS_ATTR_INPKTS => &mut s.inpkts,
            IPVS_STATS_ATTR_OUTPKTS => &mut s.outpkts,
            IPVS_STATS_ATTR_INBYTES => &mut s.inbytes,
            IPVS_STATS_ATTR_OUTBYTES => &mut s.outbytes,
            IPVS_STATS_ATTR_CPS => &mut s.cps,
            IPVS_STATS_ATTR_INPPS => &mut s.inpps,
            IPVS_STATS_ATTR_OUTPPS => &mut s.outpps,
            IPVS_STATS_ATTR_INBPS => &mut s.inbps,
            IPVS_STATS_ATTR_OUTBPS => &mut s.outbps,
            _ => continue, // PAD and unknown attributes
        };
        *slot = match v.len() {
            4 => u32_ne(v)? as u64,
            8 => u64::from_ne_bytes(v.try_into().ok()?),
            _ => return None,
        };
    }
    Some(s)
}

/// The destination of one `GET_DEST` reply (generic-netlink header and attributes), or `None`
/// when the message is not the plain shape handled here.
pub(crate) fn destination(payload: &[u8], service_family: Family) -> Option<Destination> {
    let cmd = IpvsCmd::from(*payload.first()?);
    if matches!(cmd, IpvsCmd::SetInfo | IpvsCmd::GetInfo) {
        return None;
    }
    let mut dest = None;
    for attribute in attributes(payload.get(4..)?) {
        let (kind, value) = attribute?;
        if kind != IPVS_CMD_ATTR_DEST || dest.is_some() {
            return None;
        }
        dest = Some(value);
    }
    let mut f = DestFields::default();
    for attribute in attributes(dest?) {
        let (kind, v) = attribute?;
        match kind {
            IPVS_DEST_ATTR_ADDR => f.addr = Some(v),
            IPVS_DEST_ATTR_PORT => f.port = Some(u16_be(v)?),
            IPVS_DEST_ATTR_FWD_METHOD => f.fwd = Some(u32_ne(v)?),
            IPVS_DEST_ATTR_WEIGHT => f.weight = Some(u32_ne(v)?),
            IPVS_DEST_ATTR_U_THRESH => f.upper = u32_ne(v)?,
            IPVS_DEST_ATTR_L_THRESH => f.lower = u32_ne(v)?,
            IPVS_DEST_ATTR_ACTIVE_CONNS => f.active = u32_ne(v)?,
            IPVS_DEST_ATTR_INACT_CONNS => f.inactive = u32_ne(v)?,
            IPVS_DEST_ATTR_PERSIST_CONNS => f.persist = u32_ne(v)?,
            IPVS_DEST_ATTR_STATS => f.stats32 = Some(stats(v)?),
            IPVS_DEST_ATTR_ADDR_FAMILY => f.af = Some(u16_ne(v)?),
            IPVS_DEST_ATTR_STATS64 => f.stats64 = Some(stats(v)?),
            IPVS_DEST_ATTR_TUN_TYPE => f.tun_type = Some(*<&[u8; 1]>::try_from(v).ok()?.first()?),
            IPVS_DEST_ATTR_TUN_PORT => f.tun_port = Some(u16_be(v)?),
            IPVS_DEST_ATTR_TUN_FLAGS => f.tun_flags = Some(u16_ne(v)?),
            _ => {}
        }
    }
    f.finish(service_family).ok()
}
