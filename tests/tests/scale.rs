//! The collection model of docs/sizing.md against a real kernel, with `ipvsadm` as the truth:
//! scrapes drive the netlink collections (none while nobody scrapes), the eBPF series are read
//! at scrape time whatever the collection's age, and the large-table mode keeps every
//! per-service value exact.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use ipvs_telemetry_e2e::exposition::{self, Sample};
use ipvs_telemetry_e2e::{Vm, VmConfig, for_each_kernel_parallel, lab_or_skip, start_daemon};

const PORT: u16 = 10054;

/// TCP, UDP, IPv6, fwmark and persistent NAT services; the real servers do not exist (the
/// clients only need IPVS to schedule their connections).
const SETUP: &str = r#"
ip link add d0 type dummy && ip link set d0 up && ip link set lo up
for a in 10.0.0.1 10.0.0.2 10.0.0.3 10.0.1.1 10.0.1.2; do ip addr add $a/32 dev d0; done
for a in 2001:db8::1 2001:db8:1::1; do ip -6 addr add $a/128 dev d0 nodad; done
ipvsadm -A -t 10.0.0.1:80 -s rr
ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m; ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 0
ipvsadm -A -u 10.0.0.1:53 -s rr
ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.1:5353 -m; ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.2:5353 -m
ipvsadm -A -t [2001:db8::1]:80 -s rr; ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8:1::1]:8080 -m
ipvsadm -A -t 10.0.0.3:80 -s rr -p 300; ipvsadm -a -t 10.0.0.3:80 -r 10.0.1.1:8081 -m -x 5
iptables -t mangle -A OUTPUT -d 10.0.0.2 -p tcp --dport 443 -j MARK --set-mark 7
ipvsadm -A -f 7 -s rr; ipvsadm -a -f 7 -r 10.0.1.1:8443 -m; ipvsadm -a -f 7 -r 10.0.1.2:8443 -m
"#;

/// Traffic: TCP and UDP connections through every kind of service.
fn traffic(tcp: u32, udp: u32) -> String {
    [
        format!("lab-client tcp 10.0.0.1:80 -n {tcp} --connect-only --allow-errors --timeout 2s"),
        format!("lab-client udp 10.0.0.1:53 -n {udp} --no-reply --allow-errors"),
        "lab-client tcp [2001:db8::1]:80 -n 3 --connect-only --allow-errors --timeout 2s".into(),
        "lab-client tcp 10.0.0.2:443 -n 4 --connect-only --allow-errors --timeout 2s".into(),
        "lab-client tcp 10.0.0.3:80 -n 2 --connect-only --allow-errors --timeout 2s".into(),
    ]
    .join(" && ")
}

/// `ipvsadm -Ln --stats --exact`: (services' `Conns` in order, destinations' `Conns` in order,
/// destinations per service).
#[derive(Debug, PartialEq)]
struct Ipvsadm {
    services: Vec<u64>,
    destinations: Vec<u64>,
    per_service: Vec<usize>,
}

/// [`ipvsadm_now`] once it stopped moving: the kernel publishes its counters with the 2-second
/// estimator, so two reads 2.5 s apart that agree are the settled values.
fn ipvsadm(vm: &Vm) -> Result<Ipvsadm> {
    let mut last = ipvsadm_now(vm)?;
    for _ in 0..20 {
        vm.sh_ok("sleep 2.5")?;
        let now = ipvsadm_now(vm)?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    bail!("ipvsadm's counters never settled: {last:?}")
}

fn ipvsadm_now(vm: &Vm) -> Result<Ipvsadm> {
    let text = vm.sh_ok("ipvsadm -Ln --stats --exact")?;
    let mut out = Ipvsadm {
        services: vec![],
        destinations: vec![],
        per_service: vec![],
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["TCP" | "UDP" | "FWM", _, conns, ..] => {
                out.services.push(conns.parse()?);
                out.per_service.push(0);
            }
            ["->", _, conns, ..] if conns.parse::<u64>().is_ok() => {
                out.destinations.push(conns.parse()?);
                if let Some(n) = out.per_service.last_mut() {
                    *n += 1;
                }
            }
            _ => {}
        }
    }
    out.services.sort();
    out.destinations.sort();
    out.per_service.sort();
    Ok(out)
}

