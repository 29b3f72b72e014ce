//! netlink: `ipvs-telemetry snapshot` against `ipvsadm`, the independent source of truth, on
//! every lab kernel; and the module lifecycle (rmmod / modprobe) under a running snapshot loop.
//!
//! Relies on: IPVS counters and rates only changing when the kernel's estimator runs (every
//! 2 s), so both tools agree between two identical `ipvsadm` readings.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipvs_telemetry_e2e::{Vm, VmConfig, for_each_kernel, lab_or_skip};
use serde_json::Value;

/// Real servers in namespace `rs` behind veth `veth0` (10.1.0.1 / fd00:1::1 on the director);
/// VIPs on `vip0`; every service kind of the issue.
const SETUP: &str = r#"
set -e
ip netns add rs
ip link add veth0 type veth peer name veth1
ip link set veth1 netns rs
ip addr add 10.1.0.1/24 dev veth0
ip -6 addr add fd00:1::1/64 dev veth0 nodad
ip link set veth0 up
ip netns exec rs ip link set lo up
for a in 10.1.0.2 10.1.0.3 10.1.0.4 10.1.0.5; do ip netns exec rs ip addr add $a/24 dev veth1; done
ip netns exec rs ip -6 addr add fd00:1::2/64 dev veth1 nodad
ip netns exec rs ip -6 addr add fd00:1::3/64 dev veth1 nodad
ip netns exec rs ip link set veth1 up
ip netns exec rs ip route add default via 10.1.0.1
ip netns exec rs ip -6 route add default via fd00:1::1
ip link add vip0 type dummy
ip link set vip0 up
for a in 10.0.0.1 10.0.0.2 10.0.0.3; do ip addr add $a/32 dev vip0; done
ip -6 addr add fd00::1/128 dev vip0 nodad

ipvsadm -A -t 10.0.0.1:80 -s wrr
ipvsadm -a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 3 -x 1000 -y 100
ipvsadm -a -t 10.0.0.1:80 -r 10.1.0.3:8080 -m -w 0
ipvsadm -A -u 10.0.0.1:53 -s rr
ipvsadm -a -u 10.0.0.1:53 -r 10.1.0.2:5353 -m
ipvsadm -a -u 10.0.0.1:53 -r 10.1.0.3:5353 -m -w 0
ipvsadm -A --sctp-service 10.0.0.1:5000 -s lc
ipvsadm -a --sctp-service 10.0.0.1:5000 -r 10.1.0.2:5000 -g -x 50
ipvsadm -A -t [fd00::1]:80 -s sh -b sh-fallback,sh-port
ipvsadm -a -t [fd00::1]:80 -r [fd00:1::2]:8080 -m -w 5
ipvsadm -a -t [fd00::1]:80 -r [fd00:1::3]:8080 -m -w 1 -x 20 -y 7
ipvsadm -A -u [fd00::1]:53 -s rr
ipvsadm -a -u [fd00::1]:53 -r [fd00:1::2]:5354 -m
ipvsadm -A --sctp-service [fd00::1]:5000 -s wrr
ipvsadm -a --sctp-service [fd00::1]:5000 -r [fd00:1::2]:5000 -g
ipvsadm -A -f 260 -s rr -p 300 -M 255.255.255.0
ipvsadm -a -f 260 -r 10.1.0.4 -i
ipvsadm -a -f 260 -r 10.1.0.5 -g -w 4
ipvsadm -A -f 7 -6 -s lc -p 120 -M 64
ipvsadm -a -f 7 -6 -r [fd00:1::3]:0 -g
ipvsadm -A -t 10.0.0.3:443 -s lc -p 600 -M 255.255.0.0
ipvsadm -a -t 10.0.0.3:443 -r 10.1.0.2:443 -i -w 2
ipvsadm -A -t 10.0.0.2:80 -s rr
ipvsadm -a -t 10.0.0.2:80 -r 10.1.0.4:80 -i
"#;

