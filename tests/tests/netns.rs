//! Every network namespace, in the lab: selection, values against `ipvsadm` in each namespace,
//! lifecycle while the collector runs, Swarm-like fwmark ports, interface counters, and a
//! namespace slower than `--collection.timeout` on the real daemon.
//!
//! The daemon's `snapshot` command drives the collector (`--format table` is laid out like
//! `ipvsadm -Ln --stats --exact`, one `# netns NAME` block per namespace; `--format json
//! --repeat N` prints one collection per line from one long-running collector). Relies on
//! per-namespace IPVS (every kernel since 2.6.37) and on IPVS counters being stable once
//! traffic stops and the 2 s estimator has run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipvs_telemetry_e2e::exposition::{self, Sample};
use ipvs_telemetry_e2e::{
    Vm, VmConfig, for_each_kernel, for_each_kernel_parallel, lab_or_skip, start_daemon,
};
use serde_json::Value;

/// Creates namespace `ns` with a veth link to the host (`10.I.0.1` inside, `10.I.0.2` on the
/// host), a TCP service on `10.I.0.1:80` balanced to a local server, and `extra` ipvsadm
/// commands run inside it.
fn director(vm: &Vm, ns: &str, i: u8, extra: &[&str]) -> Result<()> {
    let mut script = format!(
        "ip netns add {ns}
         ip link add h{i} type veth peer name n0 netns {ns}
         ip addr add 10.{i}.0.2/24 dev h{i}; ip link set h{i} up
         ip -n {ns} link set lo up
         ip -n {ns} addr add 10.{i}.0.1/24 dev n0; ip -n {ns} link set n0 up
         ip -n {ns} route add 10.200.0.0/24 via 10.{i}.0.2
         ip netns exec {ns} ipvsadm -A -t 10.{i}.0.1:80 -s rr
         ip netns exec {ns} ipvsadm -a -t 10.{i}.0.1:80 -r 10.{i}.0.1:80 -m
"
    );
    for cmd in extra {
        script.push_str(&format!("ip netns exec {ns} {cmd}\n"));
    }
    vm.sh_ok(&format!("set -e\n{script}"))
        .with_context(|| format!("setting up namespace {ns}"))?;
    vm.spawn(&format!(
        "exec ip netns exec {ns} lab-server --tcp 80 --name {ns}"
    ))?;
    vm.wait_until(
        &format!("lab-client wait-tcp 10.{i}.0.1:80 --timeout 1s"),
        Duration::from_secs(30),
    )?;
    Ok(())
}

