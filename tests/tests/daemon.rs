//! The daemon in the lab, scraped by a real Prometheus on the host.
//!
//! Relies on: IPVS counters over netlink (the same ones `ipvsadm -Ln --stats --exact` prints,
//! refreshed by the kernel's estimator every 2 s), local clients being scheduled by IPVS
//! (LOCAL_OUT hook), and Prometheus 2.42 (Debian) negotiating OpenMetrics.

#[path = "common/prometheus.rs"]
mod prometheus;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ipvs_telemetry_e2e::{Vm, VmConfig, for_each_kernel, lab_or_skip, skip, start_daemon};
use prometheus::Prometheus;
use serde_json::Value;

const PORT: u16 = 10054;

/// A service or destination as `ipvsadm -Ln --stats --exact` names it, with its `Conns`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    /// `tcp`/`udp`/`sctp`, or empty for fwmark.
    protocol: String,
    /// VIP, `None` for fwmark.
    vip: Option<IpAddr>,
    /// Virtual port or fwmark.
    port_or_mark: u32,
    /// Real server, `None` for the service line.
    real: Option<(IpAddr, u16)>,
}

fn addr_port(s: &str) -> Result<(IpAddr, u16)> {
    let (a, p) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("no port in {s:?}"))?;
    let a = a.trim_start_matches('[').trim_end_matches(']');
    Ok((a.parse()?, p.parse()?))
}

