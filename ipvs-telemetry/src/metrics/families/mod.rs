//! The metric families of docs/metrics.md written through a [`Sink`]: the namespace, context,
//! eBPF and daemon families (the service and destination ones are pre-rendered, see
//! [`super::prerendered`]).
//!
//! The walk is written once, against the [`Sink`] trait; the OpenMetrics encoder
//! (prometheus-client) and the 0.0.4 encoder each implement it. That keeps names, HELP texts,
//! types and label sets identical between the two formats.
//!
//! One file per group of families, as node_exporter keeps one collector per file: `namespace`,
//! `context` (interfaces, conntrack), `sync_daemon`, `ebpf`, `names` and `daemon`; the service
//! and destination families are pre-rendered, and `reference` writes them the plain way for the
//! tests to compare with. The golden expositions (`super::golden`) pin the output byte for byte.

mod context;
mod daemon;
mod ebpf;
mod names;
mod namespace;
#[cfg(test)]
mod reference;
mod sync_daemon;

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;

use super::Inputs;
use super::Plans;
use super::labels::LabelPairs;
use crate::model::HistogramSnapshot;

/// A label set both encoders can write.
pub(super) trait LabelSet: LabelPairs + EncodeLabelSet {}
impl<T: LabelPairs + EncodeLabelSet> LabelSet for T {}

/// The type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A counter; the name is given without `_total`.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// A sample value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Unsigned integer.
    U(u64),
    /// Signed integer.
    I(i64),
    /// Float.
    F(f64),
}

/// Receives the families, one after the other.
pub(super) trait Sink {
    /// Writes the samples of one family.
    type Family<'s>: Samples
    where
        Self: 's;
    /// Starts a family: `name` without the `_total` of counters.
    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
    ) -> Result<Self::Family<'_>, fmt::Error>;
}

/// Receives the samples of one family.
pub(super) trait Samples {
    /// One counter sample.
    fn counter<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result;
    /// One gauge sample.
    fn gauge<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result;
    /// One histogram.
    fn histogram<L: LabelSet>(&mut self, labels: &L, h: &HistogramSnapshot) -> fmt::Result;
}

/// The families before the service and destination ones: the namespace series.
pub(super) fn walk_head<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
    namespace::namespace_families(inputs, sink)
}

/// The families after the service and destination ones: interfaces and conntrack, eBPF (joined
/// with the netlink labels through `index`), and the daemon's own series.
pub(super) fn walk_tail<S: Sink>(inputs: &Inputs, plans: &Plans, sink: &mut S) -> fmt::Result {
    context::context_families(inputs, plans.options(), sink)?;
    sync_daemon::sync_daemon_families(inputs, sink)?;
    ebpf::ebpf_families(inputs, &plans.index, sink)?;
    names::name_families(inputs, plans, sink)?;
    daemon::daemon_families(inputs, plans.dropped, sink)
}

#[cfg(test)]
pub(super) use reference::walk_reference;
