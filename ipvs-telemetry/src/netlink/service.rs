//! `IPVS_SVC_ATTR_*`: the attributes of a virtual service (nested in `IPVS_CMD_ATTR_SERVICE`).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, Parseable, emit_u16, emit_u32,
    parse_string, parse_u16, parse_u16_be, parse_u32,
};

use super::stats::{IpvsStatsAttribute, parse_stats};

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_SVC_ATTR_STATS: u16 = 10;
const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
const IPVS_SVC_ATTR_STATS64: u16 = 12;

/// `struct ip_vs_flags`: the service flags and the mask of the bits that are meant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpvsServiceFlags {
    /// `IP_VS_SVC_F_*` bits.
    pub flags: u32,
    /// Which bits of `flags` are set (the kernel sends all ones).
    pub mask: u32,
}

/// One attribute of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsServiceAttribute {
    /// Address family (`AF_INET`, `AF_INET6`).
    #[doc(alias = "IPVS_SVC_ATTR_AF")]
    AddressFamily(u16),
    /// Transport protocol (`IPPROTO_*`).
    #[doc(alias = "IPVS_SVC_ATTR_PROTOCOL")]
    Protocol(u16),
    /// Virtual address: 16 bytes as sent (`union nf_inet_addr`, IPv4 in the first 4).
    #[doc(alias = "IPVS_SVC_ATTR_ADDR")]
    Address(Vec<u8>),
    /// Virtual port, host order (big-endian on the wire).
    #[doc(alias = "IPVS_SVC_ATTR_PORT")]
    Port(u16),
    /// Firewall mark.
    #[doc(alias = "IPVS_SVC_ATTR_FWMARK")]
    Fwmark(u32),
    /// Scheduler name.
    #[doc(alias = "IPVS_SVC_ATTR_SCHED_NAME")]
    SchedulerName(String),
    /// Flags and mask.
    #[doc(alias = "IPVS_SVC_ATTR_FLAGS")]
    Flags(IpvsServiceFlags),
    /// Persistence timeout in seconds.
    #[doc(alias = "IPVS_SVC_ATTR_TIMEOUT")]
    Timeout(u32),
    /// Persistence netmask, the 4 bytes as sent: an IPv4 mask in network order, or an IPv6
    /// prefix length in host order.
    #[doc(alias = "IPVS_SVC_ATTR_NETMASK")]
    Netmask([u8; 4]),
    /// Legacy statistics block (32-bit counters, 64-bit bytes).
    #[doc(alias = "IPVS_SVC_ATTR_STATS")]
    Stats(Vec<IpvsStatsAttribute>),
    /// Persistence engine name.
    #[doc(alias = "IPVS_SVC_ATTR_PE_NAME")]
    PersistenceEngine(String),
    /// 64-bit statistics block (kernel ≥ 4.0).
    #[doc(alias = "IPVS_SVC_ATTR_STATS64")]
    Stats64(Vec<IpvsStatsAttribute>),
    /// An attribute this build does not know.
    Other(DefaultNla),
}

impl Nla for IpvsServiceAttribute {
    fn value_len(&self) -> usize {
        use IpvsServiceAttribute::*;
        match self {
            AddressFamily(_) | Protocol(_) | Port(_) => 2,
            Fwmark(_) | Timeout(_) | Netmask(_) => 4,
            Address(a) => a.len(),
            SchedulerName(s) | PersistenceEngine(s) => s.len() + 1,
            Flags(_) => 8,
            Stats(s) | Stats64(s) => s.as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use IpvsServiceAttribute::*;
        match self {
            AddressFamily(_) => IPVS_SVC_ATTR_AF,
            Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Address(_) => IPVS_SVC_ATTR_ADDR,
            Port(_) => IPVS_SVC_ATTR_PORT,
            Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            SchedulerName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Flags(_) => IPVS_SVC_ATTR_FLAGS,
            Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Stats(_) => IPVS_SVC_ATTR_STATS,
            PersistenceEngine(_) => IPVS_SVC_ATTR_PE_NAME,
            Stats64(_) => IPVS_SVC_ATTR_STATS64,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use IpvsServiceAttribute::*;
        // The buffer has exactly `value_len()` bytes, so the emit helpers cannot fail.
        let _ = match self {
            AddressFamily(v) | Protocol(v) => emit_u16(buffer, *v),
            Port(v) => {
                buffer.copy_from_slice(&v.to_be_bytes());
                Ok(())
            }
            Fwmark(v) | Timeout(v) => emit_u32(buffer, *v),
            Netmask(b) => {
                buffer.copy_from_slice(b);
                Ok(())
            }
            Address(a) => {
                buffer.copy_from_slice(a);
                Ok(())
            }
            SchedulerName(s) | PersistenceEngine(s) => {
                super::emit_string(buffer, s);
                Ok(())
            }
            Flags(f) => {
                let _ = emit_u32(&mut buffer[..4], f.flags);
                emit_u32(&mut buffer[4..], f.mask)
            }
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

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for IpvsServiceAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        use IpvsServiceAttribute::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => AddressFamily(parse_u16(v).context("IPVS_SVC_ATTR_AF")?),
            IPVS_SVC_ATTR_PROTOCOL => Protocol(parse_u16(v).context("IPVS_SVC_ATTR_PROTOCOL")?),
            IPVS_SVC_ATTR_ADDR => Address(v.to_vec()),
            IPVS_SVC_ATTR_PORT => Port(parse_u16_be(v).context("IPVS_SVC_ATTR_PORT")?),
            IPVS_SVC_ATTR_FWMARK => Fwmark(parse_u32(v).context("IPVS_SVC_ATTR_FWMARK")?),
            IPVS_SVC_ATTR_SCHED_NAME => {
                SchedulerName(parse_string(v).context("IPVS_SVC_ATTR_SCHED_NAME")?)
            }
            IPVS_SVC_ATTR_FLAGS => {
                if v.len() != 8 {
                    return Err(DecodeError::invalid_number(8, v.len()))
                        .context("IPVS_SVC_ATTR_FLAGS");
                }
                Flags(IpvsServiceFlags {
                    flags: parse_u32(&v[..4])?,
                    mask: parse_u32(&v[4..])?,
                })
            }
            IPVS_SVC_ATTR_TIMEOUT => Timeout(parse_u32(v).context("IPVS_SVC_ATTR_TIMEOUT")?),
            IPVS_SVC_ATTR_NETMASK => Netmask(
                v.try_into()
                    .map_err(|_| DecodeError::invalid_number(4, v.len()))
                    .context("IPVS_SVC_ATTR_NETMASK")?,
            ),
            IPVS_SVC_ATTR_STATS => Stats(parse_stats(v).context("IPVS_SVC_ATTR_STATS")?),
            IPVS_SVC_ATTR_PE_NAME => {
                PersistenceEngine(parse_string(v).context("IPVS_SVC_ATTR_PE_NAME")?)
            }
            IPVS_SVC_ATTR_STATS64 => Stats64(parse_stats(v).context("IPVS_SVC_ATTR_STATS64")?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}
