//! eBPF connection telemetry against real kernels (6.1 and 6.12: their struct layouts differ,
//! which is what proves the BTF-derived offsets).
//!
//! The eBPF side runs in the VM as `ebpf-dump` (the daemon's eBPF code alone, writing its series
//! as JSON, see `ipvs-telemetry/examples/ebpf-dump.rs`); `ipvsadm -Ln --stats --exact` is the
//! independent source of truth.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipvs_telemetry_e2e::exposition::{self, Sample};
use ipvs_telemetry_e2e::{
    DELAYED_BACKEND_SH, Vm, VmConfig, ebpf_kind_total, for_each_kernel, kernels, lab_or_skip,
    read_ebpf_dump,
};
use serde_json::Value;

/// Services in a namespace (`$1` prefixes every command, e.g. `ip netns exec ns2`):
/// TCP and UDP over IPv4 and IPv6, a fwmark service and a persistent one. Real servers are
/// local addresses without listeners: IPVS schedules the connection either way.
const SETUP: &str = r#"
setup() {
  $1 ip link add d0 type dummy && $1 ip link set d0 up && $1 ip link set lo up
  for a in 10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.1.1 10.0.1.2; do $1 ip addr add $a/32 dev d0; done
  for a in 2001:db8::1 2001:db8:1::1 2001:db8:1::2; do $1 ip -6 addr add $a/128 dev d0 nodad; done
  $1 ipvsadm -A -t 10.0.0.1:80 -s rr
  $1 ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m; $1 ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m
  $1 ipvsadm -A -u 10.0.0.1:53 -s rr
  $1 ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.1:5353 -m; $1 ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.2:5353 -m
  $1 ipvsadm -A -t [2001:db8::1]:80 -s rr
  $1 ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8:1::1]:8080 -m
  $1 ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8:1::2]:8080 -m
  $1 ipvsadm -A -u [2001:db8::1]:53 -s rr; $1 ipvsadm -a -u [2001:db8::1]:53 -r [2001:db8:1::1]:5353 -m
  $1 ipvsadm -A -t 10.0.0.3:80 -s rr -p 300
  $1 ipvsadm -a -t 10.0.0.3:80 -r 10.0.1.1:8081 -m; $1 ipvsadm -a -t 10.0.0.3:80 -r 10.0.1.2:8081 -m
  $1 iptables -t mangle -A OUTPUT -d 10.0.0.2 -p tcp --dport 443 -j MARK --set-mark 7
  $1 ipvsadm -A -f 7 -s rr; $1 ipvsadm -a -f 7 -r 10.0.1.1:8443 -m; $1 ipvsadm -a -f 7 -r 10.0.1.2:8443 -m
  $1 ipvsadm -A -t 10.0.0.4:80 -s rr; $1 ipvsadm -a -t 10.0.0.4:80 -r 10.0.1.1:9000 -m
}
"#;

/// `(namespace label, "PROT service -> destination")`.
type Key = (String, String);

/// Destination `Conns` of `ipvsadm -Ln --stats --exact`, keyed like [`ebpf_counts`].
fn ipvsadm_conns(ns: &str, text: &str) -> BTreeMap<Key, u64> {
    let mut out = BTreeMap::new();
    let mut svc = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [p @ ("TCP" | "UDP" | "FWM"), addr, conns, ..] if conns.parse::<u64>().is_ok() => {
                svc = Some(format!("{p} {addr}"));
            }
            ["->", dest, conns, ..] => {
                if let (Some(s), Ok(n)) = (&svc, conns.parse::<u64>()) {
                    out.insert((ns.to_string(), format!("{s} -> {dest}")), n);
                }
            }
            _ => {}
        }
    }
    out
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

/// Per-destination `new_connections` of an `ebpf-dump` JSON, namespaces named by `inodes`.
fn ebpf_counts(json: &Value, inodes: &BTreeMap<u64, String>) -> Result<BTreeMap<Key, u64>> {
    let mut out = BTreeMap::new();
    for s in json["series"].as_array().context("no series")? {
        let k = &s["key"];
        let Some(ns) = k["netns_inode"].as_u64().and_then(|i| inodes.get(&i)) else {
            continue;
        };
        let svc = &k["service"];
        let svc = if svc["kind"] == "fwmark" {
            format!("FWM {}", svc["mark"])
        } else {
            format!(
                "{} {}:{}",
                svc["protocol"].as_str().unwrap_or("?").to_uppercase(),
                bracket(svc["address"].as_str().unwrap_or("?")),
                svc["port"]
            )
        };
        let d = &k["destination"];
        let dest = if d.is_null() {
            "*".to_string()
        } else {
            format!("{}:{}", bracket(d[0].as_str().unwrap_or("?")), d[1])
        };
        let n = s["new_connections"].as_u64().context("no count")?;
        out.insert((ns.clone(), format!("{svc} -> {dest}")), n);
    }
    Ok(out)
}

