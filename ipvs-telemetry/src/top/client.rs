//! `top --from URL`: GETs of the daemon's JSON API over HTTP or HTTPS, with basic auth.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Deadline of one request (connect, TLS, answer).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where `top` reads from.
pub struct Client {
    /// `host:port` to connect to.
    authority: String,
    /// Host name for TLS and the `Host` header.
    host: String,
    /// Path prefix before `/api/v1/...` (no trailing slash).
    prefix: String,
    tls: Option<tokio_rustls::TlsConnector>,
    /// `Authorization` header value.
    auth: Option<String>,
    /// The URL as given, for messages.
    url: String,
}

/// Standard base64 (RFC 4648) of `b`.
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Client {
    /// A client of `url` (`http://HOST:PORT[/PREFIX]` or `https://…`); `ca_file` verifies an
    /// HTTPS server (else the system's roots are not used: give it), `user` and `password`
    /// authenticate. `Err` is one line.
    pub fn new(
        url: &str,
        ca_file: Option<&std::path::Path>,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<Client, String> {
        let bad = |why: &str| format!("--from {url:?}: {why}");
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("expected http://HOST:PORT or https://HOST:PORT"));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected a host (credentials go in --from.user)"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            _ => (authority, if https { 443 } else { 80 }),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = if https {
            let mut roots = rustls::RootCertStore::empty();
            let Some(ca) = ca_file else {
                return Err(bad(
                    "https needs --from.ca-file (the CA that signed the daemon's certificate)",
                ));
            };
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("--from.ca-file {}: {e}", ca.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("--from.ca-file {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--from.ca-file {}: {e}", ca.display()))?;
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        let auth = match (user, password) {
            (Some(u), p) => Some(format!(
                "Basic {}",
                base64(format!("{u}:{}", p.unwrap_or("")).as_bytes())
            )),
            (None, Some(_)) => return Err("--from.password-file needs --from.user".into()),
            (None, None) => None,
        };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Client {
            authority,
            host,
            prefix: prefix.to_string(),
            tls,
            auth,
            url: url.to_string(),
        })
    }

    /// The body of `GET PREFIX{path}`; `Err` is one line (the status and the daemon's reason).
    pub async fn get(&self, path: &str) -> Result<Bytes, String> {
        match tokio::time::timeout(TIMEOUT, self.get_inner(path)).await {
            Ok(r) => r,
            Err(_) => Err(format!("{}{path}: no answer within {TIMEOUT:?}", self.url)),
        }
    }

    async fn get_inner(&self, path: &str) -> Result<Bytes, String> {
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", self.url);
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| at(&e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| at(&e))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| at(&e))?;
                self.request(TokioIo::new(stream), path).await
            }
            None => self.request(TokioIo::new(tcp), path).await,
        }
    }

    async fn request<I>(&self, io: I, path: &str) -> Result<Bytes, String>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", self.url);
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| at(&e))?;
        let conn = tokio::spawn(conn);
        let mut req = hyper::Request::get(format!("{}{path}", self.prefix))
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json");
        if let Some(a) = &self.auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req.body(Empty::new()).map_err(|e| at(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| at(&e))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| at(&e))?
            .to_bytes();
        conn.abort();
        if !status.is_success() {
            let line = String::from_utf8_lossy(&body);
            let line = line.lines().next().unwrap_or("").trim();
            return Err(format!(
                "{}{path}: {status}: {line}",
                self.url.trim_end_matches('/')
            ));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_credentials() {
        assert_eq!(base64(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn urls() {
        let c = Client::new("http://[::1]:9800/x/", None, Some("u"), Some("p")).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.prefix.as_str()),
            ("[::1]:9800", "/x")
        );
        let c = Client::new("http://localhost", None, None, None).unwrap();
        assert_eq!(c.authority, "localhost:80");
        assert!(Client::new("ftp://x", None, None, None).is_err());
        assert!(Client::new("http://u:p@x:1", None, None, None).is_err());
        assert!(Client::new("https://x:1", None, None, None).is_err());
    }
}
