//! The names file (`--names.file`) in the lab: services and destinations programmed with
//! `ipvsadm` (IPv4 and IPv6, a VIP, a fwmark service of each family, one in an OpenStack-like
//! `qrouter-` namespace) get the names of the file's entries (CIDR, fwmark, IPv6, netns
//! pattern) as `ipvs_*_name_info` series on exactly the labels of their counters; a changed
//! file renames them, a broken file keeps the previous names, logs one line and counts, SIGHUP
//! reloads, and an invalid file at start is exit status 2 with one line.
//!
//! Relies on per-namespace IPVS and IPv6 IPVS services (every lab kernel).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use ipvs_telemetry_e2e::exposition::{self, Sample};
use ipvs_telemetry_e2e::{
    Kernel, Vm, VmConfig, for_each_kernel_parallel, lab_or_skip, start_daemon,
};

const PORT: u16 = 10054;
const FILE: &str = "/etc/ipvs-telemetry/names.yml";

/// IPVS services: a VIP with two real servers, an IPv6 VIP, fwmark 7 in both families, a
/// service no entry names, and a VIP inside namespace `qrouter-4f1c`.
const SETUP: &str = "set -e
ipvsadm -A -t 10.10.0.1:80 -s rr
ipvsadm -a -t 10.10.0.1:80 -r 10.20.0.5:8080 -m
ipvsadm -a -t 10.10.0.1:80 -r 10.20.0.6:8080 -m
ipvsadm -A -u [2001:db8::53]:53 -s rr
ipvsadm -a -u [2001:db8::53]:53 -r [2001:db8:1::5]:53 -m
ipvsadm -A -f 7 -s rr
ipvsadm -a -f 7 -r 10.20.0.7:0 -m
ipvsadm -A -f 7 -6 -s rr -p 60 -M 128
ipvsadm -a -f 7 -6 -r [2001:db8:1::7]:0 -m
ipvsadm -A -t 10.99.0.1:443 -s rr
ip netns add qrouter-4f1c
ip -n qrouter-4f1c link set lo up
ip netns exec qrouter-4f1c ipvsadm -A -t 10.10.0.1:80 -s rr
ip netns exec qrouter-4f1c ipvsadm -a -t 10.10.0.1:80 -r 10.30.0.2:80 -m
mkdir -p /etc/ipvs-telemetry
";

/// The first names file; `{WEB}` is the name of the 10.10.0.0/24 web service.
const NAMES: &str = "\
services:
  - netns: 'qrouter-.*'
    address: 10.10.0.0/24
    name: router-web
    namespace: tenant-a
    labels: { router: 4f1c }
  - netns: host
    address: 10.10.0.0/24
    port: 80
    protocol: tcp
    name: {WEB}
    namespace: shop
    labels: { team: edge, tier: front }
  - address: 2001:db8::/64
    name: dns-v6
  - fwmark: 7
    family: inet6
    name: mark7-v6
  - fwmark: 7
    name: mark7-v4
destinations:
  - address: 10.20.0.0/24
    port: 8080
    name: web-backend
  - address: 2001:db8:1::/64
    name: v6-backend
";

fn names(web: &str) -> String {
    NAMES.replace("{WEB}", web)
}

/// Writes the names file the way an editor or a configuration manager does: a new file renamed
/// over the old one.
fn install(vm: &Vm, text: &str) -> Result<()> {
    vm.write_file(&format!("{FILE}.new"), text.as_bytes())?;
    vm.sh_ok(&format!("mv {FILE}.new {FILE}"))?;
    Ok(())
}

fn scrape(vm: &Vm) -> Result<Vec<Sample>> {
    Ok(exposition::parse(&vm.http_get(PORT, "/metrics")?))
}

/// `(netns, service key, name, namespace, extra labels)` of every `ipvs_service_name_info`;
/// the key is `proto vip:port` or `fwm MARK family`.
fn service_names(s: &[Sample]) -> BTreeSet<(String, String, String, String, String)> {
    s.iter()
        .filter(|x| x.name == "ipvs_service_name_info")
        .map(|x| {
            let key = if x.label("fwmark").is_empty() {
                format!(
                    "{} {}:{}",
                    x.label("protocol"),
                    x.label("virtual_address"),
                    x.label("virtual_port")
                )
            } else {
                format!("fwm {} {}", x.label("fwmark"), x.label("family"))
            };
            (
                x.label("netns").to_string(),
                key,
                x.label("name").to_string(),
                x.label("namespace").to_string(),
                extra(x),
            )
        })
        .collect()
}