/// Both namespaces' destination conns per ipvsadm, after the estimator has run (2 s ticks:
/// waits until two reads 2.5 s apart agree).
fn settled_ipvsadm(vm: &Vm) -> Result<BTreeMap<Key, u64>> {
    let read = || -> Result<BTreeMap<Key, u64>> {
        let mut m = ipvsadm_conns("host", &vm.sh_ok("ipvsadm -Ln --stats --exact")?);
        m.extend(ipvsadm_conns(
            "ns2",
            &vm.sh_ok("ip netns exec ns2 ipvsadm -Ln --stats --exact")?,
        ));
        Ok(m)
    };
    let mut prev = read()?;
    for _ in 0..20 {
        vm.sh_ok("sleep 2.5")?;
        let now = read()?;
        if now == prev {
            return Ok(now);
        }
        prev = now;
    }
    bail!("ipvsadm counters did not settle")
}

fn namespaces(vm: &Vm) -> Result<BTreeMap<u64, String>> {
    let host: u64 = vm
        .sh_ok("stat -L -c %i /proc/self/ns/net")?
        .trim()
        .parse()?;
    let ns2: u64 = vm.sh_ok("stat -L -c %i /run/netns/ns2")?.trim().parse()?;
    Ok(BTreeMap::from([(host, "host".into()), (ns2, "ns2".into())]))
}

/// Asserts that for every destination the eBPF count increased exactly as ipvsadm's conns.
fn assert_deltas(
    before: (&BTreeMap<Key, u64>, &BTreeMap<Key, u64>),
    after: (&BTreeMap<Key, u64>, &BTreeMap<Key, u64>),
) {
    let (ipvs0, ebpf0) = before;
    let (ipvs1, ebpf1) = after;
    let mut moved = 0;
    for (k, &n) in ipvs1 {
        let want = n - ipvs0.get(k).copied().unwrap_or(0);
        let got = ebpf1.get(k).copied().unwrap_or(0) - ebpf0.get(k).copied().unwrap_or(0);
        eprintln!("  {:4} {:45} ipvsadm +{want:6}  ebpf +{got:6}", k.0, k.1);
        assert_eq!(got, want, "{k:?}");
        moved += want;
    }
    for (k, &n) in ebpf1 {
        assert!(
            ipvs1.contains_key(k) || n == ebpf0.get(k).copied().unwrap_or(0),
            "eBPF counted a destination ipvsadm does not list: {k:?}"
        );
    }
    assert!(moved > 0, "no traffic was counted at all");
}

fn start_dump(vm: &Vm, out: &str, args: &str) -> Result<()> {
    vm.spawn(&format!(
        "EBPF_DUMP_OUT={out} exec /usr/local/bin/ebpf-dump --ebpf on {args}"
    ))?;
    vm.wait_until(
        &format!("grep -q '\"up\":true' {out}"),
        Duration::from_secs(60),
    )?;
    Ok(())
}

