//! `ipvs-telemetry top --from URL --batch`: what the director is doing now, read from a running
//! daemon's JSON API ([`crate::api`]): per namespace, service and destination the new
//! connections per second (eBPF over the API's window; the kernel's estimator, marked `~`, when
//! the probes are not attached), active and inactive connections, weight, bytes per second
//! (estimator), first-response p50 / p99 / p99.9 and unanswered connections, with names.
//!
//! Interactive by default ([`tui`]); with `--batch` it asks for the windowed figures once at
//! start (that starts their tracking in the daemon), then every `--delay` prints one frame: every service, each followed by its destinations,
//! sorted by `--sort` (numbers largest first, names in order) and kept by `--filter`.

pub mod client;
mod tui;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;

use crate::api::schema::{DestinationsDoc, QuantilesDoc, SCHEMA_VERSION, SnapshotDoc, StatsDoc};
use crate::cli::TopCommand;
use crate::error::Error;

/// Columns `--sort` can order by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// Namespace, then service, then destination.
    Name,
    /// New connections per second.
    Conns,
    /// Active connections.
    Active,
    /// Inactive connections.
    Inactive,
    /// Weight.
    Weight,
    /// Bytes per second (in + out).
    Bytes,
    /// First-response median.
    P50,
    /// First-response 99th percentile.
    P99,
    /// First-response 99.9th percentile.
    P999,
    /// Unanswered connections.
    Unanswered,
}

/// Output formats of `top --batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopFormat {
    /// Aligned columns, a header per frame.
    Text,
    /// One `top` document (docs/api.schema.json) per line and frame.
    Json,
}

/// One line of the view: a service (destination `None`) or one of its destinations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The `netns` label.
    pub netns: String,
    /// The service id.
    pub service: String,
    /// The destination id; `null` for the service's own row.
    pub destination: Option<String>,
    /// Names where known (`namespace/name` or `name`), comma separated; empty when none.
    pub names: String,
    /// Weight (destinations); `null` for a service.
    pub weight: Option<i32>,
    /// Active connections.
    pub active_connections: u64,
    /// Inactive connections.
    pub inactive_connections: u64,
    /// New connections per second.
    pub new_connections_per_second: f64,
    /// `ebpf` (exact, over the window) or `estimator` (the kernel's 2-second estimate).
    pub rate_source: &'static str,
    /// Bytes per second in and out (the kernel's estimator).
    pub bytes_per_second: u64,
    /// First-response quantiles over the window; `null` when none was seen.
    pub first_response_seconds: Option<QuantilesDoc>,
    /// Connections released without a response over the window.
    pub unanswered: u64,
}

/// One frame of `top --batch --format json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `top`.
    pub kind: &'static str,
    /// Whether the daemon's probes are attached.
    pub ebpf: bool,
    /// The API's window, seconds.
    pub window_seconds: f64,
    /// The rows, sorted: each service followed by its destinations.
    pub rows: Vec<Row>,
}

