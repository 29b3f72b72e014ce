//! The Prometheus protobuf exposition: length-delimited `io.prometheus.client.MetricFamily`
//! messages, the only format that carries native histograms.
//!
//! Written by hand rather than through generated message structs: the service and destination
//! families are written like the text formats, from label bytes rendered once per table shape
//! ([`super::prerendered`]), and every value is a fixed-size double, so a family's length (its
//! delimiter comes first) is known from the plan without a pass over the values and a series
//! costs a few `memcpy`s. The other families go through the [`Sink`] walk shared with the text
//! encoders; each is buffered whole (at most one eBPF family, a few KB per destination) so its
//! length can be written first.
//!
//! Field numbers are those of `metrics.proto` of prometheus/client_model (proto2: every field
//! written is explicit, repeated scalars unpacked). Families without a sample are left out (the
//! text formats still write their HELP and TYPE lines).

use std::fmt;

use super::Out;
use super::families::{Kind, LabelSet, Num, Samples, Sink, walk_head, walk_tail};
use super::labels::LabelPairs;
use super::{Inputs, Plans};
use crate::model::{HistogramSnapshot, NativeHistogram};

/// The `Content-Type` of the protobuf exposition.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

// MetricFamily
const FAMILY_NAME: u8 = 1;
const FAMILY_HELP: u8 = 2;
const FAMILY_TYPE: u8 = 3;
const FAMILY_METRIC: u8 = 4;
// Metric
const METRIC_LABEL: u8 = 1;
const METRIC_GAUGE: u8 = 2;
const METRIC_COUNTER: u8 = 3;
const METRIC_HISTOGRAM: u8 = 7;
// LabelPair
const LABEL_NAME: u8 = 1;
const LABEL_VALUE: u8 = 2;
// Gauge, Counter
const VALUE: u8 = 1;
// Histogram
const H_SAMPLE_COUNT: u8 = 1;
const H_SAMPLE_SUM: u8 = 2;
const H_BUCKET: u8 = 3;
const H_SCHEMA: u8 = 5;
const H_ZERO_THRESHOLD: u8 = 6;
const H_ZERO_COUNT: u8 = 7;
const H_POSITIVE_SPAN: u8 = 12;
const H_POSITIVE_DELTA: u8 = 13;
// Bucket
const B_CUMULATIVE_COUNT: u8 = 1;
const B_UPPER_BOUND: u8 = 2;
// BucketSpan
const SPAN_OFFSET: u8 = 1;
const SPAN_LENGTH: u8 = 2;

/// `MetricType` values.
fn metric_type(kind: Kind) -> u64 {
    match kind {
        Kind::Counter => 0,
        Kind::Gauge => 1,
        Kind::Histogram => 4,
    }
}

/// Appends `v` as a varint.
pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of `v` as a varint.
pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push(field << 3 | wire);
}

