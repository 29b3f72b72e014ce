//! The metrics endpoint: a collection fresh enough, then its encoding.
//!
//! A gzip scrape (what Prometheus asks for) that arrives while another gzip encoding of the same
//! collection and format is in flight waits for it and shares its bytes (about 4 MB at 10,000
//! services × 5 destinations), so a burst of scrapers costs one encoding; its eBPF series are
//! then those of the moment that encoding began. Gzip bodies are assembled from segments, the
//! unchanged ones reused from the previous gzip scrape ([`segments`]); the body is the list of
//! those segments, shared with the cache rather than copied into one buffer. Other scrapes stream an
//! encoding of their own from a blocking thread in chunks, so an uncompressed body is never held
//! whole.
//!
//! Only a scrape that encodes takes a `--web.max-requests` slot (503 when none is free), and
//! holds it until its body is written or its reader goes away.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::body::Body;
use crate::collect::{Collected, Telemetry};
use crate::metrics::{EncodeError, Format, SegmentCache, segments};

/// Chunks of one streamed scrape queued between the encoder thread and the connection.
const STREAM_QUEUE: usize = 4;

/// A gzip encoding in flight, by collection and format.
type FlightKey = (usize, Format);
type FlightResult = Option<Result<Arc<[Bytes]>, EncodeError>>;

/// Gzip encodings in flight, joined by concurrent scrapes, and the compressed segments of the
/// previous gzip scrape of each format ([`SegmentCache`]).
pub struct Flights {
    flying: Mutex<HashMap<FlightKey, watch::Receiver<FlightResult>>>,
    caches: [Mutex<SegmentCache>; 3],
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            flying: Mutex::default(),
            caches: [
                Mutex::new(SegmentCache::new(Format::OpenMetrics)),
                Mutex::new(SegmentCache::new(Format::Text)),
                Mutex::new(SegmentCache::new(Format::Protobuf)),
            ],
        }
    }
}

impl Flights {
    fn cache(&self, format: Format) -> std::sync::MutexGuard<'_, SegmentCache> {
        let i = match format {
            Format::OpenMetrics => 0,
            Format::Text => 1,
            Format::Protobuf => 2,
        };
        self.caches[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a scrape got no body.
#[derive(Debug)]
pub(super) enum Refused {
    /// Every `--web.max-requests` slot is encoding.
    Busy,
    /// The encoder failed (a bug: writing to memory cannot fail).
    Failed,
}

impl Refused {
    /// Status and one-line message.
    pub(super) fn answer(&self) -> (StatusCode, &'static str) {
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
pub(super) async fn body(
    telemetry: &Arc<Telemetry>,
    flights: &Arc<Flights>,
    limiter: &Option<Arc<Semaphore>>,
    format: Format,
    gzip: bool,
    client: IpAddr,
) -> Result<Body, Refused> {
    let collected = telemetry.collected(Some(client)).await;
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
        let mut map = flights.flying.lock().unwrap_or_else(|p| p.into_inner());
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
                    // The body's chunks: the cached segments themselves (shared, not copied).
                    let mut all = Vec::new();
                    let r = {
                        let mut cache = flights.cache(format);
                        let plans = &collected.plans;
                        let mut bytes = 0;
                        let r = segments::stream_gzip(&inputs, plans, &mut cache, &mut |b| {
                            bytes += b.len();
                            all.push(b);
                            true
                        });
                        tracing::debug!(
                            reused = cache.last.0,
                            compressed = cache.last.1,
                            bytes,
                            "gzip segments"
                        );
                        r.map(|_| Arc::<[Bytes]>::from(all))
                    };
                    // Later scrapes start an encoding of their own.
                    flights
                        .flying
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
            return r.map(Body::chunks).map_err(|_| Refused::Failed);
        }
        if rx.changed().await.is_err() {
            // The encoder thread ended without an answer (it panicked).
            return Err(Refused::Failed);
        }
    }
}
