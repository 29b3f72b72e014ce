//! Gzip bodies assembled from independently compressed segments, the unchanged ones reused.
//!
//! A deflate stream may be cut into segments that each start from an empty window and end on a
//! byte boundary (a sync flush): concatenated, they form one valid stream, and the gzip trailer's
//! CRC-32 is the combination of the segments' CRCs (the technique of pigz). The service and
//! destination families are cut into segments of [`SEGMENT_SERIES`] series per family and
//! namespace; a segment whose label text (the same plan) and values are those of the previous
//! scrape is not rendered or compressed again: its compressed bytes are reused. On a quiet table
//! a scrape then costs little more than reading the values; on a busy one the counters change
//! but most gauges do not.
//!
//! Only exact equality reuses a segment: the values are kept, not a hash of them, as LEB128
//! varints of their bits (self-delimiting, so equal bytes mean equal values): a counter that
//! is small, a gauge that is 0 or 1 takes one byte rather than eight.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

use super::families::Num;
use super::prerendered::{Item, NsPlan};
use super::{EncodeError, Format, Inputs, Out, Plans};

/// Series per cached segment (about 180 KB of text for destination series).
pub const SEGMENT_SERIES: usize = 1024;

/// Text of the families around the cached ones, compressed in segments of this size.
const TEXT_SEGMENT: usize = 64 * 1024;

/// One compressed segment: raw deflate ending with a sync flush.
#[derive(Clone)]
struct Segment {
    bytes: Bytes,
    crc: crc32fast::Hasher,
    /// Uncompressed length.
    len: u64,
}

struct Entry {
    plan: Arc<NsPlan>,
    /// The values' bits as varints (a family's values are all of one kind: equal bits, equal
    /// values).
    values: Box<[u8]>,
    segment: Segment,
    /// The scrape that last used it.
    used: u64,
}

/// The compressed segments of the previous scrape, for one format.
pub struct SegmentCache {
    format: Format,
    entries: HashMap<(usize, String, usize), Entry>,
    scrape: u64,
    /// Segments reused and compressed by the last scrape (tests, debug logs).
    pub last: (usize, usize),
}

impl SegmentCache {
    /// An empty cache for `format`.
    pub fn new(format: Format) -> Self {
        SegmentCache {
            format,
            entries: HashMap::new(),
            scrape: 0,
            last: (0, 0),
        }
    }

    /// The format it caches.
    pub fn format(&self) -> Format {
        self.format
    }
}

/// The bits of a value.
fn bits(v: Num) -> u64 {
    match v {
        Num::U(v) => v,
        Num::I(v) => v as u64,
        Num::F(v) => v.to_bits(),
    }
}

/// Appends the bits of `values` to `out` as LEB128 varints.
fn encode_values(values: &[Num], out: &mut Vec<u8>) {
    for v in values {
        let mut b = bits(*v);
        while b >= 0x80 {
            out.push(b as u8 | 0x80);
            b >>= 7;
        }
        out.push(b as u8);
    }
}

/// Compresses `text` into one segment.
fn compress(c: &mut Compress, text: &[u8]) -> Result<Segment, EncodeError> {
    c.reset();
    let mut out = Vec::with_capacity(text.len() / 8 + 64);
    let start = c.total_in();
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let done = (c.total_in() - start) as usize;
        c.compress_vec(&text[done..], &mut out, FlushCompress::Sync)
            .map_err(|_| EncodeError)?;
        // The flush is complete when all input is in and output space is left over.
        if (c.total_in() - start) as usize == text.len() && out.len() < out.capacity() {
            break;
        }
    }
    // The cache keeps the segment: without its spare capacity (the guess above is several
    // times the compressed size: about 12 MB a format at 10,000 × 5).
    out.shrink_to_fit();
    let mut crc = crc32fast::Hasher::new();
    crc.update(text);
    Ok(Segment {
        bytes: Bytes::from(out),
        crc,
        len: text.len() as u64,
    })
}

/// The gzip member header: deflate, no name, no time, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block (fixed Huffman, end of block).
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// Writes text (or protobuf bytes) into segments of about [`TEXT_SEGMENT`] bytes.
struct TextSegments<'a> {
    buf: Vec<u8>,
    c: &'a mut Compress,
    out: &'a mut dyn FnMut(Segment) -> Result<(), EncodeError>,
}

impl TextSegments<'_> {
    fn flush(&mut self) -> Result<(), EncodeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let s = compress(self.c, &self.buf)?;
        self.buf.clear();
        (self.out)(s)
    }
}

impl fmt::Write for TextSegments<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes())
    }
}