/// `ipvsadm -Ln --stats --exact` -> conns by series.
fn ipvsadm_conns(text: &str) -> Result<BTreeMap<Series, u64>> {
    let mut out = BTreeMap::new();
    let mut current: Option<Series> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first().copied() {
            Some("TCP" | "UDP" | "SCTP") if f.len() >= 3 => {
                let (vip, port) = addr_port(f[1])?;
                let s = Series {
                    protocol: f[0].to_ascii_lowercase(),
                    vip: Some(vip),
                    port_or_mark: port.into(),
                    real: None,
                };
                out.insert(s.clone(), f[2].parse()?);
                current = Some(s);
            }
            Some("FWM") if f.len() >= 3 => {
                let s = Series {
                    protocol: String::new(),
                    vip: None,
                    port_or_mark: f[1].parse()?,
                    real: None,
                };
                out.insert(s.clone(), f[2].parse()?);
                current = Some(s);
            }
            Some("->") if f.len() >= 3 && f[1] != "RemoteAddress:Port" => {
                let svc = current
                    .clone()
                    .ok_or_else(|| anyhow!("destination first"))?;
                let s = Series {
                    real: Some(addr_port(f[1])?),
                    ..svc
                };
                out.insert(s, f[2].parse()?);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A Prometheus instant-query result -> value by series.
fn prometheus_values(v: &Value) -> Result<BTreeMap<Series, u64>> {
    if v["status"] != "success" {
        bail!("query failed: {v}");
    }
    let mut out = BTreeMap::new();
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        let m = &r["metric"];
        let l = |k: &str| m[k].as_str().unwrap_or("").to_string();
        let fwmark = l("fwmark");
        let s = Series {
            protocol: if fwmark.is_empty() {
                l("protocol")
            } else {
                String::new()
            },
            vip: if fwmark.is_empty() {
                Some(l("virtual_address").parse()?)
            } else {
                None
            },
            port_or_mark: if fwmark.is_empty() {
                l("virtual_port").parse()?
            } else {
                fwmark.parse()?
            },
            real: if m.get("real_address").is_some() {
                Some((l("real_address").parse()?, l("real_port").parse()?))
            } else {
                None
            },
        };
        let value: f64 = r["value"][1]
            .as_str()
            .ok_or_else(|| anyhow!("no value in {r}"))?
            .parse()?;
        out.insert(s, value as u64);
    }
    Ok(out)
}

/// The instant value of `metric` in Prometheus, by series.
fn query(prom: &Prometheus, metric: &str) -> Result<BTreeMap<Series, u64>> {
    let (status, json) = prom.query(metric)?;
    anyhow::ensure!(status == 200, "query {metric}: HTTP {status} {json}");
    prometheus_values(&json)
}

/// The JSON text of an instant query.
fn query_raw(prom: &Prometheus, expr: &str) -> Result<String> {
    Ok(prom.query(expr)?.1.to_string())
}

/// Polls `ok` until it is true or `timeout` passes.
fn wait_until(timeout: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match ok() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("condition not met within {timeout:?} (last error: {last})");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Services of every kind: IPv4 TCP with two real servers, IPv6 UDP, fwmark; real servers on a
/// dummy interface (packets to them are dropped: connections are still scheduled and counted).
const SETUP: &str = "
set -e
ip link add rs0 type dummy
ip link set rs0 up
ip addr add 192.168.100.1/24 dev rs0
ip -6 addr add 2001:db8:100::1/64 dev rs0 nodad
ip addr add 10.0.0.1/32 dev lo
ip -6 addr add 2001:db8::1/128 dev lo nodad
ipvsadm -A -t 10.0.0.1:80 -s rr
ipvsadm -a -t 10.0.0.1:80 -r 192.168.100.2:8080 -m
ipvsadm -a -t 10.0.0.1:80 -r 192.168.100.3:8080 -m -w 3
ipvsadm -A -u [2001:db8::1]:53 -s wrr
ipvsadm -a -u [2001:db8::1]:53 -r [2001:db8:100::2]:53 -m
ipvsadm -A -f 7 -s rr
ipvsadm -a -f 7 -r 192.168.100.4:0 -g
ip addr add 10.0.0.2/32 dev lo
ipvsadm -A -t 10.0.0.2:443 -s wlc -p 120
ipvsadm -a -t 10.0.0.2:443 -r 192.168.100.5:443 -m -x 50 -y 5
ipvsadm -a -t 10.0.0.2:443 -r 192.168.100.6:443 -i -w 0
ipvsadm -A -u 10.0.0.2:53 -s rr -o
ipvsadm -a -u 10.0.0.2:53 -r 192.168.100.7:53 -m -x 1 -y 1
";

/// Waits until `ipvsadm` shows the same values twice, 2.5 s apart (an estimator tick).
fn settled_ipvsadm(vm: &Vm) -> Result<BTreeMap<Series, u64>> {
    let mut prev = ipvsadm_conns(&vm.sh_ok("ipvsadm -Ln --stats --exact")?)?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(2500));
        let now = ipvsadm_conns(&vm.sh_ok("ipvsadm -Ln --stats --exact")?)?;
        if now == prev {
            return Ok(now);
        }
        prev = now;
    }
    bail!("ipvsadm values never settled")
}

#[test]
fn prometheus_scrapes_the_daemon_and_agrees_with_ipvsadm() -> Result<()> {
    let test = "prometheus_scrapes_the_daemon_and_agrees_with_ipvsadm";
    if !lab_or_skip(test) || !skip::require(test, &[skip::tool("prometheus", "prometheus")]) {
        return Ok(());
    }
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).forward(PORT).with_daemon())?;
        vm.sh_ok(SETUP)?;
        start_daemon(&vm, PORT, "--collection.max-age 500ms --metrics.estimator")?;
        // Traffic: 25 TCP connections and 7 UDP flows, unanswered; 5 connections to the
        // persistent service (one template, to its only destination of weight > 0); 3 UDP
        // datagrams to the one-packet service (its destination has an upper threshold of 1).
        vm.sh_ok(
            "lab-client tcp 10.0.0.1:80 -n 25 -c 5 --connect-only --timeout 200ms --allow-errors \
             && lab-client tcp 10.0.0.2:443 -n 5 --connect-only --timeout 200ms --allow-errors \
             && lab-client udp 10.0.0.2:53 -n 3 --no-reply --allow-errors",
        )?;
        vm.sh_ok("lab-client udp [2001:db8::1]:53 -n 7 --no-reply --allow-errors")?;
        // Every gauge and counter of every service and destination, against ipvsadm, at once,
        // while the estimator's rates are still above 0 (they decay to 0 within about 20 s).
        field_by_field(&vm)?;
        let want = settled_ipvsadm(&vm)?;
        assert!(
            want.values().any(|&c| c > 0),
            "no traffic counted: {want:?}"
        );

        let target = format!("127.0.0.1:{}", vm.host_port(PORT));
        let prom = Prometheus::start(&prometheus::config(&[], &[target], "1s"))?;
        let services = |m: &BTreeMap<Series, u64>| -> BTreeMap<Series, u64> {
            m.iter()
                .filter(|(s, _)| s.real.is_none())
                .map(|(s, v)| (s.clone(), *v))
                .collect()
        };
        let dests = |m: &BTreeMap<Series, u64>| -> BTreeMap<Series, u64> {
            m.iter()
                .filter(|(s, _)| s.real.is_some())
                .map(|(s, v)| (s.clone(), *v))
                .collect()
        };
        wait_until(Duration::from_secs(90), || {
            Ok(
                query(&prom, "ipvs_service_connections_total")? == services(&want)
                    && query(&prom, "ipvs_destination_connections_total")? == dests(&want),
            )
        })
        .with_context(|| {
            format!(
                "prometheus never showed ipvsadm's values {want:?}; it has {:?} / {:?}",
                query(&prom, "ipvs_service_connections_total"),
                query(&prom, "ipvs_destination_connections_total")
            )
        })?;
        assert_eq!(want.len(), 12, "{want:?}");

        // The target is up, without scrape errors, and OpenMetrics was negotiated.
        let targets = prom.api("/api/v1/targets?state=active")?;
        let t = &targets["data"]["activeTargets"][0];
        assert_eq!(t["health"], "up", "{t}");
        assert_eq!(t["lastError"], "", "{t}");
        // Prometheus 2.42's Accept header gets OpenMetrics: its Content-Type and `# EOF`.
        let out = Command::new("curl")
            .args(["-sS", "-D", "-", "--max-time", "60", "-H"])
            .arg(
                "Accept: application/openmetrics-text;version=1.0.0,\
                 application/openmetrics-text;version=0.0.1;q=0.75,\
                 text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            )
            .arg(format!("http://127.0.0.1:{}/metrics", vm.host_port(PORT)))
            .output()?;
        let reply = String::from_utf8_lossy(&out.stdout);
        let content_type = reply
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
            .unwrap_or_default();
        assert!(
            content_type.contains("application/openmetrics-text; version=1.0.0"),
            "{content_type:?}"
        );
        assert!(reply.ends_with("# EOF\n"), "no # EOF at the end");
        let up = query_raw(&prom, "ipvs_up")?;
        assert!(
            up.contains(r#""netns":"host""#) && up.contains(r#""1"]"#),
            "{up}"
        );

        // Delete a service: its series are gone at the next collection; re-created, it
        // starts from the kernel's values.
        vm.sh_ok("ipvsadm -D -t 10.0.0.1:80")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = vm.http_get(PORT, "/metrics")?;
            if !body.contains("virtual_address=\"10.0.0.1\"") {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "deleted service still served");
            std::thread::sleep(Duration::from_millis(200));
        }
        vm.sh_ok(
            "ipvsadm -A -t 10.0.0.1:80 -s rr && ipvsadm -a -t 10.0.0.1:80 -r 192.168.100.2:8080 -m",
        )?;
        let again = settled_ipvsadm(&vm)?;
        let fresh = Series {
            protocol: "tcp".into(),
            vip: Some("10.0.0.1".parse()?),
            port_or_mark: 80,
            real: None,
        };
        assert_eq!(again.get(&fresh), Some(&0), "{again:?}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = vm.http_get(PORT, "/metrics")?;
            let line = body.lines().find(|l| {
                l.starts_with("ipvs_service_connections_total{")
                    && l.contains("virtual_address=\"10.0.0.1\"")
            });
            if let Some(l) = line {
                assert!(l.ends_with(" 0"), "{l}");
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "re-created service not served");
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = vm.shutdown();
        Ok(())
    })
}

