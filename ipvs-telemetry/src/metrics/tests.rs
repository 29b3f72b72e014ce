//! Encoder tests over a realistic hand-built collection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::model::*;

fn stats(base: u64) -> Stats {
    Stats {
        conns: base,
        inpkts: base * 10,
        outpkts: base * 9,
        inbytes: base * 1000 + u64::MAX / 2,
        outbytes: base * 900,
        cps: 3,
        inpps: 30,
        outpps: 27,
        inbps: 3000,
        outbps: 2700,
    }
}

fn dest(addr: &str, port: u16, forward: ForwardMethod) -> Destination {
    Destination {
        family: if addr.contains(':') {
            Family::Inet6
        } else {
            Family::Inet
        },
        address: addr.parse().unwrap(),
        port,
        forward,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
        active_connections: 2,
        inactive_connections: 1,
        persistent_connections: 0,
        tunnel_type: (forward == ForwardMethod::Tunnel).then_some(TunnelType::Gue),
        tunnel_port: None,
        tunnel_flags: None,
        stats: stats(7),
    }
}

fn service(address: ServiceAddress, family: Family, dests: Vec<Destination>) -> Service {
    Service {
        family,
        address,
        scheduler: "wrr".into(),
        flags: 0x2,
        timeout: 0,
        netmask: if family == Family::Inet {
            u32::MAX
        } else {
            128
        },
        persistence_engine: None,
        stats: stats(42),
        destinations: dests,
        published: None,
    }
}

fn netns(name: &str, inode: u64) -> NetnsId {
    NetnsId {
        name: name.into(),
        dev: 4,
        inode,
    }
}

/// Two namespaces (one failing), IPv4/IPv6/fwmark services, a destination shared by two
/// services, eBPF series, interfaces and conntrack.
pub(crate) fn sample_inputs() -> Inputs {
    let mut persistent = service(
        ServiceAddress::Inet {
            protocol: Protocol::Tcp,
            address: "10.0.0.1".parse().unwrap(),
            port: 80,
        },
        Family::Inet,
        vec![
            dest("192.168.1.1", 8080, ForwardMethod::Masq),
            dest("192.168.1.2", 8080, ForwardMethod::Route),
        ],
    );
    persistent.flags = 0x2 | 0x1 | 0x8;
    persistent.timeout = 300;
    persistent.netmask = 0xffff_ff00;
    persistent.persistence_engine = Some("sip".into());
    let v6 = service(
        ServiceAddress::Inet {
            protocol: Protocol::Udp,
            address: "2001:db8:0:0:0:0:0:53".parse().unwrap(),
            port: 53,
        },
        Family::Inet6,
        vec![dest("2001:db8::1:0:0:1", 53, ForwardMethod::Tunnel)],
    );
    let mut fwmark = service(
        ServiceAddress::Fwmark { mark: 259 },
        Family::Inet,
        // Same real server as the first service: two distinct series.
        vec![dest("192.168.1.1", 8080, ForwardMethod::Masq)],
    );
    fwmark.published = Some((Protocol::Tcp, 30080));
    let fwmark_unpublished = service(ServiceAddress::Fwmark { mark: 7 }, Family::Inet, vec![]);
    let ts = UNIX_EPOCH + Duration::from_millis(1_763_700_000_123);
    let host = NamespaceSnapshot {
        netns: netns("host", 4026531840),
        ipvs: Ok(IpvsState {
            info: Info {
                version: 0x010201,
                conn_tab_size: 4096,
            },
            timeouts: Timeouts::default(),
            services: vec![persistent, v6, fwmark, fwmark_unpublished],
        }),
        context: NetnsContext {
            interfaces: vec![InterfaceStats {
                device: "eth0".into(),
                up: true,
                rx_bytes: 1,
                tx_bytes: 2,
                rx_packets: 3,
                tx_packets: 4,
                rx_dropped: 5,
                tx_dropped: 6,
            }],
            conntrack_entries: Some(17),
            sync_daemons: vec![SyncDaemon {
                role: "backup".into(),
                interface: "eth1".into(),
                sync_id: 7,
            }],
        },
        duration: Duration::from_micros(1500),
        timestamp: ts,
    };
    let broken = NamespaceSnapshot {
        netns: netns("ingress_sbox", 4026532999),
        ipvs: Err(CollectFailure {
            reason: ErrorReason::ModuleNotLoaded,
            message: "ip_vs not loaded".into(),
        }),
        context: NetnsContext::default(),
        duration: Duration::from_micros(200),
        timestamp: ts,
    };
    let hist = HistogramSnapshot {
        buckets: vec![(0.001, 1), (0.01, 3), (0.1, 3)],
        count: 4,
        sum: 0.5,
        native: Some(NativeHistogram {
            schema: 3,
            zero_threshold: crate::ebpf::native::ZERO_THRESHOLD,
            zero_count: 1,
            offset: -60,
            counts: vec![2, 0, 0, 0, 1],
        }),
    };
    let ebpf = EbpfSnapshot {
        up: true,
        mode: "auto".into(),
        reason: "attached".into(),
        first_response: "sctp_state_transition: not in /proc/kallsyms".into(),
        events: vec![("new_connection".into(), 12), ("first_response".into(), 9)],
        lost: vec![("new_connection".into(), 0)],
        read_errors: vec![("new_connection".into(), 0), ("first_response".into(), 2)],
        overflow: 0,
        series: vec![
            EbpfSeries {
                key: EbpfKey {
                    netns_inode: 4026531840,
                    family: Family::Inet,
                    service: ServiceAddress::Inet {
                        protocol: Protocol::Tcp,
                        address: "10.0.0.1".parse().unwrap(),
                        port: 80,
                    },
                    destination: Some(("192.168.1.1".parse::<IpAddr>().unwrap(), 8080)),
                },
                new_connections: 7,
                connection_rate: hist.clone(),
                peak_connection_rate: 40.0,
                interarrival: hist.clone(),
                first_response: hist.clone(),
                unanswered: 3,
                synced: 4,
                waiting: 2,
            },
            // A destination netlink no longer knows: left out.
            EbpfSeries {
                key: EbpfKey {
                    netns_inode: 4026531840,
                    family: Family::Inet,
                    service: ServiceAddress::Fwmark { mark: 999 },
                    destination: Some(("192.168.1.9".parse::<IpAddr>().unwrap(), 1)),
                },
                new_connections: 1,
                connection_rate: hist.clone(),
                peak_connection_rate: 1.0,
                interarrival: hist.clone(),
                first_response: hist,
                unanswered: 0,
                synced: 0,
                waiting: 0,
            },
        ],
        unschedulable: vec![
            (
                EbpfKey {
                    netns_inode: 4026531840,
                    family: Family::Inet,
                    service: ServiceAddress::Inet {
                        protocol: Protocol::Tcp,
                        address: "10.0.0.1".parse().unwrap(),
                        port: 80,
                    },
                    destination: None,
                },
                5,
            ),
            // A service netlink no longer knows: left out.
            (
                EbpfKey {
                    netns_inode: 4026531840,
                    family: Family::Inet,
                    service: ServiceAddress::Fwmark { mark: 999 },
                    destination: None,
                },
                1,
            ),
        ],
    };
    let mut errors = BTreeMap::new();
    errors.insert(("ingress_sbox".into(), "module_not_loaded".into()), 3);
    let snapshot = Snapshot {
        namespaces: vec![host, broken],
    };
    let file = crate::names::file::NamesFile::parse(
        "services:\n  - { address: 10.0.0.1, port: 80, name: shop, namespace: web, labels: { team: \"a\\\"b\" } }\n  - { fwmark: 259, name: ingress }\ndestinations:\n  - { address: 192.168.1.0/24, name: backend }\n",
        std::path::Path::new("names.yml"),
    )
    .unwrap();
    let names = crate::names::NameState {
        netns: crate::names::resolve(&snapshot, &[&file]),
        file: Some(crate::names::FileStatus {
            last_reload_ok: false,
            reload_failures: 2,
        }),
        docker: Some(crate::names::DockerStatus {
            up: false,
            reason: "socket_missing",
            refreshes: 5,
        }),
    };
    Inputs {
        snapshot: Arc::new(snapshot),
        ebpf: Arc::new(ebpf),
        errors,
        process: ProcessStats {
            cpu_seconds: Some(1.25),
            resident_memory_bytes: Some(10 << 20),
            virtual_memory_bytes: Some(100 << 20),
            open_fds: Some(9),
            max_fds: Some(1024),
            start_time_seconds: Some(1_763_700_000.5),
        },
        precollected: 0,
        build: BuildInfo {
            version: "0.1.0",
            revision: "abc\"def",
            rustc: "1.95.0",
        },
        names: Arc::new(names),
    }
}