/// Generated services, so the comparison with ipvsadm covers a collection at scale (hundreds of
/// destination dumps, multi-datagram service dumps): TCP and UDP over IPv4, TCP over IPv6, IPv4
/// fwmark services; rr, wrr, lc; 0 to 4 destinations each, masq and route, weights 0 to 6,
/// thresholds on the first destination.
const MANY_SERVICES: usize = 320;
const SETUP_MANY: &str = r#"
set -e
busybox awk -v n=320 'BEGIN {
  for (i = 0; i < n; i++) {
    k = i % 4
    if (k == 0) s = sprintf("-t 10.2.%d.%d:%d", int(i / 200), i % 200 + 1, 1000 + i)
    else if (k == 1) s = sprintf("-u 10.2.%d.%d:%d", int(i / 200), i % 200 + 1, 2000 + i)
    else if (k == 2) s = sprintf("-t [fd00:2::%x]:%d", i + 1, 3000 + i)
    else s = sprintf("-f %d", 1000 + i)
    sched = "lc"
    if (i % 3 == 0) sched = "rr"
    if (i % 3 == 1) sched = "wrr"
    print "-A " s " -s " sched
    for (d = 1; d <= i % 5; d++) {
      if (k == 2) r = sprintf("[fd00:3::%x:%x]:80", i + 1, d)
      else if (k == 3) r = sprintf("10.3.%d.%d", i % 200 + 1, d)
      else r = sprintf("10.3.%d.%d:%d", i % 200 + 1, d, 8000 + d)
      fwd = "-g"
      if (d % 2 == 1 && k != 3) fwd = "-m"
      x = 0
      y = 0
      if (d == 1) { x = 100 + i; y = 10 }
      print "-a " s " -r " r " " fwd " -w " ((i * d) % 7) " -x " x " -y " y
    }
  }
}' > /tmp/many
test $(wc -l < /tmp/many) -gt 320
ipvsadm -R < /tmp/many
"#;

/// Tunnel destinations with GUE, where the kernel and ipvsadm have it.
const SETUP_GUE: &str =
    "ipvsadm -a -t 10.0.0.2:80 -r 10.1.0.5:80 -i --tun-type gue --tun-port 6080 -w 2";

/// Traffic on several services (TCP and UDP, IPv4 and IPv6), answered by real servers. (UDP
/// services get one real server with weight, and the IPv6 one a backend bound to its address:
/// a wildcard UDP socket answers from the primary address, which IPVS would not match.)
const TRAFFIC: &str = r#"
set -e
lab-client tcp 10.0.0.1:80 -n 40 -c 4
lab-client udp 10.0.0.1:53 -n 12
lab-client tcp [fd00::1]:80 -n 15
lab-client udp [fd00::1]:53 -n 6
"#;

/// The service and destination flags ipvsadm shows (`IP_VS_SVC_F_*` without `HASHED`).
const SVC_FLAGS_SHOWN: u64 = 0x1 | 0x4 | 0x8 | 0x10 | 0x20;

/// Checks every field of `snapshot --format json` against ipvsadm, on both kernels.
#[test]
fn snapshot_matches_ipvsadm() -> Result<()> {
    if !lab_or_skip("snapshot_matches_ipvsadm") {
        return Ok(());
    }
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon())?;
        vm.sh_ok(SETUP)?;
        vm.sh_ok(SETUP_MANY)?;
        let gue = vm.sh(SETUP_GUE)?.success();
        eprintln!("kernel {k}: gue tunnel destinations: {gue}");
        start_backends(&vm)?;
        vm.sh_ok(TRAFFIC)?;
        wait_counted(&vm)?;
        let (json, table, tables) = stable_reading(&vm)?;
        compare(&json, &tables, gue)
            .with_context(|| format!("json:\n{json:#}\nipvsadm:\n{}", tables.join("\n---\n")))?;
        // The table is ipvsadm's, byte for byte, after the namespace line.
        let ours = table.strip_prefix("# netns host\n").context("netns line")?;
        ensure!(
            ours == tables[1],
            "table differs from ipvsadm:\n{ours}\n---\n{}",
            tables[1]
        );
        Ok(())
    })
}

/// Waits until the estimator has folded the traffic into the counters (every 2 s).
fn wait_counted(vm: &Vm) -> Result<()> {
    vm.wait_until(
        "ipvsadm -Ln --stats --exact | grep -Eq '^TCP  \\[fd00::1\\]:80 +15 ' && \
         ipvsadm -Ln --stats --exact | grep -Eq '^TCP  10.0.0.1:80 +40 '",
        Duration::from_secs(60),
    )?;
    Ok(())
}