/// The `# netns NAME` blocks of a `snapshot --format table` output, by name.
fn blocks(table: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in table.lines() {
        if let Some(name) = line.strip_prefix("# netns ") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// Waits until the table of every namespace equals `ipvsadm -Ln --stats --exact` run inside it
/// (counters settle two seconds after traffic stops).
fn assert_tables_match(vm: &Vm, args: &str, expected: &[(&str, Option<&str>)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = vm.sh_ok(&format!("ipvs-telemetry snapshot --format table {args}"))?;
        let got = blocks(&table);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
        ensure!(
            names == want,
            "namespaces {names:?}, expected {want:?}\n{table}"
        );
        let mut mismatch = None;
        for ((name, text), (_, ns)) in got.iter().zip(expected) {
            let ipvsadm = match ns {
                None => vm.sh_ok("ipvsadm -Ln --stats --exact")?,
                Some(ns) => vm.sh_ok(&format!("ip netns exec {ns} ipvsadm -Ln --stats --exact"))?,
            };
            if text.trim_end() != ipvsadm.trim_end() {
                mismatch = Some(format!(
                    "{name}:\n--- snapshot\n{text}--- ipvsadm\n{ipvsadm}"
                ));
            }
        }
        match mismatch {
            None => return Ok(()),
            Some(m) if Instant::now() > deadline => bail!("values differ from ipvsadm: {m}"),
            Some(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Host + three named namespaces with different services and traffic; `blue` also reachable
/// through a bind mount in a second discovery directory; `skip` excluded by regex.
#[test]
fn every_namespace_equals_ipvsadm() -> Result<()> {
    if !lab_or_skip("every_namespace_equals_ipvsadm") {
        return Ok(());
    }
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon())?;
        vm.sh_ok(
            "set -e
             ip addr add 10.200.0.1/32 dev lo
             ipvsadm -A -t 10.200.0.1:80 -s wlc
             ipvsadm -a -t 10.200.0.1:80 -r 10.200.0.1:80 -m
             ipvsadm -A -u 10.200.0.1:53 -s rr",
        )?;
        vm.spawn("exec lab-server --tcp 80 --name host")?;
        director(&vm, "blue", 1, &["ipvsadm -A -u 10.1.0.1:53 -s sh"])?;
        director(
            &vm,
            "green",
            2,
            &[
                "ipvsadm -A -t [fd00::2]:443 -s wrr",
                "ipvsadm -A -f 7 -s rr",
            ],
        )?;
        director(&vm, "red", 3, &["ipvsadm -A -t 10.3.0.1:8080 -s lc -p 300"])?;
        director(&vm, "skip", 4, &[])?;
        vm.sh_ok(
            "set -e
             mkdir -p /srv/ns; touch /srv/ns/zz-blue-alias
             mount --bind /run/netns/blue /srv/ns/zz-blue-alias",
        )?;
        // Different traffic in each namespace, and into the host from blue.
        for (i, n) in [(1, 11), (2, 22), (3, 33), (4, 5)] {
            vm.sh_ok(&format!("lab-client tcp 10.{i}.0.1:80 -n {n}"))?;
        }
        vm.sh_ok("ip netns exec blue lab-client tcp 10.200.0.1:80 -n 7")?;

        let args = "--netns.discover /run/netns --netns.discover /srv/ns --netns.exclude ^skip$";
        // The namespaces' connection counts are the traffic sent (the local server answers all).
        // IPVS publishes counters when its estimator runs (every 2 s): wait until every
        // namespace shows its traffic, so the exact comparison below is made on settled values
        // rather than on two equally stale readings.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let json: Value = serde_json::from_str(
                &vm.sh_ok(&format!("ipvs-telemetry snapshot --format json {args}"))?,
            )?;
            let mut short = None;
            for (name, conns) in [("blue", 11), ("green", 22), ("red", 33), ("host", 7)] {
                let ns = json["namespaces"]
                    .as_array()
                    .context("namespaces")?
                    .iter()
                    .find(|n| n["netns"] == name)
                    .with_context(|| format!("no {name}"))?;
                let web = ns["ipvs"]["services"]
                    .as_array()
                    .with_context(|| format!("{name}: {ns}"))?
                    .iter()
                    .find(|s| s["protocol"] == "tcp" && s["port"] == 80)
                    .with_context(|| format!("{name}: no tcp :80 service"))?;
                // `wait-tcp` probes may add a few.
                let got = web["stats"]["conns"].as_u64().context("conns")?;
                ensure!(got < conns + 10, "{name}: {got} connections, sent {conns}");
                if got < conns {
                    short = Some(format!("{name}: {got} connections, sent {conns}"));
                }
            }
            match short {
                None => break,
                Some(m) if Instant::now() > deadline => bail!("{m}"),
                Some(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        assert_tables_match(
            &vm,
            args,
            &[
                ("blue", Some("blue")),
                ("green", Some("green")),
                ("host", None),
                ("red", Some("red")),
            ],
        )?;
        Ok(())
    })
}

/// One line of `snapshot --format json --repeat`: namespace name -> its entry.
fn poll_line(line: &str) -> Result<Vec<(String, Value)>> {
    let v: Value = serde_json::from_str(line).with_context(|| format!("bad line {line:?}"))?;
    Ok(v["namespaces"]
        .as_array()
        .context("namespaces")?
        .iter()
        .map(|n| (n["netns"].as_str().unwrap_or("").to_string(), n.clone()))
        .collect())
}

/// Lines written so far by the running snapshot loop (none while the spawned shell has not
/// created the file yet: `spawn` returns before its redirection runs).
fn lines(vm: &Vm) -> Result<Vec<String>> {
    Ok(vm
        .sh_ok("if [ -e /tmp/polls.jsonl ]; then cat /tmp/polls.jsonl; fi")?
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .collect())
}

/// Waits until `extra` more polls than `since` have been written; returns all lines.
fn wait_polls(vm: &Vm, since: usize, extra: usize) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = lines(vm)?;
        if l.len() >= since + extra {
            return Ok(l);
        }
        ensure!(Instant::now() < deadline, "only {} polls written", l.len());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// While one collector runs: deletion, re-creation with other services and replacement by a
/// regular file are each seen within two polls (three for the regular file, which is ignored
/// once to let `ip netns add` finish), and the other namespace keeps being read.
#[test]
fn namespaces_come_and_go_while_collecting() -> Result<()> {
    if !lab_or_skip("namespaces_come_and_go_while_collecting") {
        return Ok(());
    }
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon())?;
        director(&vm, "keep", 1, &[])?;
        director(&vm, "gone", 2, &[])?;
        vm.spawn(
            "exec ipvs-telemetry snapshot --format json --repeat 100000 --interval 500ms \
             --no-netns.host --netns.discover /run/netns > /tmp/polls.jsonl",
        )?;
        let first = wait_polls(&vm, 0, 1)?;
        let names: Vec<String> = poll_line(&first[0])?.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["gone", "keep"]);

        // Deleted: absent from the second poll after the deletion on.
        vm.sh_ok("ip netns del gone")?;
        let n = lines(&vm)?.len();
        let l = wait_polls(&vm, n, 2)?;
        let poll = poll_line(&l[n + 1])?;
        assert_eq!(
            poll.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["keep"]
        );

        // Re-created with another service: present with it within two polls.
        vm.sh_ok("ip netns add gone; ip netns exec gone ipvsadm -A -u 10.9.9.9:53 -s rr")?;
        let n = lines(&vm)?.len();
        let l = wait_polls(&vm, n, 2)?;
        let poll = poll_line(&l[n + 1])?;
        let gone = &poll
            .iter()
            .find(|(n, _)| n == "gone")
            .context("gone missing")?
            .1;
        let services = &gone["ipvs"]["services"];
        assert_eq!(services.as_array().map(Vec::len), Some(1), "{gone}");
        assert_eq!(services[0]["port"], 53);

        // Replaced by a regular file: ipvs_up 0 with reason namespace; keep unaffected.
        vm.sh_ok("ip netns del gone; touch /run/netns/gone")?;
        let n = lines(&vm)?.len();
        let l = wait_polls(&vm, n, 3)?;
        let poll = poll_line(&l[n + 2])?;
        let gone = &poll
            .iter()
            .find(|(n, _)| n == "gone")
            .context("gone missing")?
            .1;
        assert_eq!(gone["error"]["reason"], "namespace", "{gone}");
        for line in &l {
            let keep = poll_line(line)?
                .into_iter()
                .find(|(n, _)| n == "keep")
                .context("keep missing")?
                .1;
            assert!(keep["ipvs"].is_object(), "{keep}");
        }
        Ok(())
    })
}

