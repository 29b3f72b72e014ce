//! `IPVS_STATS_ATTR_*`: the counters nested in `IPVS_SVC_ATTR_STATS[64]` and
//! `IPVS_DEST_ATTR_STATS[64]`.
//!
//! The same attribute numbers serve both blocks: in `STATS` the packet/connection counters and the
//! rates are `u32` and only the byte counters are `u64`; in `STATS64` everything is `u64` and a
//! `PAD` attribute may appear for alignment. Values keep their wire width ([`StatsValue`]).

use netlink_packet_core::{
    DecodeError, DefaultNla, ErrorContext, Nla, NlaBuffer, Parseable, emit_u32, emit_u64,
    parse_u32, parse_u64,
};

pub(super) const IPVS_STATS_ATTR_CONNS: u16 = 1;
pub(super) const IPVS_STATS_ATTR_INPKTS: u16 = 2;
pub(super) const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
pub(super) const IPVS_STATS_ATTR_INBYTES: u16 = 4;
pub(super) const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
pub(super) const IPVS_STATS_ATTR_CPS: u16 = 6;
pub(super) const IPVS_STATS_ATTR_INPPS: u16 = 7;
pub(super) const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
pub(super) const IPVS_STATS_ATTR_INBPS: u16 = 9;
pub(super) const IPVS_STATS_ATTR_OUTBPS: u16 = 10;
const IPVS_STATS_ATTR_PAD: u16 = 11;

/// A counter as sent: 32 bits in the legacy `STATS` block, 64 bits otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsValue {
    /// A 4-byte value.
    U32(u32),
    /// An 8-byte value.
    U64(u64),
}

impl StatsValue {
    /// The value, widened.
    pub fn get(self) -> u64 {
        match self {
            StatsValue::U32(v) => v.into(),
            StatsValue::U64(v) => v,
        }
    }

    fn len(self) -> usize {
        match self {
            StatsValue::U32(_) => 4,
            StatsValue::U64(_) => 8,
        }
    }

    fn emit(self, buffer: &mut [u8]) {
        // `Nla::emit_value` gets a buffer of exactly `value_len()` bytes.
        let _ = match self {
            StatsValue::U32(v) => emit_u32(buffer, v),
            StatsValue::U64(v) => emit_u64(buffer, v),
        };
    }

    fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        match value.len() {
            4 => parse_u32(value).map(StatsValue::U32),
            _ => parse_u64(value).map(StatsValue::U64),
        }
    }
}

/// One attribute of a statistics block.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsStatsAttribute {
    /// Connections scheduled.
    #[doc(alias = "IPVS_STATS_ATTR_CONNS")]
    Conns(StatsValue),
    /// Incoming packets.
    #[doc(alias = "IPVS_STATS_ATTR_INPKTS")]
    InPkts(StatsValue),
    /// Outgoing packets.
    #[doc(alias = "IPVS_STATS_ATTR_OUTPKTS")]
    OutPkts(StatsValue),
    /// Incoming bytes.
    #[doc(alias = "IPVS_STATS_ATTR_INBYTES")]
    InBytes(StatsValue),
    /// Outgoing bytes.
    #[doc(alias = "IPVS_STATS_ATTR_OUTBYTES")]
    OutBytes(StatsValue),
    /// Connection rate.
    #[doc(alias = "IPVS_STATS_ATTR_CPS")]
    Cps(StatsValue),
    /// Incoming packet rate.
    #[doc(alias = "IPVS_STATS_ATTR_INPPS")]
    InPps(StatsValue),
    /// Outgoing packet rate.
    #[doc(alias = "IPVS_STATS_ATTR_OUTPPS")]
    OutPps(StatsValue),
    /// Incoming byte rate.
    #[doc(alias = "IPVS_STATS_ATTR_INBPS")]
    InBps(StatsValue),
    /// Outgoing byte rate.
    #[doc(alias = "IPVS_STATS_ATTR_OUTBPS")]
    OutBps(StatsValue),
    /// Alignment padding of `STATS64` (no meaning).
    #[doc(alias = "IPVS_STATS_ATTR_PAD")]
    Pad(Vec<u8>),
    /// An attribute this build does not know.
    Other(DefaultNla),
}

impl IpvsStatsAttribute {
    fn value(&self) -> Option<StatsValue> {
        use IpvsStatsAttribute::*;
        match self {
            Conns(v) | InPkts(v) | OutPkts(v) | InBytes(v) | OutBytes(v) | Cps(v) | InPps(v)
            | OutPps(v) | InBps(v) | OutBps(v) => Some(*v),
            Pad(_) | Other(_) => None,
        }
    }
}