/// Starts the real servers in namespace `rs` and waits until they answer.
fn start_backends(vm: &Vm) -> Result<()> {
    vm.spawn(
        "exec ip netns exec rs lab-server --tcp 8080 --tcp 443 --tcp 80 --udp 5353 --name rs",
    )?;
    vm.spawn("exec ip netns exec rs lab-server --bind fd00:1::2 --udp 5354 --name rs6")?;
    vm.wait_until(
        "ip netns exec rs lab-client wait-tcp 127.0.0.1:8080 --timeout 1s",
        Duration::from_secs(60),
    )?;
    Ok(())
}

/// Reads ipvsadm (every format), the JSON snapshot, then ipvsadm again, until the two ipvsadm
/// readings agree: then no estimator tick fell in between.
fn stable_reading(vm: &Vm) -> Result<(Value, String, Vec<String>)> {
    const IPVSADM: &str = "ipvsadm -Ln; echo @@; ipvsadm -Ln --stats --exact; echo @@; \
        ipvsadm -Ln --rate --exact; echo @@; ipvsadm -Ln --persistent-conn; echo @@; \
        ipvsadm -Ln --thresholds; echo @@; ipvsadm -L --timeout";
    let script = format!(
        "{IPVSADM}; echo '##'; ipvs-telemetry snapshot --format json; echo '##'; \
         ipvs-telemetry snapshot --format table; echo '##'; {IPVSADM}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = vm.sh_ok(&script)?;
        let parts: Vec<&str> = out.split("##\n").collect();
        ensure!(parts.len() == 4, "unexpected output:\n{out}");
        if parts[0] == parts[3] {
            let json: Value = serde_json::from_str(parts[1]).context("snapshot json")?;
            let tables = parts[0].split("@@\n").map(str::to_string).collect();
            return Ok((json, parts[2].to_string(), tables));
        }
        if Instant::now() > deadline {
            bail!("ipvsadm never gave two equal readings in a row");
        }
    }
}

/// A service line's tokens and its destinations' (destination name -> tokens).
type ServiceRows = (Vec<String>, BTreeMap<String, Vec<String>>);

/// One line of ipvsadm: the service or destination name and the other tokens.
#[derive(Debug, Default)]
struct Table {
    header: String,
    /// service name -> its rows
    services: BTreeMap<String, ServiceRows>,
}

fn parse_table(text: &str) -> Result<Table> {
    let mut t = Table::default();
    let mut current = None;
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            t.header = line.to_string();
            continue;
        }
        if i < 3 {
            continue;
        }
        if let Some(rest) = line.strip_prefix("  -> ") {
            let mut tok = rest.split_whitespace().map(str::to_string);
            let name = tok.next().context("destination name")?;
            let svc: &String = current.as_ref().context("destination before service")?;
            t.services
                .get_mut(svc)
                .context("service")?
                .1
                .insert(name, tok.collect());
        } else {
            let tok: Vec<&str> = line.split_whitespace().collect();
            let n = if tok[0] == "FWM" && tok.get(2) == Some(&"IPv6") {
                3
            } else {
                2
            };
            let name = tok[..n].join(" ");
            t.services.insert(
                name.clone(),
                (
                    tok[n..].iter().map(|s| s.to_string()).collect(),
                    BTreeMap::new(),
                ),
            );
            current = Some(name);
        }
    }
    Ok(t)
}

/// ipvsadm's name of a service of the JSON snapshot.
fn service_name(s: &Value) -> Result<String> {
    Ok(match s["fwmark"].as_u64() {
        Some(mark) if s["family"] == "inet6" => format!("FWM {mark} IPv6"),
        Some(mark) => format!("FWM {mark}"),
        None => {
            let proto = match s["protocol"].as_str() {
                Some("tcp") => "TCP",
                Some("udp") => "UDP",
                Some("sctp") => "SCTP",
                other => bail!("protocol {other:?}"),
            };
            format!("{proto} {}", addr_port(&s["address"], &s["port"])?)
        }
    })
}

