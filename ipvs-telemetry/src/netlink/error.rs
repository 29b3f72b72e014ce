//! Errors of the netlink client, each with a cause an operator can act on.

use std::io;
use std::time::Duration;

use crate::model::{CollectFailure, ErrorReason};

/// Why reading IPVS over netlink failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No "IPVS" generic-netlink family: the module is not loaded (and we never load it).
    #[error("ip_vs module not loaded")]
    ModuleNotLoaded,
    /// The kernel answered EPERM: IPVS checks CAP_NET_ADMIN (`GENL_ADMIN_PERM`) on every
    /// command.
    #[error("{request} needs CAP_NET_ADMIN in the initial user namespace")]
    PermissionDenied {
        /// The request, by kernel constant.
        request: &'static str,
    },
    /// No complete answer before the deadline.
    #[error("{request} got no complete reply within {timeout:?}")]
    Timeout {
        /// The request, by kernel constant.
        request: &'static str,
        /// The deadline of the request.
        timeout: Duration,
    },
    /// The reply could not be decoded.
    #[error("malformed reply to {request}: {detail}")]
    Malformed {
        /// The request, by kernel constant.
        request: &'static str,
        /// What is wrong, naming the attribute.
        detail: String,
    },
    /// The kernel answered with an error code.
    #[error("{request} failed")]
    Kernel {
        /// The request, by kernel constant.
        request: &'static str,
        /// The errno the kernel returned.
        #[source]
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("netlink socket {call} failed")]
    Socket {
        /// The system call.
        call: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The metric reason and a one-line message (the error and its causes).
    pub fn failure(&self) -> CollectFailure {
        let reason = match self {
            Error::ModuleNotLoaded => ErrorReason::ModuleNotLoaded,
            Error::PermissionDenied { .. } => ErrorReason::MissingCapNetAdmin,
            Error::Timeout { .. } => ErrorReason::Timeout,
            Error::Malformed { .. } => ErrorReason::MalformedReply,
            Error::Kernel { .. } | Error::Socket { .. } => ErrorReason::Io,
        };
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        CollectFailure { reason, message }
    }

    /// Maps a negative errno from `NLMSG_ERROR` / `NLMSG_DONE` for `request`.
    pub(crate) fn from_kernel(request: &'static str, code: i32) -> Self {
        let errno = code.checked_neg().unwrap_or(code);
        if errno == libc::EPERM {
            return Error::PermissionDenied { request };
        }
        Error::Kernel {
            request,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// Maps a failed system call. Opening, binding and polling a netlink socket need no
    /// capability, so EPERM/EACCES here come from a seccomp filter or a security module and
    /// are reported as they are.
    pub(crate) fn socket(call: &'static str, source: io::Error) -> Self {
        Error::Socket { call, source }
    }
}