/// The same figures as the daemon serves them.
fn served(s: &[Sample]) -> Ipvsadm {
    let sorted = |name: &str| {
        let mut v: Vec<u64> = s
            .iter()
            .filter(|x| x.name == name)
            .map(|x| x.value as u64)
            .collect();
        v.sort();
        v
    };
    Ipvsadm {
        services: sorted("ipvs_service_connections_total"),
        destinations: sorted("ipvs_destination_connections_total"),
        per_service: sorted("ipvs_service_destinations")
            .into_iter()
            .map(|n| n as usize)
            .collect(),
    }
}

fn sum(s: &[Sample], name: &str) -> u64 {
    s.iter()
        .filter(|x| x.name == name)
        .map(|x| x.value as u64)
        .sum()
}

fn value(s: &[Sample], name: &str) -> Option<f64> {
    s.iter().find(|x| x.name == name).map(|x| x.value)
}

/// The daemon's CPU time (user + system) in clock ticks.
fn cpu_ticks(vm: &Vm, pid: u32) -> Result<u64> {
    let stat = vm.sh_ok(&format!("cat /proc/{pid}/stat"))?;
    // After the command name in parentheses: field 14 and 15 (utime, stime) overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    ensure!(f.len() > 13, "short /proc/{pid}/stat: {stat}");
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// Collections the daemon logged (`--log.level debug`).
fn collections(vm: &Vm, log: &str) -> Result<u64> {
    let n = vm.sh_ok(&format!(
        "grep -cE 'msg=\"?collected\"?( |$)' {log} || true"
    ))?;
    Ok(n.trim().parse().unwrap_or(0))
}

fn wait_for(vm: &Vm, what: &str, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ok()? {
        if std::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        vm.sh_ok("sleep 0.2")?;
    }
    Ok(())
}

/// With nobody scraping for a minute the daemon makes no netlink collection and spends almost
/// no CPU; the first scrape after that collects and equals ipvsadm. Then, at the slowest cadence
/// the daemon allows (`--collection.max-age 1h`), connections made just before a scrape are all
/// in that scrape's eBPF series while its netlink series stay those of the old collection.
#[test]
fn scrapes_drive_collections_and_ebpf_is_read_at_scrape_time() -> Result<()> {
    if !lab_or_skip("scrapes_drive_collections_and_ebpf_is_read_at_scrape_time") {
        return Ok(());
    }
    for_each_kernel_parallel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon().forward(PORT))?;
        vm.sh_ok(SETUP)?;
        vm.sh_ok_timeout(&traffic(20, 10), Duration::from_secs(300))?;

        // Idle: only the start-up collection, then none for a minute.
        let d = start_daemon(&vm, PORT, "--ebpf on --log.level debug")?;
        wait_for(&vm, "the start-up collection", || {
            Ok(collections(&vm, &d.log)? >= 1)
        })?;
        let (n0, cpu0) = (collections(&vm, &d.log)?, cpu_ticks(&vm, d.pid)?);
        vm.sh_ok_timeout("sleep 60", Duration::from_secs(120))?;
        let (n1, cpu1) = (collections(&vm, &d.log)?, cpu_ticks(&vm, d.pid)?);
        let hz: u64 = vm.sh_ok("getconf CLK_TCK || echo 100")?.trim().parse()?;
        let cpu_s = (cpu1 - cpu0) as f64 / hz as f64;
        eprintln!(
            "kernel {k}: idle minute: {} collections, {cpu_s:.2} CPU-s (eBPF consumer only)",
            n1 - n0
        );
        ensure!(n1 == n0, "{} collections while nobody scraped", n1 - n0);
        ensure!(cpu_s < 3.0, "{cpu_s:.2} CPU-s in an idle minute");
        let m = exposition::parse(&vm.http_get(PORT, "/metrics")?);
        ensure!(
            collections(&vm, &d.log)? == n1 + 1,
            "the first scrape after the idle minute did not collect once"
        );
        let truth = ipvsadm(&vm)?;
        ensure!(served(&m) == truth, "{:?} != ipvsadm {truth:?}", served(&m));
        vm.sh_ok(&format!("kill {}", d.pid))?;
        wait_for(&vm, "the daemon to stop", || {
            Ok(vm.sh(&format!("kill -0 {}", d.pid))?.status != 0)
        })?;

        // The slowest cadence: one collection an hour at most.
        start_daemon(&vm, PORT, "--ebpf on --collection.max-age 1h")?;
        let mut m0 = Vec::new();
        wait_for(&vm, "the probes", || {
            m0 = exposition::parse(&vm.http_get(PORT, "/metrics")?);
            Ok(value(&m0, "ipvs_ebpf_up") == Some(1.0))
        })?;
        let before = ipvsadm(&vm)?;
        vm.sh_ok_timeout(&traffic(31, 17), Duration::from_secs(300))?;
        let m1 = exposition::parse(&vm.http_get(PORT, "/metrics")?);
        let after = ipvsadm(&vm)?;
        let made = after.destinations.iter().sum::<u64>() - before.destinations.iter().sum::<u64>();
        let ebpf = sum(&m1, "ipvs_ebpf_destination_new_connections_total")
            - sum(&m0, "ipvs_ebpf_destination_new_connections_total");
        let netlink = sum(&m1, "ipvs_destination_connections_total")
            - sum(&m0, "ipvs_destination_connections_total");
        let lost = sum(&m1, "ipvs_ebpf_events_lost_total");
        eprintln!(
            "kernel {k}: max-age 1h: ipvsadm +{made}, eBPF +{ebpf} (lost {lost}), netlink +{netlink}"
        );
        ensure!(made == 31 + 17 + 3 + 4 + 2, "ipvsadm counted {made}");
        ensure!(ebpf == made && lost == 0, "eBPF +{ebpf}, lost {lost}");
        ensure!(
            netlink == 0,
            "a collection ran although the last one is recent"
        );
        ensure!(
            value(&m0, "ipvs_last_collection_timestamp_seconds")
                == value(&m1, "ipvs_last_collection_timestamp_seconds"),
            "the collection changed"
        );
        Ok(())
    })
}

