//! `IPVS_DEST_ATTR_*`: the attributes of a real server (nested in `IPVS_CMD_ATTR_DEST`).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, Parseable, emit_u16, emit_u32,
    parse_u8, parse_u16, parse_u16_be, parse_u32,
};

use super::stats::{IpvsStatsAttribute, parse_stats};

pub(super) const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub(super) const IPVS_DEST_ATTR_PORT: u16 = 2;
pub(super) const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub(super) const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub(super) const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub(super) const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub(super) const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub(super) const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub(super) const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub(super) const IPVS_DEST_ATTR_STATS: u16 = 10;
pub(super) const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub(super) const IPVS_DEST_ATTR_STATS64: u16 = 12;
pub(super) const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
pub(super) const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
pub(super) const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

/// One attribute of a real server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsDestAttribute {
    /// Real server address: 16 bytes as sent (IPv4 in the first 4).
    #[doc(alias = "IPVS_DEST_ATTR_ADDR")]
    Address(Vec<u8>),
    /// Real server port, host order (big-endian on the wire).
    #[doc(alias = "IPVS_DEST_ATTR_PORT")]
    Port(u16),
    /// Connection flags; the low 3 bits are the forwarding method.
    #[doc(alias = "IPVS_DEST_ATTR_FWD_METHOD")]
    ForwardMethod(u32),
    /// Weight (the kernel keeps an `int`).
    #[doc(alias = "IPVS_DEST_ATTR_WEIGHT")]
    Weight(u32),
    /// Upper connection threshold.
    #[doc(alias = "IPVS_DEST_ATTR_U_THRESH")]
    UpperThreshold(u32),
    /// Lower connection threshold.
    #[doc(alias = "IPVS_DEST_ATTR_L_THRESH")]
    LowerThreshold(u32),
    /// Active connections.
    #[doc(alias = "IPVS_DEST_ATTR_ACTIVE_CONNS")]
    ActiveConnections(u32),
    /// Inactive connections.
    #[doc(alias = "IPVS_DEST_ATTR_INACT_CONNS")]
    InactiveConnections(u32),
    /// Persistence templates.
    #[doc(alias = "IPVS_DEST_ATTR_PERSIST_CONNS")]
    PersistentConnections(u32),
    /// Legacy statistics block.
    #[doc(alias = "IPVS_DEST_ATTR_STATS")]
    Stats(Vec<IpvsStatsAttribute>),
    /// Address family of the real server (kernel ≥ 4.3; absent means the service's).
    #[doc(alias = "IPVS_DEST_ATTR_ADDR_FAMILY")]
    AddressFamily(u16),
    /// 64-bit statistics block (kernel ≥ 4.0).
    #[doc(alias = "IPVS_DEST_ATTR_STATS64")]
    Stats64(Vec<IpvsStatsAttribute>),
    /// Tunnel type (`IP_VS_CONN_F_TUNNEL_TYPE_*`, kernel ≥ 5.2).
    #[doc(alias = "IPVS_DEST_ATTR_TUN_TYPE")]
    TunnelType(u8),
    /// Tunnel port, host order (big-endian on the wire).
    #[doc(alias = "IPVS_DEST_ATTR_TUN_PORT")]
    TunnelPort(u16),
    /// Tunnel flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
    #[doc(alias = "IPVS_DEST_ATTR_TUN_FLAGS")]
    TunnelFlags(u16),
    /// An attribute this build does not know.
    Other(DefaultNla),
}

