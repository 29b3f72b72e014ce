//! Every network namespace, in the lab: selection, values against `ipvsadm` in each namespace,
//! lifecycle while the collector runs, Swarm-like fwmark ports, interface counters.
//!
//! The daemon's `snapshot` command drives the collector (`--format table` is laid out like
//! `ipvsadm -Ln --stats --exact`, one `# netns NAME` block per namespace; `--format json
//! --repeat N` prints one collection per line from one long-running collector). Relies on
//! per-namespace IPVS (every kernel since 2.6.37) and on IPVS counters being stable once
//! traffic stops and the 2 s estimator has run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipvs_telemetry_e2e::{Vm, VmConfig, for_each_kernel, lab_or_skip};
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