impl Nla for IpvsStatsAttribute {
    fn value_len(&self) -> usize {
        match self {
            IpvsStatsAttribute::Pad(p) => p.len(),
            IpvsStatsAttribute::Other(nla) => nla.value_len(),
            other => other.value().map_or(0, StatsValue::len),
        }
    }

    fn kind(&self) -> u16 {
        use IpvsStatsAttribute::*;
        match self {
            Conns(_) => IPVS_STATS_ATTR_CONNS,
            InPkts(_) => IPVS_STATS_ATTR_INPKTS,
            OutPkts(_) => IPVS_STATS_ATTR_OUTPKTS,
            InBytes(_) => IPVS_STATS_ATTR_INBYTES,
            OutBytes(_) => IPVS_STATS_ATTR_OUTBYTES,
            Cps(_) => IPVS_STATS_ATTR_CPS,
            InPps(_) => IPVS_STATS_ATTR_INPPS,
            OutPps(_) => IPVS_STATS_ATTR_OUTPPS,
            InBps(_) => IPVS_STATS_ATTR_INBPS,
            OutBps(_) => IPVS_STATS_ATTR_OUTBPS,
            Pad(_) => IPVS_STATS_ATTR_PAD,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            IpvsStatsAttribute::Pad(p) => buffer.copy_from_slice(p),
            IpvsStatsAttribute::Other(nla) => nla.emit_value(buffer),
            other => {
                if let Some(v) = other.value() {
                    v.emit(buffer)
                }
            }
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for IpvsStatsAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        use IpvsStatsAttribute::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_STATS_ATTR_CONNS => Conns(StatsValue::parse(v).context("IPVS_STATS_ATTR_CONNS")?),
            IPVS_STATS_ATTR_INPKTS => {
                InPkts(StatsValue::parse(v).context("IPVS_STATS_ATTR_INPKTS")?)
            }
            IPVS_STATS_ATTR_OUTPKTS => {
                OutPkts(StatsValue::parse(v).context("IPVS_STATS_ATTR_OUTPKTS")?)
            }
            IPVS_STATS_ATTR_INBYTES => {
                InBytes(StatsValue::parse(v).context("IPVS_STATS_ATTR_INBYTES")?)
            }
            IPVS_STATS_ATTR_OUTBYTES => {
                OutBytes(StatsValue::parse(v).context("IPVS_STATS_ATTR_OUTBYTES")?)
            }
            IPVS_STATS_ATTR_CPS => Cps(StatsValue::parse(v).context("IPVS_STATS_ATTR_CPS")?),
            IPVS_STATS_ATTR_INPPS => InPps(StatsValue::parse(v).context("IPVS_STATS_ATTR_INPPS")?),
            IPVS_STATS_ATTR_OUTPPS => {
                OutPps(StatsValue::parse(v).context("IPVS_STATS_ATTR_OUTPPS")?)
            }
            IPVS_STATS_ATTR_INBPS => InBps(StatsValue::parse(v).context("IPVS_STATS_ATTR_INBPS")?),
            IPVS_STATS_ATTR_OUTBPS => {
                OutBps(StatsValue::parse(v).context("IPVS_STATS_ATTR_OUTBPS")?)
            }
            IPVS_STATS_ATTR_PAD => Pad(v.to_vec()),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Parses the attributes nested in a statistics block.
pub(crate) fn parse_stats(value: &[u8]) -> Result<Vec<IpvsStatsAttribute>, DecodeError> {
    super::parse_nested(value, IpvsStatsAttribute::parse)
}

/// Folds a statistics block into the model's counters (absent counters stay 0).
pub(crate) fn to_model(attrs: &[IpvsStatsAttribute]) -> crate::model::Stats {
    let mut s = crate::model::Stats::default();
    for a in attrs {
        use IpvsStatsAttribute::*;
        match a {
            Conns(v) => s.conns = v.get(),
            InPkts(v) => s.inpkts = v.get(),
            OutPkts(v) => s.outpkts = v.get(),
            InBytes(v) => s.inbytes = v.get(),
            OutBytes(v) => s.outbytes = v.get(),
            Cps(v) => s.cps = v.get(),
            InPps(v) => s.inpps = v.get(),
            OutPps(v) => s.outpps = v.get(),
            InBps(v) => s.inbps = v.get(),
            OutBps(v) => s.outbps = v.get(),
            Pad(_) | Other(_) => {}
        }
    }
    s
}
