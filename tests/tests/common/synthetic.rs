//! A stand-in exporter serving every series of the metric contract (docs/metrics.md) with the
//! contract's labels and values that move with time, so that Prometheus queries built for the
//! daemon can be checked on the host without a kernel. It also stages one problem for each
//! alert: an unreadable namespace, lost eBPF events, a slow real server, a starved real server,
//! a service whose real servers all have weight 0 (and whose clients find no destination), a
//! real server that answers nothing, and a backup director that receives no sync state.
//!
//! Include it from a test file with `#[path = "common/synthetic.rs"] mod synthetic;`.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Boundaries of the first-response histogram (seconds).
const FIRST_RESPONSE_BUCKETS: &[f64] = &[0.00005, 0.001, 0.01, 0.1, 0.5, 1.0, 10.0];
/// Boundaries of the connection-rate histogram (connections per second).
const RATE_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1000.0, 10000.0];
/// Boundaries of the inter-arrival histogram (seconds).
const INTERARRIVAL_BUCKETS: &[f64] = &[0.0001, 0.001, 0.01, 0.1, 1.0];

/// One virtual service: (family, protocol, virtual_address, virtual_port, fwmark).
type Service = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// The services served: a plain IPv4 one, an IPv6 one, a Swarm-like fwmark service with a
/// published port, and a fwmark service whose real servers are all quiesced.
pub(crate) const SERVICES: &[Service] = &[
    ("inet", "tcp", "10.0.0.1", "80", ""),
    ("inet6", "udp", "2001:db8::1", "53", ""),
    ("inet", "tcp", "", "443", "256"),
    ("inet", "", "", "", "7"),
];

/// Real servers per service: (real_address, real_port, weight, connections per second,
/// first-response seconds, negative for a real server that never answers).
fn destinations(service: usize) -> Vec<(&'static str, &'static str, u32, f64, f64)> {
    match service {
        // 10.1.0.3 has weight 1 but gets nothing: IpvsDestinationStarved.
        0 => vec![
            ("10.1.0.1", "8080", 2, 40.0, 0.002),
            ("10.1.0.2", "8080", 1, 20.0, 0.8),
            ("10.1.0.3", "8080", 1, 0.0, 0.0),
        ],
        // 2001:db8:1::2 gets connections and answers none: IpvsDestinationUnanswered.
        1 => vec![
            ("2001:db8:1::1", "53", 1, 30.0, 0.0003),
            ("2001:db8:1::2", "53", 1, 10.0, -1.0),
        ],
        2 => vec![("10.0.1.2", "443", 1, 5.0, 0.004)],
        // All quiesced: IpvsServiceAllDestinationsQuiesced.
        _ => vec![
            ("10.2.0.1", "0", 0, 0.0, 0.0),
            ("10.2.0.2", "0", 0, 0.0, 0.0),
        ],
    }
}

