//! Listeners, connections and the request handler.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::body::Body;
use super::io::TimeoutIo;
use super::scrape::{self, Flights};
use super::webconfig::Fingerprint;
use super::{
    HANDSHAKE_TIMEOUT, MAX_CONNECTIONS, REQUEST_TIMEOUT, SHUTDOWN_GRACE, WebConfig, negotiate,
};
use crate::collect::Telemetry;

/// State shared by every connection.
pub struct Shared {
    /// Collections and the eBPF side.
    pub telemetry: Arc<Telemetry>,
    /// Gzip encodings in flight, shared by concurrent scrapes.
    pub flights: Arc<Flights>,
    /// The web configuration in force (replaced on reload).
    pub web: RwLock<Arc<WebConfig>>,
    /// The JSON API (`/api/...`, see [`crate::api::routes`]).
    pub api: axum::Router,
    /// `--web.telemetry-path`.
    pub telemetry_path: String,
    /// `--web.max-requests` (0: no limit).
    pub limiter: Option<Arc<Semaphore>>,
    /// `--web.health-without-auth`: `/-/healthy` and `/-/ready` skip basic auth.
    pub health_without_auth: bool,
    /// `--web.config.file`, re-read when its files change (see [`Shared::reload_if_changed`]).
    web_file: Option<PathBuf>,
    /// The files' fingerprint when last looked at.
    web_seen: Mutex<Fingerprint>,
}

impl Shared {
    /// Builds the shared state.
    pub fn new(
        telemetry: Arc<Telemetry>,
        web: WebConfig,
        telemetry_path: String,
        max_requests: usize,
    ) -> Self {
        Shared {
            api: crate::api::routes::router(telemetry.clone()),
            telemetry,
            flights: Arc::default(),
            web: RwLock::new(Arc::new(web)),
            telemetry_path,
            limiter: (max_requests > 0).then(|| Arc::new(Semaphore::new(max_requests))),
            health_without_auth: false,
            web_file: None,
            web_seen: Mutex::new(Fingerprint::default()),
        }
    }

    /// Sets the `--web.config.file` the configuration in force was loaded from.
    pub fn with_web_file(mut self, path: Option<PathBuf>) -> Self {
        self.web_seen = Mutex::new(Fingerprint::of(&self.web().files));
        self.web_file = path;
        self
    }

    /// Re-reads `--web.config.file` when it or a file it names (certificates, keys, CA) changed
    /// since last looked at; an invalid new configuration is logged and the one in force stays.
    /// Called for each new connection (a `stat` per file), like exporter-toolkit's per-handshake
    /// reading, so that a rotated certificate (cert-manager: no SIGHUP) serves the next
    /// connection. While one connection reloads, the others go on with the configuration in
    /// force.
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.web_file else { return };
        let Ok(mut seen) = self.web_seen.try_lock() else {
            return;
        };
        let now = Fingerprint::of(&self.web().files);
        if now == *seen {
            return;
        }
        // The fingerprint from before reading: a change while reading shows at the next
        // connection (if the new file names other files, that costs one more reload).
        *seen = now;
        match WebConfig::load(path) {
            Ok(web) => {
                web.log_warnings();
                self.set_web(web);
                tracing::info!(file = %path.display(), "web configuration files changed: reloaded");
            }
            Err(e) => tracing::error!(
                error = %e,
                "web configuration files changed but are invalid, keeping the previous configuration"
            ),
        }
    }

    /// Sets `--web.health-without-auth`.
    pub fn with_health_without_auth(mut self, open: bool) -> Self {
        self.health_without_auth = open;
        self
    }

    /// The web configuration in force.
    pub fn web(&self) -> Arc<WebConfig> {
        self.web.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a new web configuration in force for new connections and requests.
    pub fn set_web(&self, web: WebConfig) {
        *self.web.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(web);
    }
}

/// Bound listening sockets.
pub type Listeners = Vec<(SocketAddr, TcpListener)>;

