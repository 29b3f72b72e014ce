//! `IPVS_CMD_*` and the top-level attributes: the generic-netlink message of the "IPVS" family.
//!
//! Which attribute set a message carries depends on its command: `GET_INFO` replies
//! (`IPVS_CMD_SET_INFO`) carry `IPVS_INFO_ATTR_*`, whose numbers overlap `IPVS_CMD_ATTR_*`.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, Parseable,
    ParseableParametrized, emit_u32, parse_u32,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::dest::IpvsDestAttribute;
use super::service::IpvsServiceAttribute;
use super::sync_daemon::IpvsDaemonAttribute;

/// Name of the generic-netlink family.
pub const IPVS_GENL_NAME: &str = "IPVS";
const IPVS_GENL_VERSION: u8 = 1;

const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub(super) const IPVS_CMD_ATTR_DEST: u16 = 2;
const IPVS_CMD_ATTR_DAEMON: u16 = 3;
const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

const IPVS_INFO_ATTR_VERSION: u16 = 1;
const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// An IPVS generic-netlink command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsCmd {
    /// Add a service; also the command of service replies.
    #[doc(alias = "IPVS_CMD_NEW_SERVICE")]
    NewService,
    /// Modify a service.
    #[doc(alias = "IPVS_CMD_SET_SERVICE")]
    SetService,
    /// Delete a service.
    #[doc(alias = "IPVS_CMD_DEL_SERVICE")]
    DelService,
    /// Get (dump) services.
    #[doc(alias = "IPVS_CMD_GET_SERVICE")]
    GetService,
    /// Add a destination; also the command of destination replies.
    #[doc(alias = "IPVS_CMD_NEW_DEST")]
    NewDest,
    /// Modify a destination.
    #[doc(alias = "IPVS_CMD_SET_DEST")]
    SetDest,
    /// Delete a destination.
    #[doc(alias = "IPVS_CMD_DEL_DEST")]
    DelDest,
    /// Dump the destinations of one service.
    #[doc(alias = "IPVS_CMD_GET_DEST")]
    GetDest,
    /// Start a sync daemon; also the command of daemon replies.
    #[doc(alias = "IPVS_CMD_NEW_DAEMON")]
    NewDaemon,
    /// Stop a sync daemon.
    #[doc(alias = "IPVS_CMD_DEL_DAEMON")]
    DelDaemon,
    /// Dump the sync daemons.
    #[doc(alias = "IPVS_CMD_GET_DAEMON")]
    GetDaemon,
    /// Set timeouts; also the command of the `GET_CONFIG` reply.
    #[doc(alias = "IPVS_CMD_SET_CONFIG")]
    SetConfig,
    /// Get the timeouts.
    #[doc(alias = "IPVS_CMD_GET_CONFIG")]
    GetConfig,
    /// The command of the `GET_INFO` reply.
    #[doc(alias = "IPVS_CMD_SET_INFO")]
    SetInfo,
    /// Get the version and connection table size.
    #[doc(alias = "IPVS_CMD_GET_INFO")]
    GetInfo,
    /// Zero counters.
    #[doc(alias = "IPVS_CMD_ZERO")]
    Zero,
    /// Delete every service.
    #[doc(alias = "IPVS_CMD_FLUSH")]
    Flush,
    /// A command this build does not know (including `IPVS_CMD_UNSPEC`).
    Other(u8),
}

impl From<u8> for IpvsCmd {
    fn from(n: u8) -> Self {
        use IpvsCmd::*;
        match n {
            1 => NewService,
            2 => SetService,
            3 => DelService,
            4 => GetService,
            5 => NewDest,
            6 => SetDest,
            7 => DelDest,
            8 => GetDest,
            9 => NewDaemon,
            10 => DelDaemon,
            11 => GetDaemon,
            12 => SetConfig,
            13 => GetConfig,
            14 => SetInfo,
            15 => GetInfo,
            16 => Zero,
            17 => Flush,
            n => Other(n),
        }
    }
}

impl From<IpvsCmd> for u8 {
    fn from(c: IpvsCmd) -> u8 {
        use IpvsCmd::*;
        match c {
            NewService => 1,
            SetService => 2,
            DelService => 3,
            GetService => 4,
            NewDest => 5,
            SetDest => 6,
            DelDest => 7,
            GetDest => 8,
            NewDaemon => 9,
            DelDaemon => 10,
            GetDaemon => 11,
            SetConfig => 12,
            GetConfig => 13,
            SetInfo => 14,
            GetInfo => 15,
            Zero => 16,
            Flush => 17,
            Other(n) => n,
        }
    }
}

impl IpvsCmd {
    fn carries_info(self) -> bool {
        matches!(self, IpvsCmd::SetInfo | IpvsCmd::GetInfo)
    }
}

/// `IPVS_INFO_ATTR_*`: the attributes of a `GET_INFO` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsInfoAttribute {
    /// IPVS version, `(major << 16) | (minor << 8) | patch`.
    #[doc(alias = "IPVS_INFO_ATTR_VERSION")]
    Version(u32),
    /// Size of the connection hash table.
    #[doc(alias = "IPVS_INFO_ATTR_CONN_TAB_SIZE")]
    ConnTabSize(u32),
    /// An attribute this build does not know.
    Other(DefaultNla),
}