fn len_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    key(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn double_field(out: &mut Vec<u8>, field: u8, v: f64) {
    key(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

fn uint_field(out: &mut Vec<u8>, field: u8, v: u64) {
    key(out, field, VARINT);
    varint(out, v);
}

fn sint_field(out: &mut Vec<u8>, field: u8, v: i64) {
    key(out, field, VARINT);
    varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends every label of `labels` as a `LabelPair` field of a `Metric`.
pub(super) fn write_label_pairs(out: &mut Vec<u8>, labels: &dyn LabelPairs) {
    // Writing to memory cannot fail.
    let _ = labels.pairs(&mut |k, v| {
        label_pair(out, k, v);
        Ok(())
    });
}

/// Appends one `LabelPair` field of a `Metric`.
pub(super) fn label_pair(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, METRIC_LABEL, LEN);
    varint(
        out,
        (2 + varint_len(k.len() as u64) + k.len() + varint_len(v.len() as u64) + v.len()) as u64,
    );
    len_field(out, LABEL_NAME, k.as_bytes());
    len_field(out, LABEL_VALUE, v.as_bytes());
}

/// The value of a sample (every value is a double in this format).
fn as_f64(v: Num) -> f64 {
    match v {
        Num::U(v) => v as f64,
        Num::I(v) => v as f64,
        Num::F(v) => v,
    }
}

/// Bytes of the `Metric` field of a family for a counter or gauge whose labels take `labels`
/// bytes: the field key, its length, the labels and the 11-byte value field.
pub(super) fn value_metric_len(labels: usize) -> usize {
    let m = labels + VALUE_FIELD;
    1 + varint_len(m as u64) + m
}

/// Bytes of a `gauge`/`counter` field holding one double.
const VALUE_FIELD: usize = 11;

/// Appends the `Metric` field of a counter or gauge sample with pre-rendered `labels` (and
/// `more` labels after them).
pub(super) fn value_metric(out: &mut Vec<u8>, kind: Kind, labels: &[u8], more: &[u8], v: Num) {
    key(out, FAMILY_METRIC, LEN);
    varint(out, (labels.len() + more.len() + VALUE_FIELD) as u64);
    out.extend_from_slice(labels);
    out.extend_from_slice(more);
    let field = match kind {
        Kind::Counter => METRIC_COUNTER,
        _ => METRIC_GAUGE,
    };
    key(out, field, LEN);
    out.push(9);
    double_field(out, VALUE, as_f64(v));
}

/// The name of a family in this format: counters end with `_total`.
fn family_name(name: &str, kind: Kind, out: &mut String) {
    out.push_str(name);
    if kind == Kind::Counter {
        out.push_str("_total");
    }
}

/// Appends the delimiter and the name, help and type fields of a family whose `Metric` fields
/// take `metrics` bytes.
pub(super) fn family_header(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind, metrics: usize) {
    let mut n = String::with_capacity(name.len() + 6);
    family_name(name, kind, &mut n);
    let fields = 1
        + varint_len(n.len() as u64)
        + n.len()
        + 1
        + varint_len(help.len() as u64)
        + help.len()
        + 2;
    varint(out, (fields + metrics) as u64);
    len_field(out, FAMILY_NAME, n.as_bytes());
    len_field(out, FAMILY_HELP, help.as_bytes());
    uint_field(out, FAMILY_TYPE, metric_type(kind));
}

/// Appends a `Histogram` message body: the classic buckets and, when kept, the native ones.
fn histogram(out: &mut Vec<u8>, h: &HistogramSnapshot) {
    uint_field(out, H_SAMPLE_COUNT, h.count);
    double_field(out, H_SAMPLE_SUM, h.sum);
    let mut cum_max = 0;
    let mut b = Vec::with_capacity(20);
    for &(le, cum) in &h.buckets {
        // Cumulative counts never decrease, as in the text formats.
        cum_max = cum_max.max(cum.min(h.count));
        b.clear();
        uint_field(&mut b, B_CUMULATIVE_COUNT, cum_max);
        double_field(&mut b, B_UPPER_BOUND, le);
        len_field(out, H_BUCKET, &b);
    }
    if let Some(n) = &h.native {
        native(out, n);
    }
}

/// Appends the native fields: schema, zero bucket, positive spans and deltas.
fn native(out: &mut Vec<u8>, n: &NativeHistogram) {
    sint_field(out, H_SCHEMA, n.schema.into());
    double_field(out, H_ZERO_THRESHOLD, n.zero_threshold);
    uint_field(out, H_ZERO_COUNT, n.zero_count);
    let (spans, deltas) = spans_and_deltas(n);
    let mut b = Vec::with_capacity(12);
    if spans.is_empty() {
        // A no-op span marks a histogram without observations as native (as the Go client).
        spans_field(out, &mut b, 0, 0);
    }
    for (offset, length) in spans {
        spans_field(out, &mut b, offset, length);
    }
    for d in deltas {
        sint_field(out, H_POSITIVE_DELTA, d);
    }
}

fn spans_field(out: &mut Vec<u8>, b: &mut Vec<u8>, offset: i32, length: u32) {
    b.clear();
    sint_field(b, SPAN_OFFSET, offset.into());
    uint_field(b, SPAN_LENGTH, length.into());
    len_field(out, H_POSITIVE_SPAN, b);
}

/// Spans (offset from the previous span's end, the first one absolute; length) over the
/// populated buckets, a gap of up to two empty buckets kept inside a span, and the deltas
/// between consecutive counts of the buckets the spans cover (the first one absolute).
pub(super) fn spans_and_deltas(n: &NativeHistogram) -> (Vec<(i32, u32)>, Vec<i64>) {
    let (mut spans, mut deltas): (Vec<(i32, u32)>, Vec<i64>) = (Vec::new(), Vec::new());
    let (mut last, mut prev) = (0i32, 0i64);
    for (j, &c) in n.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let idx = n.offset + j as i32;
        match spans.last_mut() {
            Some(span) if idx - last - 1 <= 2 => {
                for _ in 0..idx - last - 1 {
                    deltas.push(-prev);
                    prev = 0;
                }
                span.1 += (idx - last) as u32;
            }
            Some(_) => spans.push((idx - last - 1, 1)),
            None => spans.push((idx, 1)),
        }
        deltas.push(c as i64 - prev);
        prev = c as i64;
        last = idx;
    }
    (spans, deltas)
}

/// Writes the namespace families of `inputs` (before the service and destination ones).
pub fn encode_head(inputs: &Inputs, out: &mut dyn Out) -> fmt::Result {
    let mut sink = PbSink::new(out);
    walk_head(inputs, &mut sink)?;
    sink.flush()
}

/// Writes the context, eBPF and daemon families of `inputs`.
pub fn encode_tail(inputs: &Inputs, plans: &Plans, out: &mut dyn Out) -> fmt::Result {
    let mut sink = PbSink::new(out);
    walk_tail(inputs, plans, &mut sink)?;
    sink.flush()
}

/// Writes the service and destination families the straightforward way (test reference).
#[cfg(test)]
pub fn encode_reference(inputs: &Inputs, out: &mut dyn Out) -> fmt::Result {
    let mut sink = PbSink::new(out);
    super::families::walk_reference(inputs, &mut sink)?;
    sink.flush()
}

/// Buffers one family's `Metric` fields, then writes it whole.
struct PbSink<'a> {
    out: &'a mut dyn Out,
    header: Option<(&'static str, &'static str, Kind)>,
    metrics: Vec<u8>,
    scratch: Vec<u8>,
}

impl<'a> PbSink<'a> {
    fn new(out: &'a mut dyn Out) -> Self {
        PbSink {
            out,
            header: None,
            metrics: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Writes the family being buffered, unless it has no sample.
    fn flush(&mut self) -> fmt::Result {
        if let Some((name, help, kind)) = self.header.take()
            && !self.metrics.is_empty()
        {
            let mut h = Vec::with_capacity(name.len() + help.len() + 16);
            family_header(&mut h, name, help, kind, self.metrics.len());
            self.out.put(&h)?;
            self.out.put(&self.metrics)?;
        }
        self.metrics.clear();
        Ok(())
    }
}

/// The samples of one family being buffered.
pub struct PbFamily<'s> {
    kind: Kind,
    metrics: &'s mut Vec<u8>,
    scratch: &'s mut Vec<u8>,
}

impl Sink for PbSink<'_> {
    type Family<'s>
        = PbFamily<'s>
    where
        Self: 's;

    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
    ) -> Result<PbFamily<'_>, fmt::Error> {
        self.flush()?;
        self.header = Some((name, help, kind));
        Ok(PbFamily {
            kind,
            metrics: &mut self.metrics,
            scratch: &mut self.scratch,
        })
    }
}

