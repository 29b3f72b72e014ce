//! Snapshots to Prometheus: OpenMetrics (prometheus-client for the small families, our own
//! writer for the large ones) and the text format 0.0.4. Only reads [`crate::model`] values.
//!
//! An exposition is written in three parts: the namespace families ([`families::walk_head`]), the
//! service and destination families from the label text a [`Plans`] rendered once per table shape
//! ([`prerendered`]), and the context, eBPF and daemon families ([`families::walk_tail`]). It is
//! produced as a stream of chunks of about 64 KiB, gzip-compressed on the way when asked, so the
//! uncompressed body of a large table is never held whole.

mod families;
pub mod labels;
mod openmetrics;
pub mod options;
pub mod prerendered;
pub mod process;
pub mod protobuf;
pub mod segments;
mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;

pub use options::ExportOptions;
pub use prerendered::Plans;
pub use process::ProcessStats;
pub use segments::SegmentCache;

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
    /// Scrapes served at once from a collection begun ahead of them (`--collection.ahead`).
    pub precollected: u64,
    /// Build labels.
    pub build: BuildInfo,
    /// Names of this collection's services and destinations, and the name sources' state.
    pub names: Arc<crate::names::NameState>,
}

/// Exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenMetrics 1.0.0.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Text,
    /// Length-delimited `io.prometheus.client.MetricFamily` protobuf messages (native
    /// histograms).
    Protobuf,
}

impl Format {
    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::Protobuf => protobuf::CONTENT_TYPE,
        }
    }
}

/// Where an exposition is written: text (the text formats), or bytes (protobuf).
pub trait Out: fmt::Write {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]) -> fmt::Result;
}

/// Text only: bytes that are not UTF-8 (a protobuf exposition) fail.
impl Out for String {
    fn put(&mut self, bytes: &[u8]) -> fmt::Result {
        self.push_str(std::str::from_utf8(bytes).map_err(|_| fmt::Error)?);
        Ok(())
    }
}

/// An exposition written into memory (tests, small uses).
#[derive(Debug, Default)]
pub struct Buf(pub Vec<u8>);

impl fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Out for Buf {
    fn put(&mut self, bytes: &[u8]) -> fmt::Result {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// An encoding failed (never expected: writing to memory cannot fail short of a bug).
#[derive(Debug, Clone, thiserror::Error)]
#[error("encoding the metrics failed")]
pub struct EncodeError;

/// Writes the whole exposition of `inputs` in `format`; `plans` must have been made from
/// `inputs.snapshot`.
pub fn write_exposition(
    inputs: &Arc<Inputs>,
    plans: &Arc<Plans>,
    format: Format,
    out: &mut dyn Out,
) -> fmt::Result {
    write_head(inputs, format, out)?;
    plans.write(format, out)?;
    write_tail(inputs, plans, format, out)
}

/// Writes the whole exposition of `inputs` in one of the text formats.
pub fn write_text(
    inputs: &Arc<Inputs>,
    plans: &Arc<Plans>,
    format: Format,
    out: &mut dyn fmt::Write,
) -> fmt::Result {
    let mut w = TextOut(out);
    write_exposition(inputs, plans, format, &mut w)
}

/// A text writer taking bytes only as UTF-8 text (the text formats never write other bytes).
struct TextOut<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for TextOut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s)
    }
}

impl Out for TextOut<'_> {
    fn put(&mut self, bytes: &[u8]) -> fmt::Result {
        self.0
            .write_str(std::str::from_utf8(bytes).map_err(|_| fmt::Error)?)
    }
}

/// The families before the service and destination ones.
fn write_head(inputs: &Arc<Inputs>, format: Format, out: &mut dyn Out) -> fmt::Result {
    match format {
        Format::OpenMetrics => openmetrics::encode_head(inputs.clone(), out),
        Format::Text => text::encode_head(inputs, out),
        Format::Protobuf => protobuf::encode_head(inputs, out),
    }
}

/// The families after the service and destination ones (and `# EOF` in OpenMetrics).
fn write_tail(
    inputs: &Arc<Inputs>,
    plans: &Arc<Plans>,
    format: Format,
    out: &mut dyn Out,
) -> fmt::Result {
    match format {
        Format::OpenMetrics => openmetrics::encode_tail(inputs.clone(), plans.clone(), out),
        Format::Text => text::encode_tail(inputs, plans, out),
        Format::Protobuf => protobuf::encode_tail(inputs, plans, out),
    }
}