fn text(format: Format) -> String {
    text_with(format, &ExportOptions::everything())
}

fn text_with(format: Format, options: &ExportOptions) -> String {
    let b = encode(&Arc::new(sample_inputs()), options, format, false).unwrap();
    String::from_utf8(b.to_vec()).unwrap()
}

/// Samples as `name{sorted labels}` -> value, `le` normalised (prometheus-client writes `le`
/// first and as `1.0`).
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    let label = regex::Regex::new(r#"([a-z_]+)="((?:[^"\\]|\\.)*)""#).unwrap();
    let mut out = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let mut pairs: Vec<String> = label
            .captures_iter(labels)
            .map(|c| {
                let v = if &c[1] == "le" && &c[2] != "+Inf" {
                    c[2].parse::<f64>().unwrap().to_string()
                } else {
                    c[2].to_string()
                };
                format!("{}={v:?}", &c[1])
            })
            .collect();
        pairs.sort();
        let key = format!("{name}{{{}}}", pairs.join(","));
        let v: f64 = value.parse().unwrap();
        assert!(out.insert(key.clone(), v).is_none(), "duplicate {key}");
    }
    out
}

#[test]
fn both_formats_carry_the_same_samples() {
    let om = text(Format::OpenMetrics);
    let t = text(Format::Text);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(!t.contains("# EOF"));
    let a = samples(&om);
    let b = samples(&t);
    for (k, v) in &a {
        assert_eq!(b.get(k), Some(v), "{k} differs");
    }
    assert_eq!(a.len(), b.len());
    assert!(a.len() > 100, "{}", a.len());
}

#[test]
fn text_format_lines() {
    let t = text(Format::Text);
    let want = [
        "# HELP ipvs_service_connections_total Connections scheduled by the virtual service (kernel counter).",
        "# TYPE ipvs_service_connections_total counter",
        r#"ipvs_service_connections_total{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark=""} 42"#,
        r#"ipvs_service_incoming_bytes_total{netns="host",family="inet6",protocol="udp",virtual_address="2001:db8::53",virtual_port="53",fwmark=""} 9223372036854817807"#,
        r#"ipvs_service_info{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",scheduler="wrr",flags="persistent,sched1",netmask="255.255.255.0",persistence_engine="sip"} 1"#,
        r#"ipvs_service_info{netns="host",family="inet6",protocol="udp",virtual_address="2001:db8::53",virtual_port="53",fwmark="",scheduler="wrr",flags="",netmask="128",persistence_engine=""} 1"#,
        r#"ipvs_service_persistence_timeout_seconds{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark=""} 300"#,
        r#"ipvs_destination_connections_total{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080"} 7"#,
        r#"ipvs_destination_connections_total{netns="host",family="inet",protocol="tcp",virtual_address="",virtual_port="30080",fwmark="259",real_address="192.168.1.1",real_port="8080"} 7"#,
        r#"ipvs_service_destinations{netns="host",family="inet",protocol="",virtual_address="",virtual_port="",fwmark="7"} 0"#,
        r#"ipvs_destination_info{netns="host",family="inet6",protocol="udp",virtual_address="2001:db8::53",virtual_port="53",fwmark="",real_address="2001:db8::1:0:0:1",real_port="53",forwarding_method="tunnel",tunnel_type="gue"} 1"#,
        r#"ipvs_destination_info{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.2",real_port="8080",forwarding_method="route",tunnel_type=""} 1"#,
        r#"ipvs_up{netns="host"} 1"#,
        r#"ipvs_up{netns="ingress_sbox"} 0"#,
        r#"ipvs_info{netns="host",version="1.2.1"} 1"#,
        r#"ipvs_connection_table_size{netns="host"} 4096"#,
        r#"ipvs_collection_duration_seconds{netns="host"} 0.0015"#,
        r#"ipvs_last_collection_timestamp_seconds{netns="host"} 1763700000.123"#,
        r#"ipvs_collection_errors_total{netns="ingress_sbox",reason="module_not_loaded"} 3"#,
        r#"ipvs_ebpf_up 1"#,
        r#"ipvs_ebpf_info{mode="auto",reason="attached",first_response="sctp_state_transition: not in /proc/kallsyms"} 1"#,
        r#"ipvs_ebpf_events_total{kind="new_connection"} 12"#,
        r#"ipvs_ebpf_events_lost_total{kind="new_connection"} 0"#,
        r#"ipvs_ebpf_read_errors_total{kind="first_response"} 2"#,
        "ipvs_ebpf_overflow_events_total 0",
        "# TYPE ipvs_ebpf_destination_first_response_seconds histogram",
        r#"ipvs_ebpf_destination_first_response_seconds_bucket{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080",le="0.01"} 3"#,
        r#"ipvs_ebpf_destination_first_response_seconds_bucket{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080",le="+Inf"} 4"#,
        r#"ipvs_ebpf_destination_first_response_seconds_sum{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080"} 0.5"#,
        r#"ipvs_ebpf_destination_first_response_seconds_count{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080"} 4"#,
        r#"ipvs_ebpf_destination_new_connections_total{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080"} 7"#,
        r#"ipvs_ebpf_destination_unanswered_connections_total{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080"} 3"#,
        r#"ipvs_ebpf_destination_waiting_connections{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080"} 2"#,
        r#"ipvs_ebpf_destination_synced_connections_total{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.1",real_port="8080"} 4"#,
        r#"ipvs_sync_daemon_info{netns="host",role="backup",interface="eth1",sync_id="7"} 1"#,
        r#"ipvs_ebpf_service_unschedulable_total{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark=""} 5"#,
        r#"ipvs_netns_interface_receive_bytes_total{netns="host",device="eth0"} 1"#,
        r#"ipvs_netns_interface_up{netns="host",device="eth0"} 1"#,
        r#"ipvs_netns_conntrack_entries{netns="host"} 17"#,
        r#"ipvs_telemetry_build_info{version="0.1.0",revision="abc\"def",rustc="1.95.0"} 1"#,
        "# TYPE process_cpu_seconds_total counter",
        "process_cpu_seconds_total 1.25",
        "process_resident_memory_bytes 10485760",
        "process_max_fds 1024",
        r#"ipvs_service_name_info{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",source="file",name="shop",namespace="web",team="a\"b"} 1"#,
        r#"ipvs_service_name_info{netns="host",family="inet",protocol="tcp",virtual_address="",virtual_port="30080",fwmark="259",source="file",name="ingress",namespace=""} 1"#,
        r#"ipvs_destination_name_info{netns="host",family="inet",protocol="tcp",virtual_address="",virtual_port="30080",fwmark="259",real_address="192.168.1.1",real_port="8080",source="file",name="backend",namespace=""} 1"#,
        r#"ipvs_destination_name_info{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark="",real_address="192.168.1.2",real_port="8080",source="file",name="backend",namespace=""} 1"#,
        "ipvs_names_file_last_reload_successful 0",
        "ipvs_names_file_reload_failures_total 2",
        "ipvs_names_docker_up 0",
        r#"ipvs_names_docker_info{reason="socket_missing"} 1"#,
        "ipvs_names_docker_refreshes_total 5",
    ];
    for w in want {
        assert!(t.lines().any(|l| l == w), "missing line {w}\n{t}");
    }
    // The eBPF series of a service netlink no longer knows is left out.
    assert!(!t.contains("192.168.1.9"));
    assert!(!t.contains("hashed"));
}