fn addr_port(addr: &Value, port: &Value) -> Result<String> {
    let a = addr.as_str().context("address")?;
    Ok(if a.contains(':') {
        format!("[{a}]:{port}")
    } else {
        format!("{a}:{port}")
    })
}

fn num(v: &Value) -> String {
    v.to_string()
}

fn compare(json: &Value, tables: &[String], gue: bool) -> Result<()> {
    let ns = &json["namespaces"][0];
    let state = ns["ipvs"]
        .as_object()
        .context("namespace has no IPVS state")?;
    let plain = parse_table(&tables[0])?;
    let stats = parse_table(&tables[1])?;
    let rate = parse_table(&tables[2])?;
    let persist = parse_table(&tables[3])?;
    let thresh = parse_table(&tables[4])?;
    // Version line and timeouts.
    let version = state["version"].as_str().context("version")?;
    ensure!(
        plain.header
            == format!(
                "IP Virtual Server version {version} (size={})",
                state["conn_tab_size"]
            ),
        "header {:?}",
        plain.header
    );
    let t = &state["timeouts"];
    ensure!(
        tables[5].trim()
            == format!(
                "Timeout (tcp tcpfin udp): {} {} {}",
                t["tcp"], t["tcp_fin"], t["udp"]
            ),
        "timeouts {:?} vs {t}",
        tables[5]
    );
    let services = state["services"].as_array().context("services")?;
    ensure!(services.len() == plain.services.len(), "service count");
    ensure!(
        services.len() >= 10 + MANY_SERVICES,
        "scenario incomplete: {} services",
        services.len()
    );
    let mut tunnels = 0;
    for s in services {
        let name = service_name(s)?;
        let ctx = || format!("service {name}");
        let (p, pdests) = plain
            .services
            .get(&name)
            .with_context(|| format!("{name} not in ipvsadm"))?;
        // Scheduler, flags, persistence, netmask.
        ensure!(
            p[0] == s["scheduler"].as_str().unwrap_or(""),
            "{}: scheduler",
            ctx()
        );
        let mut flags = 0u64;
        let mut i = 1;
        let mut persistent = None;
        let mut mask = None;
        while i < p.len() {
            match p[i].as_str() {
                f if f.starts_with('(') => {
                    for f in f.trim_matches(|c| c == '(' || c == ')').split(',') {
                        flags |= match f {
                            "sh-fallback" | "mh-fallback" | "flag-1" => 0x8,
                            "sh-port" | "mh-port" | "flag-2" => 0x10,
                            "flag-3" => 0x20,
                            other => bail!("flag {other}"),
                        };
                    }
                }
                "persistent" => {
                    flags |= 0x1;
                    persistent = Some(p[i + 1].clone());
                    i += 1;
                }
                "mask" => {
                    mask = Some(p[i + 1].clone());
                    i += 1;
                }
                "ops" => flags |= 0x4,
                other => bail!("{}: unexpected {other}", ctx()),
            }
            i += 1;
        }
        ensure!(
            s["flags"].as_u64().unwrap_or(0) & SVC_FLAGS_SHOWN == flags,
            "{}: flags",
            ctx()
        );
        if let Some(timeout) = persistent {
            ensure!(
                timeout == num(&s["persistence_timeout"]),
                "{}: timeout",
                ctx()
            );
        }
        let netmask = s["netmask"].as_u64().context("netmask")?;
        let shown_mask = if s["family"] == "inet6" {
            (netmask != 128).then(|| netmask.to_string())
        } else {
            (netmask != 0xffff_ffff).then(|| std::net::Ipv4Addr::from(netmask as u32).to_string())
        };
        if flags & 1 != 0 {
            ensure!(
                mask == shown_mask,
                "{}: mask {mask:?} vs {shown_mask:?}",
                ctx()
            );
        }
        // Counters and rates.
        let st = &s["stats"];
        let fields = |names: &[&str]| names.iter().map(|n| num(&st[n])).collect::<Vec<_>>();
        ensure!(
            stats.services[&name].0
                == fields(&["conns", "inpkts", "outpkts", "inbytes", "outbytes"]),
            "{}: stats",
            ctx()
        );
        ensure!(
            rate.services[&name].0 == fields(&["cps", "inpps", "outpps", "inbps", "outbps"]),
            "{}: rates",
            ctx()
        );
        // Destinations.
        let dests = s["destinations"].as_array().context("destinations")?;
        ensure!(dests.len() == pdests.len(), "{}: destination count", ctx());
        for d in dests {
            let dname = addr_port(&d["address"], &d["port"])?;
            let dctx = || format!("{name} -> {dname}");
            let pd = pdests
                .get(&dname)
                .with_context(|| format!("{} not in ipvsadm", dctx()))?;
            let fwd = match d["forward"].as_str() {
                Some("masq") => "Masq",
                Some("route") => "Route",
                Some("tunnel") => "Tunnel",
                Some("local") => "Local",
                other => bail!("{}: forward {other:?}", dctx()),
            };
            ensure!(pd[0] == fwd, "{}: forward {pd:?}", dctx());
            ensure!(
                *pd == [
                    fwd.to_string(),
                    num(&d["weight"]),
                    num(&d["active_connections"]),
                    num(&d["inactive_connections"])
                ],
                "{}: plain {pd:?}",
                dctx()
            );
            let dst = &d["stats"];
            let dfields = |names: &[&str]| names.iter().map(|n| num(&dst[n])).collect::<Vec<_>>();
            ensure!(
                stats.services[&name].1[&dname]
                    == dfields(&["conns", "inpkts", "outpkts", "inbytes", "outbytes"]),
                "{}: stats",
                dctx()
            );
            ensure!(
                rate.services[&name].1[&dname]
                    == dfields(&["cps", "inpps", "outpps", "inbps", "outbps"]),
                "{}: rates",
                dctx()
            );
            ensure!(
                persist.services[&name].1[&dname]
                    == [
                        num(&d["weight"]),
                        num(&d["persistent_connections"]),
                        num(&d["active_connections"]),
                        num(&d["inactive_connections"])
                    ],
                "{}: persistent-conn",
                dctx()
            );
            ensure!(
                thresh.services[&name].1[&dname]
                    == [
                        num(&d["upper_threshold"]),
                        num(&d["lower_threshold"]),
                        num(&d["active_connections"]),
                        num(&d["inactive_connections"])
                    ],
                "{}: thresholds",
                dctx()
            );
            if d["forward"] == "tunnel" {
                tunnels += 1;
                let expected = if dname == "10.1.0.5:80" {
                    ("gue", 6080)
                } else {
                    ("ipip", 0)
                };
                ensure!(
                    d["tunnel_type"] == expected.0 && d["tunnel_port"] == expected.1,
                    "{}: tunnel {d}",
                    dctx()
                );
            }
        }
    }
    ensure!(
        tunnels == 3 + usize::from(gue),
        "tunnel destinations seen: {tunnels}"
    );
    // Traffic reached the services and was counted in both directions.
    let conns = |name: &str| stats.services[name].0[0].parse::<u64>().unwrap_or(0);
    ensure!(
        conns("TCP 10.0.0.1:80") == 40,
        "TCP 10.0.0.1:80 connections: {}",
        conns("TCP 10.0.0.1:80")
    );
    ensure!(conns("UDP 10.0.0.1:53") == 12, "UDP connections");
    ensure!(conns("TCP [fd00::1]:80") == 15, "TCP v6 connections");
    ensure!(
        stats.services["TCP 10.0.0.1:80"].0[2] != "0",
        "no outgoing packets counted"
    );
    Ok(())
}