/// A steady scraper (one every 4 s, from one address) has its cadence learned: its scrapes are
/// then answered from collections begun ahead of them (`ipvs_telemetry_scrapes_precollected`
/// counts them), with values still equal to ipvsadm; with `--collection.ahead false` none is.
#[test]
fn a_steady_scraper_is_served_from_collections_begun_ahead() -> Result<()> {
    if !lab_or_skip("a_steady_scraper_is_served_from_collections_begun_ahead") {
        return Ok(());
    }
    const INTERVAL: Duration = Duration::from_secs(4);
    for_each_kernel_parallel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon().forward(PORT))?;
        vm.sh_ok(SETUP)?;
        vm.sh_ok_timeout(&traffic(5, 3), Duration::from_secs(300))?;
        let truth = ipvsadm(&vm)?;
        for ahead in [true, false] {
            let d = start_daemon(&vm, PORT, &format!("--ebpf off --collection.ahead {ahead}"))?;
            vm.wait_until(
                &format!("wget -q -O /dev/null http://127.0.0.1:{PORT}/-/ready"),
                Duration::from_secs(120),
            )?;
            // Scrapes on a fixed schedule (start times, as Prometheus keeps them) until three
            // were served from a collection begun ahead, or twelve scrapes.
            let t0 = std::time::Instant::now();
            let mut pre = 0.0;
            let mut last = Vec::new();
            for i in 0..12u32 {
                if let Some(wait) = (INTERVAL * i).checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
                last = exposition::parse(&vm.http_get(PORT, "/metrics")?);
                pre = value(&last, "ipvs_telemetry_scrapes_precollected_total").unwrap_or(-1.0);
                if pre >= 3.0 {
                    break;
                }
            }
            eprintln!(
                "kernel {k}: --collection.ahead {ahead}: {pre} scrapes served from a collection begun ahead"
            );
            if ahead {
                ensure!(
                    pre >= 3.0,
                    "only {pre} scrapes served from a collection begun ahead"
                );
            } else {
                ensure!(
                    pre == 0.0,
                    "{pre} scrapes pre-collected with --collection.ahead false"
                );
            }
            ensure!(
                served(&last) == truth,
                "{:?} != ipvsadm {truth:?}",
                served(&last)
            );
            vm.sh_ok(&format!("kill {}", d.pid))?;
            wait_for(&vm, "the daemon to stop", || {
                Ok(vm.sh(&format!("kill -0 {}", d.pid))?.status != 0)
            })?;
        }
        Ok(())
    })
}

