//! The read-only JSON API (`docs/web.md`), an axum [`Router`] called by the HTTP server for
//! paths under `/api/`, after its own TLS, basic auth, method and `--web.max-requests` checks.
//!
//! - `GET /api/v1/snapshot[?netns=NAME]`: the latest collection (fresh within
//!   `--collection.max-age`, as for a scrape), names included.
//! - `GET /api/v1/destinations[?netns=NAME][&service=ID][&destination=ID]`: windowed figures of
//!   the destinations selected ([`super::window`]); asking is what starts their tracking.
//!
//! A malformed query gets 400 and one line saying what is wrong; a namespace, service or
//! destination that the latest collection does not hold gets 404.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::schema::{self, DestinationsDoc, QuantilesDoc, SCHEMA_VERSION, WindowDoc};
use super::window::WINDOW;
use crate::cli::Granularity;
use crate::collect::Telemetry;
use crate::ebpf::aggregate::RawKey;

/// The API's router over the daemon's telemetry.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/destinations", get(destinations))
        .fallback(|| async { fail(StatusCode::NOT_FOUND, "Not Found") })
        .with_state(telemetry)
}

/// A refusal: status and one line.
fn fail(status: StatusCode, line: impl Into<String>) -> Response {
    let mut line = line.into();
    line.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        line,
    )
        .into_response()
}

fn json(doc: &impl Serialize) -> Response {
    match serde_json::to_vec(doc) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}"),
        ),
    }
}