/// With services deleted and ip_vs removed while a snapshot loop runs, the loop reports the
/// module as not loaded and never loads it; after `modprobe ip_vs` and new services the same
/// process reads them.
#[test]
fn module_unload_and_reload_under_a_running_loop() -> Result<()> {
    if !lab_or_skip("module_unload_and_reload_under_a_running_loop") {
        return Ok(());
    }
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon())?;
        vm.sh_ok("ipvsadm -A -t 10.0.0.1:80 -s rr && ipvsadm -a -t 10.0.0.1:80 -r 10.0.0.2:80 -m")?;
        let lp = vm.spawn(
            "exec ipvs-telemetry snapshot --format json --repeat 100000 --interval 200ms 2>/dev/null",
        )?;
        let log = &lp.log;
        vm.wait_until(
            &format!("grep -q '\"port\":80' {log}"),
            Duration::from_secs(60),
        )?;
        vm.sh_ok(
            "ipvsadm -C; for m in $(grep -o '^ip_vs_[a-z0-9_]*' /proc/modules); do rmmod $m; done; rmmod ip_vs",
        )?;
        vm.wait_until(
            &format!("tail -n 1 {log} | grep -q module_not_loaded"),
            Duration::from_secs(60),
        )?;
        // Many more collections later, the module is still unloaded.
        let lines =
            |vm: &Vm| -> Result<usize> { Ok(vm.sh_ok(&format!("wc -l < {log}"))?.trim().parse()?) };
        let before = lines(&vm)?;
        vm.wait_until(
            &format!("test $(wc -l < {log}) -ge {}", before + 10),
            Duration::from_secs(120),
        )?;
        let modules = vm.sh_ok("cat /proc/modules")?;
        ensure!(
            !modules.lines().any(|l| l.starts_with("ip_vs")),
            "ip_vs was loaded again:\n{modules}"
        );
        ensure!(
            vm.sh_ok(&format!("tail -n 1 {log}"))?
                .contains("\"reason\":\"module_not_loaded\""),
            "last line does not say module_not_loaded"
        );
        vm.sh_ok("modprobe ip_vs && modprobe ip_vs_wrr && ipvsadm -A -u 10.0.0.9:5353 -s wrr")?;
        vm.wait_until(
            &format!("tail -n 1 {log} | grep -q '\"port\":5353'"),
            Duration::from_secs(60),
        )?;
        vm.sh_ok(&format!("kill {}", lp.pid))?;
        Ok(())
    })
}

