//! `--web.config.file`: the exporter-toolkit web configuration (TLS, basic auth, headers).
//!
//! The file is read and fully validated at start (a bad file is exit status 2 with the key at
//! fault), again on SIGHUP, and again when the file or a file it names changes on disk (see
//! [`Fingerprint`]: checked at each new connection, as exporter-toolkit re-reads its files per
//! handshake; Kubernetes has no SIGHUP for a rotated certificate). A file that became invalid is
//! refused and the previous configuration stays in force, so that a half-written file or a
//! certificate rotated before its key never breaks a scrape.
//!
//! Supported as in exporter-toolkit: `tls_server_config` (`cert_file`, `key_file`,
//! `client_auth_type`, `client_ca_file`, `min_version`, `max_version`, `cipher_suites`,
//! `curve_preferences`, `prefer_server_cipher_suites`), `http_server_config.headers` (the five
//! headers exporter-toolkit allows) and `basic_auth_users` (bcrypt hashes). Refused clearly,
//! because rustls cannot do them: TLS 1.0/1.1, CBC and RSA-key-exchange suites, `CurveP521`,
//! `client_auth_type` `RequestClientCert`/`RequireAnyClientCert`, `client_allowed_sans`.
//! `http_server_config.http2` is accepted and ignored: the daemon speaks HTTP/1.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio_rustls::rustls;

use super::auth::BasicAuth;

/// A web-config problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or an unknown/mistyped key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key and line).
        message: String,
    },
    /// A key holds an unusable value.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key at fault, e.g. `tls_server_config.min_version`.
        key: String,
        /// Why.
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// The validated, ready-to-use web configuration.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// TLS server configuration, `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Basic authentication, `None` when no users are configured.
    pub auth: Option<Arc<BasicAuth>>,
    /// Headers added to every response.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// Files whose change a reload would pick up (the config and what it names).
    pub files: Vec<PathBuf>,
    /// What is valid but unsafe (logged as warnings at each load): a file holding secrets
    /// that every user can read, a bcrypt cost below [`MIN_BCRYPT_COST`].
    pub warnings: Vec<String>,
}

/// The lowest bcrypt cost not reported as weak (`htpasswd -B` and exporter-toolkit's docs use 10).
pub const MIN_BCRYPT_COST: u32 = 10;

/// What tells whether files changed: device, inode, size and modification time of each, symlinks
/// followed (a Kubernetes secret volume swaps a symlink to a new directory: a new inode), `None`
/// for a file that cannot be read. A `stat` per file: cheap enough for every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<Option<FileStamp>>);

/// `(st_dev, st_ino, st_size, st_mtime, st_mtime_nsec)` of one file.
type FileStamp = (u64, u64, u64, i64, i64);

impl Fingerprint {
    /// The fingerprint of `files` now.
    pub fn of(files: &[PathBuf]) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        Fingerprint(
            files
                .iter()
                .map(|f| {
                    std::fs::metadata(f)
                        .ok()
                        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
                })
                .collect(),
        )
    }
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .field("headers", &self.headers)
            .finish()
    }
}

impl WebConfig {
    /// Logs [`WebConfig::warnings`], one line each.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!("--web.config.file: {w}");
        }
    }

    /// Reads and validates `path`; relative file names inside are relative to its directory.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates the text of a web-config file read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_norway::from_str(text).map_err(|e| WebConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        };
        let invalid = |key: &str, message: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut files = vec![path.to_path_buf()];
        let tls = match raw.tls_server_config {
            Some(t) => Some(Arc::new(build_tls(t, dir, &mut files, &invalid)?)),
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(http) = raw.http_server_config {
            let _ = http.http2;
            for (k, v) in http.headers.unwrap_or_default() {
                let key = format!("http_server_config.headers.{k}");
                check_header(&k, &v).map_err(|m| invalid(&key, m))?;
                let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| invalid(&key, e.to_string()))?;
                let value = hyper::header::HeaderValue::from_str(&v)
                    .map_err(|e| invalid(&key, e.to_string()))?;
                headers.push((name, value));
            }
        }
        let auth = match raw.basic_auth_users {
            Some(users) if !users.is_empty() => {
                for (user, hash) in &users {
                    if user.contains(':') {
                        return Err(invalid(
                            &format!("basic_auth_users.{user}"),
                            "a user name cannot contain ':'".into(),
                        ));
                    }
                    hash.parse::<bcrypt::HashParts>().map_err(|e| {
                        invalid(
                            &format!("basic_auth_users.{user}"),
                            format!("not a bcrypt hash: {e}"),
                        )
                    })?;
                }
                Some(Arc::new(BasicAuth::new(users)))
            }
            _ => None,
        };
        let warnings = weaknesses(text, path);
        Ok(WebConfig {
            tls,
            auth,
            headers,
            files,
            warnings,
        })
    }
}