impl Out for TextSegments<'_> {
    fn put(&mut self, bytes: &[u8]) -> fmt::Result {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= TEXT_SEGMENT && self.flush().is_err() {
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// Streams the gzip body of the exposition to `emit`, reusing the unchanged segments of the
/// previous scrape of the same format; stops with an error as soon as `emit` returns `false`.
pub fn stream_gzip(
    inputs: &Arc<Inputs>,
    plans: &Arc<Plans>,
    cache: &mut SegmentCache,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<(), EncodeError> {
    let format = cache.format;
    cache.scrape += 1;
    let scrape = cache.scrape;
    let mut c = Compress::new(Compression::fast(), false);
    let mut crc = crc32fast::Hasher::new();
    let mut total: u64 = 0;
    let (mut reused, mut compressed) = (0, 0);
    if !emit(Bytes::from_static(&HEADER)) {
        return Err(EncodeError);
    }
    let mut out = |s: Segment| -> Result<(), EncodeError> {
        crc.combine(&s.crc);
        total += s.len;
        if emit(s.bytes) {
            Ok(())
        } else {
            Err(EncodeError)
        }
    };
    {
        let mut w = TextSegments {
            buf: Vec::new(),
            c: &mut c,
            out: &mut out,
        };
        super::write_head(inputs, format, &mut w).map_err(|_| EncodeError)?;
        w.flush()?;
    }
    let mut failure = None;
    let entries = &mut cache.entries;
    let mut encoded = Vec::new();
    let walked = plans.for_each_block(format, &mut |item| {
        let mut fail = |e| {
            failure = Some(e);
            fmt::Error
        };
        let b = match item {
            Item::Header(h) => {
                return compress(&mut c, h).and_then(&mut out).map_err(&mut fail);
            }
            Item::Block(b) => b,
        };
        let name = &plans.snapshot().namespaces[b.namespace].netns.name;
        for (chunk, start) in (0..b.values.len()).step_by(SEGMENT_SERIES).enumerate() {
            let end = (start + SEGMENT_SERIES).min(b.values.len());
            let key = (b.family, name.clone(), chunk);
            encoded.clear();
            encode_values(&b.values[start..end], &mut encoded);
            let hit = entries
                .get_mut(&key)
                .filter(|e| Arc::ptr_eq(&e.plan, b.plan) && *e.values == *encoded);
            let segment = match hit {
                Some(e) => {
                    e.used = scrape;
                    reused += 1;
                    e.segment.clone()
                }
                None => {
                    let text = if format == Format::Protobuf {
                        let mut bytes = Vec::with_capacity((end - start) * 200);
                        b.write_protobuf(start..end, &mut bytes);
                        bytes
                    } else {
                        let mut text = String::with_capacity((end - start) * 200);
                        b.write(start..end, &mut text)?;
                        text.into_bytes()
                    };
                    let s = compress(&mut c, &text).map_err(&mut fail)?;
                    compressed += 1;
                    entries.insert(
                        key,
                        Entry {
                            plan: b.plan.clone(),
                            values: encoded.as_slice().into(),
                            segment: s.clone(),
                            used: scrape,
                        },
                    );
                    s
                }
            };
            out(segment).map_err(&mut fail)?;
        }
        Ok(())
    });
    if walked.is_err() {
        return Err(failure.unwrap_or(EncodeError));
    }
    {
        let mut w = TextSegments {
            buf: Vec::new(),
            c: &mut c,
            out: &mut out,
        };
        super::write_tail(inputs, plans, format, &mut w).map_err(|_| EncodeError)?;
        w.flush()?;
    }
    // Segments of series that are gone (a table that shrank, a plan replaced) are dropped.
    cache.entries.retain(|_, e| e.used == scrape);
    cache.last = (reused, compressed);
    let mut tail = Vec::with_capacity(10);
    tail.extend_from_slice(&FINAL_BLOCK);
    tail.extend_from_slice(&crc.finalize().to_le_bytes());
    tail.extend_from_slice(&(total as u32).to_le_bytes());
    if !emit(Bytes::from(tail)) {
        return Err(EncodeError);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(values: &[Num]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_values(values, &mut out);
        out
    }

    /// Small values take one byte; values that differ anywhere, even only in how they split
    /// between neighbours, encode differently.
    #[test]
    fn value_encoding_is_compact_and_exact() {
        assert_eq!(encoded(&[Num::U(0), Num::U(1), Num::U(127)]), [0, 1, 127]);
        assert_eq!(encoded(&[Num::U(128)]), [0x80, 1]);
        assert_eq!(encoded(&[Num::U(u64::MAX)]).len(), 10);
        let cases = [
            vec![Num::U(1), Num::U(300)],
            vec![Num::U(300), Num::U(1)],
            vec![Num::U(1), Num::U(301)],
            vec![Num::U(0x80 | 1), Num::U(2)],
            vec![Num::I(-1), Num::U(0)],
            vec![Num::F(0.5), Num::F(-0.0)],
            vec![Num::F(0.5), Num::F(0.0)],
        ];
        for (i, a) in cases.iter().enumerate() {
            for (j, b) in cases.iter().enumerate() {
                assert_eq!(encoded(a) == encoded(b), i == j, "{i} {j}");
            }
        }
    }
}
