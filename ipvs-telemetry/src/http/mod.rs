//! The HTTP server: metrics endpoint, landing page, health, web-config (TLS, basic auth).
//! Asks [`crate::collect`] for a collection and streams its encoding; never touches netlink.
//!
//! Protection against slow or many clients: at most [`MAX_CONNECTIONS`] connections (more are
//! closed at once), a TLS handshake and the request headers must arrive within
//! [`HANDSHAKE_TIMEOUT`], an idle or stalled connection is closed (see [`io`]), a request is
//! answered within [`REQUEST_TIMEOUT`] (waiting for a collection included), and at most
//! `--web.max-requests` requests are handled at once (more get 503 at once); a scrape takes a
//! slot only when it encodes, and holds it until its body is written (see [`scrape`]).

pub mod auth;
mod body;
mod io;
pub mod negotiate;
mod scrape;
mod server;
pub mod webconfig;

use std::time::Duration;

pub use server::{BindError, Listeners, Shared, bind, serve};
pub use webconfig::{WebConfig, WebConfigError};

/// Most simultaneous connections.
pub const MAX_CONNECTIONS: usize = 512;
/// Deadline of the TLS handshake and of the request headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one request (authentication and encoding included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