/// The labels of a name series beyond the series' own and `source`/`name`/`namespace`.
fn extra(x: &Sample) -> String {
    const KNOWN: &[&str] = &[
        "netns",
        "family",
        "protocol",
        "virtual_address",
        "virtual_port",
        "fwmark",
        "real_address",
        "real_port",
        "source",
        "name",
        "namespace",
    ];
    x.labels
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `(netns, fwmark or vip, real address, name)` of every `ipvs_destination_name_info`.
fn destination_names(s: &[Sample]) -> BTreeSet<(String, String, String, String)> {
    s.iter()
        .filter(|x| x.name == "ipvs_destination_name_info")
        .map(|x| {
            let svc = if x.label("fwmark").is_empty() {
                x.label("virtual_address").to_string()
            } else {
                format!("fwm {}", x.label("fwmark"))
            };
            (
                x.label("netns").to_string(),
                svc,
                x.label("real_address").to_string(),
                x.label("name").to_string(),
            )
        })
        .collect()
}

fn value(s: &[Sample], name: &str) -> Option<f64> {
    s.iter().find(|x| x.name == name).map(|x| x.value)
}

/// Waits until `cond` holds for a scrape; returns that scrape.
fn wait_scrape(vm: &Vm, what: &str, cond: impl Fn(&[Sample]) -> bool) -> Result<Vec<Sample>> {
    let t = Instant::now();
    loop {
        let s = scrape(vm).unwrap_or_default();
        if cond(&s) {
            return Ok(s);
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!(
                "{what}: not within 30 s; names: {:#?} {:#?}",
                service_names(&s),
                destination_names(&s)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn t(a: &str, b: &str, c: &str, d: &str, e: &str) -> (String, String, String, String, String) {
    (a.into(), b.into(), c.into(), d.into(), e.into())
}

fn expected_services(web: &str) -> BTreeSet<(String, String, String, String, String)> {
    [
        t(
            "host",
            "tcp 10.10.0.1:80",
            web,
            "shop",
            "team=edge,tier=front",
        ),
        t("host", "udp 2001:db8::53:53", "dns-v6", "", ""),
        t("host", "fwm 7 inet", "mark7-v4", "", ""),
        t("host", "fwm 7 inet6", "mark7-v6", "", ""),
        t(
            "qrouter-4f1c",
            "tcp 10.10.0.1:80",
            "router-web",
            "tenant-a",
            "router=4f1c",
        ),
    ]
    .into_iter()
    .collect()
}

fn expected_destinations() -> BTreeSet<(String, String, String, String)> {
    let d = |a: &str, b: &str, c: &str, n: &str| (a.into(), b.into(), c.into(), n.into());
    [
        d("host", "10.10.0.1", "10.20.0.5", "web-backend"),
        d("host", "10.10.0.1", "10.20.0.6", "web-backend"),
        d("host", "2001:db8::53", "2001:db8:1::5", "v6-backend"),
        d("host", "fwm 7", "2001:db8:1::7", "v6-backend"),
    ]
    .into_iter()
    .collect()
}

/// The names file end to end, both kernels at once.
#[test]
fn names_file_names_services_and_survives_bad_reloads() -> Result<()> {
    if !lab_or_skip("names_file_names_services_and_survives_bad_reloads") {
        return Ok(());
    }
    ipvs_lab::binaries::daemon_binary()?;
    for_each_kernel_parallel(names_on)
}

fn names_on(k: Kernel) -> Result<()> {
    let vm = Vm::boot(VmConfig::new(k).with_daemon().forward(PORT))?;
    vm.sh_ok(SETUP)?;

    // Invalid at start: exit 2, one line naming the line and the key.
    vm.write_file(
        "/tmp/bad.yml",
        b"services:\n  - port: 80\n    name: x\n  - fwmark: 7\n    nmae: y\n",
    )?;
    let out = vm.sh("ipvs-telemetry --names.file /tmp/bad.yml --ebpf off")?;
    assert_eq!(out.status, 2, "{out:?}");
    let err: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert!(
        err[0].contains("line 5") && err[0].contains("unknown field `nmae`"),
        "{err:?}"
    );

    install(&vm, &names("web"))?;
    let daemon = start_daemon(
        &vm,
        PORT,
        &format!(
            "--names.file {FILE} --netns.discover /run/netns --ebpf off --collection.max-age 1s"
        ),
    )?;
    let s = wait_scrape(&vm, "first names", |s| {
        service_names(s) == expected_services("web")
    })?;
    ensure!(
        destination_names(&s) == expected_destinations(),
        "kernel {k}: {:#?}",
        destination_names(&s)
    );
    // Every name series carries exactly the labels of a counter series, plus its own.
    for x in s.iter().filter(|x| x.name.ends_with("_name_info")) {
        let counter = if x.name == "ipvs_service_name_info" {
            "ipvs_service_connections_total"
        } else {
            "ipvs_destination_connections_total"
        };
        let mut own = x.labels.clone();
        own.retain(|k, _| {
            !["source", "name", "namespace", "team", "tier", "router"].contains(&k.as_str())
        });
        assert!(
            s.iter().any(|c| c.name == counter && c.labels == own),
            "no {counter} with the labels of {x:?}"
        );
        assert_eq!(x.label("source"), "file");
        assert_eq!(x.value, 1.0);
    }
    assert_eq!(
        value(&s, "ipvs_names_file_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "ipvs_names_file_reload_failures_total"),
        Some(0.0)
    );
    let counters_before: BTreeSet<_> = s
        .iter()
        .filter(|x| x.name == "ipvs_service_connections_total")
        .map(|x| x.labels.clone())
        .collect();

    // A changed file renames the service; the counter series stay the same.
    install(&vm, &names("storefront"))?;
    let s = wait_scrape(&vm, "renamed", |s| {
        service_names(s) == expected_services("storefront")
    })?;
    let counters_after: BTreeSet<_> = s
        .iter()
        .filter(|x| x.name == "ipvs_service_connections_total")
        .map(|x| x.labels.clone())
        .collect();
    assert_eq!(counters_before, counters_after);

    // A broken file: the previous names stay, one log line names line and key, one failure.
    install(
        &vm,
        &names("broken").replace("    port: 80\n", "    port: eighty\n"),
    )?;
    let s = wait_scrape(&vm, "failed reload counted", |s| {
        value(s, "ipvs_names_file_reload_failures_total") == Some(1.0)
    })?;
    assert_eq!(service_names(&s), expected_services("storefront"));
    assert_eq!(
        value(&s, "ipvs_names_file_last_reload_successful"),
        Some(0.0)
    );
    // A few more polls: the unchanged broken file is neither read nor logged again.
    std::thread::sleep(Duration::from_secs(3));
    let s = scrape(&vm)?;
    assert_eq!(
        value(&s, "ipvs_names_file_reload_failures_total"),
        Some(1.0)
    );
    let log = vm.sh_ok(&format!("cat {}", daemon.log))?;
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("names file is invalid"))
        .collect();
    assert_eq!(bad.len(), 1, "{log}");
    assert!(
        bad[0].contains("line 9") && bad[0].contains("services[1].port"),
        "{}",
        bad[0]
    );

    // SIGHUP reads the (fixed) file again.
    install(&vm, &names("shop-web"))?;
    vm.sh_ok(&format!("kill -HUP {}", daemon.pid))?;
    let s = wait_scrape(&vm, "reloaded after SIGHUP", |s| {
        service_names(s) == expected_services("shop-web")
    })?;
    assert_eq!(
        value(&s, "ipvs_names_file_last_reload_successful"),
        Some(1.0)
    );
    vm.wait_until(
        &format!(
            "grep -q 'reloaded the names file.*reason=SIGHUP' {}",
            daemon.log
        ),
        Duration::from_secs(10),
    )?;
    // No Docker namespace, no Docker series.
    assert!(!s.iter().any(|x| x.name.starts_with("ipvs_names_docker")));
    eprintln!("kernel {k}: names file OK");
    Ok(())
}