#[test]
fn hundred_concurrent_scrapes_at_ten_thousand_services() -> Result<()> {
    if !lab_or_skip("hundred_concurrent_scrapes_at_ten_thousand_services") {
        return Ok(());
    }
    // One kernel is enough: this exercises the daemon, not the kernel.
    let k = ipvs_telemetry_e2e::kernels()[0];
    let vm = Vm::boot(VmConfig::new(k).forward(PORT).with_daemon())?;
    // 10,000 services x 5 destinations through one `ipvsadm -R`.
    vm.sh_ok_timeout(
        "busybox awk 'BEGIN { for (i = 0; i < 10000; i++) { \
           v = sprintf(\"10.1.%d.%d:80\", int(i / 250), i % 250 + 1); \
           print \"-A -t \" v \" -s rr\"; \
           for (d = 1; d <= 5; d++) printf \"-a -t %s -r 192.168.100.%d:8080 -m\\n\", v, d } }' \
         > /tmp/rules && ipvsadm -R < /tmp/rules && ipvsadm -Ln | grep -c '^TCP'",
        Duration::from_secs(600),
    )
    .and_then(|n| {
        anyhow::ensure!(n.trim() == "10000", "{n}");
        Ok(())
    })?;
    // A 30 s poll gives a collection of 50,000 destinations under TCG (two VMs sharing two
    // host cores) a 30 s deadline.
    start_daemon(&vm, PORT, "--collection.max-age 30s")?;
    let port = vm.host_port(PORT);
    // The first collection of 50,000 destinations is slow under TCG: wait until it is served.
    let scrape_text = || -> Result<String> {
        let out = Command::new("curl")
            .args(["-sS", "--compressed", "--max-time", "300"])
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = scrape_text().unwrap_or_default();
        if text.contains("ipvs_up{netns=\"host\"} 1") {
            break;
        }
        let status: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ipvs_up") || l.starts_with("ipvs_collection_"))
            .collect();
        anyhow::ensure!(
            Instant::now() < deadline,
            "IPVS never read by the daemon: {status:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let handles: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || -> Result<usize> {
                let out = Command::new("curl")
                    .args([
                        "-sS",
                        "--compressed",
                        "--max-time",
                        "300",
                        "-o",
                        "/dev/null",
                    ])
                    .args(["-w", "%{http_code} %{size_download}"])
                    .args(["-H", "Accept: application/openmetrics-text; version=1.0.0"])
                    .arg(format!("http://127.0.0.1:{port}/metrics"))
                    .output()?;
                let s = String::from_utf8_lossy(&out.stdout).to_string();
                let (code, size) = s.split_once(' ').ok_or_else(|| anyhow!("curl: {s}"))?;
                anyhow::ensure!(code == "200", "status {code}");
                Ok(size.parse()?)
            })
        })
        .collect();
    for h in handles {
        let size = h.join().map_err(|_| anyhow!("thread panicked"))??;
        anyhow::ensure!(
            size > 1_000_000,
            "a {size}-byte scrape; now: {:?}",
            scrape_text()?
                .lines()
                .filter(|l| l.starts_with("ipvs_up") || l.starts_with("ipvs_collection_"))
                .collect::<Vec<_>>()
        );
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl -sS --compressed --max-time 300 http://127.0.0.1:{port}/metrics \
             | grep -c '^ipvs_destination_connections_total{{'"
        ))
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "50000");
    Ok(())
}