#[test]
fn openmetrics_format_lines() {
    let om = text(Format::OpenMetrics);
    for w in [
        "# TYPE ipvs_service_connections counter",
        "# TYPE ipvs_ebpf_up gauge",
        "ipvs_ebpf_up 1",
        r#"ipvs_up{netns="host"} 1"#,
        "# TYPE process_cpu_seconds counter",
        "process_cpu_seconds_total 1.25",
    ] {
        assert!(om.lines().any(|l| l == w), "missing line {w}\n{om}");
    }
    assert!(!om.contains("{}"));
}

#[test]
fn promtool_accepts_text_format() {
    use ipvs_lab::skip;
    if !skip::require(
        "promtool_accepts_text_format",
        &[skip::tool("promtool", "prometheus")],
    ) {
        return;
    }
    let t = text(Format::Text);
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(t.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(report.trim(), "", "promtool reported:\n{report}");
}

#[test]
fn gzip_round_trip_in_chunks() {
    use std::io::Read;
    let inputs = Arc::new(large_inputs(300, 5));
    let options = ExportOptions::everything();
    let plans = Arc::new(Plans::new(
        inputs.snapshot.clone(),
        Arc::new(options.clone()),
        None,
    ));
    for format in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
        let mut chunks = Vec::new();
        stream(&inputs, &plans, format, true, &mut |b| {
            chunks.push(b);
            true
        })
        .unwrap();
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let gz: Vec<u8> = chunks.concat();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        let mut want = Buf::default();
        write_exposition(&inputs, &plans, format, &mut want).unwrap();
        let want = want.0;
        assert_eq!(plain, want);
        // Uncompressed: chunks of about CHUNK bytes, the same text.
        let mut chunks = Vec::new();
        stream(&inputs, &plans, format, false, &mut |b| {
            chunks.push(b);
            true
        })
        .unwrap();
        assert!(chunks.iter().all(|c| c.len() < CHUNK + 4096));
        assert_eq!(chunks.concat(), want);
    }
}