/// The large-table mode and the series cap keep every per-service value equal to ipvsadm;
/// the destination counts say how many destinations there are and how many can be scheduled.
#[test]
fn large_table_mode_and_cap_keep_service_values_exact() -> Result<()> {
    if !lab_or_skip("large_table_mode_and_cap_keep_service_values_exact") {
        return Ok(());
    }
    for_each_kernel_parallel(|k| {
        let vm = Vm::boot(VmConfig::new(k).with_daemon().forward(PORT))?;
        vm.sh_ok(SETUP)?;
        vm.sh_ok_timeout(&traffic(9, 5), Duration::from_secs(300))?;
        let truth = ipvsadm(&vm)?;
        for (args, dest_series) in [
            ("--metrics.destinations none", Some(0)),
            // 10.0.0.1:80 (2 destinations) and 10.0.0.3:80 (1); not UDP, IPv6 or the fwmark.
            (
                "--metrics.destinations vip=10.0.0.0/30,protocol=tcp",
                Some(3),
            ),
            // Room for the 5 services (9 series each) and 4 of the 8 destinations (12 each).
            ("--metrics.max-series 93", None),
            (
                "--metrics.estimator --metrics.exclude destination.info,service.info",
                None,
            ),
        ] {
            let d = start_daemon(&vm, PORT, args)?;
            let m = exposition::parse(&vm.http_get(PORT, "/metrics")?);
            let got = served(&m);
            let dests = m
                .iter()
                .filter(|x| x.name == "ipvs_destination_connections_total")
                .count();
            eprintln!("kernel {k}: {args}: {dests} destinations with series");
            ensure!(
                got.services == truth.services,
                "{args}: {got:?} vs {truth:?}"
            );
            ensure!(
                got.per_service == truth.per_service,
                "{args}: {got:?} vs {truth:?}"
            );
            match dest_series {
                Some(n) => ensure!(dests == n, "{args}: {dests} destinations"),
                None if args.contains("max-series") => {
                    ensure!(dests < truth.destinations.len(), "{args}: nothing dropped");
                    ensure!(
                        sum(&m, "ipvs_telemetry_series_dropped") > 0,
                        "{args}: ipvs_telemetry_series_dropped says nothing"
                    );
                }
                None => ensure!(got == truth, "{args}: {got:?} vs {truth:?}"),
            }
            // Available: weight above 0 (one destination of 10.0.0.1:80 is at weight 0).
            let available: BTreeMap<String, u64> = m
                .iter()
                .filter(|x| x.name == "ipvs_service_available_destinations")
                .map(|x| {
                    (
                        x.label("virtual_address").to_string()
                            + ":"
                            + x.label("virtual_port")
                            + "/"
                            + x.label("protocol"),
                        x.value as u64,
                    )
                })
                .collect();
            ensure!(
                available.get("10.0.0.1:80/tcp") == Some(&1),
                "{args}: available {available:?}"
            );
            if args.contains("estimator") {
                ensure!(
                    m.iter()
                        .any(|x| x.name == "ipvs_destination_estimated_connections_per_second"),
                    "{args}: no estimator gauges"
                );
                ensure!(!m.iter().any(|x| x.name == "ipvs_destination_info"));
            } else {
                ensure!(!m.iter().any(|x| x.name.contains("_estimated_")));
            }
            vm.sh_ok(&format!("kill {}", d.pid))?;
            wait_for(&vm, "the daemon to stop", || {
                Ok(vm.sh(&format!("kill -0 {}", d.pid))?.status != 0)
            })?;
        }
        Ok(())
    })
}