/// Refreshes the byte fixtures of the codec's unit tests from every lab kernel: runs the
/// scenario with a daemon built with the `netlink-capture` feature and
/// `IPVS_TELEMETRY_NETLINK_DUMP_DIR` set, and writes each received datagram to
/// `ipvs-telemetry/src/netlink/fixtures/<kernel>/`, with the JSON snapshot of the same reading.
/// Run explicitly: `cargo test -p ipvs-telemetry-e2e --test netlink -- --ignored capture`.
#[test]
#[ignore = "writes fixtures into the source tree; run explicitly"]
fn capture_fixtures() -> Result<()> {
    if !lab_or_skip("capture_fixtures") {
        return Ok(());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ipvs-telemetry/src/netlink/fixtures");
    // The shipped daemon cannot capture: a debug build with the feature.
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .current_dir(ipvs_lab::paths::repo_root())
        .args(["build", "-p", "ipvs-telemetry", "--bin", "ipvs-telemetry"])
        .args(["--features", "netlink-capture"])
        .status()?;
    ensure!(status.success(), "building the capturing daemon failed");
    let capture = ipvs_lab::paths::target_dir().join("debug/ipvs-telemetry");
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).file(&capture, "/usr/local/bin/ipvs-telemetry"))?;
        vm.sh_ok(SETUP)?;
        vm.sh(SETUP_GUE)?;
        start_backends(&vm)?;
        vm.sh_ok(TRAFFIC)?;
        wait_counted(&vm)?;
        let out = vm.sh_ok(
            "mkdir -p /tmp/dump && IPVS_TELEMETRY_NETLINK_DUMP_DIR=/tmp/dump \
             ipvs-telemetry snapshot --format json > /tmp/dump/snapshot.json && \
             cd /tmp/dump && for f in *; do echo \"$f $(base64 -w0 $f)\"; done",
        )?;
        let dir = root.join(k.name());
        std::fs::create_dir_all(&dir)?;
        for line in out.lines() {
            let (name, b64) = line.split_once(' ').context("capture line")?;
            let bytes = base64_decode(b64.trim())?;
            std::fs::write(dir.join(name), bytes)?;
        }
        Ok(())
    })
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let val = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("bad base64 byte {c}"),
        } as u32)
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|c| **c == b'=').count();
        let mut n = 0u32;
        for c in chunk {
            n = (n << 6) | if *c == b'=' { 0 } else { val(*c)? };
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}