impl Nla for IpvsDestAttribute {
    fn value_len(&self) -> usize {
        use IpvsDestAttribute::*;
        match self {
            Address(a) => a.len(),
            Port(_) | AddressFamily(_) | TunnelPort(_) | TunnelFlags(_) => 2,
            TunnelType(_) => 1,
            ForwardMethod(_)
            | Weight(_)
            | UpperThreshold(_)
            | LowerThreshold(_)
            | ActiveConnections(_)
            | InactiveConnections(_)
            | PersistentConnections(_) => 4,
            Stats(s) | Stats64(s) => s.as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use IpvsDestAttribute::*;
        match self {
            Address(_) => IPVS_DEST_ATTR_ADDR,
            Port(_) => IPVS_DEST_ATTR_PORT,
            ForwardMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            ActiveConnections(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            InactiveConnections(_) => IPVS_DEST_ATTR_INACT_CONNS,
            PersistentConnections(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Stats(_) => IPVS_DEST_ATTR_STATS,
            AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Stats64(_) => IPVS_DEST_ATTR_STATS64,
            TunnelType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            TunnelPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            TunnelFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use IpvsDestAttribute::*;
        // The buffer has exactly `value_len()` bytes, so the emit helpers cannot fail.
        let _ = match self {
            Address(a) => {
                buffer.copy_from_slice(a);
                Ok(())
            }
            Port(v) | TunnelPort(v) => {
                buffer.copy_from_slice(&v.to_be_bytes());
                Ok(())
            }
            AddressFamily(v) | TunnelFlags(v) => emit_u16(buffer, *v),
            TunnelType(v) => {
                buffer[0] = *v;
                Ok(())
            }
            ForwardMethod(v)
            | Weight(v)
            | UpperThreshold(v)
            | LowerThreshold(v)
            | ActiveConnections(v)
            | InactiveConnections(v)
            | PersistentConnections(v) => emit_u32(buffer, *v),
            Stats(s) | Stats64(s) => {
                s.as_slice().emit(buffer);
                Ok(())
            }
            Other(nla) => {
                nla.emit_value(buffer);
                Ok(())
            }
        };
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for IpvsDestAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        use IpvsDestAttribute::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => Address(v.to_vec()),
            IPVS_DEST_ATTR_PORT => Port(parse_u16_be(v).context("IPVS_DEST_ATTR_PORT")?),
            IPVS_DEST_ATTR_FWD_METHOD => {
                ForwardMethod(parse_u32(v).context("IPVS_DEST_ATTR_FWD_METHOD")?)
            }
            IPVS_DEST_ATTR_WEIGHT => Weight(parse_u32(v).context("IPVS_DEST_ATTR_WEIGHT")?),
            IPVS_DEST_ATTR_U_THRESH => {
                UpperThreshold(parse_u32(v).context("IPVS_DEST_ATTR_U_THRESH")?)
            }
            IPVS_DEST_ATTR_L_THRESH => {
                LowerThreshold(parse_u32(v).context("IPVS_DEST_ATTR_L_THRESH")?)
            }
            IPVS_DEST_ATTR_ACTIVE_CONNS => {
                ActiveConnections(parse_u32(v).context("IPVS_DEST_ATTR_ACTIVE_CONNS")?)
            }
            IPVS_DEST_ATTR_INACT_CONNS => {
                InactiveConnections(parse_u32(v).context("IPVS_DEST_ATTR_INACT_CONNS")?)
            }
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                PersistentConnections(parse_u32(v).context("IPVS_DEST_ATTR_PERSIST_CONNS")?)
            }
            IPVS_DEST_ATTR_STATS => Stats(parse_stats(v).context("IPVS_DEST_ATTR_STATS")?),
            IPVS_DEST_ATTR_ADDR_FAMILY => {
                AddressFamily(parse_u16(v).context("IPVS_DEST_ATTR_ADDR_FAMILY")?)
            }
            IPVS_DEST_ATTR_STATS64 => Stats64(parse_stats(v).context("IPVS_DEST_ATTR_STATS64")?),
            IPVS_DEST_ATTR_TUN_TYPE => TunnelType(parse_u8(v).context("IPVS_DEST_ATTR_TUN_TYPE")?),
            IPVS_DEST_ATTR_TUN_PORT => {
                TunnelPort(parse_u16_be(v).context("IPVS_DEST_ATTR_TUN_PORT")?)
            }
            IPVS_DEST_ATTR_TUN_FLAGS => {
                TunnelFlags(parse_u16(v).context("IPVS_DEST_ATTR_TUN_FLAGS")?)
            }
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}