/// The unsafe parts of a valid configuration: secrets readable by every user (the config file
/// when it holds password hashes, the TLS key) and bcrypt hashes cheaper than
/// [`MIN_BCRYPT_COST`].
fn weaknesses(text: &str, path: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let raw: RawConfig = serde_norway::from_str(text).unwrap_or_default();
    let users = raw.basic_auth_users.unwrap_or_default();
    let key = raw
        .tls_server_config
        .as_ref()
        .and_then(|t| t.key_file.as_ref())
        .map(|k| path.parent().unwrap_or(Path::new(".")).join(k));
    let mut secrets: Vec<&Path> = Vec::new();
    if !users.is_empty() {
        secrets.push(path);
    }
    if let Some(k) = &key {
        secrets.push(k);
    }
    for f in secrets {
        let mode = std::fs::metadata(f)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o004 != 0 {
            out.push(format!(
                "{} holds secrets and every user can read it (mode {:o}): chmod o-r",
                f.display(),
                mode & 0o777
            ));
        }
    }
    for (user, hash) in &users {
        if let Ok(parts) = hash.parse::<bcrypt::HashParts>() {
            if parts.get_cost() < MIN_BCRYPT_COST {
                out.push(format!(
                    "basic_auth_users.{user}: bcrypt cost {} is weak (use {MIN_BCRYPT_COST} or more)",
                    parts.get_cost()
                ));
            }
        }
    }
    out
}

/// exporter-toolkit's allowed headers and their allowed values.
fn check_header(name: &str, value: &str) -> Result<(), String> {
    match name {
        "Strict-Transport-Security" | "X-XSS-Protection" | "Content-Security-Policy" => Ok(()),
        "X-Frame-Options" => {
            if value.eq_ignore_ascii_case("deny") || value.eq_ignore_ascii_case("sameorigin") {
                Ok(())
            } else {
                Err(format!("{value:?} is not allowed (Deny or SameOrigin)"))
            }
        }
        "X-Content-Type-Options" => {
            if value.eq_ignore_ascii_case("nosniff") {
                Ok(())
            } else {
                Err(format!("{value:?} is not allowed (NoSniff)"))
            }
        }
        _ => Err(
            "header not allowed (Strict-Transport-Security, X-Content-Type-Options, \
             X-Frame-Options, X-XSS-Protection, Content-Security-Policy)"
                .into(),
        ),
    }
}

type Invalid<'a> = dyn Fn(&str, String) -> WebConfigError + 'a;

