//! A real Prometheus server for tests: started on 127.0.0.1 with a free port and an empty TSDB
//! in a temporary directory, queried over its HTTP API, killed when dropped (also when the test
//! panics).
//!
//! Include it from a test file with `#[path = "common/prometheus.rs"] mod prometheus;`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// A temporary directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temporary directory.
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Prometheus configuration that loads `rule_files` (absolute paths) and scrapes `targets`
/// (`host:port`) every `scrape_interval` (e.g. `"1s"`).
pub(crate) fn config(rule_files: &[PathBuf], targets: &[String], scrape_interval: &str) -> String {
    let mut yaml = format!(
        "global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
    );
    yaml.push_str("rule_files:\n");
    for file in rule_files {
        yaml.push_str(&format!("  - {:?}\n", file.display().to_string()));
    }
    if rule_files.is_empty() {
        yaml.push_str("  []\n");
    }
    yaml.push_str("scrape_configs:\n");
    if targets.is_empty() {
        yaml.push_str("  []\n");
    } else {
        yaml.push_str("  - job_name: ipvs-telemetry\n    static_configs:\n      - targets:\n");
        for target in targets {
            yaml.push_str(&format!("          - {target:?}\n"));
        }
    }
    yaml
}

/// A running Prometheus, killed on drop.
pub(crate) struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (YAML text) and waits until it is ready. The port is
    /// picked free just before; if another process takes it in between, a new one is tried.
    pub(crate) fn start(config: &str) -> Result<Self> {
        Self::start_with(config, &[])
    }

    /// [`Prometheus::start`] with more command-line flags (e.g.
    /// `--enable-feature=native-histograms`).
    pub(crate) fn start_with(config: &str, flags: &[&str]) -> Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(config, flags) {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {}
                result => return result,
            }
        }
    }

    fn start_once(config: &str, flags: &[&str]) -> Result<Self> {
        let dir = TempDir::new("ipvs-telemetry-prometheus")?;
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .args(flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut prometheus = Self { child, addr, dir };
        prometheus.wait_ready(Duration::from_secs(60))?;
        Ok(prometheus)
    }

    /// Address of the HTTP API.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Prometheus' own log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, deadline: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("prometheus exited with {status}:\n{}", self.log());
            }
            if matches!(self.get("/-/ready"), Ok((200, _))) {
                return Ok(());
            }
            if start.elapsed() > deadline {
                bail!("prometheus not ready after {deadline:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path_and_query`: the status code and the body.
    pub(crate) fn get(&self, path_and_query: &str) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.addr
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("HTTP response without a header end")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad HTTP status line in {head:?}"))?;
        Ok((status, body.to_owned()))
    }

    /// Runs an instant query: the HTTP status and the parsed JSON answer (`status`, `data` or
    /// `errorType` and `error`).
    pub(crate) fn query(&self, expr: &str) -> Result<(u16, Value)> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", urlencode(expr)))?;
        let json = serde_json::from_str(&body)
            .with_context(|| format!("HTTP {status} with a body that is not JSON: {body}"))?;
        Ok((status, json))
    }

    /// `GET` a JSON API path such as `/api/v1/rules`.
    pub(crate) fn api(&self, path: &str) -> Result<Value> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            bail!("GET {path}: HTTP {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }
    /// Queries each expression until it returns data (a non-empty vector or matrix, or a
    /// scalar) or `deadline` passes; returns one line per expression that never did, with the
    /// last answer.
    pub(crate) fn wait_for_data(
        &self,
        expressions: &[(String, String)],
        deadline: Duration,
    ) -> Vec<String> {
        let start = Instant::now();
        let mut pending: Vec<&(String, String)> = expressions.iter().collect();
        let mut last = std::collections::HashMap::new();
        loop {
            pending.retain(|(source, expr)| match self.query(expr) {
                Ok((200, json)) if has_data(&json) => false,
                Ok((status, json)) => {
                    last.insert(source.clone(), format!("HTTP {status} {json}"));
                    true
                }
                Err(e) => {
                    last.insert(source.clone(), format!("{e:#}"));
                    true
                }
            });
            if pending.is_empty() || start.elapsed() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        pending
            .into_iter()
            .map(|(source, expr)| {
                let answer = last.get(source).map(String::as_str).unwrap_or_default();
                format!("{source}: no data after {deadline:?}: {answer}\n    {expr}")
            })
            .collect()
    }
}

/// Whether a query answer holds data.
pub(crate) fn has_data(json: &Value) -> bool {
    json["status"] == "success"
        && match json["data"]["resultType"].as_str() {
            Some("scalar") | Some("string") => true,
            _ => json["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
        }
}

/// Whether a query answer holds at least one finite sample value (not NaN or ±Inf): data a
/// panel can draw, where [`has_data`] also accepts a vector of NaN (e.g. `histogram_quantile`
/// over buckets that did not move). A native histogram sample (`histogram`, `histograms`)
/// counts by its count.
pub(crate) fn has_finite_value(json: &Value) -> bool {
    let number = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    let finite = |v: &Value| number(&v[1]) || number(&v[1]["count"]);
    json["status"] == "success"
        && match json["data"]["resultType"].as_str() {
            Some("scalar") => finite(&json["data"]["result"]),
            Some("vector") => json["data"]["result"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|s| finite(&s["value"]) || finite(&s["histogram"]))
            }),
            Some("matrix") => json["data"]["result"].as_array().is_some_and(|r| {
                r.iter().any(|s| {
                    ["values", "histograms"]
                        .iter()
                        .any(|k| s[*k].as_array().is_some_and(|v| v.iter().any(finite)))
                })
            }),
            _ => false,
        }
}

/// The number of series (or 1 for a scalar) in a query answer.
pub(crate) fn series_count(json: &Value) -> usize {
    match json["data"]["resultType"].as_str() {
        Some("scalar") | Some("string") => 1,
        _ => json["data"]["result"].as_array().map_or(0, Vec::len),
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Percent-encodes a query-string value.
pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