/// Sum of the eBPF counts of one service (`PROT addr` prefix) in one namespace.
fn service_total(m: &BTreeMap<Key, u64>, ns: &str, svc: &str) -> u64 {
    m.iter()
        .filter(|(k, _)| k.0 == ns && k.1.starts_with(&format!("{svc} -> ")))
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn ebpf_counts_match_ipvsadm_on_both_kernels() -> Result<()> {
    if !lab_or_skip("ebpf_counts_match_ipvsadm_on_both_kernels") {
        return Ok(());
    }
    let dump = ipvs_telemetry_e2e::ebpf_dump_binary()?;
    for k in kernels() {
        eprintln!("kernel {k}");
        let vm = Vm::boot(VmConfig::new(k).file(&dump, "/usr/local/bin/ebpf-dump"))?;
        vm.sh_ok(&format!(
            "{SETUP}\nsysctl -qw net.ipv4.ip_local_port_range='1024 65001' && \
             setup '' && ip netns add ns2 && setup 'ip netns exec ns2'"
        ))?;
        let inodes = namespaces(&vm)?;
        start_dump(&vm, "/tmp/ebpf.json", "")?;
        // A second instance with 2 s windows watches the arrival-pattern service, a third
        // counts per service.
        start_dump(&vm, "/tmp/ebpf-2s.json", "--ebpf.rate-window 2s")?;
        start_dump(&vm, "/tmp/ebpf-svc.json", "--ebpf.granularity service")?;
        let svc0 = ebpf_counts(&read_ebpf_dump(&vm, "/tmp/ebpf-svc.json")?, &inodes)?;

        // Exact counts over every kind of service, in two namespaces.
        let ipvs0 = settled_ipvsadm(&vm)?;
        let ebpf0 = ebpf_counts(&read_ebpf_dump(&vm, "/tmp/ebpf.json")?, &inodes)?;
        let tcp = |a: &str, n: u32| {
            format!("lab-client tcp {a} -n {n} --connect-only --allow-errors --timeout 2s")
        };
        let udp = |a: &str, n: u32| format!("lab-client udp {a} -n {n} --no-reply --allow-errors");
        vm.sh_ok_timeout(
            &[
                tcp("10.0.0.1:80", 101),
                udp("10.0.0.1:53", 53),
                tcp("[2001:db8::1]:80", 37),
                udp("[2001:db8::1]:53", 11),
                tcp("10.0.0.2:443", 29),
                tcp("10.0.0.3:80", 17),
                format!("ip netns exec ns2 {}", tcp("10.0.0.1:80", 13)),
                format!("ip netns exec ns2 {}", udp("[2001:db8::1]:53", 7)),
                format!("ip netns exec ns2 {}", tcp("10.0.0.2:443", 5)),
            ]
            .join(" && "),
            Duration::from_secs(300),
        )?;
        let ipvs1 = settled_ipvsadm(&vm)?;
        let json = read_ebpf_dump(&vm, "/tmp/ebpf.json")?;
        let ebpf1 = ebpf_counts(&json, &inodes)?;
        assert_deltas((&ipvs0, &ebpf0), (&ipvs1, &ebpf1));
        // TCP connects to one address take successive source ports, so each is a new IPVS
        // connection (UDP sockets take random ports and may meet an earlier connection: those
        // are compared with ipvsadm only). The persistent service counts connections, not
        // templates.
        for (ns, svc, n) in [
            ("host", "TCP 10.0.0.1:80", 101),
            ("host", "TCP [2001:db8::1]:80", 37),
            ("host", "FWM 7", 29),
            ("host", "TCP 10.0.0.3:80", 17),
            ("ns2", "TCP 10.0.0.1:80", 13),
            ("ns2", "FWM 7", 5),
        ] {
            let got = service_total(&ebpf1, ns, svc) - service_total(&ebpf0, ns, svc);
            assert_eq!(got, n, "{ns} {svc}");
        }
        assert_eq!(ebpf_kind_total(&json, "lost", "new_connection"), 0);
        // --ebpf.granularity service: one series per service, the sum of its destinations.
        let svc1 = ebpf_counts(&read_ebpf_dump(&vm, "/tmp/ebpf-svc.json")?, &inodes)?;
        // Every service ipvsadm lists (a service missing from the eBPF series fails), and
        // nothing but services in the eBPF series.
        let listed: std::collections::BTreeSet<(String, String)> = ipvs1
            .keys()
            .map(|(ns, name)| {
                let svc = name.split(" -> ").next().unwrap_or(name);
                (ns.clone(), svc.to_string())
            })
            .collect();
        for (ns, svc) in &listed {
            let want = service_total(&ipvs1, ns, svc) - service_total(&ipvs0, ns, svc);
            let key = (ns.clone(), format!("{svc} -> *"));
            let got = svc1.get(&key).copied().unwrap_or(0) - svc0.get(&key).copied().unwrap_or(0);
            assert_eq!(got, want, "service granularity {ns} {svc}");
        }
        for (ns, name) in svc1.keys() {
            let svc = name.trim_end_matches(" -> *");
            assert!(name.ends_with(" -> *"), "{name}");
            assert!(
                listed.contains(&(ns.clone(), svc.to_string())),
                "service granularity: {ns} {svc} is not listed by ipvsadm"
            );
        }
        assert!(listed.len() >= 8, "{listed:?}");

        // Freshness: a connection made just before reading is in the eBPF series at once
        // (the dump refreshes every 100 ms); netlink's counter moves on the estimator's 2 s tick.
        let key = ("host", "TCP 10.0.0.1:80");
        let e0 = service_total(&ebpf1, key.0, key.1);
        let out = vm.sh_ok(&format!(
            "{} >/dev/null && ipvsadm -Ln --stats --exact",
            tcp("10.0.0.1:80", 1)
        ))?;
        let netlink = service_total(&ipvsadm_conns("host", &out), key.0, key.1)
            - service_total(&ipvs1, key.0, key.1);
        let mut fresh = 0;
        for _ in 0..50 {
            fresh = service_total(
                &ebpf_counts(&read_ebpf_dump(&vm, "/tmp/ebpf.json")?, &inodes)?,
                key.0,
                key.1,
            ) - e0;
            if fresh >= 1 {
                break;
            }
            vm.sh_ok("sleep 0.1")?;
        }
        eprintln!("freshness: one connection just made: eBPF +{fresh}, netlink +{netlink}");
        assert_eq!(fresh, 1);

        // Burst: every connection counted by eBPF, none lost (the ring buffer is sized for
        // bursts far above what a TCG VM can make; docs/ebpf.md), and nothing counted twice.
        let ipvs0 = settled_ipvsadm(&vm)?;
        let json = read_ebpf_dump(&vm, "/tmp/ebpf.json")?;
        let ebpf0 = ebpf_counts(&json, &inodes)?;
        let lost0 = ebpf_kind_total(&json, "lost", "new_connection");
        let out = vm.sh_ok_timeout(&tcp("10.0.0.1:80", 20000), Duration::from_secs(600))?;
        eprintln!("burst: {}", out.trim());
        let ipvs1 = settled_ipvsadm(&vm)?;
        let json = read_ebpf_dump(&vm, "/tmp/ebpf.json")?;
        let ebpf1 = ebpf_counts(&json, &inodes)?;
        let lost = ebpf_kind_total(&json, "lost", "new_connection") - lost0;
        let got = service_total(&ebpf1, "host", "TCP 10.0.0.1:80")
            - service_total(&ebpf0, "host", "TCP 10.0.0.1:80");
        let want = service_total(&ipvs1, "host", "TCP 10.0.0.1:80")
            - service_total(&ipvs0, "host", "TCP 10.0.0.1:80");
        eprintln!("burst: netlink +{want}, eBPF +{got}, lost {lost}");
        assert_eq!(lost, 0, "events lost in the burst");
        assert_eq!(got, want, "burst: eBPF and netlink disagree");
        assert!(want >= 20000, "the burst made {want} IPVS connections");

        // Known arrival pattern: 5 bursts of 10 connections, 4 s apart, 2 s windows. The
        // margins (a burst lasts ~0.1 s and its gaps a few ms, alone) absorb the VM's stalls on
        // a loaded CI machine: a burst must fit in one window and each gap inside it under 1 s.
        let mut bursts = Vec::new();
        for _ in 0..5 {
            bursts.push(vm.sh_ok(&format!("{} && sleep 4", tcp("10.0.0.4:80", 10)))?);
        }
        let bursts = bursts
            .iter()
            .map(|b| b.trim())
            .collect::<Vec<_>>()
            .join("\n");
        let json = read_ebpf_dump(&vm, "/tmp/ebpf-2s.json")?;
        let s = json["series"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["key"]["service"]["address"] == "10.0.0.4")
            .context("no series for 10.0.0.4")?;
        assert_eq!(s["new_connections"], 50, "{s}\n{bursts}");
        let bucket = |h: &str, le: f64| {
            s[h]["buckets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| b[0].as_f64() == Some(le))
                .and_then(|b| b[1].as_u64())
        };
        // Each burst is one window of 10 connections in 2 s: 5/s. The 2 s between the end of a
        // burst's window and the next burst hold at most one whole idle window; the whole idle
        // windows (as many as have passed when the dump was written) are observed as 0/s.
        let count = s["connection_rate"]["count"]
            .as_u64()
            .context("rate count")?;
        assert!(count >= 5, "{s}\n{bursts}");
        assert_eq!(
            bucket("connection_rate", 2.0),
            Some(count - 5),
            "{s}\n{bursts}"
        );
        assert_eq!(bucket("connection_rate", 5.0), Some(count), "{s}\n{bursts}");
        // 45 gaps inside bursts (under 1 s), 4 between bursts (over 2.5 s).
        assert_eq!(s["interarrival"]["count"], 49, "{s}\n{bursts}");
        assert_eq!(bucket("interarrival", 1.0), Some(45), "{s}\n{bursts}");
        assert_eq!(bucket("interarrival", 2.5), Some(45), "{s}\n{bursts}");
        vm.shutdown()?;
    }
    Ok(())
}

#[test]
fn ebpf_follows_ip_vs_module_load_and_reload() -> Result<()> {
    if !lab_or_skip("ebpf_follows_ip_vs_module_load_and_reload") {
        return Ok(());
    }
    let dump = ipvs_telemetry_e2e::ebpf_dump_binary()?;
    let unload = "ipvsadm -C; for m in $(awk '/^ip_vs_/{print $1}' /proc/modules); do rmmod $m; done; rmmod ip_vs";
    for k in kernels() {
        eprintln!("kernel {k}");
        let vm = Vm::boot(VmConfig::new(k).file(&dump, "/usr/local/bin/ebpf-dump"))?;
        vm.sh_ok(unload)?;
        let dumper =
            vm.spawn("EBPF_DUMP_OUT=/tmp/e.json exec /usr/local/bin/ebpf-dump --ebpf on")?;
        vm.wait_until(
            "grep -q '\"reason\":\"ip_vs not loaded\"' /tmp/e.json",
            Duration::from_secs(60),
        )?;
        for round in 0..2 {
            // The baseline is read while ip_vs is unloaded, before the (re)load: the count
            // after it must carry over what the previous round counted (0 in round 0, 40
            // after it), so a counter reset by the reload fails the exact match below.
            let before = read_ebpf_dump(&vm, "/tmp/e.json")?;
            let before = match ebpf_kind_total(&before, "events", "new_connection") {
                u64::MAX if round == 0 => 0, // never attached yet: no count at all
                n => n,
            };
            assert_eq!(before, round * 40, "round {round}: carried-over count");
            vm.sh_ok(&format!(
                "modprobe ip_vs && modprobe ip_vs_rr && {SETUP}\n\
                 ip link del d0 2>/dev/null; setup ''"
            ))?;
            vm.wait_until("grep -q '\"up\":true' /tmp/e.json", Duration::from_secs(60))?;
            vm.sh_ok("lab-client udp 10.0.0.1:53 -n 40 --no-reply")?;
            vm.wait_until(
                &format!(
                    "grep -q '\"new_connection\",{}\\]' /tmp/e.json",
                    before + 40
                ),
                Duration::from_secs(30),
            )
            .with_context(|| format!("round {round}: 40 connections not seen"))?;
            // The probe's aya-log message reaches the daemon's log (once per probe instance).
            vm.wait_until(
                &format!(
                    "test $(grep -c 'first connection seen' {}) -ge {}",
                    dumper.log,
                    round + 1
                ),
                Duration::from_secs(30),
            )?;
            vm.sh_ok(unload)?;
            vm.wait_until(
                "grep -q '\"up\":false,.*\"reason\":\"ip_vs not loaded\"' /tmp/e.json",
                Duration::from_secs(30),
            )?;
        }
        vm.shutdown()?;
    }
    Ok(())
}

/// `cargo xtask bench ebpf` part (a), not a test (speed is measured, never asserted): in one VM,
/// connections/s of `lab-client` (short TCP connections) and request/reply exchanges/s of one
/// long-lived NAT UDP flow (packet rate: the state-handler probes fire on every packet) with the
/// probes attached vs detached, alternating A B A B over
/// `IPVS_BENCH_PAIRS` pairs (default 10); medians and their ratio are printed. With
/// `IPVS_BENCH_BASELINE_DUMP` naming another build of `ebpf-dump` (e.g. main's), each round
/// also measures it attached (A C B), for the cost of new probes next to the old figure. Run: `cargo test -p ipvs-telemetry-e2e --test ebpf -- --ignored
/// --nocapture probe_overhead`.
#[test]
#[ignore]
fn probe_overhead() -> Result<()> {
    if !lab_or_skip("probe_overhead") {
        return Ok(());
    }
    let dump = ipvs_telemetry_e2e::ebpf_dump_binary()?;
    for_each_kernel(|k| probe_overhead_on(k, &dump))
}

fn probe_overhead_on(k: ipvs_telemetry_e2e::Kernel, dump: &std::path::Path) -> Result<()> {
    // An older build of ebpf-dump (e.g. main's) to compare with: measured in the same VM, in
    // the same A B C rounds.
    let baseline = std::env::var_os("IPVS_BENCH_BASELINE_DUMP").map(std::path::PathBuf::from);
    let mut config = VmConfig::new(k).file(dump, "/usr/local/bin/ebpf-dump");
    if let Some(b) = &baseline {
        config = config.file(b, "/usr/local/bin/ebpf-dump-baseline");
    }
    let vm = Vm::boot(config)?;
    vm.sh_ok(&format!(
        "{SETUP}\nsysctl -qw net.ipv4.ip_local_port_range='1024 65001' && setup ''"
    ))?;
    // Packet rate: one long-lived UDP flow through a NAT real server in its own namespace, so
    // every request and every reply passes IPVS (and its state-handler probe).
    vm.sh_ok(&format!(
        "set -e\n{DELAYED_BACKEND_SH}backend pr 40 0ms\n\
         ip addr add 10.0.0.5/32 dev d0\n\
         ipvsadm -A -u 10.0.0.5:53 -s rr && ipvsadm -a -u 10.0.0.5:53 -r 10.40.0.2:8053 -m"
    ))?;
    vm.spawn("exec ip netns exec pr lab-server --bind 10.40.0.2 --udp 8053 --name pr")?;
    vm.wait_until(
        "lab-client udp 10.0.0.5:53 --timeout 1s",
        Duration::from_secs(60),
    )?;
    let rate = |cmd: &str| -> Result<f64> {
        let out = vm.sh_ok_timeout(cmd, Duration::from_secs(300))?;
        let field = |name: &str| {
            out.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.trim_end_matches('s').parse::<f64>().ok())
        };
        match (field("ok="), field("errors="), field("elapsed=")) {
            (Some(ok), Some(errors), Some(secs)) if secs > 0.0 => Ok((ok + errors) / secs),
            _ => bail!("unexpected lab-client output: {out}"),
        }
    };
    // Connection rate: every connection is refused by the local real server (no listener):
    // count attempts. Packet rate: 5,000 request/reply exchanges of one IPVS connection.
    let measure = || -> Result<(f64, f64)> {
        Ok((
            rate("lab-client tcp 10.0.0.1:80 -n 5000 --connect-only --allow-errors --timeout 2s")?,
            rate("lab-client udp 10.0.0.5:53 -n 5000 --one-flow --timeout 2s")?,
        ))
    };
    let attached = |binary: &str| -> Result<(f64, f64)> {
        let p = vm.spawn(&format!(
            "EBPF_DUMP_OUT=/tmp/o.json exec /usr/local/bin/{binary} --ebpf on"
        ))?;
        vm.wait_until("grep -q '\"up\":true' /tmp/o.json", Duration::from_secs(60))?;
        let r = measure();
        vm.sh_ok(&format!("kill {} && rm -f /tmp/o.json", p.pid))?;
        r
    };
    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut base = Vec::new();
    let pairs: usize = std::env::var("IPVS_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for _ in 0..pairs {
        off.push(measure()?);
        if baseline.is_some() {
            base.push(attached("ebpf-dump-baseline")?);
        }
        on.push(attached("ebpf-dump")?);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let minmax = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0} / {:.0} / {hi:.0}", median(v))
    };
    for (what, pick) in [
        ("conn/s (short TCP connections)", 0),
        (
            "exchanges/s (one long-lived NAT UDP flow, 2 packets each)",
            1,
        ),
    ] {
        let col = |v: &[(f64, f64)]| -> Vec<f64> {
            v.iter()
                .map(|r| if pick == 0 { r.0 } else { r.1 })
                .collect()
        };
        let (off, on, base) = (col(&off), col(&on), col(&base));
        let ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
        let mut line = format!(
            "ebpf probe overhead (kernel {k}, TCG, {pairs} rounds), {what}: detached min/median/max {}, attached {}, ratio of medians {:.3}, median of round ratios {:.3}",
            minmax(&off),
            minmax(&on),
            median(&on) / median(&off),
            median(&ratios)
        );
        if !base.is_empty() {
            let ratios: Vec<f64> = base.iter().zip(&off).map(|(a, b)| a / b).collect();
            line += &format!(
                "; baseline build attached {}, ratio of medians {:.3}, median of round ratios {:.3}",
                minmax(&base),
                median(&base) / median(&off),
                median(&ratios)
            );
        }
        println!("{line}");
    }
    vm.shutdown()?;
    Ok(())
}