fn build_tls(
    t: RawTls,
    dir: &Path,
    files: &mut Vec<PathBuf>,
    invalid: &Invalid<'_>,
) -> Result<rustls::ServerConfig, WebConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let k = |s: &str| format!("tls_server_config.{s}");
    let resolve = |f: &str| dir.join(f);
    let cert_file = t
        .cert_file
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(&k("cert_file"), "missing".into()))?;
    let key_file = t
        .key_file
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(&k("key_file"), "missing".into()))?;
    let cert_path = resolve(&cert_file);
    let key_path = resolve(&key_file);
    files.push(cert_path.clone());
    files.push(key_path.clone());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(&k("cert_file"), format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            &k("cert_file"),
            format!("{}: no certificate found", cert_path.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| invalid(&k("key_file"), format!("{}: {e}", key_path.display())))?;

    let version = |key: &str, v: &Option<String>| -> Result<Option<u8>, WebConfigError> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some("TLS13") => Ok(Some(13)),
            Some("TLS12") => Ok(Some(12)),
            Some(s @ ("TLS10" | "TLS11")) => Err(invalid(
                &k(key),
                format!("{s} is not supported (TLS12 and TLS13 only)"),
            )),
            Some(s) => Err(invalid(&k(key), format!("unknown TLS version {s:?}"))),
        }
    };
    let min = version("min_version", &t.min_version)?.unwrap_or(12);
    let max = version("max_version", &t.max_version)?.unwrap_or(13);
    if min > max {
        return Err(invalid(
            &k("max_version"),
            "lower than min_version".to_string(),
        ));
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    if min <= 12 {
        versions.push(&rustls::version::TLS12);
    }

    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = t.cipher_suites.filter(|v| !v.is_empty()) {
        // Like Go: the list only governs TLS 1.2; TLS 1.3 suites stay as they are.
        let mut suites: Vec<rustls::SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .collect();
        for name in &names {
            let s = cipher_suite(name).ok_or_else(|| {
                invalid(
                    &k("cipher_suites"),
                    format!(
                        "{name:?} is not supported (only ECDHE with AES-GCM or ChaCha20-Poly1305)"
                    ),
                )
            })?;
            if !suites.contains(&s) {
                suites.push(s);
            }
        }
        provider.cipher_suites = suites;
    }
    if let Some(names) = t.curve_preferences.filter(|v| !v.is_empty()) {
        use rustls::crypto::ring::kx_group;
        let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
        for name in &names {
            let g: &'static dyn rustls::crypto::SupportedKxGroup = match name.as_str() {
                "X25519" => kx_group::X25519,
                "CurveP256" => kx_group::SECP256R1,
                "CurveP384" => kx_group::SECP384R1,
                other => {
                    return Err(invalid(
                        &k("curve_preferences"),
                        format!("{other:?} is not supported (X25519, CurveP256, CurveP384)"),
                    ));
                }
            };
            groups.push(g);
        }
        provider.kx_groups = groups;
    }
    if t.client_allowed_sans.is_some_and(|v| !v.is_empty()) {
        return Err(invalid(
            &k("client_allowed_sans"),
            "not supported by this exporter".into(),
        ));
    }

    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(&k("cipher_suites"), e.to_string()))?;
    let auth_type = t.client_auth_type.unwrap_or_default();
    let ca = t.client_ca_file.filter(|s| !s.is_empty());
    let roots = |ca: &Option<String>| -> Result<Arc<rustls::RootCertStore>, WebConfigError> {
        let ca = ca.as_ref().ok_or_else(|| {
            invalid(
                &k("client_ca_file"),
                format!("required by client_auth_type {auth_type}"),
            )
        })?;
        let path = resolve(ca);
        let mut store = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(&k("client_ca_file"), format!("{}: {e}", path.display())))?;
        for c in certs {
            store
                .add(c)
                .map_err(|e| invalid(&k("client_ca_file"), format!("{}: {e}", path.display())))?;
        }
        if store.is_empty() {
            return Err(invalid(
                &k("client_ca_file"),
                format!("{}: no certificate found", path.display()),
            ));
        }
        Ok(Arc::new(store))
    };
    let builder = match auth_type.as_str() {
        "" | "NoClientCert" => {
            if ca.is_some() {
                return Err(invalid(
                    &k("client_ca_file"),
                    "set without a client_auth_type that verifies certificates".into(),
                ));
            }
            builder.with_no_client_auth()
        }
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            if let Some(ca) = &ca {
                files.push(resolve(ca));
            }
            let mut v = rustls::server::WebPkiClientVerifier::builder(roots(&ca)?);
            if auth_type == "VerifyClientCertIfGiven" {
                v = v.allow_unauthenticated();
            }
            let v = v
                .build()
                .map_err(|e| invalid(&k("client_ca_file"), e.to_string()))?;
            builder.with_client_cert_verifier(v)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(invalid(
                &k("client_auth_type"),
                format!(
                    "{auth_type} (a certificate without verification) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ),
            ));
        }
        other => {
            return Err(invalid(
                &k("client_auth_type"),
                format!("unknown value {other:?}"),
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&k("key_file"), format!("does not match cert_file: {e}")))?;
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(false);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Go's TLS 1.2 cipher suite names that rustls implements.
fn cipher_suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/nonexistent/web.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_and_auth_only() {
        let c = parse("").unwrap();
        assert!(c.tls.is_none() && c.auth.is_none());
        let hash = super::super::auth::tests::hash("secret");
        let c = parse(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        assert!(c.auth.is_some());
    }

    /// A world-readable file with password hashes and a cheap hash are reported; a private
    /// file with cost-10 hashes is not.
    #[test]
    fn weak_and_readable_configs_are_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("webconfig-weak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        let cheap = bcrypt::hash_with_salt("pw", 4, [2; 16])
            .unwrap()
            .to_string();
        let good = bcrypt::hash_with_salt("pw", 10, [2; 16])
            .unwrap()
            .to_string();
        let text = format!("basic_auth_users:\n  alice: '{cheap}'\n  bob: '{good}'\n");
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = WebConfig::load(&path).unwrap().warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("every user can read it (mode 644)"), "{w:?}");
        assert!(
            w[1].starts_with("basic_auth_users.alice: bcrypt cost 4 is weak"),
            "{w:?}"
        );
        std::fs::write(&path, format!("basic_auth_users:\n  bob: '{good}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            WebConfig::load(&path).unwrap().warnings,
            Vec::<String>::new()
        );
        // Headers only: nothing secret, any mode.
        std::fs::write(
            &path,
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(WebConfig::load(&path).unwrap().warnings.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("basic_auth_users:\n  alice: notahash\n").unwrap_err();
        assert!(
            e.contains("basic_auth_users.alice: not a bcrypt hash"),
            "{e}"
        );
        let e = parse("tls_server_config:\n  cert_fil: x\n").unwrap_err();
        assert!(e.contains("unknown field `cert_fil`"), "{e}");
        let e = parse("bogus: 1\n").unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = parse("tls_server_config:\n  key_file: k\n").unwrap_err();
        assert!(e.contains("tls_server_config.cert_file: missing"), "{e}");
        let e = parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").unwrap_err();
        assert!(
            e.contains("http_server_config.headers.X-Frame-Options: \"allow\" is not allowed"),
            "{e}"
        );
        let e = parse("http_server_config:\n  headers:\n    Server: x\n").unwrap_err();
        assert!(e.contains("headers.Server: header not allowed"), "{e}");
        let e = parse("tls_server_config: [1]\n").unwrap_err();
        assert!(e.contains("tls_server_config"), "{e}");
    }

    #[test]
    fn allowed_headers() {
        let c = parse(
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
             X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=31536000\n",
        )
        .unwrap();
        assert_eq!(c.headers.len(), 3);
    }
}
