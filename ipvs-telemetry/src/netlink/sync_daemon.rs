//! `IPVS_DAEMON_ATTR_*`: a connection-synchronisation daemon (nested in `IPVS_CMD_ATTR_DAEMON`).

use netlink_packet_core::{
    DecodeError, DefaultNla, ErrorContext, Nla, NlaBuffer, Parseable, emit_u16, emit_u32,
    parse_string, parse_u8, parse_u16, parse_u32,
};

const IPVS_DAEMON_ATTR_STATE: u16 = 1;
const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

/// One attribute of a sync daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsDaemonAttribute {
    /// `IP_VS_STATE_MASTER` (1) or `IP_VS_STATE_BACKUP` (2).
    #[doc(alias = "IPVS_DAEMON_ATTR_STATE")]
    State(u32),
    /// Multicast interface name.
    #[doc(alias = "IPVS_DAEMON_ATTR_MCAST_IFN")]
    MulticastInterface(String),
    /// Sync id.
    #[doc(alias = "IPVS_DAEMON_ATTR_SYNC_ID")]
    SyncId(u32),
    /// UDP payload size (kernel ≥ 4.3).
    #[doc(alias = "IPVS_DAEMON_ATTR_SYNC_MAXLEN")]
    SyncMaxLen(u16),
    /// IPv4 multicast group, as sent (network order).
    #[doc(alias = "IPVS_DAEMON_ATTR_MCAST_GROUP")]
    MulticastGroup([u8; 4]),
    /// IPv6 multicast group.
    #[doc(alias = "IPVS_DAEMON_ATTR_MCAST_GROUP6")]
    MulticastGroup6([u8; 16]),
    /// Multicast base port.
    #[doc(alias = "IPVS_DAEMON_ATTR_MCAST_PORT")]
    MulticastPort(u16),
    /// Multicast TTL.
    #[doc(alias = "IPVS_DAEMON_ATTR_MCAST_TTL")]
    MulticastTtl(u8),
    /// An attribute this build does not know.
    Other(DefaultNla),
}

impl Nla for IpvsDaemonAttribute {
    fn value_len(&self) -> usize {
        use IpvsDaemonAttribute::*;
        match self {
            State(_) | SyncId(_) | MulticastGroup(_) => 4,
            MulticastInterface(s) => s.len() + 1,
            SyncMaxLen(_) | MulticastPort(_) => 2,
            MulticastGroup6(_) => 16,
            MulticastTtl(_) => 1,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use IpvsDaemonAttribute::*;
        match self {
            State(_) => IPVS_DAEMON_ATTR_STATE,
            MulticastInterface(_) => IPVS_DAEMON_ATTR_MCAST_IFN,
            SyncId(_) => IPVS_DAEMON_ATTR_SYNC_ID,
            SyncMaxLen(_) => IPVS_DAEMON_ATTR_SYNC_MAXLEN,
            MulticastGroup(_) => IPVS_DAEMON_ATTR_MCAST_GROUP,
            MulticastGroup6(_) => IPVS_DAEMON_ATTR_MCAST_GROUP6,
            MulticastPort(_) => IPVS_DAEMON_ATTR_MCAST_PORT,
            MulticastTtl(_) => IPVS_DAEMON_ATTR_MCAST_TTL,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use IpvsDaemonAttribute::*;
        // The buffer has exactly `value_len()` bytes, so the emit helpers cannot fail.
        let _ = match self {
            State(v) | SyncId(v) => emit_u32(buffer, *v),
            MulticastInterface(s) => {
                super::emit_string(buffer, s);
                Ok(())
            }
            SyncMaxLen(v) | MulticastPort(v) => emit_u16(buffer, *v),
            MulticastGroup(a) => {
                buffer.copy_from_slice(a);
                Ok(())
            }
            MulticastGroup6(a) => {
                buffer.copy_from_slice(a);
                Ok(())
            }
            MulticastTtl(v) => {
                buffer[0] = *v;
                Ok(())
            }
            Other(nla) => {
                nla.emit_value(buffer);
                Ok(())
            }
        };
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for IpvsDaemonAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        use IpvsDaemonAttribute::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_DAEMON_ATTR_STATE => State(parse_u32(v).context("IPVS_DAEMON_ATTR_STATE")?),
            IPVS_DAEMON_ATTR_MCAST_IFN => {
                MulticastInterface(parse_string(v).context("IPVS_DAEMON_ATTR_MCAST_IFN")?)
            }
            IPVS_DAEMON_ATTR_SYNC_ID => SyncId(parse_u32(v).context("IPVS_DAEMON_ATTR_SYNC_ID")?),
            IPVS_DAEMON_ATTR_SYNC_MAXLEN => {
                SyncMaxLen(parse_u16(v).context("IPVS_DAEMON_ATTR_SYNC_MAXLEN")?)
            }
            IPVS_DAEMON_ATTR_MCAST_GROUP => MulticastGroup(
                v.try_into()
                    .map_err(|_| DecodeError::invalid_number(4, v.len()))
                    .context("IPVS_DAEMON_ATTR_MCAST_GROUP")?,
            ),
            IPVS_DAEMON_ATTR_MCAST_GROUP6 => MulticastGroup6(
                v.try_into()
                    .map_err(|_| DecodeError::invalid_number(16, v.len()))
                    .context("IPVS_DAEMON_ATTR_MCAST_GROUP6")?,
            ),
            IPVS_DAEMON_ATTR_MCAST_PORT => {
                MulticastPort(parse_u16(v).context("IPVS_DAEMON_ATTR_MCAST_PORT")?)
            }
            IPVS_DAEMON_ATTR_MCAST_TTL => {
                MulticastTtl(parse_u8(v).context("IPVS_DAEMON_ATTR_MCAST_TTL")?)
            }
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}
