//! Snapshots to Prometheus: a prometheus-client collector for OpenMetrics and our own encoder for
//! the text format 0.0.4. Only reads [`crate::model`] values.
//!
//! Each collection becomes one [`Generation`]: its inputs plus up to four encodings
//! (OpenMetrics or 0.0.4, gzip or not), each made at most once and then shared by every scrape.
//! The daemon encodes ahead the variants scrapers asked for during the previous generation
//! (normally only OpenMetrics + gzip, what Prometheus asks for), so a steady scrape only copies
//! bytes, and a 10,000-service exposition is held only in the forms someone reads.

mod families;
pub mod labels;
mod openmetrics;
pub mod process;
mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

pub use process::ProcessStats;

use crate::model::{EbpfSnapshot, Snapshot};

/// Failed collections by `(netns, reason)`, accumulated by the daemon since it started.
pub type ErrorCounts = BTreeMap<(String, String), u64>;

/// `ipvs_telemetry_build_info` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo {
    /// Crate version.
    pub version: &'static str,
    /// Git revision the binary was built from.
    pub revision: &'static str,
    /// Rust compiler version.
    pub rustc: &'static str,
}

impl BuildInfo {
    /// This binary's build information.
    pub fn current() -> BuildInfo {
        let rustc = env!("IPVS_TELEMETRY_RUSTC");
        // "rustc 1.95.0 (59807616e 2026-04-14)" -> "1.95.0"
        let rustc = rustc.split_whitespace().nth(1).unwrap_or(rustc);
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            revision: env!("IPVS_TELEMETRY_REVISION"),
            rustc,
        }
    }
}

/// Everything one encoding reads: one collection plus the daemon's own state.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The netlink collection of every namespace.
    pub snapshot: Arc<Snapshot>,
    /// The eBPF side at the same time.
    pub ebpf: Arc<EbpfSnapshot>,
    /// Failed collections so far.
    pub errors: ErrorCounts,
    /// `/proc/self` at collection time.
    pub process: ProcessStats,
    /// Build labels.
    pub build: BuildInfo,
    /// Names of this collection's services and destinations, and the name sources' state.
    pub names: Arc<crate::names::NameState>,
}

/// Exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Text,
}

impl Format {
    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// An encoding failed (never expected: writing to memory cannot fail short of a bug).
#[derive(Debug, Clone, thiserror::Error)]
#[error("encoding the metrics failed")]
pub struct EncodeError;

/// Writes the exposition of `inputs` in `format` as text.
pub fn encode_to(inputs: &Arc<Inputs>, format: Format, out: &mut dyn fmt::Write) -> fmt::Result {
    match format {
        Format::OpenMetrics => openmetrics::encode(inputs.clone(), out),
        Format::Text => text::encode(inputs, out),
    }
}

/// The 0.0.4 text of one collection alone, for `snapshot --format prometheus`: the namespace,
/// service, destination and context series plus `ipvs_telemetry_build_info`; no eBPF, error
/// counter or process series (there is no daemon).
pub fn snapshot_text(snapshot: Snapshot) -> String {
    let inputs = Arc::new(Inputs {
        snapshot: Arc::new(snapshot),
        ebpf: Arc::new(EbpfSnapshot::default()),
        errors: ErrorCounts::new(),
        process: ProcessStats::default(),
        build: BuildInfo::current(),
        names: Default::default(),
    });
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = text::encode(&inputs, &mut s);
    s
}

/// Encodes `inputs` in `format`, gzipped when `gzip`.
pub fn encode(inputs: &Arc<Inputs>, format: Format, gzip: bool) -> Result<Bytes, EncodeError> {
    if gzip {
        let mut w = GzipWriter::new();
        encode_to(inputs, format, &mut w).map_err(|_| EncodeError)?;
        let mut v = w.finish().map_err(|_| EncodeError)?;
        // The bytes live for a whole poll interval: give back the growth slack.
        v.shrink_to_fit();
        Ok(Bytes::from(v))
    } else {
        let mut s = String::new();
        encode_to(inputs, format, &mut s).map_err(|_| EncodeError)?;
        s.shrink_to_fit();
        Ok(Bytes::from(s))
    }
}

/// Streams text into a gzip member through a 64 KiB staging buffer, so the uncompressed
/// exposition is never held in full.
struct GzipWriter {
    buf: String,
    gz: flate2::write::GzEncoder<Vec<u8>>,
}

const GZIP_CHUNK: usize = 64 * 1024;

impl GzipWriter {
    fn new() -> Self {
        GzipWriter {
            buf: String::with_capacity(GZIP_CHUNK),
            // Level 1: expositions are very repetitive, the fast level already shrinks them
            // ~20 times, and a collection may be encoded every second.
            gz: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
        }
    }

    fn finish(mut self) -> std::io::Result<Vec<u8>> {
        self.gz.write_all(self.buf.as_bytes())?;
        self.gz.finish()
    }
}

impl fmt::Write for GzipWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= GZIP_CHUNK {
            self.gz
                .write_all(self.buf.as_bytes())
                .map_err(|_| fmt::Error)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// One collection's inputs and its encodings, each made at most once.
#[derive(Debug)]
pub struct Generation {
    inputs: Arc<Inputs>,
    variants: [OnceLock<Result<Bytes, EncodeError>>; 4],
    requested: [AtomicBool; 4],
}

fn slot(format: Format, gzip: bool) -> usize {
    (format == Format::Text) as usize * 2 + gzip as usize
}

/// The four encodings, in slot order.
pub const VARIANTS: [(Format, bool); 4] = [
    (Format::OpenMetrics, false),
    (Format::OpenMetrics, true),
    (Format::Text, false),
    (Format::Text, true),
];

impl Generation {
    /// A generation without any encoding yet.
    pub fn new(inputs: Inputs) -> Self {
        Generation {
            inputs: Arc::new(inputs),
            variants: Default::default(),
            requested: Default::default(),
        }
    }

    /// The inputs.
    pub fn inputs(&self) -> &Arc<Inputs> {
        &self.inputs
    }

    /// The encoding if it was already made.
    pub fn ready(&self, format: Format, gzip: bool) -> Option<Result<Bytes, EncodeError>> {
        let i = slot(format, gzip);
        self.requested[i].store(true, Ordering::Relaxed);
        self.variants[i].get().cloned()
    }

    /// The encoding, made now if needed (CPU-bound: call from a blocking thread). Concurrent
    /// callers wait for the one that encodes.
    pub fn get(&self, format: Format, gzip: bool) -> Result<Bytes, EncodeError> {
        let i = slot(format, gzip);
        self.requested[i].store(true, Ordering::Relaxed);
        self.variants[i]
            .get_or_init(|| encode(&self.inputs, format, gzip))
            .clone()
    }

    /// The variants scrapers asked for in this generation.
    pub fn requested(&self) -> Vec<(Format, bool)> {
        VARIANTS
            .into_iter()
            .filter(|&(f, g)| self.requested[slot(f, g)].load(Ordering::Relaxed))
            .collect()
    }

    /// Makes an encoding ahead of any request, without marking it requested.
    pub fn prepare(&self, format: Format, gzip: bool) {
        let i = slot(format, gzip);
        let _ = self.variants[i].get_or_init(|| encode(&self.inputs, format, gzip));
    }
}

#[cfg(test)]
mod tests;
