//! The daemon's own families: scrapes, collections, dropped groups, build information.

use std::fmt;

use super::{Kind, Num, Samples, Sink};
use crate::metrics::Inputs;
use crate::metrics::labels::{NoLabels, StaticLabels};
use crate::metrics::prerendered::Dropped;

pub(super) fn daemon_families<S: Sink>(
    inputs: &Inputs,
    dropped: Dropped,
    sink: &mut S,
) -> fmt::Result {
    {
        let mut f = sink.family(
            "ipvs_telemetry_series_dropped",
            "Service and destination series left out of this exposition by --metrics.max-series, by level.",
            Kind::Gauge,
        )?;
        for (level, n) in [
            ("destination", dropped.destination_series),
            ("service", dropped.service_series),
        ] {
            f.gauge(&StaticLabels(&[("level", level)]), Num::U(n as u64))?;
        }
    }
    sink.family(
        "ipvs_telemetry_scrapes_precollected",
        "Scrapes answered at once from a collection begun ahead of them for a steady scraper (--collection.ahead).",
        Kind::Counter,
    )?
    .counter(&NoLabels, Num::U(inputs.precollected))?;
    {
        let b = &inputs.build;
        let mut f = sink.family(
            "ipvs_telemetry_build_info",
            "Version, git revision and compiler of the ipvs-telemetry binary, always 1.",
            Kind::Gauge,
        )?;
        let l = [
            ("version", b.version),
            ("revision", b.revision),
            ("rustc", b.rustc),
        ];
        f.gauge(&StaticLabels(&l), Num::U(1))?;
    }
    let p = &inputs.process;
    if let Some(v) = p.cpu_seconds {
        sink.family(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            Kind::Counter,
        )?
        .counter(&NoLabels, Num::F(v))?;
    }
    let gauges: [(&'static str, &'static str, Option<Num>); 5] = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_memory_bytes.map(Num::U),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_memory_bytes.map(Num::U),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds.map(Num::U),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds.map(Num::U),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds.map(Num::F),
        ),
    ];
    for (name, help, v) in gauges {
        if let Some(v) = v {
            sink.family(name, help, Kind::Gauge)?.gauge(&NoLabels, v)?;
        }
    }
    Ok(())
}
