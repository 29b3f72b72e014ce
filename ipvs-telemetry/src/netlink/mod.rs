//! The IPVS generic-netlink codec and a read-only client bound to one socket.
//!
//! Contract used by the rest of the daemon (implemented by the netlink issue):
//! - `Client::open(timeout)`: a socket in the calling thread's current network namespace;
//!   never resolves the IPVS family unless ip_vs is loaded there.
//! - `Client::read_state(&mut self) -> Result<model::IpvsState, Error>`.
//! - `Error::failure(&self) -> model::CollectFailure`.

use std::time::Duration;

use crate::model::{CollectFailure, ErrorReason, IpvsState};

/// Reads the IPVS state of the calling thread's current network namespace once.
///
/// Placeholder until the netlink client lands; the `netns` module calls this on the thread that
/// is inside the namespace.
pub fn read_current_namespace(_timeout: Duration) -> Result<IpvsState, CollectFailure> {
    Err(CollectFailure {
        reason: ErrorReason::Io,
        message: "netlink client not implemented yet".into(),
    })
}
