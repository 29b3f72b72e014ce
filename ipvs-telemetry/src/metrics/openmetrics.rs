//! OpenMetrics 1.0 through prometheus-client: a [`Collector`] over one collection's values.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::families::{Kind, LabelSet, Num, Samples, Sink, walk_head, walk_tail};
use super::labels::LabelPairs;
use super::{Inputs, Plans};
use crate::model::HistogramSnapshot;

/// Which families a collector walks.
#[derive(Debug)]
enum Part {
    /// The namespace families.
    Head,
    /// The context, eBPF and daemon families.
    Tail(Arc<Plans>),
    /// The service and destination families, the straightforward way (test reference).
    #[cfg(test)]
    Reference,
}

/// The collector registered for one encoding: walks one part of the families of its inputs.
#[derive(Debug)]
struct SnapshotCollector(Arc<Inputs>, Part);

impl Collector for SnapshotCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sink = &mut OmSink(encoder);
        match &self.1 {
            Part::Head => walk_head(&self.0, sink),
            Part::Tail(p) => walk_tail(&self.0, p, sink),
            #[cfg(test)]
            Part::Reference => super::families::walk_reference(&self.0, sink),
        }
    }
}

struct OmSink<'a>(DescriptorEncoder<'a>);

impl Sink for OmSink<'_> {
    type Family<'s>
        = MetricEncoder<'s>
    where
        Self: 's;

    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
    ) -> Result<MetricEncoder<'_>, fmt::Error> {
        let t = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        self.0.encode_descriptor(name, help, None, t)
    }
}

fn has_labels<L: LabelPairs>(l: &L) -> bool {
    let mut any = false;
    let _ = l.pairs(&mut |_, _| {
        any = true;
        Err(fmt::Error)
    });
    any
}

fn with_labels<L: LabelSet>(
    enc: &mut MetricEncoder<'_>,
    labels: &L,
    f: impl FnOnce(&mut MetricEncoder<'_>) -> fmt::Result,
) -> fmt::Result {
    if has_labels(labels) {
        f(&mut enc.encode_family(labels)?)
    } else {
        // An empty label set would be written as `name{}`; write the bare name instead.
        f(enc)
    }
}

impl Samples for MetricEncoder<'_> {
    fn counter<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result {
        with_labels(self, labels, |e| match v {
            Num::U(v) => e.encode_counter::<NoLabelSet, _, u64>(&v, None),
            Num::I(v) => e.encode_counter::<NoLabelSet, _, u64>(&(v.max(0) as u64), None),
            Num::F(v) => e.encode_counter::<NoLabelSet, _, f64>(&v, None),
        })
    }

    fn gauge<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result {
        with_labels(self, labels, |e| match v {
            Num::U(v) => e.encode_gauge(&v),
            Num::I(v) => e.encode_gauge(&v),
            Num::F(v) => e.encode_gauge(&v),
        })
    }

    fn histogram<L: LabelSet>(&mut self, labels: &L, h: &HistogramSnapshot) -> fmt::Result {
        // prometheus-client wants per-bucket counts ending with +Inf; the snapshot holds
        // cumulative counts without it.
        let mut buckets = Vec::with_capacity(h.buckets.len() + 1);
        let mut prev = 0u64;
        for &(le, cum) in &h.buckets {
            buckets.push((le, cum.saturating_sub(prev)));
            prev = prev.max(cum);
        }
        buckets.push((f64::INFINITY, h.count.saturating_sub(prev)));
        with_labels(self, labels, |e| {
            e.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
        })
    }
}

fn encode_part(inputs: Arc<Inputs>, part: Part, out: &mut dyn fmt::Write) -> fmt::Result {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(inputs, part)));
    prometheus_client::encoding::text::encode_registry(&mut DynWrite(out), &registry)
}

/// Writes the OpenMetrics namespace families of `inputs` into `out`.
pub(super) fn encode_head(inputs: Arc<Inputs>, out: &mut dyn fmt::Write) -> fmt::Result {
    encode_part(inputs, Part::Head, out)
}

/// Writes the OpenMetrics context, eBPF and daemon families of `inputs`, then `# EOF`.
pub(super) fn encode_tail(
    inputs: Arc<Inputs>,
    plans: Arc<Plans>,
    out: &mut dyn fmt::Write,
) -> fmt::Result {
    encode_part(inputs, Part::Tail(plans), out)?;
    prometheus_client::encoding::text::encode_eof(&mut DynWrite(out))
}

/// Writes the service and destination families the straightforward way (test reference).
#[cfg(test)]
pub(super) fn encode_reference(inputs: Arc<Inputs>, out: &mut dyn fmt::Write) -> fmt::Result {
    encode_part(inputs, Part::Reference, out)
}

struct DynWrite<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for DynWrite<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s)
    }
}