/// A Swarm-like ingress namespace: MARK rules for a published port (nft backend and legacy
/// backend) and fwmark services; the services get the published protocol and port.
#[test]
fn swarm_fwmark_services_get_published_ports() -> Result<()> {
    if !lab_or_skip("swarm_fwmark_services_get_published_ports") {
        return Ok(());
    }
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon())?;
        vm.sh_ok(
            "set -e
             ip netns add ingress_sbox
             ip -n ingress_sbox link set lo up
             ip -n ingress_sbox route add 10.255.0.0/24 dev lo
             ip netns exec ingress_sbox iptables -t mangle -A PREROUTING -p tcp --dport 30000 -j MARK --set-mark 0x104
             ip netns exec ingress_sbox iptables -t mangle -A INPUT -d 10.255.0.5/32 -j MARK --set-mark 0x104
             ip netns exec ingress_sbox ipvsadm -A -f 260 -s rr
             ip netns exec ingress_sbox ipvsadm -a -f 260 -r 10.255.0.7:0 -m
             ip netns add legacy_sbox
             ip netns exec legacy_sbox iptables-legacy -t mangle -A PREROUTING -p udp --dport 30001 -j MARK --set-mark 0x105
             ip netns exec legacy_sbox ipvsadm -A -f 261 -s rr
             ip netns exec legacy_sbox ipvsadm -A -f 262 -s rr",
        )?;
        let json: Value = serde_json::from_str(&vm.sh_ok(
            "ipvs-telemetry snapshot --format json --no-netns.host --netns.discover /run/netns",
        )?)?;
        let service = |ns: &str, mark: u32| -> Result<Value> {
            let entry = json["namespaces"]
                .as_array()
                .context("namespaces")?
                .iter()
                .find(|n| n["netns"] == ns)
                .with_context(|| format!("no namespace {ns}"))?;
            entry["ipvs"]["services"]
                .as_array()
                .with_context(|| format!("{ns}: {entry}"))?
                .iter()
                .find(|s| s["fwmark"] == mark)
                .cloned()
                .with_context(|| format!("{ns}: no fwmark {mark}"))
        };
        assert_eq!(
            service("ingress_sbox", 260)?["published"],
            serde_json::json!({"protocol": "tcp", "port": 30000})
        );
        assert_eq!(
            service("legacy_sbox", 261)?["published"],
            serde_json::json!({"protocol": "udp", "port": 30001})
        );
        assert_eq!(service("legacy_sbox", 262)?["published"], Value::Null);
        Ok(())
    })
}