/// The exposition (text format 0.0.4) `t` seconds after the start.
pub(crate) fn exposition(t: f64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let mut out = String::new();
    let mut line = |name: &str, labels: &str, value: f64| {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    };
    for (netns, up) in [("host", 1.0), ("broken", 0.0)] {
        let ns = format!("netns=\"{netns}\"");
        line("ipvs_up", &ns, up);
        line("ipvs_collection_duration_seconds", &ns, 0.0004);
        line("ipvs_last_collection_timestamp_seconds", &ns, now - 0.5);
        if up == 0.0 {
            line(
                "ipvs_collection_errors_total",
                &format!("{ns},reason=\"no ip_vs\""),
                t.floor(),
            );
            continue;
        }
        line("ipvs_services", &ns, SERVICES.len() as f64);
        line("ipvs_connection_table_size", &ns, 4096.0);
        line("ipvs_info", &format!("{ns},version=\"1.2.1\""), 1.0);
        line("ipvs_netns_conntrack_entries", &ns, 12.0);
        for (dir, scale) in [("receive", 1.0), ("transmit", 2.0)] {
            let dev = format!("{ns},device=\"eth0\"");
            line(
                &format!("ipvs_netns_interface_{dir}_bytes_total"),
                &dev,
                1000.0 * scale * t,
            );
            line(
                &format!("ipvs_netns_interface_{dir}_packets_total"),
                &dev,
                10.0 * scale * t,
            );
            line(
                &format!("ipvs_netns_interface_{dir}_drops_total"),
                &dev,
                0.0,
            );
        }
        line(
            "ipvs_netns_interface_up",
            &format!("{ns},device=\"eth0\""),
            1.0,
        );
    }
    line(
        "ipvs_telemetry_build_info",
        "version=\"0.1.0\",revision=\"synthetic\",rustc=\"1.95.0\"",
        1.0,
    );
    line("ipvs_names_file_last_reload_successful", "", 1.0);
    line("ipvs_names_file_reload_failures_total", "", 0.0);
    line("ipvs_names_docker_up", "", 1.0);
    line("ipvs_names_docker_info", "reason=\"ok\"", 1.0);
    line("ipvs_names_docker_refreshes_total", "", (t / 30.0).floor());
    line("ipvs_ebpf_up", "", 1.0);
    line(
        "ipvs_ebpf_info",
        "mode=\"auto\",reason=\"attached\",first_response=\"attached\"",
        1.0,
    );
    line("ipvs_ebpf_events_total", "kind=\"connection\"", 95.0 * t);
    line(
        "ipvs_ebpf_events_lost_total",
        "kind=\"connection\"",
        (t / 2.0).floor(),
    );
    line("ipvs_ebpf_read_errors_total", "kind=\"connection\"", 0.0);

    // The host namespace is the master of sync id 5; the backup director's namespace
    // `standby` creates no connection from sync messages: IpvsSyncBackupDrift.
    line(
        "ipvs_sync_daemon_info",
        "netns=\"host\",role=\"master\",interface=\"eth1\",sync_id=\"5\"",
        1.0,
    );
    line(
        "ipvs_sync_daemon_info",
        "netns=\"standby\",role=\"backup\",interface=\"eth1\",sync_id=\"5\"",
        1.0,
    );
    line(
        "ipvs_ebpf_destination_synced_connections_total",
        "netns=\"standby\",family=\"inet\",protocol=\"tcp\",virtual_address=\"10.0.0.1\",virtual_port=\"80\",fwmark=\"\",real_address=\"10.1.0.1\",real_port=\"8080\"",
        100.0,
    );
    for (i, (family, protocol, vip, vport, fwmark)) in SERVICES.iter().enumerate() {
        let s = format!(
            "netns=\"host\",family=\"{family}\",protocol=\"{protocol}\",virtual_address=\"{vip}\",virtual_port=\"{vport}\",fwmark=\"{fwmark}\""
        );
        let dests = destinations(i);
        let cps: f64 = dests.iter().map(|d| d.3).sum();
        for (name, per_conn) in [
            ("connections", 1.0),
            ("incoming_packets", 10.0),
            ("outgoing_packets", 8.0),
            ("incoming_bytes", 1500.0),
            ("outgoing_bytes", 9000.0),
        ] {
            line(
                &format!("ipvs_service_{name}_total"),
                &s,
                (cps * per_conn * t).floor(),
            );
            line(
                &format!("ipvs_service_estimated_{name}_per_second"),
                &s,
                cps * per_conn,
            );
        }
        // Names: the first service from the names file, the fwmark one from Docker.
        let (source, name) = match i {
            0 => ("file", "shop"),
            2 => ("docker", "web"),
            _ => ("", ""),
        };
        if !name.is_empty() {
            line(
                "ipvs_service_name_info",
                &format!("{s},source=\"{source}\",name=\"{name}\",namespace=\"\""),
                1.0,
            );
        }
        line("ipvs_service_destinations", &s, dests.len() as f64);
        line(
            "ipvs_service_available_destinations",
            &s,
            dests.iter().filter(|d| d.2 > 0).count() as f64,
        );
        if dests.iter().all(|d| d.2 == 0) {
            // Every real server quiesced: clients keep trying, nothing can be scheduled.
            line(
                "ipvs_ebpf_service_unschedulable_total",
                &s,
                (2.0 * t).floor(),
            );
        }
        line("ipvs_service_persistence_timeout_seconds", &s, 0.0);
        line(
            "ipvs_service_info",
            &format!(
                "{s},scheduler=\"wrr\",flags=\"\",netmask=\"255.255.255.255\",persistence_engine=\"\""
            ),
            1.0,
        );
        for (raddr, rport, weight, cps, first_response) in dests {
            let d = format!("{s},real_address=\"{raddr}\",real_port=\"{rport}\"");
            for (name, per_conn) in [
                ("connections", 1.0),
                ("incoming_packets", 10.0),
                ("outgoing_packets", 8.0),
                ("incoming_bytes", 1500.0),
                ("outgoing_bytes", 9000.0),
            ] {
                line(
                    &format!("ipvs_destination_{name}_total"),
                    &d,
                    (cps * per_conn * t).floor(),
                );
                line(
                    &format!("ipvs_destination_estimated_{name}_per_second"),
                    &d,
                    cps * per_conn,
                );
            }
            if !name.is_empty() {
                line(
                    "ipvs_destination_name_info",
                    &format!("{d},source=\"{source}\",name=\"{name}-{raddr}\",namespace=\"\""),
                    1.0,
                );
            }
            line("ipvs_destination_active_connections", &d, cps * 2.0);
            line("ipvs_destination_inactive_connections", &d, cps * 60.0);
            line("ipvs_destination_persistent_connections", &d, 0.0);
            line("ipvs_destination_weight", &d, f64::from(weight));
            line("ipvs_destination_upper_threshold", &d, 0.0);
            line("ipvs_destination_lower_threshold", &d, 0.0);
            line(
                "ipvs_destination_info",
                &format!("{d},forwarding_method=\"masq\",tunnel_type=\"\""),
                1.0,
            );
            let conns = (cps * t).floor();
            line("ipvs_ebpf_destination_new_connections_total", &d, conns);
            let dead = first_response < 0.0;
            line(
                "ipvs_ebpf_destination_unanswered_connections_total",
                &d,
                if dead { (t / 5.0).floor() } else { 0.0 },
            );
            line(
                "ipvs_ebpf_destination_waiting_connections",
                &d,
                if dead { 3.0 } else { 0.0 },
            );
            line("ipvs_ebpf_destination_synced_connections_total", &d, 0.0);
            line(
                "ipvs_ebpf_destination_peak_connection_rate_per_second",
                &d,
                cps * 3.0,
            );
            histogram(
                &mut line,
                "ipvs_ebpf_destination_first_response_seconds",
                &d,
                FIRST_RESPONSE_BUCKETS,
                first_response.max(0.0),
                if dead { 0.0 } else { conns },
            );
            histogram(
                &mut line,
                "ipvs_ebpf_destination_connection_rate_per_second",
                &d,
                RATE_BUCKETS,
                cps,
                (10.0 * t).floor(),
            );
            histogram(
                &mut line,
                "ipvs_ebpf_destination_connection_interarrival_seconds",
                &d,
                INTERARRIVAL_BUCKETS,
                if cps > 0.0 { 1.0 / cps } else { 0.0 },
                conns,
            );
        }
    }
    out
}

/// A histogram where all `count` observations equal `value`.
fn histogram(
    line: &mut impl FnMut(&str, &str, f64),
    name: &str,
    labels: &str,
    bounds: &[f64],
    value: f64,
    count: f64,
) {
    for bound in bounds {
        let n = if value <= *bound { count } else { 0.0 };
        line(
            &format!("{name}_bucket"),
            &format!("{labels},le=\"{bound}\""),
            n,
        );
    }
    line(
        &format!("{name}_bucket"),
        &format!("{labels},le=\"+Inf\""),
        count,
    );
    line(&format!("{name}_sum"), labels, value * count);
    line(&format!("{name}_count"), labels, count);
}

/// The stand-in exporter: serves [`exposition`] on every request until dropped.
pub(crate) struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Listens on a free port of 127.0.0.1.
    pub(crate) fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let body = exposition(start.elapsed().as_secs_f64());
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// `host:port` to scrape.
    pub(crate) fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