/// The query's `name=value` pairs, percent-decoded; `Err` (a one-line reason) for a name not
/// in `known` or given twice.
fn query<'a>(raw: Option<&str>, known: &[&'a str]) -> Result<Vec<(&'a str, String)>, String> {
    let mut out: Vec<(&'a str, String)> = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let value = decode(value)?;
        let Some(k) = known.iter().find(|k| **k == name) else {
            return Err(format!(
                "unknown query parameter {name:?} (expected {})",
                known.join(", ")
            ));
        };
        if out.iter().any(|(n, _)| n == k) {
            return Err(format!("query parameter {name:?} given twice"));
        }
        out.push((k, value));
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` decoding of one name or value.
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

fn get_param<'a>(q: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
}

async fn snapshot(State(t): State<Arc<Telemetry>>, RawQuery(raw): RawQuery) -> Response {
    let q = match query(raw.as_deref(), &["netns"]) {
        Ok(q) => q,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let netns = get_param(&q, "netns");
    let c = t.collected(None).await;
    let doc = schema::snapshot(&c.snapshot, Some(&c.names), netns);
    if let Some(n) = netns
        && doc.namespaces.is_empty()
    {
        return fail(StatusCode::NOT_FOUND, format!("no namespace {n:?}"));
    }
    json(&doc)
}

async fn destinations(State(t): State<Arc<Telemetry>>, RawQuery(raw): RawQuery) -> Response {
    let q = match query(raw.as_deref(), &["netns", "service", "destination"]) {
        Ok(q) => q,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let netns = get_param(&q, "netns");
    let service = match get_param(&q, "service").map(schema::parse_service_id) {
        Some(Err(e)) => return fail(StatusCode::BAD_REQUEST, e),
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let destination = match get_param(&q, "destination").map(schema::parse_destination_id) {
        Some(Err(e)) => return fail(StatusCode::BAD_REQUEST, e),
        Some(Ok(d)) => Some(d),
        None => None,
    };
    let c = t.collected(None).await;
    // The selection, in the collection's order.
    let mut labels = Vec::new();
    let mut keys = Vec::new();
    let (mut ns_seen, mut svc_seen) = (false, false);
    for ns in &c.snapshot.namespaces {
        if netns.is_some_and(|n| n != ns.netns.name) {
            continue;
        }
        ns_seen = true;
        let Ok(ipvs) = &ns.ipvs else { continue };
        for s in &ipvs.services {
            let sid = schema::service_id(s.family, &s.address);
            if service.as_ref().is_some_and(|want| *want != sid) {
                continue;
            }
            svc_seen = true;
            for d in &s.destinations {
                let did = schema::addr_port(d.address, d.port);
                if destination.as_ref().is_some_and(|want| *want != did) {
                    continue;
                }
                keys.push(RawKey::of_netlink(
                    ns.netns.inode,
                    s.family,
                    &s.address,
                    Some((d.family, d.address, d.port)),
                    Granularity::Destination,
                ));
                labels.push((ns.netns.name.clone(), sid.clone(), did));
            }
        }
    }
    if let Some(n) = netns
        && !ns_seen
    {
        return fail(StatusCode::NOT_FOUND, format!("no namespace {n:?}"));
    }
    if let Some(s) = &service
        && !svc_seen
    {
        return fail(StatusCode::NOT_FOUND, format!("no service {s:?}"));
    }
    if let Some(d) = &destination
        && keys.is_empty()
    {
        return fail(StatusCode::NOT_FOUND, format!("no destination {d:?}"));
    }
    // Events still in the ring (the consumer drains it at least once a second) would be
    // missing from the end of the window while `covered_seconds` counts up to now.
    let drained = t.clone();
    let _ = tokio::task::spawn_blocking(move || drained.ebpf().drain()).await;
    let figures = t.ebpf().windows().track(&keys, crate::ebpf::monotonic_ns());
    let mut doc = DestinationsDoc {
        schema_version: SCHEMA_VERSION,
        kind: "destinations".into(),
        window_seconds: WINDOW.as_secs_f64(),
        ebpf: t.ebpf().is_up(),
        untracked: 0,
        destinations: Vec::with_capacity(keys.len()),
    };
    for ((netns, service, destination), f) in labels.into_iter().zip(figures) {
        let Some(f) = f else {
            doc.untracked += 1;
            continue;
        };
        let covered = f.covered.as_secs_f64();
        doc.destinations.push(WindowDoc {
            netns,
            service,
            destination,
            covered_seconds: covered,
            new_connections: f.new_connections,
            new_connections_per_second: if covered > 0.0 {
                f.new_connections as f64 / covered
            } else {
                0.0
            },
            first_responses: f.first_responses,
            unanswered: f.unanswered,
            first_response_seconds: f.first_response.map(|q| QuantilesDoc {
                p50: q[0],
                p90: q[1],
                p99: q[2],
                p999: q[3],
                max: q[4],
            }),
        });
    }
    json(&doc)
}

/// Answers `req` with `router` and collects the (small, JSON) body for the server.
pub async fn answer<B>(router: &Router, req: axum::http::Request<B>) -> Response<bytes::Bytes>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = match router.clone().oneshot(req.map(axum::body::Body::new)).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Response::from_parts(parts, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let known = ["netns", "service"];
        assert_eq!(query(None, &known), Ok(vec![]));
        assert_eq!(
            query(Some("netns=a%20b&service=tcp%3A10.0.0.1%3A80"), &known),
            Ok(vec![
                ("netns", "a b".into()),
                ("service", "tcp:10.0.0.1:80".into())
            ])
        );
        assert_eq!(
            query(Some("nets=x"), &known),
            Err("unknown query parameter \"nets\" (expected netns, service)".into())
        );
        assert_eq!(
            query(Some("netns=a&netns=b"), &known),
            Err("query parameter \"netns\" given twice".into())
        );
        assert_eq!(
            query(Some("netns=%zz"), &known),
            Err("bad percent-encoding in \"%zz\"".into())
        );
    }

    #[test]
    fn ids() {
        assert_eq!(
            schema::parse_service_id("udp:[2001:DB8::1]:53"),
            Ok("udp:[2001:db8::1]:53".into())
        );
        assert_eq!(schema::parse_service_id("fwm6:260"), Ok("fwm6:260".into()));
        assert!(schema::parse_service_id("tcp:10.0.0.1").is_err());
        assert!(schema::parse_service_id("http:10.0.0.1:80").is_err());
        assert_eq!(
            schema::parse_destination_id("10.0.1.2:8080"),
            Ok("10.0.1.2:8080".into())
        );
        assert!(schema::parse_destination_id("10.0.1.2").is_err());
    }
}
