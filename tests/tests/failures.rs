//! Failures as they happen (issue 15), against real kernels (6.1 and 6.12), with `ipvsadm` as
//! the independent truth:
//!
//! - a NAT real server that never answers: its connections end in
//!   `unanswered_connections` (kprobe on `ip_vs_conn_expire`), exactly as many as ipvsadm
//!   scheduled to it, while the healthy ones have every connection in the first-response
//!   histogram and none unanswered; the waiting gauge shows them before they expire;
//! - services without a usable destination: every scheduling attempt counted per service
//!   (kprobe on `ip_vs_scheduler_err`), for UDP over IPv4 and IPv6 and a fwmark service.
//!
//! The eBPF side runs as `ebpf-dump` (the daemon's eBPF code alone, writing JSON).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ipvs_telemetry_e2e::{
    DELAYED_BACKEND_SH, Vm, VmConfig, ebpf_kind_total, for_each_kernel_parallel, lab_or_skip,
    read_ebpf_dump,
};
use serde_json::Value;

fn start_dump(vm: &Vm, out: &str, args: &str) -> Result<String> {
    let p = vm.spawn(&format!(
        "RUST_LOG=info,ipvs_telemetry=debug EBPF_DUMP_OUT={out} exec /usr/local/bin/ebpf-dump --ebpf on {args}"
    ))?;
    vm.wait_until(
        &format!("grep -q '\"up\":true' {out}"),
        Duration::from_secs(60),
    )?;
    Ok(p.log)
}

/// Destination `Conns` of `ipvsadm -Ln --stats --exact`, keyed `"PROT VIP:PORT -> RIP:PORT"`.
fn ipvsadm_conns(text: &str) -> BTreeMap<String, u64> {
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
                    out.insert(format!("{s} -> {dest}"), n);
                }
            }
            _ => {}
        }
    }
    out
}

/// ipvsadm's conns once the estimator has copied them (2 s ticks): two reads 2.5 s apart agree.
fn settled_ipvsadm(vm: &Vm) -> Result<BTreeMap<String, u64>> {
    let mut prev = ipvsadm_conns(&vm.sh_ok("ipvsadm -Ln --stats --exact")?);
    for _ in 0..20 {
        vm.sh_ok("sleep 2.5")?;
        let now = ipvsadm_conns(&vm.sh_ok("ipvsadm -Ln --stats --exact")?);
        if now == prev {
            return Ok(now);
        }
        prev = now;
    }
    bail!("ipvsadm counters did not settle")
}

/// The series of destination `addr:port` of the service with `protocol`.
fn series<'a>(json: &'a Value, protocol: &str, addr: &str, port: u64) -> Option<&'a Value> {
    json["series"].as_array()?.iter().find(|s| {
        let k = &s["key"];
        k["service"]["protocol"] == protocol
            && k["destination"][0] == addr
            && k["destination"][1] == port
    })
}

fn field(s: Option<&Value>, path: &[&str]) -> u64 {
    let mut v = match s {
        Some(v) => v,
        None => return 0,
    };
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or(0)
}

/// Polls the dump until `done` holds (or 150 s pass); returns the last dump.
fn wait_dump(
    vm: &Vm,
    path: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let json = read_ebpf_dump(vm, path)?;
        if done(&json) || Instant::now() > deadline {
            return Ok(json);
        }
        vm.sh_ok("sleep 1")?;
    }
}

/// Three NAT backends behind TCP and UDP services; `be2` loses every packet it sends
/// (`netem loss 100%`), so IPVS schedules to it but never sees a reply.
const DEAD_BACKEND_SETUP: &str = r#"
backend be0 20 1ms
backend be1 21 1ms
backend be2 22 1ms
ip netns exec be2 tc qdisc change dev eth0 root netem loss 100%
ip addr add 10.10.0.1/32 dev lo
ipvsadm -A -t 10.10.0.1:80 -s rr
ipvsadm -A -u 10.10.0.1:53 -s rr
for n in 20 21 22; do
  ipvsadm -a -t 10.10.0.1:80 -r 10.$n.0.2:8080 -m
  ipvsadm -a -u 10.10.0.1:53 -r 10.$n.0.2:8053 -m