/// Interface counters equal `ip -s -j link` inside the namespace.
#[test]
fn interface_counters_equal_ip_link() -> Result<()> {
    if !lab_or_skip("interface_counters_equal_ip_link") {
        return Ok(());
    }
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon())?;
        director(&vm, "blue", 1, &[])?;
        vm.sh_ok("ip netns exec blue sysctl -qw net.ipv6.conf.all.disable_ipv6=1")?;
        vm.sh_ok("lab-client tcp 10.1.0.1:80 -n 20")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let before = vm.sh_ok("ip netns exec blue ip -s -j link")?;
            let snap = vm.sh_ok(
                "ipvs-telemetry snapshot --format json --no-netns.host \
                 --netns.discover /run/netns --netns.devices.exclude '^$'",
            )?;
            let after = vm.sh_ok("ip netns exec blue ip -s -j link")?;
            if before != after {
                ensure!(Instant::now() < deadline, "counters kept changing");
                continue;
            }
            let links: Vec<Value> = serde_json::from_str(&after)?;
            let snap: Value = serde_json::from_str(&snap)?;
            let got = &snap["namespaces"][0]["context"]["interfaces"];
            let mut n = 0;
            for l in &links {
                let name = l["ifname"].as_str().context("ifname")?;
                let g = got
                    .as_array()
                    .context("interfaces")?
                    .iter()
                    .find(|i| i["device"] == name)
                    .with_context(|| format!("no {name} in {got}"))?;
                let s = &l["stats64"];
                assert_eq!(g["rx_bytes"], s["rx"]["bytes"], "{name}");
                assert_eq!(g["tx_bytes"], s["tx"]["bytes"], "{name}");
                assert_eq!(g["rx_packets"], s["rx"]["packets"], "{name}");
                assert_eq!(g["tx_packets"], s["tx"]["packets"], "{name}");
                assert_eq!(g["rx_dropped"], s["rx"]["dropped"], "{name}");
                assert_eq!(g["tx_dropped"], s["tx"]["dropped"], "{name}");
                // Up as `ip link` shows it: state UP, or UNKNOWN with the flags UP and LOWER_UP.
                let flags = l["flags"].as_array().context("flags")?;
                let flag = |f: &str| flags.iter().any(|x| x == f);
                let up = l["operstate"] == "UP"
                    || (l["operstate"] == "UNKNOWN" && flag("UP") && flag("LOWER_UP"));
                assert_eq!(g["up"], up, "{name}: {l}");
                n += 1;
            }
            // Every interface (lo, n0, and the tunnel fallback devices the kernel adds),
            // nothing else.
            assert_eq!(got.as_array().map(Vec::len), Some(n), "{got}");
            assert!(n >= 2);
            let n0 = got
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["device"] == "n0")
                .unwrap();
            assert!(n0["rx_packets"].as_u64().unwrap() >= 20 * 3, "{n0}");
            return Ok(());
        }
    })
}