/// The daemon's port in the VM.
const PORT: u16 = 10071;

/// The ipvsadm key ([`Key`]) of a destination series of the daemon.
fn series_key(s: &Sample) -> Key {
    let svc = if s.label("fwmark").is_empty() {
        format!(
            "{} {}:{}",
            s.label("protocol").to_uppercase(),
            bracket(s.label("virtual_address")),
            s.label("virtual_port")
        )
    } else {
        format!("FWM {}", s.label("fwmark"))
    };
    (
        s.label("netns").to_string(),
        format!(
            "{svc} -> {}:{}",
            bracket(s.label("real_address")),
            s.label("real_port")
        ),
    )
}

/// `metric`'s per-destination values, by their full label set.
fn by_labels(samples: &[Sample], metric: &str) -> BTreeMap<BTreeMap<String, String>, u64> {
    samples
        .iter()
        .filter(|s| s.name == metric)
        .map(|s| (s.labels.clone(), s.value as u64))
        .collect()
}

const NETLINK: &str = "ipvs_destination_connections_total";
const EBPF: &str = "ipvs_ebpf_destination_new_connections_total";

/// The daemon itself, as a user runs it: over `/metrics`, each destination's
/// `ipvs_ebpf_destination_new_connections_total` rises exactly as its netlink
/// `ipvs_destination_connections_total` (same label set, so PromQL joins work), which equals
/// ipvsadm's; nothing lost; and a connection shows in the eBPF series before netlink's.
#[test]
fn daemon_ebpf_series_rise_with_netlink_and_ipvsadm() -> Result<()> {
    if !lab_or_skip("daemon_ebpf_series_rise_with_netlink_and_ipvsadm") {
        return Ok(());
    }
    for_each_kernel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon().forward(PORT))?;
        vm.sh_ok(&format!(
            "{SETUP}\nsysctl -qw net.ipv4.ip_local_port_range='1024 65001' && \
             setup '' && ip netns add ns2 && setup 'ip netns exec ns2'"
        ))?;
        let daemon = ipvs_telemetry_e2e::start_daemon(
            &vm,
            PORT,
            "--ebpf on --netns.discover /run/netns --collection.max-age 1s",
        )?;
        let scrape =
            || -> Result<Vec<Sample>> { Ok(exposition::parse(&vm.http_get(PORT, "/metrics")?)) };
        let value = |s: &[Sample], name: &str, label: (&str, &str)| {
            s.iter()
                .find(|x| x.name == name && x.label(label.0) == label.1)
                .map(|x| x.value)
        };
        // Waits until the daemon's netlink series equal ipvsadm's settled counters (and the
        // probes are up): both sides then describe the same moment.
        let settled = || -> Result<(BTreeMap<Key, u64>, Vec<Sample>)> {
            let ipvs = settled_ipvsadm(&vm)?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let s = scrape()?;
                let netlink: BTreeMap<Key, u64> = s
                    .iter()
                    .filter(|x| x.name == NETLINK)
                    .map(|x| (series_key(x), x.value as u64))
                    .collect();
                if netlink == ipvs && value(&s, "ipvs_ebpf_up", ("", "")) == Some(1.0) {
                    return Ok((ipvs, s));
                }
                if std::time::Instant::now() > deadline {
                    let log = vm.sh_ok(&format!("tail -n 20 {}", daemon.log))?;
                    bail!(
                        "the daemon's netlink series never equalled ipvsadm:\n{netlink:?}\n{ipvs:?}\n{log}"
                    );
                }
                vm.sh_ok("sleep 0.5")?;
            }
        };
        let (ipvs0, m0) = settled()?;
        let tcp = |a: &str, n: u32| {
            format!("lab-client tcp {a} -n {n} --connect-only --allow-errors --timeout 2s")
        };
        let udp = |a: &str, n: u32| format!("lab-client udp {a} -n {n} --no-reply --allow-errors");
        vm.sh_ok_timeout(
            &[
                tcp("10.0.0.1:80", 31),
                udp("10.0.0.1:53", 23),
                tcp("[2001:db8::1]:80", 17),
                udp("[2001:db8::1]:53", 9),
                tcp("10.0.0.2:443", 13),
                tcp("10.0.0.3:80", 7),
                format!("ip netns exec ns2 {}", tcp("10.0.0.1:80", 11)),
                format!("ip netns exec ns2 {}", udp("[2001:db8::1]:53", 5)),
                format!("ip netns exec ns2 {}", tcp("10.0.0.2:443", 3)),
            ]
            .join(" && "),
            Duration::from_secs(300),
        )?;
        let (ipvs1, m1) = settled()?;

        // Identical label sets on both series, and equal increases, destination by destination.
        let (n0, n1) = (by_labels(&m0, NETLINK), by_labels(&m1, NETLINK));
        let (e0, e1) = (by_labels(&m0, EBPF), by_labels(&m1, EBPF));
        let mut moved = 0;
        for (labels, &n) in &n1 {
            let key = series_key(&Sample {
                name: NETLINK.into(),
                labels: labels.clone(),
                value: 0.0,
            });
            let netlink = n - n0.get(labels).copied().unwrap_or(0);
            let ipvsadm = ipvs1[&key] - ipvs0.get(&key).copied().unwrap_or(0);
            let ebpf = e1.get(labels).copied().unwrap_or(0) - e0.get(labels).copied().unwrap_or(0);
            eprintln!(
                "kernel {k}: {:4} {:45} ipvsadm +{ipvsadm:3} netlink +{netlink:3} eBPF +{ebpf:3}",
                key.0, key.1
            );
            assert_eq!((netlink, ebpf), (ipvsadm, ipvsadm), "{labels:?}");
            moved += ipvsadm;
        }
        assert_eq!(
            moved,
            31 + 23 + 17 + 9 + 13 + 7 + 11 + 5 + 3,
            "every connection was counted"
        );
        for labels in e1.keys() {
            assert!(
                n1.contains_key(labels),
                "eBPF series without a netlink twin: {labels:?}"
            );
        }
        // Both namespaces, both families, a fwmark service are among them.
        for (label, want) in [
            ("netns", "ns2"),
            ("family", "inet6"),
            ("fwmark", "7"),
            ("protocol", "udp"),
        ] {
            assert!(
                e1.keys()
                    .any(|l| l.get(label).map(String::as_str) == Some(want)),
                "{label}={want}"
            );
        }
        let lost = value(
            &m1,
            "ipvs_ebpf_events_lost_total",
            ("kind", "new_connection"),
        );
        assert_eq!(lost, Some(0.0));
        // Every kernel read of the probes succeeded (failures are counted there, not logged
        // per connection), and ipvs_ebpf_info says the first-response probes are attached.
        for kind in ["new_connection", "first_response"] {
            assert_eq!(
                value(&m1, "ipvs_ebpf_read_errors_total", ("kind", kind)),
                Some(0.0),
                "{kind}"
            );
        }
        assert_eq!(
            value(&m1, "ipvs_ebpf_info", ("first_response", "attached")),
            Some(1.0),
            "{:?}",
            m1.iter().find(|x| x.name == "ipvs_ebpf_info")
        );

        // Freshness: after one connection, the first collection that shows it in the eBPF
        // series still has netlink's old value (the kernel publishes its counters every 2 s).
        // A collection can fall just after an estimator tick: a few tries.
        let total = |s: &[Sample], metric: &str| -> u64 {
            s.iter()
                .filter(|x| {
                    x.name == metric
                        && x.label("netns") == "host"
                        && x.label("protocol") == "tcp"
                        && x.label("virtual_address") == "10.0.0.1"
                })
                .map(|x| x.value as u64)
                .sum()
        };
        let mut shown = None;
        for attempt in 1..=5 {
            let before = scrape()?;
            let (e, n) = (total(&before, EBPF), total(&before, NETLINK));
            vm.sh_ok(&tcp("10.0.0.1:80", 1))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let (e2, n2) = loop {
                let s = scrape()?;
                let e2 = total(&s, EBPF);
                if e2 > e || std::time::Instant::now() > deadline {
                    break (e2, total(&s, NETLINK));
                }
                vm.sh_ok("sleep 0.1")?;
            };
            eprintln!("kernel {k}: freshness try {attempt}: eBPF {e} -> {e2}, netlink {n} -> {n2}");
            assert_eq!(
                e2,
                e + 1,
                "the eBPF series counts the connection within 20 s"
            );
            if n2 == n {
                shown = Some((e, e2, n, n2));
                break;
            }
        }
        let (e, e2, n, n2) = shown.context("netlink moved with eBPF in every try")?;
        eprintln!("kernel {k}: freshness: eBPF {e} -> {e2} while netlink stayed {n} -> {n2}");
        vm.shutdown()?;
        Ok(())
    })
}