done
# Direct routing and tunnelling to hosts that do not exist: never answered, and never through
# the director anyway (the replies of real DR/tunnel servers go straight to the client).
ip addr add 10.10.0.2/32 dev lo
ip addr add 10.10.0.3/32 dev lo
ipvsadm -A -t 10.10.0.2:80 -s rr
ipvsadm -a -t 10.10.0.2:80 -r 10.20.0.3:80 -g
ipvsadm -A -u 10.10.0.2:53 -s rr
ipvsadm -a -u 10.10.0.2:53 -r 10.20.0.3:53 -g
ipvsadm -A -t 10.10.0.3:80 -s rr
ipvsadm -a -t 10.10.0.3:80 -r 10.21.0.3:80 -i
ipvsadm --set 0 0 4
"#;

/// The DR and tunnel destinations of [`DEAD_BACKEND_SETUP`]: (protocol, address, port, the
/// service as ipvsadm names it). Their connections are counted but never wait for a reply, so
/// they never end as unanswered (docs/ebpf.md, "First response").
const NOT_MEASURED: [(&str, &str, u64, &str); 3] = [
    ("tcp", "10.20.0.3", 80, "TCP 10.10.0.2:80"),
    ("udp", "10.20.0.3", 53, "UDP 10.10.0.2:53"),
    ("tcp", "10.21.0.3", 80, "TCP 10.10.0.3:80"),
];

/// Connections per protocol.
const CONNECTIONS: u64 = 30;