/// Writes the whole exposition of `inputs` in a text `format`, planned with `options` (one-shot
/// uses: `snapshot --format prometheus`, tests).
pub fn encode_to(
    inputs: &Arc<Inputs>,
    options: &ExportOptions,
    format: Format,
    out: &mut dyn fmt::Write,
) -> fmt::Result {
    let plans = Arc::new(Plans::new(
        inputs.snapshot.clone(),
        Arc::new(options.clone()),
        None,
    ));
    write_text(inputs, &plans, format, out)
}

/// The inputs of `snapshot --format prometheus`: one collection alone, with
/// `ipvs_telemetry_build_info`; no eBPF, error counter or process series (there is no daemon).
pub fn snapshot_inputs(snapshot: Snapshot) -> Arc<Inputs> {
    Arc::new(Inputs {
        snapshot: Arc::new(snapshot),
        ebpf: Arc::new(EbpfSnapshot::default()),
        errors: ErrorCounts::new(),
        process: ProcessStats::default(),
        precollected: 0,
        build: BuildInfo::current(),
        names: Default::default(),
    })
}

/// Size of the chunks an exposition is streamed in.
pub const CHUNK: usize = 64 * 1024;

/// Streams the exposition in chunks of about [`CHUNK`] bytes, gzip-compressed when `gzip`, to
/// `emit`; stops with an error as soon as `emit` returns `false` (the reader went away).
pub fn stream(
    inputs: &Arc<Inputs>,
    plans: &Arc<Plans>,
    format: Format,
    gzip: bool,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<(), EncodeError> {
    if gzip {
        let mut w = GzipChunks {
            buf: Vec::with_capacity(CHUNK),
            gz: flate2::write::GzEncoder::new(
                Vec::with_capacity(CHUNK),
                flate2::Compression::fast(),
            ),
            emit,
        };
        write_exposition(inputs, plans, format, &mut w).map_err(|_| EncodeError)?;
        w.flush_text().map_err(|_| EncodeError)?;
        let GzipChunks { gz, emit, .. } = w;
        let rest = gz.finish().map_err(|_| EncodeError)?;
        if !rest.is_empty() && !emit(Bytes::from(rest)) {
            return Err(EncodeError);
        }
    } else {
        let mut w = Chunks {
            buf: Vec::with_capacity(CHUNK),
            emit,
        };
        write_exposition(inputs, plans, format, &mut w).map_err(|_| EncodeError)?;
        let Chunks { buf, emit } = w;
        if !buf.is_empty() && !emit(Bytes::from(buf)) {
            return Err(EncodeError);
        }
    }
    Ok(())
}

/// Encodes `inputs` in `format` into one buffer, gzipped when `gzip` (tests and small uses; the
/// daemon streams).
pub fn encode(
    inputs: &Arc<Inputs>,
    options: &ExportOptions,
    format: Format,
    gzip: bool,
) -> Result<Bytes, EncodeError> {
    let plans = Arc::new(Plans::new(
        inputs.snapshot.clone(),
        Arc::new(options.clone()),
        None,
    ));
    let mut all = Vec::new();
    stream(inputs, &plans, format, gzip, &mut |b| {
        all.extend_from_slice(&b);
        true
    })?;
    Ok(Bytes::from(all))
}

/// An exposition cut into chunks.
struct Chunks<'a> {
    buf: Vec<u8>,
    emit: &'a mut dyn FnMut(Bytes) -> bool,
}

impl fmt::Write for Chunks<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes())
    }
}

impl Out for Chunks<'_> {
    fn put(&mut self, bytes: &[u8]) -> fmt::Result {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 1024));
            if !(self.emit)(Bytes::from(full)) {
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

/// An exposition compressed into one gzip member, emitted in chunks as the compressed bytes
/// pile up.
struct GzipChunks<'a> {
    buf: Vec<u8>,
    // Level 1: expositions are very repetitive, the fast level already shrinks them ~20 times.
    gz: flate2::write::GzEncoder<Vec<u8>>,
    emit: &'a mut dyn FnMut(Bytes) -> bool,
}

impl GzipChunks<'_> {
    fn flush_text(&mut self) -> std::io::Result<()> {
        self.gz.write_all(&self.buf)?;
        self.buf.clear();
        if self.gz.get_ref().len() >= CHUNK {
            let out = std::mem::replace(self.gz.get_mut(), Vec::with_capacity(CHUNK + 1024));
            if !(self.emit)(Bytes::from(out)) {
                return Err(std::io::Error::other("reader gone"));
            }
        }
        Ok(())
    }
}

impl fmt::Write for GzipChunks<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes())
    }
}

impl Out for GzipChunks<'_> {
    fn put(&mut self, bytes: &[u8]) -> fmt::Result {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush_text().map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