#[test]
fn parses_ipvsadm_output() {
    let text = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                        25       25        0     1500        0
  -> 192.168.100.2:8080                 13       13        0      780        0
UDP  [2001:db8::1]:53                    7        7        0      350        0
  -> [2001:db8:100::2]:53                7        7        0      350        0
FWM  7                                   0        0        0        0        0
  -> 192.168.100.4:0                     0        0        0        0        0
";
    let m = ipvsadm_conns(text).unwrap();
    assert_eq!(m.len(), 6);
    assert_eq!(
        m[&Series {
            protocol: "udp".into(),
            vip: Some("2001:db8::1".parse().unwrap()),
            port_or_mark: 53,
            real: Some(("2001:db8:100::2".parse().unwrap(), 53)),
        }],
        7
    );
}

/// The words after the address of each service and destination line of one `ipvsadm -Ln`
/// listing (`--stats`, `--rate`, `--thresholds`, `--persistent-conn` or plain), in order.
fn ipvsadm_fields(text: &str) -> Result<Vec<(Series, Vec<String>)>> {
    let mut out = Vec::new();
    let mut current: Option<Series> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let rest = |from: usize| f[from..].iter().map(|w| w.to_string()).collect::<Vec<_>>();
        match f.first().copied() {
            Some("TCP" | "UDP" | "SCTP") if f.len() >= 2 => {
                let (vip, port) = addr_port(f[1])?;
                let s = Series {
                    protocol: f[0].to_ascii_lowercase(),
                    vip: Some(vip),
                    port_or_mark: port.into(),
                    real: None,
                };
                out.push((s.clone(), rest(2)));
                current = Some(s);
            }
            Some("FWM") if f.len() >= 2 => {
                let s = Series {
                    protocol: String::new(),
                    vip: None,
                    port_or_mark: f[1].parse()?,
                    real: None,
                };
                out.push((s.clone(), rest(2)));
                current = Some(s);
            }
            Some("->") if f.len() >= 2 && f[1] != "RemoteAddress:Port" => {
                let svc = current
                    .clone()
                    .ok_or_else(|| anyhow!("destination first"))?;
                out.push((
                    Series {
                        real: Some(addr_port(f[1])?),
                        ..svc
                    },
                    rest(2),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What the daemon should serve for each series, by family: a value, or (for the info
/// families) the labels that must be on its `=1` series.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    values: BTreeMap<Series, BTreeMap<String, f64>>,
    info: BTreeMap<Series, BTreeMap<String, String>>,
}

const STATS: [&str; 5] = [
    "connections_total",
    "incoming_packets_total",
    "outgoing_packets_total",
    "incoming_bytes_total",
    "outgoing_bytes_total",
];
const RATES: [&str; 5] = [
    "estimated_connections_per_second",
    "estimated_incoming_packets_per_second",
    "estimated_outgoing_packets_per_second",
    "estimated_incoming_bytes_per_second",
    "estimated_outgoing_bytes_per_second",
];

/// The five listings, read in one shell command, -> what the daemon should serve.
fn expected_from_ipvsadm(listings: &str) -> Result<Expected> {
    let parts: Vec<&str> = listings.split("=====\n").collect();
    anyhow::ensure!(parts.len() == 5, "five listings expected: {listings}");
    let [stats, rate, thresholds, persistent, plain] = [0, 1, 2, 3, 4].map(|i| parts[i]);
    let num = |w: &str| -> Result<f64> { Ok(w.parse::<u64>()? as f64) };
    let mut e = Expected::default();
    let kind = |s: &Series| {
        if s.real.is_some() {
            "destination"
        } else {
            "service"
        }
    };
    for (s, f) in ipvsadm_fields(stats)? {
        let v = e.values.entry(s.clone()).or_default();
        for (name, w) in STATS.iter().zip(&f) {
            v.insert(format!("ipvs_{}_{name}", kind(&s)), num(w)?);
        }
    }
    for (s, f) in ipvsadm_fields(rate)? {
        let v = e.values.entry(s.clone()).or_default();
        for (name, w) in RATES.iter().zip(&f) {
            v.insert(format!("ipvs_{}_{name}", kind(&s)), num(w)?);
        }
    }
    // Uthreshold Lthreshold ActiveConn InActConn.
    for (s, f) in ipvsadm_fields(thresholds)?
        .into_iter()
        .filter(|(s, _)| s.real.is_some())
    {
        let v = e.values.entry(s).or_default();
        for (name, w) in [
            "ipvs_destination_upper_threshold",
            "ipvs_destination_lower_threshold",
            "ipvs_destination_active_connections",
            "ipvs_destination_inactive_connections",
        ]
        .iter()
        .zip(&f)
        {
            v.insert(name.to_string(), num(w)?);
        }
    }
    // Weight PersistConn ActiveConn InActConn (active/inactive: the same as above, or the
    // listings disagree and the sample is retried).
    for (s, f) in ipvsadm_fields(persistent)?
        .into_iter()
        .filter(|(s, _)| s.real.is_some())
    {
        let v = e.values.entry(s.clone()).or_default();
        anyhow::ensure!(f.len() == 4, "--persistent-conn: {s:?} {f:?}");
        v.insert("ipvs_destination_weight".into(), num(&f[0])?);
        v.insert(
            "ipvs_destination_persistent_connections".into(),
            num(&f[1])?,
        );
        for (name, w) in [
            ("ipvs_destination_active_connections", &f[2]),
            ("ipvs_destination_inactive_connections", &f[3]),
        ] {
            anyhow::ensure!(v.get(name) == Some(&num(w)?), "listings disagree on {s:?}");
        }
    }
    // Plain: `Scheduler Flags` per service, `Forward Weight ActiveConn InActConn` per
    // destination; the service's destination counts follow from its destinations.
    let plain = ipvsadm_fields(plain)?;
    for (s, f) in &plain {
        if s.real.is_some() {
            let method = match f[0].as_str() {
                "Masq" => "masq",
                "Route" => "route",
                "Tunnel" => "tunnel",
                "Local" => "local",
                other => bail!("forwarding method {other:?}"),
            };
            e.info.insert(
                s.clone(),
                BTreeMap::from([("forwarding_method".to_string(), method.to_string())]),
            );
            anyhow::ensure!(
                e.values[s]["ipvs_destination_weight"] == num(&f[1])?,
                "weights disagree on {s:?}"
            );
            continue;
        }
        let persistence = f
            .iter()
            .position(|w| w == "persistent")
            .map(|i| num(&f[i + 1]))
            .transpose()?
            .unwrap_or(0.0);
        let mut flags = Vec::new();
        if persistence > 0.0 {
            flags.push("persistent");
        }
        if f.iter().any(|w| w == "ops") {
            flags.push("onepacket");
        }
        e.info.insert(
            s.clone(),
            BTreeMap::from([
                ("scheduler".to_string(), f[0].clone()),
                ("flags".to_string(), flags.join(",")),
            ]),
        );
        let dests: Vec<&BTreeMap<String, f64>> = plain
            .iter()
            .filter(|(d, _)| {
                d.real.is_some()
                    && Series {
                        real: None,
                        ..d.clone()
                    } == *s
            })
            .map(|(d, _)| &e.values[d])
            .collect();
        // Available: weight > 0 and, with an upper threshold, active + inactive below it.
        let available = dests
            .iter()
            .filter(|d| {
                let upper = d["ipvs_destination_upper_threshold"];
                d["ipvs_destination_weight"] > 0.0
                    && (upper == 0.0
                        || d["ipvs_destination_active_connections"]
                            + d["ipvs_destination_inactive_connections"]
                            < upper)
            })
            .count();
        let total = dests.len();
        let v = e.values.get_mut(s).ok_or_else(|| anyhow!("{s:?}"))?;
        v.insert("ipvs_service_destinations".into(), total as f64);
        v.insert(
            "ipvs_service_available_destinations".into(),
            available as f64,
        );
        v.insert(
            "ipvs_service_persistence_timeout_seconds".into(),
            persistence,
        );
    }
    Ok(e)
}

/// The daemon's exposition (namespace `host`) in the shape of [`Expected`]: every
/// `ipvs_service_*` and `ipvs_destination_*` sample, and the info series' labels.
fn served(text: &str) -> Result<Expected> {
    let mut e = Expected::default();
    for s in ipvs_telemetry_e2e::exposition::parse(text) {
        let kind = if s.name.starts_with("ipvs_service_") {
            "service"
        } else if s.name.starts_with("ipvs_destination_") {
            "destination"
        } else {
            continue;
        };
        anyhow::ensure!(s.label("netns") == "host", "{s:?}");
        let fwmark = s.label("fwmark");
        let series = Series {
            protocol: if fwmark.is_empty() {
                s.label("protocol").to_string()
            } else {
                String::new()
            },
            vip: if fwmark.is_empty() {
                Some(s.label("virtual_address").parse()?)
            } else {
                None
            },
            port_or_mark: if fwmark.is_empty() {
                s.label("virtual_port").parse()?
            } else {
                fwmark.parse()?
            },
            real: if kind == "destination" {
                Some((
                    s.label("real_address").parse()?,
                    s.label("real_port").parse()?,
                ))
            } else {
                None
            },
        };
        if s.name.ends_with("_info") {
            anyhow::ensure!(s.value == 1.0, "{s:?}");
            let keys: &[&str] = if kind == "service" {
                &["scheduler", "flags"]
            } else {
                &["forwarding_method"]
            };
            let labels = keys
                .iter()
                .map(|k| (k.to_string(), s.label(k).to_string()))
                .collect();
            anyhow::ensure!(
                e.info.insert(series.clone(), labels).is_none(),
                "two info series for {series:?}"
            );
        } else {
            anyhow::ensure!(
                e.values
                    .entry(series.clone())
                    .or_default()
                    .insert(s.name.clone(), s.value)
                    .is_none(),
                "{} twice for {series:?}",
                s.name
            );
        }
    }
    Ok(e)
}

/// Compares every service and destination gauge and counter the daemon serves (with
/// `--metrics.estimator`) with `ipvsadm`, field by field.
///
/// The listings are read twice, before and after a scrape; a sample counts when both reads
/// agree (no connection expired and no estimator tick, every 2 s, fell in between) and then the
/// scrape must equal them exactly. The daemon's collection may predate the first read by up to
/// `--collection.max-age` (500 ms): a sample that disagrees is retried until a deadline, so
/// a value that is wrong every time (a swapped mapping) fails and a merely stale one does not.
/// At least one estimated rate must be above 0 in the sample compared, else the rates would be
/// compared as zeros only.
fn field_by_field(vm: &Vm) -> Result<()> {
    const LISTINGS: &str = "ipvsadm -Ln --stats --exact; echo =====; \
        ipvsadm -Ln --rate --exact; echo =====; ipvsadm -Ln --thresholds; echo =====; \
        ipvsadm -Ln --persistent-conn; echo =====; ipvsadm -Ln";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the daemon never agreed with ipvsadm; last difference:\n{last}"
        );
        let before = expected_from_ipvsadm(&vm.sh_ok(LISTINGS)?);
        let text = vm.http_get(PORT, "/metrics")?;
        let after = expected_from_ipvsadm(&vm.sh_ok(LISTINGS)?);
        let (want, after) = match (before, after) {
            (Ok(b), Ok(a)) => (b, a),
            (b, a) => {
                last = format!("{:?} / {:?}", b.err(), a.err());
                continue;
            }
        };
        if want != after {
            last = "ipvsadm changed during the scrape".into();
            continue;
        }
        let got = served(&text)?;
        if got == want {
            let rates_above_zero = want
                .values
                .values()
                .any(|v| v.iter().any(|(k, &x)| k.contains("_estimated_") && x > 0.0));
            anyhow::ensure!(rates_above_zero, "every estimated rate is 0: {want:?}");
            // Every destination kind of the setup was compared.
            anyhow::ensure!(want.values.len() == 12, "{want:?}");
            return Ok(());
        }
        last = diff(&want, &got);
    }
}

/// The differences between what ipvsadm says and what the daemon serves, one per line.
fn diff(want: &Expected, got: &Expected) -> String {
    let mut out = String::new();
    let series: std::collections::BTreeSet<&Series> =
        want.values.keys().chain(got.values.keys()).collect();
    for s in series {
        let (w, g) = (want.values.get(s), got.values.get(s));
        let names: std::collections::BTreeSet<&String> = w
            .into_iter()
            .flat_map(|m| m.keys())
            .chain(g.into_iter().flat_map(|m| m.keys()))
            .collect();
        for n in names {
            let (a, b) = (w.and_then(|m| m.get(n)), g.and_then(|m| m.get(n)));
            if a != b {
                out += &format!("{s:?} {n}: ipvsadm {a:?}, daemon {b:?}\n");
            }
        }
        if want.info.get(s) != got.info.get(s) {
            out += &format!(
                "{s:?} info: ipvsadm {:?}, daemon {:?}\n",
                want.info.get(s),
                got.info.get(s)
            );
        }
    }
    out
}
