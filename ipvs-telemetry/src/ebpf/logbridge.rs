//! Bridges the `log` records aya-log produces from probe messages into `tracing`, so they land
//! in the daemon's log with its format and level filter.

/// A `log::Log` that re-emits records as `tracing` events (target `ipvs_telemetry::probe`).
pub(super) struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "ipvs_telemetry::probe", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "ipvs_telemetry::probe", "{msg}"),
            log::Level::Info => tracing::info!(target: "ipvs_telemetry::probe", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "ipvs_telemetry::probe", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "ipvs_telemetry::probe", "{msg}"),
        }
    }

    fn flush(&self) {}
}