/// A top-level attribute of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsAttribute {
    /// A service.
    #[doc(alias = "IPVS_CMD_ATTR_SERVICE")]
    Service(Vec<IpvsServiceAttribute>),
    /// A destination.
    #[doc(alias = "IPVS_CMD_ATTR_DEST")]
    Dest(Vec<IpvsDestAttribute>),
    /// A sync daemon.
    #[doc(alias = "IPVS_CMD_ATTR_DAEMON")]
    Daemon(Vec<IpvsDaemonAttribute>),
    /// Established TCP timeout, seconds.
    #[doc(alias = "IPVS_CMD_ATTR_TIMEOUT_TCP")]
    TimeoutTcp(u32),
    /// TCP FIN_WAIT timeout, seconds.
    #[doc(alias = "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")]
    TimeoutTcpFin(u32),
    /// UDP timeout, seconds.
    #[doc(alias = "IPVS_CMD_ATTR_TIMEOUT_UDP")]
    TimeoutUdp(u32),
    /// An attribute of a `GET_INFO` reply.
    Info(IpvsInfoAttribute),
    /// An attribute this build does not know.
    Other(DefaultNla),
}

impl Nla for IpvsAttribute {
    fn value_len(&self) -> usize {
        use IpvsAttribute::*;
        match self {
            Service(a) => a.as_slice().buffer_len(),
            Dest(a) => a.as_slice().buffer_len(),
            Daemon(a) => a.as_slice().buffer_len(),
            TimeoutTcp(_) | TimeoutTcpFin(_) | TimeoutUdp(_) => 4,
            Info(IpvsInfoAttribute::Other(nla)) | Other(nla) => nla.value_len(),
            Info(_) => 4,
        }
    }

    fn kind(&self) -> u16 {
        use IpvsAttribute::*;
        match self {
            Service(_) => IPVS_CMD_ATTR_SERVICE,
            Dest(_) => IPVS_CMD_ATTR_DEST,
            Daemon(_) => IPVS_CMD_ATTR_DAEMON,
            TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            Info(IpvsInfoAttribute::Version(_)) => IPVS_INFO_ATTR_VERSION,
            Info(IpvsInfoAttribute::ConnTabSize(_)) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            Info(IpvsInfoAttribute::Other(nla)) | Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use IpvsAttribute::*;
        match self {
            Service(a) => a.as_slice().emit(buffer),
            Dest(a) => a.as_slice().emit(buffer),
            Daemon(a) => a.as_slice().emit(buffer),
            TimeoutTcp(v)
            | TimeoutTcpFin(v)
            | TimeoutUdp(v)
            | Info(IpvsInfoAttribute::Version(v))
            | Info(IpvsInfoAttribute::ConnTabSize(v)) => {
                // The buffer has exactly 4 bytes.
                let _ = emit_u32(buffer, *v);
            }
            Info(IpvsInfoAttribute::Other(nla)) | Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> ParseableParametrized<NlaBuffer<&T>, IpvsCmd> for IpvsAttribute {
    fn parse_with_param(buf: &NlaBuffer<&T>, cmd: IpvsCmd) -> Result<Self, DecodeError> {
        use IpvsAttribute::*;
        let v = buf.value();
        if cmd.carries_info() {
            return Ok(Info(match buf.kind() {
                IPVS_INFO_ATTR_VERSION => {
                    IpvsInfoAttribute::Version(parse_u32(v).context("IPVS_INFO_ATTR_VERSION")?)
                }
                IPVS_INFO_ATTR_CONN_TAB_SIZE => IpvsInfoAttribute::ConnTabSize(
                    parse_u32(v).context("IPVS_INFO_ATTR_CONN_TAB_SIZE")?,
                ),
                _ => IpvsInfoAttribute::Other(DefaultNla::parse(buf)?),
            }));
        }
        Ok(match buf.kind() {
            IPVS_CMD_ATTR_SERVICE => Service(
                super::parse_nested(v, IpvsServiceAttribute::parse)
                    .context("IPVS_CMD_ATTR_SERVICE")?,
            ),
            IPVS_CMD_ATTR_DEST => Dest(
                super::parse_nested(v, IpvsDestAttribute::parse).context("IPVS_CMD_ATTR_DEST")?,
            ),
            IPVS_CMD_ATTR_DAEMON => Daemon(
                super::parse_nested(v, IpvsDaemonAttribute::parse)
                    .context("IPVS_CMD_ATTR_DAEMON")?,
            ),
            IPVS_CMD_ATTR_TIMEOUT_TCP => {
                TimeoutTcp(parse_u32(v).context("IPVS_CMD_ATTR_TIMEOUT_TCP")?)
            }
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => {
                TimeoutTcpFin(parse_u32(v).context("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?)
            }
            IPVS_CMD_ATTR_TIMEOUT_UDP => {
                TimeoutUdp(parse_u32(v).context("IPVS_CMD_ATTR_TIMEOUT_UDP")?)
            }
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The payload of an IPVS generic-netlink message: its command and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub cmd: IpvsCmd,
    /// The attributes, in wire order.
    pub attributes: Vec<IpvsAttribute>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attributes.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attributes.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from(header.cmd);
        let attributes = super::parse_nested(buf, |nla| IpvsAttribute::parse_with_param(nla, cmd))?;
        Ok(IpvsMessage { cmd, attributes })
    }
}