impl PbFamily<'_> {
    fn value(&mut self, labels: &dyn LabelPairs, v: Num) -> fmt::Result {
        self.scratch.clear();
        write_label_pairs(self.scratch, labels);
        value_metric(self.metrics, self.kind, self.scratch, &[], v);
        Ok(())
    }
}

impl Samples for PbFamily<'_> {
    fn counter<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result {
        self.value(labels, v)
    }

    fn gauge<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result {
        self.value(labels, v)
    }

    fn histogram<L: LabelSet>(&mut self, labels: &L, h: &HistogramSnapshot) -> fmt::Result {
        let s = &mut *self.scratch;
        s.clear();
        write_label_pairs(s, labels);
        let labels_end = s.len();
        histogram(s, h);
        let hist_len = s.len() - labels_end;
        let m = labels_end + 1 + varint_len(hist_len as u64) + hist_len;
        let out = &mut *self.metrics;
        key(out, FAMILY_METRIC, LEN);
        varint(out, m as u64);
        out.extend_from_slice(&s[..labels_end]);
        key(out, METRIC_HISTOGRAM, LEN);
        varint(out, hist_len as u64);
        out.extend_from_slice(&s[labels_end..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for (v, bytes) in [
            (0u64, &[0u8][..]),
            (1, &[1]),
            (127, &[127]),
            (128, &[0x80, 1]),
            (300, &[0xac, 2]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1],
            ),
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
    }

    #[test]
    fn zigzag() {
        for (v, z) in [(0i64, 0u8), (-1, 1), (1, 2), (-2, 3), (2, 4)] {
            let mut out = Vec::new();
            sint_field(&mut out, 1, v);
            assert_eq!(out, [8, z]);
        }
    }

    #[test]
    fn spans_skip_gaps_over_two_buckets() {
        let n = NativeHistogram {
            schema: 3,
            zero_threshold: 0.0,
            zero_count: 0,
            offset: -5,
            counts: vec![0, 2, 0, 0, 3, 0, 0, 0, 1, 1],
        };
        // Buckets -4 (2), -1 (3), 3 (1), 4 (1): -4..-1 is one span with two empty buckets,
        // then a gap of three.
        let (spans, deltas) = spans_and_deltas(&n);
        assert_eq!(spans, vec![(-4, 4), (3, 2)]);
        assert_eq!(deltas, vec![2, -2, 0, 3, -2, 0]);
        let empty = NativeHistogram::default();
        assert_eq!(spans_and_deltas(&empty), (vec![], vec![]));
    }

    #[test]
    fn a_value_metric_is_as_long_as_announced() {
        let mut labels = Vec::new();
        label_pair(&mut labels, "netns", "host");
        let mut out = Vec::new();
        value_metric(&mut out, Kind::Counter, &labels, &[], Num::U(7));
        assert_eq!(out.len(), value_metric_len(labels.len()));
    }
}