/// Why [`bind`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The `--web.listen-address` value does not parse.
    #[error("--web.listen-address: {0}")]
    Address(String),
    /// The socket could not be bound (address in use, no permission, no such address).
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Listen {
        /// The socket address.
        addr: SocketAddr,
        /// The `--web.listen-address` value it came from.
        flag: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Binds every `--web.listen-address`; `:PORT` is every IPv6 and IPv4 address (one dual-stack
/// socket where the system allows, else one socket per family).
pub fn bind(addresses: &[String]) -> Result<Listeners, BindError> {
    let mut out = Vec::new();
    for a in addresses {
        let addrs = crate::cli::parse_listen_address(a).map_err(BindError::Address)?;
        let any = addrs.len() == 2 && addrs.iter().all(|s| s.ip().is_unspecified());
        let mut v6_ok = false;
        for addr in addrs {
            match bind_one(addr) {
                Ok(l) => {
                    v6_ok |= addr.is_ipv6();
                    out.push((addr, l));
                }
                // `[::]:PORT` already covers IPv4 (dual-stack socket).
                Err(e)
                    if any
                        && addr.is_ipv4()
                        && v6_ok
                        && e.kind() == std::io::ErrorKind::AddrInUse => {}
                // No IPv6 on this host: IPv4 alone.
                Err(e)
                    if any
                        && addr.is_ipv6()
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                        ) => {}
                Err(source) => {
                    return Err(BindError::Listen {
                        addr,
                        flag: a.clone(),
                        source,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

/// Serves until `shutdown` completes, then lets requests in flight finish (up to
/// [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listeners: Listeners,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut accepts = Vec::new();
    for (addr, listener) in listeners {
        tracing::info!(address = %addr, "listening");
        accepts.push(tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            graceful.clone(),
            connections.clone(),
        )));
    }
    shutdown.await;
    for a in &accepts {
        a.abort();
    }
    for a in accepts {
        let _ = a.await;
    }
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after the shutdown grace period");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    connections: Arc<Semaphore>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(peer = %peer, "too many connections, closing");
            drop(stream);
            continue;
        };
        let watcher = graceful.watcher();
        let shared = shared.clone();
        tokio::spawn(async move {
            connection(stream, peer, shared, watcher).await;
            drop(permit);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let io = TimeoutIo::new(stream);
    shared.reload_if_changed();
    let web = shared.web();
    match web.tls.clone() {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(tls)) => http(tls, peer, shared, watcher).await,
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        }
        None => http(io, peer, shared, watcher).await,
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(req, peer, shared.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        // Clients that shut their write side after the request (nc, HTTP/1.0 tools) still get
        // the answer.
        .half_close(true)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(peer = %peer, error = %e, "connection ended");
    }
}

type Resp = Response<Body>;

fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Body::whole(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Resp, Infallible> {
    let web = shared.web();
    let mut resp =
        match tokio::time::timeout(REQUEST_TIMEOUT, route(req, peer, &shared, &web)).await {
            Ok(r) => r,
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "request timed out\n"),
        };
    for (k, v) in &web.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    Ok(resp)
}

async fn route(req: Request<Incoming>, peer: SocketAddr, shared: &Shared, web: &WebConfig) -> Resp {
    let permit = match &shared.limiter {
        Some(s) => match s.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests in flight (--web.max-requests), try again later\n",
                );
            }
        },
        None => None,
    };
    let health = matches!(req.uri().path(), "/-/healthy" | "/-/ready");
    if let Some(auth) = web
        .auth
        .as_ref()
        .filter(|_| !(health && shared.health_without_auth))
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let auth = auth.clone();
        let ok = tokio::task::spawn_blocking(move || auth.check(given.as_deref()))
            .await
            .unwrap_or(false);
        if !ok {
            let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ipvs-telemetry\""),
            );
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    if path == shared.telemetry_path {
        // A scrape takes a slot of its own only when it encodes (see `scrape`).
        drop(permit);
        return metrics(&req, peer, shared).await;
    }
    if path.starts_with("/api/") {
        let (parts, bytes) = crate::api::routes::answer(&shared.api, req)
            .await
            .into_parts();
        return Response::from_parts(parts, Body::whole(bytes));
    }
    match path {
        "/" => landing(&shared.telemetry_path),
        "/-/healthy" => text(StatusCode::OK, "Healthy\n"),
        "/-/ready" => {
            if shared.telemetry.ready() {
                text(StatusCode::OK, "Ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not ready: the first collection has not finished\n",
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
    }
}

async fn metrics(req: &Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Resp {
    let h = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let format = negotiate::format(h(header::ACCEPT));
    let gzip = negotiate::gzip(h(header::ACCEPT_ENCODING));
    let body = scrape::body(
        &shared.telemetry,
        &shared.flights,
        &shared.limiter,
        format,
        gzip,
        peer.ip(),
    )
    .await;
    let body = match body {
        Ok(b) => b,
        Err(refused) => {
            let (status, msg) = refused.answer();
            return text(status, msg);
        }
    };
    let mut r = Response::new(body);
    let hs = r.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    hs.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzip {
        hs.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

fn landing(path: &str) -> Resp {
    let esc = html_escape(path);
    let body = format!(
        "<!DOCTYPE html>\n<html>\n<head><title>ipvs-telemetry</title></head>\n<body>\n\
         <h1>ipvs-telemetry</h1>\n<p>Prometheus telemetry for Linux IPVS, version {}</p>\n\
         <ul>\n<li><a href=\"{esc}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n\
         <li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n</body>\n</html>\n",
        html_escape(crate::cli::VERSION)
    );
    let mut r = Response::new(Body::whole(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