/// A NAT real server that drops every reply: after `CONNECTIONS` TCP and UDP connections, its
/// unanswered counter equals what ipvsadm scheduled to it (and its eBPF new-connection count),
/// the healthy destinations have every connection in the first-response histogram and none
/// unanswered. While the dead destination's TCP connections wait (IPVS keeps a `SYN_RECV`
/// entry 60 s), the waiting gauge (`--ebpf.unanswered-after 1s`) counts them. Direct-routing
/// and tunnel destinations that never answer count their connections and nothing else: never
/// waiting, never unanswered (only NAT and local connections are measured).
///
/// Kernel behaviour relied on: `ip_vs_conn_expire` releases each connection (timer, UDP
/// timeout 4 s via `ipvsadm --set`, TCP `SYN_RECV` 60 s after the last SYN).
#[test]
fn unanswered_connections_match_ipvsadm_on_both_kernels() -> Result<()> {
    if !lab_or_skip("unanswered_connections_match_ipvsadm_on_both_kernels") {
        return Ok(());
    }
    let dump = ipvs_telemetry_e2e::ebpf_dump_binary()?;
    for_each_kernel_parallel(|k| {
        let vm = Vm::boot(VmConfig::new(k).file(&dump, "/usr/local/bin/ebpf-dump"))?;
        vm.sh_ok(&format!("set -e\n{DELAYED_BACKEND_SH}{DEAD_BACKEND_SETUP}"))?;
        for (ns, addr) in [
            ("be0", "10.20.0.2"),
            ("be1", "10.21.0.2"),
            ("be2", "10.22.0.2"),
        ] {
            vm.spawn(&format!(
                "exec ip netns exec {ns} lab-server --bind {addr} --tcp 8080 --udp 8053 --name {ns}"
            ))?;
        }
        vm.wait_until(
            "lab-client wait-tcp 10.20.0.2:8080 --timeout 1s && lab-client wait-tcp 10.21.0.2:8080 --timeout 1s",
            Duration::from_secs(60),
        )?;
        let log = start_dump(&vm, "/tmp/u.json", "--ebpf.unanswered-after 1s")?;
        let dump_log = log.clone();
        let text = vm.sh_ok(&format!("cat {log}"))?;
        for line in text
            .lines()
            .filter(|l| l.contains("offsets") || l.contains("probe"))
        {
            eprintln!("{k}: {line}");
        }
        assert!(
            text.contains("unanswered-connection probe attached"),
            "{k}: {text}"
        );
        // One SYN per TCP connection (the client gives up before the 1 s retransmission) and
        // one datagram per UDP socket. The DR and tunnel ones first: they expire before the
        // dead NAT destination's, so once those are counted as unanswered, any event of theirs
        // has been read too.
        let not_measured = vm.sh(&format!(
            "lab-client tcp 10.10.0.2:80 -n {CONNECTIONS} --timeout 300ms; \
             lab-client udp 10.10.0.2:53 -n {CONNECTIONS} --timeout 300ms; \
             lab-client tcp 10.10.0.3:80 -n {CONNECTIONS} --timeout 300ms"
        ))?;
        eprintln!("{k}: DR and tunnel: {}", not_measured.stdout.trim());
        let tcp = vm.sh(&format!(
            "lab-client tcp 10.10.0.1:80 -n {CONNECTIONS} --timeout 300ms"
        ))?;
        let udp = vm.sh(&format!(
            "lab-client udp 10.10.0.1:53 -n {CONNECTIONS} --timeout 300ms"
        ))?;
        eprintln!("{k}: {} / {}", tcp.stdout.trim(), udp.stdout.trim());
        let ipvs = settled_ipvsadm(&vm)?;
        eprintln!("{k}: ipvsadm {ipvs:?}");
        let dead_tcp = ipvs["TCP 10.10.0.1:80 -> 10.22.0.2:8080"];
        let dead_udp = ipvs["UDP 10.10.0.1:53 -> 10.22.0.2:8053"];
        assert!(
            dead_tcp >= CONNECTIONS / 3 && dead_udp >= CONNECTIONS / 3 - 3,
            "{ipvs:?}"
        );

        // Before the TCP SYN_RECV entries expire: the dead destination's connections wait.
        let json = read_ebpf_dump(&vm, "/tmp/u.json")?;
        let dead = series(&json, "tcp", "10.22.0.2", 8080);
        eprintln!(
            "{k}: dead TCP destination while waiting: new {} waiting {} unanswered {}",
            field(dead, &["new_connections"]),
            field(dead, &["waiting"]),
            field(dead, &["unanswered"])
        );
        assert_eq!(field(dead, &["waiting"]), dead_tcp, "{k}: waiting {dead:?}");
        assert_eq!(field(dead, &["new_connections"]), dead_tcp);
        for (proto, addr, port, svc) in NOT_MEASURED {
            let s = series(&json, proto, addr, port);
            let truth = ipvs[&format!("{svc} -> {addr}:{port}")];
            // Not always every attempt: a SYN that matches an earlier connection's entry (same
            // ports) makes none.
            assert!(truth > CONNECTIONS / 2, "{k}: ipvsadm {svc}: {truth}");
            assert_eq!(
                (field(s, &["new_connections"]), field(s, &["waiting"])),
                (truth, 0),
                "{k} {proto} {addr}: (new, waiting) while connections are in the table {s:?}"
            );
        }

        // After the UDP timeout (4 s) and the TCP SYN_RECV timeout (60 s): all released.
        let want = |json: &Value| {
            field(series(json, "tcp", "10.22.0.2", 8080), &["unanswered"]) == dead_tcp
                && field(series(json, "udp", "10.22.0.2", 8053), &["unanswered"]) == dead_udp
        };
        let json = wait_dump(&vm, "/tmp/u.json", Duration::from_secs(240), want)?;
        if !want(&json) {
            eprintln!(
                "{k}: not all released yet; connections left:\n{}",
                vm.sh_ok(&format!(
                    "ipvsadm -Lnc; cat /proc/net/ip_vs_conn; grep -i 'expire\\|warn' {dump_log}"
                ))?
            );
        }
        let left = vm.sh_ok("ipvsadm -Lnc | grep -c ' 10.2[01].0.3:' || true")?;
        assert_eq!(
            left.trim(),
            "0",
            "{k}: DR/tunnel connections not yet expired"
        );
        let ipvs_after = ipvsadm_conns(&vm.sh_ok("ipvsadm -Ln --stats --exact")?);
        assert_eq!(ipvs_after, ipvs, "{k}: traffic after the client stopped");
        let mut failures = Vec::new();
        for (proto, port, vport) in [
            ("tcp", 8080, "TCP 10.10.0.1:80"),
            ("udp", 8053, "UDP 10.10.0.1:53"),
        ] {
            for addr in ["10.20.0.2", "10.21.0.2", "10.22.0.2"] {
                let s = series(&json, proto, addr, port);
                let n = field(s, &["new_connections"]);
                let answered = field(s, &["first_response", "count"]);
                let unanswered = field(s, &["unanswered"]);
                let waiting = field(s, &["waiting"]);
                let truth = ipvs[&format!("{vport} -> {addr}:{port}")];
                eprintln!(
                    "  {k} {proto} {addr}: ipvsadm {truth} new {n} answered {answered} unanswered {unanswered} waiting {waiting}"
                );
                let dead = addr == "10.22.0.2";
                let expect = if dead {
                    (truth, 0, truth, 0)
                } else {
                    (truth, truth, 0, 0)
                };
                if (n, answered, unanswered, waiting) != expect {
                    failures.push(format!(
                        "{k} {proto} {addr}: (new, answered, unanswered, waiting) = {:?}, want {expect:?}",
                        (n, answered, unanswered, waiting)
                    ));
                }
            }
        }
        for (proto, addr, port, svc) in NOT_MEASURED {
            let s = series(&json, proto, addr, port);
            let got = (
                field(s, &["new_connections"]),
                field(s, &["first_response", "count"]),
                field(s, &["unanswered"]),
                field(s, &["waiting"]),
            );
            let truth = ipvs[&format!("{svc} -> {addr}:{port}")];
            eprintln!(
                "  {k} {svc} -> {addr}: ipvsadm {truth}, (new, answered, unanswered, waiting) {got:?}"
            );
            if got != (truth, 0, 0, 0) {
                failures.push(format!(
                    "{k} {svc} -> {addr} (not NAT): (new, answered, unanswered, waiting) = {got:?}, want ({truth}, 0, 0, 0)"
                ));
            }
        }
        for kind in ["new_connection", "first_response", "unanswered"] {
            assert_eq!(
                ebpf_kind_total(&json, "lost", kind),
                0,
                "{k}: lost {kind} events"
            );
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        Ok(())
    })
}

/// Services whose destinations are at weight 0, or all removed, or never added: every new
/// connection attempt is counted for its service, exactly (a UDP client sends one datagram per
/// new socket), for IPv4, IPv6 and a fwmark service.
///
/// Kernel behaviour relied on: every IPVS scheduler calls `ip_vs_scheduler_err` when it finds no
/// destination (the `no destination available` log line).
#[test]
fn unschedulable_attempts_are_counted_on_both_kernels() -> Result<()> {
    if !lab_or_skip("unschedulable_attempts_are_counted_on_both_kernels") {
        return Ok(());
    }
    let dump = ipvs_telemetry_e2e::ebpf_dump_binary()?;
    for_each_kernel_parallel(|k| {
        let vm = Vm::boot(VmConfig::new(k).file(&dump, "/usr/local/bin/ebpf-dump"))?;
        vm.sh_ok(
            "set -e
            ip link add d0 type dummy && ip link set d0 up
            ip addr add 10.30.0.1/32 dev d0 && ip addr add 10.30.0.2/32 dev d0 && ip addr add 10.30.1.1/32 dev d0
            ip -6 addr add 2001:db8:30::1/128 dev d0 nodad
            ipvsadm -A -u 10.30.0.1:53 -s rr && ipvsadm -a -u 10.30.0.1:53 -r 10.30.1.1:5353 -m -w 1
            ipvsadm -A -u [2001:db8:30::1]:53 -s wlc
            iptables -t mangle -A OUTPUT -d 10.30.0.2 -p udp --dport 53 -j MARK --set-mark 9
            ipvsadm -A -f 9 -s lc",
        )?;
        start_dump(&vm, "/tmp/s.json", "")?;
        let udp = |target: &str, n: u64| {
            vm.sh(&format!("lab-client udp {target} -n {n} --timeout 100ms"))
        };
        // The destination works: nothing unschedulable.
        udp("10.30.0.1:53", 5)?;
        // Weight 0, then removed.
        vm.sh_ok("ipvsadm -e -u 10.30.0.1:53 -r 10.30.1.1:5353 -m -w 0")?;
        udp("10.30.0.1:53", 20)?;
        vm.sh_ok("ipvsadm -d -u 10.30.0.1:53 -r 10.30.1.1:5353")?;
        udp("10.30.0.1:53", 15)?;
        // Never had one: IPv6, fwmark.
        udp("[2001:db8:30::1]:53", 12)?;
        udp("10.30.0.2:53", 7)?;
        let ipvs = vm.sh_ok("ipvsadm -Ln --stats --exact")?;
        let want = [
            ("udp", Some("10.30.0.1"), 35),
            ("udp", Some("2001:db8:30::1"), 12),
            ("", None, 7),
        ];
        let of = |json: &Value, proto: &str, addr: Option<&str>| -> u64 {
            json["unschedulable"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| {
                    let svc = &e[0]["service"];
                    match addr {
                        Some(a) => svc["protocol"] == proto && svc["address"] == a,
                        None => svc["mark"] == 9,
                    }
                })
                .and_then(|e| e[1].as_u64())
                .unwrap_or(0)
        };
        let json = wait_dump(&vm, "/tmp/s.json", Duration::from_secs(30), |j| {
            want.iter().all(|(p, a, n)| of(j, p, *a) == *n)
        })?;
        for (p, a, n) in want {
            eprintln!(
                "  {k} {p} {a:?}: unschedulable {} (want {n})",
                of(&json, p, a)
            );
            assert_eq!(
                of(&json, p, a),
                n,
                "{k} {p} {a:?}: {}\n{ipvs}",
                json["unschedulable"]
            );
        }
        assert_eq!(
            json["unschedulable"].as_array().map(Vec::len),
            Some(3),
            "{json}"
        );
        assert_eq!(ebpf_kind_total(&json, "lost", "unschedulable"), 0);
        Ok(())
    })
}

/// Two directors joined by a veth: the root namespace runs the IPVS sync daemon as master
/// (sync id 9), namespace `bk` as backup with the same service table. The info series are
/// right on both (`ipvs-telemetry snapshot`), and for every destination the backup's connections
/// created from sync messages equal the master's new connections (TCP connections are synced
/// once established; both counts are eBPF's, and ipvsadm's `Conns` on the master is the truth
/// for the master's side).
///
/// Kernel behaviour relied on: `ip_vs_proc_conn` on the backup creates each synced connection
/// with `ip_vs_conn_new(..., IP_VS_CONN_F_SYNC, dest)`, `dest` found in the backup's own table.
#[test]
fn backup_synced_connections_equal_master_new_ones_on_both_kernels() -> Result<()> {
    if !lab_or_skip("backup_synced_connections_equal_master_new_ones_on_both_kernels") {
        return Ok(());
    }
    let dump = ipvs_telemetry_e2e::ebpf_dump_binary()?;
    for_each_kernel_parallel(|k| {
        let vm = Vm::boot(
            VmConfig::new(k)
                .with_daemon()
                .file(&dump, "/usr/local/bin/ebpf-dump"),
        )?;
        vm.sh_ok(&format!(
            "set -e\n{DELAYED_BACKEND_SH}
backend be0 20 1ms
backend be1 21 1ms
ip addr add 10.10.0.1/32 dev lo
ip netns add bk
ip link add vbk type veth peer name eth0 netns bk
ip addr add 10.40.0.1/24 dev vbk && ip link set vbk up
ip -n bk addr add 10.40.0.2/24 dev eth0 && ip -n bk link set eth0 up && ip -n bk link set lo up
for ns in '' 'ip netns exec bk'; do
  $ns ipvsadm -A -t 10.10.0.1:80 -s rr
  $ns ipvsadm -a -t 10.10.0.1:80 -r 10.20.0.2:8080 -m
  $ns ipvsadm -a -t 10.10.0.1:80 -r 10.21.0.2:8080 -m
done
ipvsadm --start-daemon master --mcast-interface vbk --syncid 9
ip netns exec bk ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 9
"
        ))?;
        for (ns, addr) in [("be0", "10.20.0.2"), ("be1", "10.21.0.2")] {
            vm.spawn(&format!(
                "exec ip netns exec {ns} lab-server --bind {addr} --tcp 8080 --name {ns}"
            ))?;
        }
        vm.wait_until(
            "lab-client wait-tcp 10.20.0.2:8080 --timeout 1s && lab-client wait-tcp 10.21.0.2:8080 --timeout 1s",
            Duration::from_secs(60),
        )?;
        let info = vm.sh_ok(
            "ipvs-telemetry snapshot --format prometheus --netns.discover /run/netns | grep '^ipvs_sync_daemon_info'",
        )?;
        eprintln!("{k}: {}", info.trim().replace('\n', " | "));
        for want in [
            r#"ipvs_sync_daemon_info{netns="host",role="master",interface="vbk",sync_id="9"} 1"#,
            r#"ipvs_sync_daemon_info{netns="bk",role="backup",interface="eth0",sync_id="9"} 1"#,
        ] {
            assert!(info.lines().any(|l| l == want), "{k}: no {want} in {info}");
        }
        assert_eq!(info.lines().count(), 2, "{k}: {info}");
        let bk: u64 = vm.sh_ok("stat -L -c %i /run/netns/bk")?.trim().parse()?;
        start_dump(&vm, "/tmp/y.json", "")?;
        vm.sh_ok("lab-client tcp 10.10.0.1:80 -n 40 --timeout 5s")?;
        let ipvs = settled_ipvsadm(&vm)?;
        let per_dest = |json: &Value, addr: &str, backup: bool| -> (u64, u64) {
            let s = json["series"].as_array().into_iter().flatten().find(|s| {
                let k = &s["key"];
                (k["netns_inode"].as_u64() == Some(bk)) == backup
                    && k["destination"][0] == addr
                    && k["service"]["port"] == 80
            });
            (field(s, &["new_connections"]), field(s, &["synced"]))
        };
        let done = |json: &Value| {
            ["10.20.0.2", "10.21.0.2"].iter().all(|a| {
                per_dest(json, a, true).1 == ipvs[&format!("TCP 10.10.0.1:80 -> {a}:8080")]
            })
        };
        let json = wait_dump(&vm, "/tmp/y.json", Duration::from_secs(60), done)?;
        for a in ["10.20.0.2", "10.21.0.2"] {
            let truth = ipvs[&format!("TCP 10.10.0.1:80 -> {a}:8080")];
            let (m_new, m_synced) = per_dest(&json, a, false);
            let (b_new, b_synced) = per_dest(&json, a, true);
            eprintln!(
                "  {k} {a}: ipvsadm (master) {truth}; master new {m_new} synced {m_synced}; backup new {b_new} synced {b_synced}"
            );
            assert_eq!(
                (m_new, m_synced, b_new, b_synced),
                (truth, 0, 0, truth),
                "{k} {a}"
            );
        }
        assert_eq!(ebpf_kind_total(&json, "lost", "synced"), 0);
        Ok(())
    })
}