fn names(n: &[crate::api::schema::NameDoc]) -> String {
    n.iter()
        .map(|n| {
            if n.namespace.is_empty() {
                n.name.clone()
            } else {
                format!("{}/{}", n.namespace, n.name)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The rows of a snapshot and the windowed figures, grouped by service: `(service, its
/// destinations)`.
pub fn rows(snap: &SnapshotDoc, win: &DestinationsDoc) -> Vec<(Row, Vec<Row>)> {
    let figures: HashMap<(&str, &str, &str), _> = win
        .destinations
        .iter()
        .map(|d| ((&*d.netns, &*d.service, &*d.destination), d))
        .collect();
    let mut out = Vec::new();
    let bytes = |s: &StatsDoc| s.inbps + s.outbps;
    for ns in &snap.namespaces {
        let Some(ipvs) = &ns.ipvs else { continue };
        for s in &ipvs.services {
            let mut dests = Vec::new();
            for d in &s.destinations {
                let f = figures.get(&(&*ns.netns, &*s.id, &*d.id));
                let ebpf = win.ebpf && f.is_some();
                dests.push(Row {
                    netns: ns.netns.clone(),
                    service: s.id.clone(),
                    destination: Some(d.id.clone()),
                    names: names(&d.names),
                    weight: Some(d.weight),
                    active_connections: d.active_connections as u64,
                    inactive_connections: d.inactive_connections as u64,
                    new_connections_per_second: match f {
                        Some(f) if ebpf => f.new_connections_per_second,
                        _ => d.stats.cps as f64,
                    },
                    rate_source: if ebpf { "ebpf" } else { "estimator" },
                    bytes_per_second: bytes(&d.stats),
                    first_response_seconds: f.and_then(|f| f.first_response_seconds),
                    unanswered: f.map(|f| f.unanswered).unwrap_or(0),
                });
            }
            let all_ebpf = !dests.is_empty() && dests.iter().all(|d| d.rate_source == "ebpf");
            let service = Row {
                netns: ns.netns.clone(),
                service: s.id.clone(),
                destination: None,
                names: names(&s.names),
                weight: None,
                active_connections: dests.iter().map(|d| d.active_connections).sum(),
                inactive_connections: dests.iter().map(|d| d.inactive_connections).sum(),
                new_connections_per_second: if all_ebpf {
                    dests.iter().map(|d| d.new_connections_per_second).sum()
                } else {
                    s.stats.cps as f64
                },
                rate_source: if all_ebpf { "ebpf" } else { "estimator" },
                bytes_per_second: bytes(&s.stats),
                // Quantiles do not add up across destinations: shown per destination only.
                first_response_seconds: None,
                unanswered: dests.iter().map(|d| d.unanswered).sum(),
            };
            out.push((service, dests));
        }
    }
    out
}

/// `NAME: MESSAGE` of each namespace that could not be read.
pub fn unreadable(snap: &SnapshotDoc) -> Vec<String> {
    snap.namespaces
        .iter()
        .filter_map(|n| {
            n.error
                .as_ref()
                .map(|e| format!("{}: {}", n.netns, e.message))
        })
        .collect()
}

/// Orders rows by `key`: numbers largest first (a missing quantile last), names in order; ties
/// by name.
pub fn compare(a: &Row, b: &Row, key: SortKey) -> Ordering {
    let name = |r: &Row| (r.netns.clone(), r.service.clone(), r.destination.clone());
    let q = |r: &Row, f: fn(&QuantilesDoc) -> f64| r.first_response_seconds.as_ref().map(f);
    let by = match key {
        SortKey::Name => Ordering::Equal,
        SortKey::Conns => b
            .new_connections_per_second
            .total_cmp(&a.new_connections_per_second),
        SortKey::Active => b.active_connections.cmp(&a.active_connections),
        SortKey::Inactive => b.inactive_connections.cmp(&a.inactive_connections),
        SortKey::Weight => b.weight.cmp(&a.weight),
        SortKey::Bytes => b.bytes_per_second.cmp(&a.bytes_per_second),
        SortKey::P50 | SortKey::P99 | SortKey::P999 => {
            let f: fn(&QuantilesDoc) -> f64 = match key {
                SortKey::P50 => |q| q.p50,
                SortKey::P99 => |q| q.p99,
                _ => |q| q.p999,
            };
            match (q(a, f), q(b, f)) {
                (Some(x), Some(y)) => y.total_cmp(&x),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        }
        SortKey::Unanswered => b.unanswered.cmp(&a.unanswered),
    };
    by.then_with(|| name(a).cmp(&name(b)))
}

/// Whether a row group matches `--filter` (a substring of the namespace, service id or names,
/// or of one of its destinations' ids or names).
fn matches(service: &Row, dests: &[Row], filter: &str) -> bool {
    let hit = |r: &Row| {
        r.netns.contains(filter)
            || r.service.contains(filter)
            || r.names.contains(filter)
            || r.destination.as_deref().is_some_and(|d| d.contains(filter))
    };
    filter.is_empty() || hit(service) || dests.iter().any(hit)
}

/// Sorted and filtered rows, each service followed by its destinations.
pub fn frame(mut groups: Vec<(Row, Vec<Row>)>, key: SortKey, filter: &str) -> Vec<Row> {
    groups.retain(|(s, d)| matches(s, d, filter));
    groups.sort_by(|a, b| compare(&a.0, &b.0, key));
    let mut out = Vec::new();
    for (s, mut d) in groups {
        d.sort_by(|a, b| compare(a, b, key));
        out.push(s);
        out.extend(d);
    }
    out
}

fn ms(q: Option<&QuantilesDoc>, f: fn(&QuantilesDoc) -> f64) -> String {
    q.map(|q| format!("{:.3}", f(q) * 1e3))
        .unwrap_or_else(|| "-".into())
}

/// Bytes per second with a unit (`980`, `12.3K`, `4.5M`).
fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// The text header line.
pub const HEADER: &str = "NETNS        SERVICE / DESTINATION            WEIGHT  ACTIVE INACTIVE   CONN/S  BYTES/S  P50(ms)  P99(ms) P99.9(ms) UNANS  NAME";

/// One text line of `r`.
pub fn text_line(r: &Row) -> String {
    let (netns, id) = match &r.destination {
        None => (r.netns.as_str(), r.service.clone()),
        Some(d) => ("", format!("  -> {d}")),
    };
    let rate = format!(
        "{}{:.1}",
        if r.rate_source == "ebpf" { "" } else { "~" },
        r.new_connections_per_second
    );
    let q = r.first_response_seconds.as_ref();
    format!(
        "{netns:<12} {id:<32} {:>6} {:>7} {:>8} {rate:>8} {:>8} {:>8} {:>8} {:>9} {:>5}  {}",
        r.weight.map(|w| w.to_string()).unwrap_or_default(),
        r.active_connections,
        r.inactive_connections,
        human(r.bytes_per_second),
        ms(q, |q| q.p50),
        ms(q, |q| q.p99),
        ms(q, |q| q.p999),
        r.unanswered,
        r.names,
    )
}

/// Reads one frame's documents.
async fn fetch(
    c: &client::Client,
    netns: Option<&str>,
) -> Result<(SnapshotDoc, DestinationsDoc), String> {
    let q = netns
        .map(|n| format!("?netns={}", encode(n)))
        .unwrap_or_default();
    let snap = c.get(&format!("/api/v1/snapshot{q}")).await?;
    let win = c.get(&format!("/api/v1/destinations{q}")).await?;
    let snap: SnapshotDoc = serde_json::from_slice(&snap).map_err(|e| {
        format!("/api/v1/snapshot: not a schema_version {SCHEMA_VERSION} document: {e}")
    })?;
    let win: DestinationsDoc = serde_json::from_slice(&win).map_err(|e| {
        format!("/api/v1/destinations: not a schema_version {SCHEMA_VERSION} document: {e}")
    })?;
    Ok((snap, win))
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `top` until it is quit (or its `--batch` iterations are done); bad flags and files are
/// [`Error::Flags`] (exit 2), a daemon that cannot be read is [`Error::Top`] (exit 1).
pub fn run(cmd: &TopCommand) -> Result<(), Error> {
    let opts = &cmd.top;
    let password = match &opts.password_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                return Err(Error::Flags(format!(
                    "--from.password-file {}: {e}",
                    p.display()
                )));
            }
        },
        None => None,
    };
    let client = client::Client::new(
        &opts.from,
        opts.ca_file.as_deref(),
        opts.user.as_deref(),
        password.as_deref(),
    )
    .map_err(Error::Flags)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let result = if opts.batch {
        runtime.block_on(batch(&client, opts))
    } else {
        tui::run(&client, opts, &runtime)
    };
    result.map_err(Error::Top)
}

async fn batch(c: &client::Client, opts: &crate::cli::TopOpts) -> Result<(), String> {
    // The first ask starts the daemon's tracking; the first frame covers one delay.
    fetch(c, opts.netns_filter.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    while opts.iterations == 0 || n < opts.iterations {
        tokio::time::sleep(opts.delay).await;
        let (snap, win) = fetch(c, opts.netns_filter.as_deref()).await?;
        let rows = frame(rows(&snap, &win), opts.sort, &opts.filter);
        let text = match opts.format {
            TopFormat::Json => {
                let doc = TopDoc {
                    schema_version: SCHEMA_VERSION,
                    kind: "top",
                    ebpf: win.ebpf,
                    window_seconds: win.window_seconds,
                    rows,
                };
                serde_json::to_string(&doc).map_err(|e| e.to_string())? + "\n"
            }
            TopFormat::Text => {
                let mut t = format!(
                    "ipvs-telemetry top - {} - eBPF {} - window {}s - sort {:?}\n{HEADER}\n",
                    opts.from,
                    if win.ebpf { "on" } else { "off (~ estimator)" },
                    win.window_seconds,
                    opts.sort
                );
                for e in unreadable(&snap) {
                    t.push_str(&format!("# unreadable namespace {e}\n"));
                }
                for r in &rows {
                    t.push_str(&text_line(r));
                    t.push('\n');
                }
                t.push('\n');
                t
            }
        };
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            // The reader went away (`| head`): done.
            return Ok(());
        }
        n += 1;
    }
    Ok(())
}

/// Default pause between frames.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(1);
