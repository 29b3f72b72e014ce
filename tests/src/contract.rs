//! The metric families of the contract (docs/metrics.md), grouped by what they describe, for
//! the tests that check what the daemon serves.

/// The families of a readable namespace with a service, a destination and an interface.
pub const NAMESPACE: &[&str] = &[
    "ipvs_up",
    "ipvs_services",
    "ipvs_connection_table_size",
    "ipvs_info",
    "ipvs_collection_duration_seconds",
    "ipvs_last_collection_timestamp_seconds",
    "ipvs_service_connections_total",
    "ipvs_service_incoming_packets_total",
    "ipvs_service_outgoing_packets_total",
    "ipvs_service_incoming_bytes_total",
    "ipvs_service_outgoing_bytes_total",
    "ipvs_service_destinations",
    "ipvs_service_available_destinations",
    "ipvs_service_persistence_timeout_seconds",
    "ipvs_service_info",
    "ipvs_destination_connections_total",
    "ipvs_destination_incoming_packets_total",
    "ipvs_destination_outgoing_packets_total",
    "ipvs_destination_incoming_bytes_total",
    "ipvs_destination_outgoing_bytes_total",
    "ipvs_destination_active_connections",
    "ipvs_destination_inactive_connections",
    "ipvs_destination_persistent_connections",
    "ipvs_destination_weight",
    "ipvs_destination_upper_threshold",
    "ipvs_destination_lower_threshold",
    "ipvs_destination_info",
    "ipvs_netns_interface_receive_bytes_total",
    "ipvs_netns_interface_transmit_bytes_total",
    "ipvs_netns_interface_receive_packets_total",
    "ipvs_netns_interface_transmit_packets_total",
    "ipvs_netns_interface_receive_drops_total",
    "ipvs_netns_interface_transmit_drops_total",
    "ipvs_netns_interface_up",
];

/// The kernel estimator gauges, exported with `--metrics.estimator` only.
pub const ESTIMATOR: &[&str] = &[
    "ipvs_service_estimated_connections_per_second",
    "ipvs_service_estimated_incoming_packets_per_second",
    "ipvs_service_estimated_outgoing_packets_per_second",
    "ipvs_service_estimated_incoming_bytes_per_second",
    "ipvs_service_estimated_outgoing_bytes_per_second",
    "ipvs_destination_estimated_connections_per_second",
    "ipvs_destination_estimated_incoming_packets_per_second",
    "ipvs_destination_estimated_outgoing_packets_per_second",
    "ipvs_destination_estimated_incoming_bytes_per_second",
    "ipvs_destination_estimated_outgoing_bytes_per_second",
];

/// Namespace families that exist only sometimes: after a failed collection, with conntrack.
pub const NAMESPACE_CONDITIONAL: &[&str] = &[
    "ipvs_collection_errors_total",
    "ipvs_netns_conntrack_entries",
];

/// The daemon-wide families.
pub const DAEMON: &[&str] = &[
    "ipvs_telemetry_build_info",
    "ipvs_ebpf_up",
    "ipvs_ebpf_info",
    "ipvs_ebpf_events_total",
    "ipvs_ebpf_events_lost_total",
    "ipvs_telemetry_series_dropped",
    "ipvs_ebpf_read_errors_total",
];

/// The eBPF per-destination families that are not histograms.
pub const EBPF_DESTINATION: &[&str] = &[
    "ipvs_ebpf_destination_new_connections_total",
    "ipvs_ebpf_destination_peak_connection_rate_per_second",
    "ipvs_ebpf_destination_unanswered_connections_total",
    "ipvs_ebpf_destination_synced_connections_total",
    "ipvs_ebpf_destination_waiting_connections",
];

/// Families that exist only once something happened (a service without a usable destination
/// was asked for a connection) or runs (a sync daemon).
pub const EBPF_CONDITIONAL: &[&str] = &[
    "ipvs_ebpf_service_unschedulable_total",
    "ipvs_sync_daemon_info",
];

/// The histograms (also `_bucket`, `_sum` and `_count` series).
pub const HISTOGRAMS: &[&str] = &[
    "ipvs_ebpf_destination_connection_rate_per_second",
    "ipvs_ebpf_destination_connection_interarrival_seconds",
    "ipvs_ebpf_destination_first_response_seconds",
];

/// The names of services and destinations and the state of their sources (docs/names.md):
/// present with a names file or Docker Swarm namespaces only.
pub const NAMES: &[&str] = &[
    "ipvs_service_name_info",
    "ipvs_destination_name_info",
    "ipvs_names_file_last_reload_successful",
    "ipvs_names_file_reload_failures_total",
    "ipvs_names_docker_up",
    "ipvs_names_docker_info",
    "ipvs_names_docker_refreshes_total",
];

/// Every non-histogram family of the contract.
pub fn all_plain() -> impl Iterator<Item = &'static str> {
    [
        NAMESPACE,
        ESTIMATOR,
        NAMESPACE_CONDITIONAL,
        DAEMON,
        EBPF_DESTINATION,
        EBPF_CONDITIONAL,
        NAMES,
    ]
    .into_iter()
    .flatten()
    .copied()
}
