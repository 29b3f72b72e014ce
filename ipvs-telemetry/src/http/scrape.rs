//! The metrics endpoint: a collection fresh enough, then its encoding.
//!
//! A gzip scrape (what Prometheus asks for) that arrives while another gzip encoding of the same
//! collection and format is in flight waits for it and shares its bytes (about 4 MB at 10,000
//! services × 5 destinations), so a burst of scrapers costs one encoding; its eBPF series are
//! then those of the moment that encoding began. Other scrapes stream an encoding of their own
//! from a blocking thread in chunks, so an uncompressed body is never held whole.
//!
//! Only a scrape that encodes takes a `--web.max-requests` slot (503 when none is free), and
//! holds it until its body is written or its reader goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::body::Body;
use crate::collect::{Collected, Telemetry};
use crate::metrics::{EncodeError, Format};

/// Chunks of one streamed scrape queued between the encoder thread and the connection.
const STREAM_QUEUE: usize = 4;

/// A gzip encoding in flight, by collection and format.
type FlightKey = (usize, Format);
type FlightResult = Option<Result<Bytes, EncodeError>>;

/// Gzip encodings in flight, joined by concurrent scrapes.
#[derive(Debug, Default)]
pub struct Flights(Mutex<HashMap<FlightKey, watch::Receiver<FlightResult>>>);

/// Why a scrape got no body.
#[derive(Debug)]
pub enum Refused {
    /// Every `--web.max-requests` slot is encoding.
    Busy,
    /// The encoder failed (a bug: writing to memory cannot fail).
    Failed,
}

impl Refused {
    /// Status and one-line message.
    pub fn answer(&self) -> (StatusCode, &'static str) {
        match self {
            Refused::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight (--web.max-requests), try again later\n",
            ),
            Refused::Failed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            ),
        }
    }
}

fn slot(limiter: &Option<Arc<Semaphore>>) -> Result<Option<OwnedSemaphorePermit>, Refused> {
    match limiter {
        Some(s) => s
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| Refused::Busy),
        None => Ok(None),
    }
}

/// The body of one scrape.
pub async fn body(
    telemetry: &Arc<Telemetry>,
    flights: &Arc<Flights>,
    limiter: &Option<Arc<Semaphore>>,
    format: Format,
    gzip: bool,
) -> Result<Body, Refused> {
    let collected = telemetry.collected().await;
    if gzip {
        return shared_gzip(telemetry, flights, limiter, collected, format).await;
    }
    let permit = slot(limiter)?;
    let telemetry = telemetry.clone();
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let inputs = telemetry.inputs(&collected);
        let sent = crate::metrics::stream(&inputs, &collected.plans, format, false, &mut |b| {
            tx.blocking_send(b).is_ok()
        });
        if sent.is_err() {
            tracing::debug!("scrape ended before its body was written (reader gone)");
        }
    });
    Ok(Body::Stream(rx))
}

async fn shared_gzip(
    telemetry: &Arc<Telemetry>,
    flights: &Arc<Flights>,
    limiter: &Option<Arc<Semaphore>>,
    collected: Arc<Collected>,
    format: Format,
) -> Result<Body, Refused> {
    let key = (Arc::as_ptr(&collected) as usize, format);
    let mut rx = {
        let mut map = flights.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(rx) => rx.clone(),
            None => {
                let permit = slot(limiter)?;
                let (tx, rx) = watch::channel(None);
                map.insert(key, rx.clone());
                let (telemetry, flights) = (telemetry.clone(), flights.clone());
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let inputs = telemetry.inputs(&collected);
                    let mut all = Vec::new();
                    let r =
                        crate::metrics::stream(&inputs, &collected.plans, format, true, &mut |b| {
                            all.extend_from_slice(&b);
                            true
                        })
                        .map(|_| Bytes::from(all));
                    // Later scrapes start an encoding of their own.
                    flights
                        .0
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    let _ = tx.send(Some(r));
                });
                rx
            }
        }
    };
    loop {
        if let Some(r) = rx.borrow_and_update().clone() {
            return r.map(Body::whole).map_err(|_| Refused::Failed);
        }
        if rx.changed().await.is_err() {
            // The encoder thread ended without an answer (it panicked).
            return Err(Refused::Failed);
        }
    }
}