#[test]
fn stream_stops_when_the_reader_goes() {
    let inputs = Arc::new(large_inputs(300, 5));
    let plans = Arc::new(Plans::new(
        inputs.snapshot.clone(),
        Arc::new(ExportOptions::default()),
        None,
    ));
    for gzip in [false, true] {
        let mut calls = 0;
        let r = stream(&inputs, &plans, Format::Text, gzip, &mut |_| {
            calls += 1;
            false
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}

/// The pre-rendered service and destination families equal the straightforward encoding through
/// the sink, byte for byte, in both formats.
#[test]
fn prerendered_equals_the_reference_encoding() {
    let mut inputs = sample_inputs();
    let mut snap = (*inputs.snapshot).clone();
    // Odd label values: quotes, backslashes and newlines in a namespace name and a scheduler.
    snap.namespaces[0].netns.name = "a\"b\\c\nd".into();
    if let Ok(ipvs) = &mut snap.namespaces[0].ipvs {
        ipvs.services[0].scheduler = "w\"r\\r".into();
    }
    inputs.snapshot = Arc::new(snap);
    let inputs = Arc::new(inputs);
    let plans = Plans::new(
        inputs.snapshot.clone(),
        Arc::new(ExportOptions::everything()),
        None,
    );
    // The reference has no ipvs_service_available_destinations family: compare the others.
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("ipvs_service_available_destinations"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let first_difference = |a: &str, b: &str| {
        a.lines()
            .zip(b.lines())
            .find(|(x, y)| x != y)
            .map(|(x, y)| format!("{x}\n  vs\n{y}"))
            .unwrap_or_else(|| format!("lengths {} vs {}", a.len(), b.len()))
    };
    // Protobuf: the same families, decoded.
    let mut fast = Buf::default();
    plans.write(Format::Protobuf, &mut fast).unwrap();
    let mut reference = Buf::default();
    super::protobuf::encode_reference(&inputs, &mut reference).unwrap();
    let mut fast = decode_protobuf(&fast.0);
    assert!(fast.len() > 10);
    fast.retain(|f| f.name() != "ipvs_service_available_destinations");
    assert_eq!(fast, decode_protobuf(&reference.0));
    for format in [Format::Text, Format::OpenMetrics] {
        let mut fast = String::new();
        plans.write(format, &mut fast).unwrap();
        let mut reference = String::new();
        match format {
            Format::Text => super::text::encode_reference(&inputs, &mut reference).unwrap(),
            Format::OpenMetrics => {
                super::openmetrics::encode_reference(inputs.clone(), &mut reference).unwrap()
            }
            Format::Protobuf => unreachable!(),
        }
        assert!(fast.len() > 1000);
        assert!(fast.contains("ipvs_service_available_destinations{"));
        let fast = strip(&fast);
        assert!(
            fast == reference,
            "{format:?}: {}",
            first_difference(&fast, &reference)
        );
    }
}

/// A plan is reused while the table's shape stays, and rebuilt when it changes.
#[test]
fn plans_are_reused_per_namespace_shape() {
    let inputs = sample_inputs();
    let options = Arc::new(ExportOptions::default());
    let p1 = Plans::new(inputs.snapshot.clone(), options.clone(), None);
    let mut snap = (*inputs.snapshot).clone();
    if let Ok(ipvs) = &mut snap.namespaces[0].ipvs {
        ipvs.services[0].stats.conns += 5;
        ipvs.services[0].destinations[0].active_connections += 1;
    }
    let p2 = Plans::new(Arc::new(snap.clone()), options.clone(), Some(&p1));
    assert!(p2.shares_namespace_with(&p1, 0));
    let mut out = String::new();
    p2.write(Format::Text, &mut out).unwrap();
    assert!(out.contains(r#"ipvs_service_connections_total{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark=""} 47"#), "{out}");
    if let Ok(ipvs) = &mut snap.namespaces[0].ipvs {
        ipvs.services[0].scheduler = "rr".into();
    }
    let p3 = Plans::new(Arc::new(snap), options, Some(&p2));
    assert!(!p3.shares_namespace_with(&p2, 0));
    let mut out = String::new();
    p3.write(Format::Text, &mut out).unwrap();
    assert!(out.contains(r#"scheduler="rr""#));
}

#[test]
fn estimator_and_groups_are_left_out_by_default_or_on_request() {
    let default = text_with(Format::Text, &ExportOptions::default());
    assert!(!default.contains("_estimated_"));
    assert!(default.contains("ipvs_destination_weight{"));
    let all = text(Format::Text);
    assert!(all.contains("ipvs_destination_estimated_connections_per_second{"));
    let o = ExportOptions {
        excluded: vec![
            options::Group::DestinationThresholds,
            options::Group::DestinationInfo,
            options::Group::ContextInterfaces,
        ],
        ..Default::default()
    };
    let t = text_with(Format::Text, &o);
    assert!(!t.contains("ipvs_destination_upper_threshold"));
    assert!(!t.contains("ipvs_destination_info"));
    assert!(!t.contains("ipvs_netns_interface_"));
    assert!(t.contains("ipvs_destination_weight{"));
    assert!(t.contains("ipvs_netns_conntrack_entries"));
}

#[test]
fn destination_selector_keeps_service_series_and_counts() {
    let mut o = ExportOptions {
        destinations: options::parse_selector("none").unwrap(),
        ..Default::default()
    };
    let t = text_with(Format::Text, &o);
    assert!(!t.contains("ipvs_destination_"), "{t}");
    assert!(t.contains(r#"ipvs_service_destinations{netns="host",family="inet",protocol="tcp",virtual_address="10.0.0.1",virtual_port="80",fwmark=""} 2"#));
    assert!(t.contains("ipvs_service_available_destinations{"));
    assert!(t.contains("ipvs_service_connections_total{"));
    o.destinations = options::parse_selector("vip=2001:db8::/32").unwrap();
    let t = text_with(Format::Text, &o);
    let dests: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("ipvs_destination_connections_total"))
        .collect();
    assert!(!dests.is_empty());
    assert!(
        dests.iter().all(|l| l.contains("2001:db8::53")),
        "{dests:?}"
    );
}

#[test]
fn series_cap_drops_whole_groups_from_the_end() {
    let inputs = Arc::new(large_inputs(100, 5));
    let count = |t: &str, p: &str| t.lines().filter(|l| l.starts_with(p)).count();
    let mut o = ExportOptions::default();
    let full =
        String::from_utf8(encode(&inputs, &o, Format::Text, false).unwrap().to_vec()).unwrap();
    let svc_series = full
        .lines()
        .filter(|l| l.starts_with("ipvs_service_") && !l.starts_with('#'))
        .count();
    let dest_series = full
        .lines()
        .filter(|l| l.starts_with("ipvs_destination_") && !l.starts_with('#'))
        .count();
    // Room for every service and the destinations of 40 of the 100 (+ sample services).
    let per_dest = dest_series / count(&full, "ipvs_destination_connections_total");
    o.max_series = svc_series + 40 * 5 * per_dest;
    let t = String::from_utf8(encode(&inputs, &o, Format::Text, false).unwrap().to_vec()).unwrap();
    let kept = count(&t, "ipvs_destination_connections_total");
    assert!((35 * 5..=40 * 5).contains(&kept), "{kept}");
    assert_eq!(kept % 5, 0, "whole services only");
    assert_eq!(
        count(&t, "ipvs_service_connections_total"),
        count(&full, "ipvs_service_connections_total")
    );
    // The same cut every time, and said in the exposition.
    let again =
        String::from_utf8(encode(&inputs, &o, Format::Text, false).unwrap().to_vec()).unwrap();
    assert_eq!(t, again);
    assert!(t.contains("ipvs_telemetry_series_dropped{level=\"destination\"}"));
    assert!(!t.contains("ipvs_telemetry_series_dropped{level=\"destination\"} 0"));
    // Too small even for the services: whole services go, from the end.
    o.max_series = 10;
    let t = String::from_utf8(encode(&inputs, &o, Format::Text, false).unwrap().to_vec()).unwrap();
    assert!(!t.contains("ipvs_destination_connections_total{"));
    assert!(count(&t, "ipvs_service_connections_total{") <= 1);
    assert!(!t.contains("ipvs_telemetry_series_dropped{level=\"service\"} 0"));
}

#[test]
fn empty_collection_still_valid() {
    let inputs = Inputs {
        snapshot: Arc::new(Snapshot::default()),
        ebpf: Arc::new(EbpfSnapshot {
            mode: "off".into(),
            reason: "disabled by --ebpf off".into(),
            ..Default::default()
        }),
        errors: BTreeMap::new(),
        process: ProcessStats::default(),
        precollected: 0,
        build: BuildInfo::current(),
        names: Default::default(),
    };
    let t = encode(
        &Arc::new(inputs),
        &ExportOptions::default(),
        Format::Text,
        false,
    )
    .unwrap();
    let t = String::from_utf8(t.to_vec()).unwrap();
    assert!(
        t.contains("ipvs_telemetry_build_info{version=\"0.1.0\""),
        "{t}"
    );
    assert!(!t.contains("ipvs_service_connections"));
    assert!(t.contains("ipvs_ebpf_up 0"));
}

#[test]
fn snapshot_command_text() {
    let inputs = snapshot_inputs((*sample_inputs().snapshot).clone());
    let mut t = String::new();
    encode_to(&inputs, &ExportOptions::default(), Format::Text, &mut t).unwrap();
    assert!(t.contains("ipvs_service_connections_total{netns=\"host\""));
    assert!(t.contains("ipvs_telemetry_build_info{"));
    assert!(!t.contains("ipvs_ebpf"));
    assert!(!t.contains("process_"));
    assert!(!t.contains("ipvs_collection_errors_total{"));
}

/// 10,000 services × 5 destinations, as in the benchmark.
pub(crate) fn large_inputs(services: usize, dests: usize) -> Inputs {
    let mut svcs = Vec::with_capacity(services);
    for i in 0..services {
        let vip: IpAddr = std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32).into();
        let ds = (0..dests)
            .map(|j| {
                let mut d = dest("192.168.0.1", 8080, ForwardMethod::Masq);
                d.address = std::net::Ipv4Addr::from(0xc0a8_0000u32 + j as u32).into();
                d.stats = stats(i as u64 * 7 + j as u64);
                d
            })
            .collect();
        svcs.push(service(
            ServiceAddress::Inet {
                protocol: Protocol::Tcp,
                address: vip,
                port: 80,
            },
            Family::Inet,
            ds,
        ));
    }
    let mut inputs = sample_inputs();
    let mut snap = (*inputs.snapshot).clone();
    if let Ok(ipvs) = &mut snap.namespaces[0].ipvs {
        ipvs.services = svcs;
    }
    inputs.snapshot = Arc::new(snap);
    // The sample's names point at the sample's services.
    inputs.names = Default::default();
    inputs
}

/// Series, bytes and encoding time by mode at 1,000 and 10,000 services × 5 destinations, the
/// figures of docs/sizing.md (run with `--release --ignored --nocapture`).
#[test]
#[ignore]
fn large_collection_encoding() {
    let modes = [
        ("defaults", ExportOptions::default()),
        ("--metrics.estimator", ExportOptions::everything()),
        (
            "--metrics.destinations none",
            ExportOptions {
                destinations: options::Destinations::None,
                ..Default::default()
            },
        ),
        (
            "none + --metrics.exclude service.info,service.persistence",
            ExportOptions {
                destinations: options::Destinations::None,
                excluded: vec![
                    options::Group::ServiceInfo,
                    options::Group::ServicePersistence,
                ],
                ..Default::default()
            },
        ),
    ];
    eprintln!(
        "| services × destinations | mode | series | text | gzip | plan | encode | encode+gzip |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|");
    for services in [1_000, 10_000] {
        let inputs = Arc::new(large_inputs(services, 5));
        for (name, options) in &modes {
            let t = std::time::Instant::now();
            let plans = Arc::new(Plans::new(
                inputs.snapshot.clone(),
                Arc::new(options.clone()),
                None,
            ));
            let plan = t.elapsed();
            let run = |gz: bool| {
                let t = std::time::Instant::now();
                let (mut n, mut series) = (0, 0);
                stream(&inputs, &plans, Format::OpenMetrics, gz, &mut |b| {
                    n += b.len();
                    if !gz {
                        series += b
                            .split(|&c| c == b'\n')
                            .filter(|l| !l.is_empty() && l[0] != b'#')
                            .count();
                    }
                    true
                })
                .unwrap();
                (n, series, t.elapsed())
            };
            let (text, series, enc) = run(false);
            let (gz, _, encgz) = run(true);
            eprintln!(
                "| {services} × 5 | {name} | {series} | {:.1} MB | {:.2} MB | {plan:.0?} | {enc:.0?} | {encgz:.0?} |",
                text as f64 / 1e6,
                gz as f64 / 1e6
            );
        }
    }
}

/// The segmented gzip body decodes (flate2's decoder, which checks the CRC and length) to the
/// same text as the plain encoding, reuses every segment of an unchanged table, and follows a
/// changed value and a changed shape.
#[test]
fn segmented_gzip_reuses_unchanged_segments() {
    use std::io::Read;
    let options = Arc::new(ExportOptions::everything());
    let gunzip = |b: &[u8]| {
        let mut s = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut s).unwrap();
        s
    };
    let body = |inputs: &Arc<Inputs>, plans: &Arc<Plans>, cache: &mut SegmentCache| {
        let mut all = Vec::new();
        segments::stream_gzip(inputs, plans, cache, &mut |b| {
            all.extend_from_slice(&b);
            true
        })
        .unwrap();
        all
    };
    for format in [Format::OpenMetrics, Format::Text, Format::Protobuf] {
        let mut cache = SegmentCache::new(format);
        let inputs = Arc::new(large_inputs(600, 5));
        let plans = Arc::new(Plans::new(inputs.snapshot.clone(), options.clone(), None));
        let mut want = Buf::default();
        write_exposition(&inputs, &plans, format, &mut want).unwrap();
        let first = body(&inputs, &plans, &mut cache);
        assert_eq!(gunzip(&first), want.0);
        let (reused, compressed) = cache.last;
        assert_eq!(reused, 0);
        assert!(compressed > 20, "{compressed}");
        // Same collection again: every segment reused.
        let again = body(&inputs, &plans, &mut cache);
        assert_eq!(gunzip(&again), want.0);
        assert_eq!(cache.last, (compressed, 0));
        // A new collection with one destination's counters moved, same shape.
        let mut snap = (*inputs.snapshot).clone();
        if let Ok(ipvs) = &mut snap.namespaces[0].ipvs {
            ipvs.services[300].destinations[2].stats.conns += 1;
        }
        let mut moved = (*inputs).clone();
        moved.snapshot = Arc::new(snap);
        let moved = Arc::new(moved);
        let plans2 = Arc::new(Plans::new(
            moved.snapshot.clone(),
            options.clone(),
            Some(&plans),
        ));
        let mut want2 = Buf::default();
        write_exposition(&moved, &plans2, format, &mut want2).unwrap();
        assert_ne!(want.0, want2.0);
        assert_eq!(gunzip(&body(&moved, &plans2, &mut cache)), want2.0);
        // The connections of one destination: one segment of destination connections; the
        // service's connections: one of service connections.
        assert_eq!(cache.last.1, 1, "{:?}", cache.last);
        // A new shape: everything of that namespace again, still exact.
        let mut snap = (*moved.snapshot).clone();
        if let Ok(ipvs) = &mut snap.namespaces[0].ipvs {
            ipvs.services.remove(10);
        }
        let mut shrunk = (*moved).clone();
        shrunk.snapshot = Arc::new(snap);
        let shrunk = Arc::new(shrunk);
        let plans3 = Arc::new(Plans::new(
            shrunk.snapshot.clone(),
            options.clone(),
            Some(&plans2),
        ));
        let mut want3 = Buf::default();
        write_exposition(&shrunk, &plans3, format, &mut want3).unwrap();
        assert_eq!(gunzip(&body(&shrunk, &plans3, &mut cache)), want3.0);
        assert!(cache.last.1 > 20);
    }
}

/// Memory profile of the scrape path at 10,000 × 5 (run under heaptrack; ignored).
#[test]
#[ignore]
fn memory_profile_10k_x5() {
    memory_profile(10_000, 5);
}

/// Memory profile of the scrape path at 50,000 × 2 (run under heaptrack; ignored).
#[test]
#[ignore]
fn memory_profile_50k_x2() {
    memory_profile(50_000, 2);
}

/// Plans `n` × `m` twice (the second reusing the first), two gzip scrapes and one
/// uncompressed, with their times and sizes.
fn memory_profile(n: usize, m: usize) {
    let t = std::time::Instant::now();
    let inputs = Arc::new(large_inputs(n, m));
    let options = Arc::new(ExportOptions::default());
    let plans = Arc::new(Plans::new(inputs.snapshot.clone(), options.clone(), None));
    eprintln!("{n} x {m}: inputs and plan {:?}", t.elapsed());
    let plans2 = Arc::new(Plans::new(inputs.snapshot.clone(), options, Some(&plans)));
    let mut cache = SegmentCache::new(Format::OpenMetrics);
    for _ in 0..2 {
        let t = std::time::Instant::now();
        // As the daemon's gzip body: the cached segments themselves, not a copy.
        let mut all = Vec::new();
        segments::stream_gzip(&inputs, &plans2, &mut cache, &mut |b| {
            all.push(b);
            true
        })
        .unwrap();
        let bytes = all.iter().map(|b| b.len()).sum::<usize>();
        eprintln!("gzip body {bytes} in {:?}", t.elapsed());
    }
    let mut n = 0;
    stream(&inputs, &plans2, Format::OpenMetrics, false, &mut |b| {
        n += b.len();
        true
    })
    .unwrap();
    eprintln!("plain {n}, label bytes {}", plans2.bytes());
    drop(plans);
}

/// The families of a protobuf exposition, decoded by an independent decoder (the `prometheus`
/// crate's message types, generated from client_model's `metrics.proto` by rust-protobuf).
fn decode_protobuf(mut body: &[u8]) -> Vec<prometheus::proto::MetricFamily> {
    use ::protobuf::Message;
    let mut out = Vec::new();
    while !body.is_empty() {
        let mut is = ::protobuf::CodedInputStream::from_bytes(body);
        let len = is.read_raw_varint64().unwrap() as usize;
        let start = is.pos() as usize;
        out.push(
            prometheus::proto::MetricFamily::parse_from_bytes(&body[start..start + len]).unwrap(),
        );
        body = &body[start + len..];
    }
    out
}

/// The native part of a decoded histogram (fields the old `metrics.proto` of the decoder does
/// not name: read from its unknown fields), as `(schema, zero threshold, zero count, count of
/// each populated bucket by index)`.
fn native_part(h: &prometheus::proto::Histogram) -> (i64, f64, u64, BTreeMap<i64, i64>) {
    use ::protobuf::UnknownValueRef;
    let zigzag = |v: u64| (v >> 1) as i64 ^ -((v & 1) as i64);
    let (mut schema, mut zt, mut zc) = (None, None, None);
    let (mut spans, mut deltas) = (Vec::new(), Vec::new());
    for (field, v) in h.special_fields.unknown_fields().iter() {
        match (field, v) {
            (5, UnknownValueRef::Varint(v)) => schema = Some(zigzag(v)),
            (6, UnknownValueRef::Fixed64(v)) => zt = Some(f64::from_bits(v)),
            (7, UnknownValueRef::Varint(v)) => zc = Some(v),
            (12, UnknownValueRef::LengthDelimited(b)) => {
                let mut is = ::protobuf::CodedInputStream::from_bytes(b);
                let (mut off, mut len) = (0, 0);
                while let Some(tag) = is.read_raw_tag_or_eof().unwrap() {
                    match tag >> 3 {
                        1 => off = is.read_sint32().unwrap(),
                        2 => len = is.read_uint32().unwrap(),
                        f => panic!("span field {f}"),
                    }
                }
                spans.push((off, len));
            }
            (13, UnknownValueRef::Varint(v)) => deltas.push(zigzag(v)),
            (f, v) => panic!("unexpected histogram field {f}: {v:?}"),
        }
    }
    let mut buckets = BTreeMap::new();
    let (mut idx, mut count, mut d) = (0i64, 0i64, deltas.into_iter());
    for (i, (off, len)) in spans.into_iter().enumerate() {
        idx += i64::from(off) + if i == 0 { 0 } else { 1 };
        for j in 0..len {
            count += d.next().expect("a delta per bucket");
            if count != 0 {
                buckets.insert(idx, count);
            }
            if j + 1 < len {
                idx += 1;
            }
        }
    }
    assert!(d.next().is_none(), "more deltas than buckets");
    (schema.unwrap(), zt.unwrap(), zc.unwrap(), buckets)
}

/// Decoded protobuf families as the text samples: `name{sorted labels}` -> value, histograms as
/// `_bucket` (with `+Inf`), `_sum` and `_count`.
fn protobuf_samples(families: &[prometheus::proto::MetricFamily]) -> BTreeMap<String, f64> {
    use prometheus::proto::MetricType;
    let mut out = BTreeMap::new();
    let mut put = |name: String, labels: &[(String, String)], v: f64| {
        // As the text exposition escapes them, which `samples` keeps.
        let escaped = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let mut pairs: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={:?}", escaped(v)))
            .collect();
        pairs.sort();
        let key = format!("{name}{{{}}}", pairs.join(","));
        assert!(out.insert(key.clone(), v).is_none(), "duplicate {key}");
    };
    for f in families {
        assert!(!f.metric.is_empty(), "{} has no metric", f.name());
        for m in &f.metric {
            let labels: Vec<(String, String)> = m
                .label
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            match f.type_() {
                MetricType::COUNTER => put(f.name().into(), &labels, m.counter.value()),
                MetricType::GAUGE => put(f.name().into(), &labels, m.gauge.value()),
                MetricType::HISTOGRAM => {
                    let h = &m.histogram;
                    for b in &h.bucket {
                        let mut l = labels.clone();
                        l.push(("le".into(), b.upper_bound().to_string()));
                        put(
                            format!("{}_bucket", f.name()),
                            &l,
                            b.cumulative_count() as f64,
                        );
                    }
                    let mut l = labels.clone();
                    l.push(("le".into(), "+Inf".into()));
                    put(format!("{}_bucket", f.name()), &l, h.sample_count() as f64);
                    put(format!("{}_sum", f.name()), &labels, h.sample_sum());
                    put(
                        format!("{}_count", f.name()),
                        &labels,
                        h.sample_count() as f64,
                    );
                }
                t => panic!("{}: type {t:?}", f.name()),
            }
        }
    }
    out
}

/// The text exposition's families with samples, in order: `(name, help, type, samples)`.
fn text_families(t: &str) -> Vec<(String, String, String, BTreeMap<String, f64>)> {
    let mut out: Vec<(String, String, String, String)> = Vec::new();
    for line in t.lines() {
        if let Some(h) = line.strip_prefix("# HELP ") {
            let (name, help) = h.split_once(' ').unwrap();
            let help = help.replace("\\n", "\n").replace("\\\\", "\\");
            out.push((name.into(), help, String::new(), String::new()));
        } else if let Some(ty) = line.strip_prefix("# TYPE ") {
            let (name, ty) = ty.split_once(' ').unwrap();
            let last = out.last_mut().unwrap();
            assert_eq!(last.0, name);
            last.2 = ty.into();
        } else {
            let last = out.last_mut().unwrap();
            last.3.push_str(line);
            last.3.push('\n');
        }
    }
    out.into_iter()
        .filter(|f| !f.3.is_empty())
        .map(|(name, help, ty, lines)| (name, help, ty, samples(&lines)))
        .collect()
}

/// The native buckets each eBPF histogram of `inputs` must carry, by family and series:
/// `(family, virtual_address, real_address, real_port)` -> `(schema, zero threshold, zero
/// count, count of each populated bucket by index)`.
type NativeWant = BTreeMap<(String, String, String, String), (i64, f64, u64, BTreeMap<i64, i64>)>;

fn native_wanted(inputs: &Inputs) -> NativeWant {
    let mut want = BTreeMap::new();
    for s in &inputs.ebpf.series {
        let (ServiceAddress::Inet { address, .. }, Some((real, port))) =
            (s.key.service, s.key.destination)
        else {
            continue;
        };
        for (family, h) in [
            (
                "ipvs_ebpf_destination_connection_rate_per_second",
                &s.connection_rate,
            ),
            (
                "ipvs_ebpf_destination_connection_interarrival_seconds",
                &s.interarrival,
            ),
            (
                "ipvs_ebpf_destination_first_response_seconds",
                &s.first_response,
            ),
        ] {
            let n = h.native.as_ref().unwrap();
            let buckets = n
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != 0)
                .map(|(j, c)| (i64::from(n.offset) + j as i64, *c as i64))
                .collect();
            let key = (
                family.to_string(),
                address.to_string(),
                real.to_string(),
                port.to_string(),
            );
            let v = (i64::from(n.schema), n.zero_threshold, n.zero_count, buckets);
            want.insert(key, v);
        }
    }
    want
}

/// The protobuf body of `inputs` decodes (independent decoder: the `prometheus` crate's types)
/// into exactly the text exposition, family by family: the same families in the same order with
/// the same HELP text and type, and in each the same samples (every counter and gauge, every
/// classic bucket with `+Inf`, sums and counts); every histogram also carries the native
/// buckets of its series in `inputs`. Returns the number of families and of histograms.
fn assert_protobuf_decodes_to_the_text(inputs: Inputs, options: &ExportOptions) -> (usize, usize) {
    let inputs = Arc::new(inputs);
    let want_native = native_wanted(&inputs);
    let body = encode(&inputs, options, Format::Protobuf, false).unwrap();
    let families = decode_protobuf(&body);
    let t = String::from_utf8(
        encode(&inputs, options, Format::Text, false)
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let text = text_families(&t);
    let names = |v: Vec<&str>| v.join(" ");
    assert_eq!(
        names(families.iter().map(|f| f.name()).collect()),
        names(text.iter().map(|f| f.0.as_str()).collect()),
        "the same families in the same order"
    );
    let mut histograms = 0;
    for (f, (name, help, ty, want)) in families.iter().zip(&text) {
        assert_eq!(f.help(), help, "{name}: HELP");
        assert_eq!(
            &format!("{:?}", f.type_()).to_lowercase(),
            ty,
            "{name}: TYPE"
        );
        let got = protobuf_samples(std::slice::from_ref(f));
        if &got != want {
            let diff: Vec<String> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(*v))
                .map(|(k, v)| format!("  {k}: text {v}, protobuf {:?}", got.get(k)))
                .chain(
                    got.keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(|k| format!("  {k}: only in protobuf")),
                )
                .collect();
            panic!("{name}: the samples differ:\n{}", diff.join("\n"));
        }
        if f.type_() != prometheus::proto::MetricType::HISTOGRAM {
            continue;
        }
        for m in &f.metric {
            let label = |k: &str| {
                m.label
                    .iter()
                    .find(|l| l.name() == k)
                    .map_or(String::new(), |l| l.value().to_string())
            };
            let key = (
                name.clone(),
                label("virtual_address"),
                label("real_address"),
                label("real_port"),
            );
            let native = native_part(&m.histogram);
            assert_eq!(Some(&native), want_native.get(&key), "{key:?}: native part");
            assert_eq!(
                native.2 + native.3.values().sum::<i64>() as u64,
                m.histogram.sample_count(),
                "{key:?}: native buckets and count"
            );
            histograms += 1;
        }
    }
    (families.len(), histograms)
}

/// Every destination's three histograms with their own observations (classic buckets at the
/// daemon's layouts and native buckets), from `seed`.
fn distinct_histograms(series: &mut EbpfSeries, seed: u64) {
    use crate::ebpf::aggregate::{FIRST_RESPONSE_BUCKETS, INTERARRIVAL_BUCKETS, RATE_BUCKETS};
    let median = 0.001 * (1 + seed % 40) as f64;
    let n = 50 + seed as usize * 7 % 300;
    series.first_response = synthetic_histogram(FIRST_RESPONSE_BUCKETS, median, 0.6, n, seed).0;
    series.interarrival = synthetic_histogram(INTERARRIVAL_BUCKETS, 0.01, 1.2, n + 1, seed * 3).0;
    let mut rate = synthetic_histogram(RATE_BUCKETS, 50.0, 1.0, n + 2, seed * 7).0;
    // Idle windows: zeros in the first classic bucket and in the native zero bucket.
    let idle = seed % 5;
    rate.count += idle;
    for b in &mut rate.buckets {
        b.1 += idle;
    }
    rate.native.as_mut().unwrap().zero_count += idle;
    series.connection_rate = rate;
}

/// The protobuf body decodes (independent decoder) into the text exposition, family by family,
/// over the sample collection (two namespaces, one failing, IPv4/IPv6/fwmark services, names)
/// and over 12 services × 4 destinations whose counters and histograms all differ (so a value
/// written for the wrong series, bucket or family is caught).
#[test]
fn protobuf_decodes_to_the_text_samples() {
    let mut sample = sample_inputs();
    let mut ebpf = (*sample.ebpf).clone();
    for (i, s) in ebpf.series.iter_mut().enumerate() {
        distinct_histograms(s, i as u64 + 1);
    }
    sample.ebpf = Arc::new(ebpf);
    let (families, histograms) =
        assert_protobuf_decodes_to_the_text(sample, &ExportOptions::everything());
    assert!(families > 40, "{families}");
    assert_eq!(histograms, 3);

    let mut large = large_inputs(12, 4);
    let mut snap = (*large.snapshot).clone();
    let host = &mut snap.namespaces[0];
    let services = &mut host.ipvs.as_mut().unwrap().services;
    let mut ebpf = (*large.ebpf).clone();
    ebpf.series.clear();
    for (i, svc) in services.iter_mut().enumerate() {
        svc.stats = stats(1000 + i as u64 * 13);
        for (j, d) in svc.destinations.iter_mut().enumerate() {
            d.weight = (i * 4 + j) as i32;
            d.active_connections = (i * 4 + j) as u32 * 3 + 1;
            let mut series = sample_inputs().ebpf.series[0].clone();
            series.key = EbpfKey {
                netns_inode: host.netns.inode,
                family: svc.family,
                service: svc.address,
                destination: Some((d.address, d.port)),
            };
            series.new_connections = (i * 4 + j) as u64 * 11 + 5;
            series.unanswered = (i * 4 + j) as u64;
            distinct_histograms(&mut series, (i * 4 + j) as u64 + 3);
            ebpf.series.push(series);
        }
    }
    large.snapshot = Arc::new(snap);
    large.ebpf = Arc::new(ebpf);
    for options in [ExportOptions::everything(), ExportOptions::default()] {
        let (families, histograms) = assert_protobuf_decodes_to_the_text(large.clone(), &options);
        assert!(families > 30, "{families}");
        assert_eq!(histograms, 3 * 48);
    }
}

/// Gzip of protobuf goes through the same segments; a histogram without observations is still
/// marked native (a no-op span).
#[test]
fn an_empty_native_histogram_is_still_native() {
    let mut inputs = sample_inputs();
    let mut ebpf = (*inputs.ebpf).clone();
    ebpf.series[0].first_response = HistogramSnapshot {
        buckets: vec![(0.1, 0)],
        count: 0,
        sum: 0.0,
        native: Some(crate::ebpf::native::NativeBuckets::default().snapshot()),
    };
    inputs.ebpf = Arc::new(ebpf);
    let body = encode(
        &Arc::new(inputs),
        &ExportOptions::everything(),
        Format::Protobuf,
        false,
    )
    .unwrap();
    let families = decode_protobuf(&body);
    let f = families
        .iter()
        .find(|f| f.name() == "ipvs_ebpf_destination_first_response_seconds")
        .unwrap();
    let h = &f.metric[0].histogram;
    let spans: Vec<_> = h
        .special_fields
        .unknown_fields()
        .iter()
        .filter(|(f, _)| *f == 12)
        .collect();
    assert_eq!(spans.len(), 1);
    assert_eq!(native_part(h).3, BTreeMap::new());
}

/// A histogram of `n` observations spread log-normally around `median` (sigma `spread`), kept
/// as the daemon keeps it: classic buckets at `bounds` and native buckets. Deterministic.
fn synthetic_histogram(
    bounds: &[f64],
    median: f64,
    spread: f64,
    n: usize,
    seed: u64,
) -> (HistogramSnapshot, usize) {
    let mut x = seed | 1;
    let mut uniform = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut native = crate::ebpf::native::NativeBuckets::default();
    let mut counts = vec![0u64; bounds.len()];
    let mut sum = 0.0;
    for _ in 0..n {
        let g = (0..4).map(|_| uniform()).sum::<f64>() - 2.0;
        let v = median * (spread * g * 1.7).exp();
        if let Some(i) = bounds.iter().position(|&b| v <= b) {
            counts[i] += 1;
        }
        native.observe(v);
        sum += v;
    }
    let mut acc = 0;
    let buckets = bounds
        .iter()
        .zip(&counts)
        .map(|(&b, &c)| {
            acc += c;
            (b, acc)
        })
        .collect();
    let h = HistogramSnapshot {
        buckets,
        count: n as u64,
        sum,
        native: Some(native.snapshot()),
    };
    (h, native.heap_bytes())
}

/// Series per scrape and encoding time of the three formats at 1,000 busy destinations (200
/// services × 5, every destination with all three eBPF histograms filled), and the memory of the
/// histogram state per destination: the figures of BENCHMARKS.md (run with `--release
/// --ignored --nocapture`). Formats alternate (A B C A B C …), medians of 15 rounds.
#[test]
#[ignore]
fn native_histogram_encoding() {
    use crate::ebpf::aggregate::{FIRST_RESPONSE_BUCKETS, INTERARRIVAL_BUCKETS, RATE_BUCKETS};
    let mut inputs = large_inputs(200, 5);
    let mut ebpf = (*inputs.ebpf).clone();
    ebpf.series.clear();
    let mut heap = Vec::new();
    let snap = inputs.snapshot.clone();
    let ns = &snap.namespaces[0];
    for (i, svc) in ns.ipvs.as_ref().unwrap().services.iter().enumerate() {
        for (j, d) in svc.destinations.iter().enumerate() {
            let seed = (i * 5 + j) as u64 + 1;
            // First response around 2-40 ms, inter-arrival around 10 ms, rate windows 5-500/s.
            let median = 0.002 * (1 + (i + j) % 20) as f64;
            let (fr, a) = synthetic_histogram(FIRST_RESPONSE_BUCKETS, median, 0.5, 5000, seed);
            let (ia, b) = synthetic_histogram(INTERARRIVAL_BUCKETS, 0.01, 1.2, 5000, seed * 3);
            let (rate, c) = synthetic_histogram(RATE_BUCKETS, 50.0, 1.0, 5000, seed * 7);
            heap.push((a, b, c));
            ebpf.series.push(EbpfSeries {
                key: EbpfKey {
                    netns_inode: ns.netns.inode,
                    family: svc.family,
                    service: svc.address,
                    destination: Some((d.address, d.port)),
                },
                new_connections: 5000,
                connection_rate: rate,
                peak_connection_rate: 400.0,
                interarrival: ia,
                first_response: fr,
                unanswered: 1,
                synced: 0,
                waiting: 0,
            });
        }
    }
    inputs.ebpf = Arc::new(ebpf);
    let inputs = Arc::new(inputs);
    let plans = Arc::new(Plans::new(
        inputs.snapshot.clone(),
        Arc::new(ExportOptions::default()),
        None,
    ));
    let formats = [Format::Text, Format::OpenMetrics, Format::Protobuf];
    let mut bodies = Vec::new();
    for f in formats {
        let mut b = Vec::new();
        stream(&inputs, &plans, f, false, &mut |c| {
            b.extend_from_slice(&c);
            true
        })
        .unwrap();
        bodies.push(b);
    }
    let classic_series = String::from_utf8_lossy(&bodies[0])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let families = decode_protobuf(&bodies[2]);
    let native_series: usize = families.iter().map(|f| f.metric.len()).sum();
    let ebpf_classic = String::from_utf8_lossy(&bodies[0])
        .lines()
        .filter(|l| l.starts_with("ipvs_ebpf_destination_") && l.contains("real_address"))
        .count();
    let ebpf_native: usize = families
        .iter()
        .filter(|f| f.name().starts_with("ipvs_ebpf_destination_"))
        .map(|f| f.metric.len())
        .sum();
    let mut times: Vec<Vec<[std::time::Duration; 2]>> = vec![Vec::new(); formats.len()];
    let mut sizes = [[0usize; 2]; 3];
    for _ in 0..15 {
        for (k, f) in formats.iter().enumerate() {
            let mut pair = [std::time::Duration::ZERO; 2];
            for (g, gz) in [false, true].into_iter().enumerate() {
                let t = std::time::Instant::now();
                let mut n = 0;
                stream(&inputs, &plans, *f, gz, &mut |c| {
                    n += c.len();
                    true
                })
                .unwrap();
                pair[g] = t.elapsed();
                sizes[k][g] = n;
            }
            times[k].push(pair);
        }
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!("1,000 busy destinations (200 services × 5), default flags, 15 rounds A B C:");
    eprintln!(
        "series per scrape: classic (text) {classic_series}, of them eBPF per destination {:.1}; stored native (protobuf) {native_series}, eBPF per destination {:.1}",
        ebpf_classic as f64 / 1000.0,
        ebpf_native as f64 / 1000.0
    );
    eprintln!("| format | body | gzip | encode | encode + gzip |");
    eprintln!("|---|---|---|---|---|");
    for (k, f) in formats.iter().enumerate() {
        let mut plain: Vec<_> = times[k].iter().map(|p| p[0]).collect();
        let mut gz: Vec<_> = times[k].iter().map(|p| p[1]).collect();
        eprintln!(
            "| {f:?} | {:.2} MB | {:.3} MB | {:.2?} | {:.2?} |",
            sizes[k][0] as f64 / 1e6,
            sizes[k][1] as f64 / 1e6,
            median(&mut plain),
            median(&mut gz)
        );
    }
    // The pre-rendered service and destination families alone at 10,000 × 5 (no eBPF): the
    // protobuf labels are rendered at the first protobuf scrape of a table shape.
    let big = Arc::new(large_inputs(10_000, 5));
    let plans = Arc::new(Plans::new(
        big.snapshot.clone(),
        Arc::new(ExportOptions::default()),
        None,
    ));
    let run = |f: Format| {
        let t = std::time::Instant::now();
        let mut n = 0;
        stream(&big, &plans, f, false, &mut |c| {
            n += c.len();
            true
        })
        .unwrap();
        (t.elapsed(), n)
    };
    let (first, _) = run(Format::Protobuf);
    let (mut text, mut pb) = (Vec::new(), Vec::new());
    let mut bytes = (0, 0);
    for _ in 0..9 {
        let (t, n) = run(Format::Text);
        text.push(t);
        bytes.0 = n;
        let (t, n) = run(Format::Protobuf);
        pb.push(t);
        bytes.1 = n;
    }
    eprintln!(
        "10,000 × 5, no eBPF, 9 rounds A B: text {:.1} MB in {:.0?}, protobuf {:.1} MB in {:.0?} (first protobuf scrape of the shape, labels rendered: {first:.0?}); plan bytes {:.1} MB with both label forms",
        bytes.0 as f64 / 1e6,
        median(&mut text),
        bytes.1 as f64 / 1e6,
        median(&mut pb),
        plans.bytes() as f64 / 1e6
    );
    let n = heap.len() as f64;
    let avg = |f: fn(&(usize, usize, usize)) -> usize| heap.iter().map(f).sum::<usize>() as f64 / n;
    let max = heap.iter().map(|h| h.0 + h.1 + h.2).max().unwrap_or(0);
    eprintln!(
        "native buckets per destination (heap, besides 3 × 8 bytes of pointers in the table): first response {:.0} B, inter-arrival {:.0} B, rate {:.0} B; all three {:.0} B on average, {max} B at most; classic buckets {} B inline",
        avg(|h| h.0),
        avg(|h| h.1),
        avg(|h| h.2),
        avg(|h| h.0 + h.1 + h.2),
        (FIRST_RESPONSE_BUCKETS.len() + INTERARRIVAL_BUCKETS.len() + RATE_BUCKETS.len() + 3 + 3)
            * 8
    );
}
