//! Snapshots to Prometheus: a prometheus-client collector for OpenMetrics and our own encoder for
//! the text format 0.0.4. Only reads [`crate::model`] values.