/// Port of the daemon in [`a_namespace_slower_than_the_collection_timeout_fails_alone`].
const TIMEOUT_PORT: u16 = 10056;

/// Services (one destination each) of the slow namespace: under TCG its table takes about a
/// second to read, ten times `--collection.timeout 100ms`.
const SLOW_SERVICES: u32 = 5000;

/// The value of `name` with label `netns` = `ns` (and `reason` when given).
fn ns_value(m: &[Sample], name: &str, ns: &str, reason: Option<&str>) -> Option<f64> {
    m.iter()
        .find(|s| {
            s.name == name
                && s.label("netns") == ns
                && reason.is_none_or(|r| s.label("reason") == r)
        })
        .map(|s| s.value)
}

/// `--collection.timeout` on the real daemon: a namespace whose IPVS table takes longer to read
/// than the timeout is reported failed at each scrape (`ipvs_up 0`, its `timeout` errors
/// counting up, none of its service series), while the host namespace collected next to it is
/// served with ipvsadm's values; with the default timeout the same daemon reads the whole slow
/// table, so the failure was the timeout's.
#[test]
fn a_namespace_slower_than_the_collection_timeout_fails_alone() -> Result<()> {
    if !lab_or_skip("a_namespace_slower_than_the_collection_timeout_fails_alone") {
        return Ok(());
    }
    for_each_kernel_parallel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon().forward(TIMEOUT_PORT))?;
        vm.sh_ok(
            "set -e
             ip addr add 10.200.0.1/32 dev lo
             ipvsadm -A -t 10.200.0.1:80 -s rr
             ipvsadm -a -t 10.200.0.1:80 -r 10.200.0.1:80 -m",
        )?;
        vm.spawn("exec lab-server --tcp 80 --name host")?;
        vm.wait_until(
            "lab-client wait-tcp 10.200.0.1:80 --timeout 1s",
            Duration::from_secs(30),
        )?;
        vm.sh_ok("lab-client tcp 10.200.0.1:80 -n 9")?;
        vm.sh_ok_timeout(
            &format!(
                "set -e; ip netns add slow
                 ip -n slow link add d0 type dummy; ip -n slow link set d0 up
                 ip -n slow addr add 192.168.0.2/24 dev d0
                 busybox awk 'BEGIN {{ for (i = 0; i < {SLOW_SERVICES}; i++) {{ \
                   v = sprintf(\"10.%d.%d.1:80\", int(i / 250), i % 250); \
                   print \"-A -t \" v \" -s rr\"; \
                   print \"-a -t \" v \" -r 192.168.0.1:8080 -m\" }} }}' > /tmp/rules
                 ip netns exec slow ipvsadm -R < /tmp/rules"
            ),
            Duration::from_secs(600),
        )?;
        // How long reading the slow table takes (ipvsadm also dumps the services, then each
        // one's destinations): the test proves nothing unless that is well past the timeout.
        let read = vm.sh_ok_timeout(
            "a=$(cut -d' ' -f1 /proc/uptime); ip netns exec slow ipvsadm -Ln > /dev/null; \
             b=$(cut -d' ' -f1 /proc/uptime); echo \"$a $b\"",
            Duration::from_secs(600),
        )?;
        let t: Vec<f64> = read
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        ensure!(t.len() == 2, "uptime: {read}");
        let read_s = t[1] - t[0];
        eprintln!("kernel {k}: ipvsadm -Ln of {SLOW_SERVICES} services: {read_s:.2} s");
        ensure!(
            read_s >= 0.5,
            "the slow table was read in {read_s:.2} s: not slow enough to test a 100 ms timeout"
        );

        let args = "--netns.discover /run/netns --collection.max-age 1s";
        let d = start_daemon(
            &vm,
            TIMEOUT_PORT,
            &format!("{args} --collection.timeout 100ms"),
        )?;
        let mut last_errors = 0.0;
        for round in 0..3 {
            if round > 0 {
                // A new collection per scrape: past the max-age.
                vm.sh_ok("sleep 1.2")?;
            }
            let m = exposition::parse(&vm.http_get(TIMEOUT_PORT, "/metrics")?);
            let up = |ns| ns_value(&m, "ipvs_up", ns, None);
            ensure!(
                up("slow") == Some(0.0),
                "round {round}: ipvs_up slow {:?}",
                up("slow")
            );
            ensure!(
                up("host") == Some(1.0),
                "round {round}: ipvs_up host {:?}",
                up("host")
            );
            let errors = ns_value(&m, "ipvs_collection_errors_total", "slow", Some("timeout"))
                .unwrap_or(0.0);
            ensure!(
                errors > last_errors,
                "round {round}: timeout errors {errors}, before {last_errors}"
            );
            last_errors = errors;
            let slow_series = m
                .iter()
                .filter(|s| s.name.starts_with("ipvs_service_") && s.label("netns") == "slow")
                .count();
            ensure!(
                slow_series == 0,
                "round {round}: {slow_series} series of the slow namespace"
            );
            let host = ns_value(&m, "ipvs_service_connections_total", "host", None);
            let truth = vm.sh_ok(
                "ipvsadm -Ln --stats --exact -t 10.200.0.1:80 | awk '$1 == \"TCP\" {print $3}'",
            )?;
            ensure!(
                host == truth.trim().parse::<f64>().ok(),
                "round {round}: host connections {host:?}, ipvsadm {}",
                truth.trim()
            );
            eprintln!(
                "kernel {k}: round {round}: slow ipvs_up 0 ({errors} timeouts), host ipvs_up 1 with {} connections",
                truth.trim()
            );
        }
        let log = vm.sh_ok(&format!("cat {}", d.log))?;
        ensure!(
            log.contains("did not answer within 100ms"),
            "the daemon's log does not name the timeout:\n{log}"
        );
        vm.sh_ok(&format!("kill {}", d.pid))?;
        vm.wait_until(
            &format!("! kill -0 {} 2>/dev/null", d.pid),
            Duration::from_secs(30),
        )?;

        start_daemon(&vm, TIMEOUT_PORT, args)?;
        let m = exposition::parse(&vm.http_get(TIMEOUT_PORT, "/metrics")?);
        let services = m
            .iter()
            .filter(|s| s.name == "ipvs_service_connections_total" && s.label("netns") == "slow")
            .count();
        ensure!(
            ns_value(&m, "ipvs_up", "slow", None) == Some(1.0)
                && services == SLOW_SERVICES as usize,
            "default timeout: slow ipvs_up {:?}, {services} services",
            ns_value(&m, "ipvs_up", "slow", None)
        );
        Ok(())
    })
}
