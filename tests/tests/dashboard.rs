//! The Grafana dashboard and the Prometheus rules against the real daemon: a real Prometheus on
//! the host scrapes the daemon in the lab (6.1 and 6.12) every second while traffic flows, with
//! the shipped rules evaluated every second, and every PromQL expression of the dashboard
//! (panel queries and variable queries, template variables substituted as in
//! `common/promql.rs`) and of the rules runs against Prometheus' HTTP API: each one must parse
//! (HTTP 200) and return at least one finite sample, all of them in the same round of queries
//! (polled until then, with a deadline). Prometheus must have loaded exactly the rules of the
//! file, all evaluating without error, and the staged alerts (below) must be active on the
//! objects staged. `promtool check rules` passes first.
//!
//! The names file names some services and real servers, so that the dashboard's name joins
//! (the service variable, the legends, the names table) return names, not only their
//! fallbacks.
//!
//! The lab is a director with traffic, not a stand-in: the root namespace balances to three
//! NAT real servers in namespaces (`be0` 1 ms, `be1` 5 ms, `be2` 700 ms of `tc netem` delay on
//! their egress, so the first-response histograms fill), a second director namespace `lb2` has
//! its own service, and `lab-client`s send TCP and UDP requests at a steady rate for the whole
//! test. Seven of the eight alerts have a real cause in it, as an operator would meet it:
//! - IpvsNamespaceUnreadable: `--netns stale=/run/stale-netns` names a plain file, as left
//!   behind when a namespace is unmounted;
//! - IpvsFirstResponseSlow: `be2` answers after 700 ms, above the 0.5 s p99 threshold;
//! - IpvsDestinationStarved: a source-hashing (`sh`) service with one client address sends
//!   every connection to one of its two real servers of weight 1;
//! - IpvsServiceAllDestinationsQuiesced: a service whose two real servers have weight 0
//!   (`ipvs_service_available_destinations` 0 from the real kernel);
//! - IpvsServiceUnschedulable: clients keep connecting to that quiesced service;
//! - IpvsDestinationUnanswered: `be3` drops every packet it sends (`netem loss 100%`) while it
//!   stays in the pool of its service;
//! - IpvsSyncBackupDrift: the root namespace is the sync master (sync id 5) and `lb2` its
//!   backup (same service table for 10.10.0.1:80, sync over the veth); once Prometheus has seen
//!   the backup create connections from sync messages, the master's sync daemon is stopped.
//!
//! The eighth, IpvsEbpfEventsLost, fires only when the ring buffer overflows, which a healthy
//! lab cannot stage: its expression must parse, and without its `> 0` threshold (the lost-event
//! counters it reads) it must return data ([`THRESHOLD_REMOVED`]). The test prints which
//! expressions were treated so.
//!
//! Both ways Prometheus can store the histograms are covered on each kernel: two Prometheus
//! scrape the same daemon at the same time, one as shipped (text scrapes, classic `_bucket`
//! series), one with `--enable-feature=native-histograms` (protobuf scrapes, native histograms
//! only), and every check above runs against each; each must have stored every eBPF histogram
//! family the way it is about. The dashboard and rules fall back from one to the other, so
//! every query returns data in both.
//!
//! Rate windows: Grafana's `$__rate_interval` and `$__interval` become `1m` (see
//! `common/promql.rs`), at least 60 samples of the 1 s scrapes.

#[path = "common/prometheus.rs"]
mod prometheus;
#[path = "common/promql.rs"]
mod promql;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ipvs_telemetry_e2e::{
    DELAYED_BACKEND_SH, Kernel, Vm, VmConfig, for_each_kernel, lab_or_skip, skip, start_daemon,
};
use prometheus::{Prometheus, TempDir, has_data, has_finite_value, series_count};
use serde_json::Value;

const PORT: u16 = 10054;

/// A query to run: (where it comes from, PromQL).
type Query = (String, String);

/// Alerts whose condition is false in a healthy lab, so that their expression is evaluated
/// without its threshold comparison (`promql::without_threshold`), with the reason.
const THRESHOLD_REMOVED: &[(&str, &str)] = &[(
    "IpvsEbpfEventsLost",
    "the ring buffer does not overflow in a healthy lab",
)];

/// Alerts the scenario stages for real, with a label each must carry in Prometheus' alert list
/// (pending or firing): the object the scenario made faulty.
const STAGED: &[(&str, &str, &str)] = &[
    ("IpvsNamespaceUnreadable", "netns", "stale"),
    ("IpvsFirstResponseSlow", "real_address", "10.22.0.2"),
    ("IpvsDestinationStarved", "virtual_address", "10.10.0.3"),
    (
        "IpvsServiceAllDestinationsQuiesced",
        "virtual_address",
        "10.10.0.4",
    ),
    ("IpvsServiceUnschedulable", "virtual_address", "10.10.0.4"),
    ("IpvsDestinationUnanswered", "real_address", "10.23.0.2"),
    ("IpvsSyncBackupDrift", "sync_id", "5"),
];

/// How long the data may take to be there (first scrapes, 1m windows filling, recording rules
/// evaluated on top of recording rules) under TCG on a shared host.
const DEADLINE: Duration = Duration::from_secs(300);

/// Backends `be0`..`be2` (NAT real servers in namespaces, delayed by netem), services on VIPs
/// 10.10.0.1-4 in the root namespace, the director namespace `lb2` with its own service, and
/// the leftover namespace file `/run/stale-netns`.
const SETUP: &str = r#"
backend be0 20 1ms
backend be1 21 5ms
backend be2 22 700ms
backend be3 23 1ms
ip netns exec be3 tc qdisc change dev eth0 root netem loss 100%
for i in 1 2 3 4 5; do ip addr add 10.10.0.$i/32 dev lo; done
# The main service, TCP and UDP; be2 is quiesced (weight 0) in the TCP one.
ipvsadm -A -t 10.10.0.1:80 -s wrr
ipvsadm -a -t 10.10.0.1:80 -r 10.20.0.2:8080 -m -w 1
ipvsadm -a -t 10.10.0.1:80 -r 10.21.0.2:8080 -m -w 2
ipvsadm -a -t 10.10.0.1:80 -r 10.22.0.2:8080 -m -w 0
ipvsadm -A -u 10.10.0.1:53 -s rr
ipvsadm -a -u 10.10.0.1:53 -r 10.20.0.2:8053 -m
ipvsadm -a -u 10.10.0.1:53 -r 10.21.0.2:8053 -m
# A slow real server (be2, 700 ms).
ipvsadm -A -t 10.10.0.2:80 -s rr
ipvsadm -a -t 10.10.0.2:80 -r 10.20.0.2:8080 -m
ipvsadm -a -t 10.10.0.2:80 -r 10.22.0.2:8080 -m
# Source hashing with a single client address: one of the two real servers gets nothing.
ipvsadm -A -t 10.10.0.3:80 -s sh
ipvsadm -a -t 10.10.0.3:80 -r 10.20.0.2:8080 -m
ipvsadm -a -t 10.10.0.3:80 -r 10.21.0.2:8080 -m
# Every real server quiesced.
ipvsadm -A -t 10.10.0.4:80 -s wrr
ipvsadm -a -t 10.10.0.4:80 -r 10.20.0.2:8080 -m -w 0
ipvsadm -a -t 10.10.0.4:80 -r 10.21.0.2:8080 -m -w 0
# A real server that answers nothing (be3) next to one that does.
ipvsadm -A -t 10.10.0.5:80 -s rr
ipvsadm -a -t 10.10.0.5:80 -r 10.20.0.2:8080 -m
ipvsadm -a -t 10.10.0.5:80 -r 10.23.0.2:8080 -m
# A second director namespace with its own service (local real server).
ip netns add lb2
ip link add vlb2 type veth peer name eth0 netns lb2
ip addr add 10.30.0.2/24 dev vlb2 && ip link set vlb2 up
ip -n lb2 link set lo up
ip -n lb2 addr add 10.30.0.1/24 dev eth0 && ip -n lb2 link set eth0 up
ip netns exec lb2 ipvsadm -A -t 10.30.0.1:80 -s rr
ip netns exec lb2 ipvsadm -a -t 10.30.0.1:80 -r 10.30.0.1:80 -m
# lb2 is the sync backup of the root namespace for 10.10.0.1:80 (same service table).
ip netns exec lb2 ipvsadm -A -t 10.10.0.1:80 -s wrr
for n in 20 21 22; do ip netns exec lb2 ipvsadm -a -t 10.10.0.1:80 -r 10.$n.0.2:8080 -m; done
ipvsadm --start-daemon master --mcast-interface vlb2 --syncid 5
ip netns exec lb2 ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 5
# A namespace file left behind after its namespace was unmounted.
touch /run/stale-netns
# Names for the dashboard's name joins (service variable, legends, the names table).
mkdir -p /etc/ipvs-telemetry
cat > /etc/ipvs-telemetry/names.yml <<'EOF'
services:
  - { netns: host, address: 10.10.0.1, port: 80, protocol: tcp, name: web, namespace: shop }
  - { netns: lb2, address: 10.30.0.0/24, name: edge }
destinations:
  - { address: 10.20.0.2, name: be0 }
  - { address: 10.21.0.2, name: be1 }
EOF
"#;

/// The daemon's arguments: the eBPF probes required, every namespace of `/run/netns`, the
/// stale file and the names file; the estimator gauges for the panel that compares them.
const DAEMON_ARGS: &str = "--ebpf on --collection.max-age 1s --metrics.estimator \
                           --netns.discover /run/netns --netns stale=/run/stale-netns \
                           --names.file /etc/ipvs-telemetry/names.yml";

/// The background traffic, one `lab-client` each, for far longer than the test runs.
const TRAFFIC: &[&str] = &[
    "lab-client tcp 10.10.0.1:80 -n 1000000 --rate 10 -c 2 --timeout 5s --allow-errors",
    "lab-client udp 10.10.0.1:53 -n 1000000 --rate 10 -c 2 --timeout 5s --allow-errors",
    // be2's answers take 1.4 s (SYN-ACK and reply delayed): enough in flight for 4/s.
    "lab-client tcp 10.10.0.2:80 -n 1000000 --rate 4 -c 12 --timeout 5s --allow-errors",
    "lab-client tcp 10.10.0.3:80 -n 1000000 --rate 5 -c 2 --timeout 5s --allow-errors",
    "lab-client tcp 10.30.0.1:80 -n 1000000 --rate 5 -c 2 --timeout 5s --allow-errors",
    // Every real server quiesced: each attempt is refused (ICMP port unreachable).
    "lab-client tcp 10.10.0.4:80 -n 1000000 --rate 2 -c 1 --timeout 5s --allow-errors",
    // Half of these go to be3, which never answers.
    "lab-client tcp 10.10.0.5:80 -n 1000000 --rate 4 -c 4 --timeout 1s --allow-errors",
];

#[test]
fn every_dashboard_and_rule_expression_returns_data_from_the_daemon() -> Result<()> {
    let test = "every_dashboard_and_rule_expression_returns_data_from_the_daemon";
    let tools = [
        skip::tool("prometheus", "prometheus"),
        skip::tool("promtool", "prometheus"),
    ];
    if !lab_or_skip(test) || !skip::require(test, &tools) {
        return Ok(());
    }
    let promtool = promql::promtool_check_rules()?;
    eprintln!(
        "promtool check rules: {}",
        promtool.trim().replace('\n', " | ")
    );

    let expressions = promql::all_expressions()?;
    let (checks, treated) = checks(&expressions)?;
    eprintln!(
        "{} expressions ({} dashboard, {} rules); threshold removed for: {treated:?}",
        expressions.len(),
        expressions
            .iter()
            .filter(|(s, _)| s.starts_with("dashboard"))
            .count(),
        expressions
            .iter()
            .filter(|(s, _)| s.starts_with(promql::RULES))
            .count(),
    );

    let mut runtimes = Vec::new();
    for_each_kernel(|k| {
        let start = Instant::now();
        let (boot, checked) = run_on(k, &expressions, &checks)?;
        runtimes.push(format!(
            "kernel {k}: {:.0?} in all (waiting for a VM slot included), VM boot {boot:.0?}, \
             scenario and checks {checked:.0?}",
            start.elapsed()
        ));
        Ok(())
    })?;
    eprintln!("{}", runtimes.join("\n"));
    Ok(())
}

/// The queries to run: every expression as is, except the alerts of [`THRESHOLD_REMOVED`],
/// which run without their threshold. Also returns the sources so treated.
fn checks(expressions: &[Query]) -> Result<(Vec<Query>, Vec<String>)> {
    let mut checks = Vec::new();
    let mut treated = Vec::new();
    for (source, expr) in expressions {
        let removed = promql::alert_name(source)
            .and_then(|name| THRESHOLD_REMOVED.iter().find(|(a, _)| *a == name));
        if let Some((_, why)) = removed {
            let bare = promql::without_threshold(expr)
                .with_context(|| format!("{source} has no threshold to remove: {expr}"))?;
            checks.push((format!("{source} (threshold removed)"), bare));
            treated.push(format!("{source} ({why})"));
        } else {
            checks.push((source.clone(), expr.clone()));
        }
    }
    let named = THRESHOLD_REMOVED
        .iter()
        .map(|(a, _)| *a)
        .chain(STAGED.iter().map(|(a, _, _)| *a));
    for alert in named {
        ensure!(
            expressions
                .iter()
                .any(|(s, _)| promql::alert_name(s) == Some(alert)),
            "alert {alert} is not in {}",
            promql::RULES
        );
    }
    // Every query of the dashboard is checked: as many panel queries as `expr` keys anywhere
    // in its JSON, one per query variable (the rules are matched against promtool's count and Prometheus' own list).
    fn exprs(v: &Value) -> usize {
        match v {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| usize::from(k == "expr" && v.is_string()) + exprs(v))
                .sum(),
            Value::Array(a) => a.iter().map(exprs).sum(),
            _ => 0,
        }
    }
    let dashboard = promql::load_dashboard()?;
    let in_json = exprs(&dashboard);
    let query_variables = promql::variables(&dashboard)
        .iter()
        .filter(|v| v["type"] == "query")
        .count();
    let variable_queries = expressions
        .iter()
        .filter(|(s, _)| s.starts_with("dashboard variable"))
        .count();
    ensure!(
        variable_queries == query_variables,
        "{variable_queries} variable queries read, {query_variables} query variables in {}",
        promql::DASHBOARD
    );
    let panel_queries = expressions
        .iter()
        .filter(|(s, _)| s.starts_with("dashboard panel"))
        .count();
    ensure!(
        panel_queries == in_json && in_json > 0,
        "{panel_queries} panel queries read, {in_json} `expr` keys in {}",
        promql::DASHBOARD
    );
    let alerts = expressions
        .iter()
        .filter(|(s, _)| promql::is_alert(s))
        .count();
    ensure!(
        alerts == THRESHOLD_REMOVED.len() + STAGED.len(),
        "{alerts} alerts in {}: each must be staged (STAGED) or treated (THRESHOLD_REMOVED)",
        promql::RULES
    );
    Ok((checks, treated))
}

/// The whole check on kernel `k`; returns the VM's boot time and the time taken after it.
fn run_on(k: Kernel, expressions: &[Query], checks: &[Query]) -> Result<(Duration, Duration)> {
    let vm = Vm::boot(VmConfig::new(k).with_daemon().forward(PORT))?;
    let booted = Instant::now();
    vm.sh_ok(&format!("set -e\n{DELAYED_BACKEND_SH}{SETUP}"))?;
    for (ns, addr) in [
        ("be0", "10.20.0.2"),
        ("be1", "10.21.0.2"),
        ("be2", "10.22.0.2"),
        ("be3", "10.23.0.2"),
    ] {
        vm.spawn(&format!(
            "exec ip netns exec {ns} lab-server --bind {addr} --tcp 8080 --udp 8053 --name {ns}"
        ))?;
    }
    vm.spawn("exec ip netns exec lb2 lab-server --bind 10.30.0.1 --tcp 80 --name lb2")?;
    vm.wait_until(
        "lab-client wait-tcp 10.20.0.2:8080 --timeout 1s && \
         lab-client wait-tcp 10.21.0.2:8080 --timeout 1s && \
         ip netns exec be2 lab-client wait-tcp 10.22.0.2:8080 --timeout 1s && \
         ip netns exec be3 lab-client wait-tcp 10.23.0.2:8080 --timeout 1s && \
         lab-client wait-tcp 10.30.0.1:80 --timeout 1s",
        Duration::from_secs(60),
    )?;
    let daemon = start_daemon(&vm, PORT, DAEMON_ARGS)?;
    let mut clients = Vec::new();
    for cmd in TRAFFIC {
        clients.push(vm.spawn(&format!("exec {cmd}"))?);
    }

    let dir = TempDir::new("ipvs-telemetry-dashboard")?;
    let rules = promql::rules_evaluated_every(dir.path(), "1s")?;
    let target = format!("127.0.0.1:{}", vm.host_port(PORT));
    let config = prometheus::config(&[rules], &[target], "1s");
    // Both ways Prometheus stores the histograms, from the same daemon at the same time.
    let classic = Prometheus::start(&config)?;
    let native = Prometheus::start_with(&config, &["--enable-feature=native-histograms"])?;
    let setups = [(Setup::Classic, &classic), (Setup::Native, &native)];

    // The sync fault: once both have seen the master and the backup creating connections from
    // its sync messages, the master's sync daemon stops while its clients go on.
    let synced_seen = Instant::now();
    for (setup, prom) in setups {
        loop {
            let (_, master) = prom.query(r#"ipvs_sync_daemon_info{role="master",sync_id="5"}"#)?;
            let (_, synced) = prom
                .query(r#"sum(ipvs_ebpf_destination_synced_connections_total{netns="lb2"}) > 0"#)?;
            if has_finite_value(&master) && has_finite_value(&synced) {
                break;
            }
            ensure!(
                synced_seen.elapsed() < DEADLINE,
                "{setup}: the backup lb2 created no connection from sync messages: {}",
                vm.sh("ip netns exec lb2 ipvsadm -Lnc; ipvsadm -L --daemon; ip netns exec lb2 ipvsadm -L --daemon")?.stdout
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    vm.sh_ok("ipvsadm --stop-daemon master")?;
    eprintln!(
        "kernel {k}: backup synced connections seen after {:.0?}; master sync daemon stopped",
        synced_seen.elapsed()
    );

    let started = Instant::now();
    let mut problems = Vec::new();
    let mut with_data = Vec::new();
    for (setup, prom) in setups {
        let (n, p) = check_setup(k, setup, prom, expressions, checks, started)?;
        with_data.push(format!("{setup} {n} of {}", checks.len()));
        problems.extend(p.into_iter().map(|p| format!("{setup}: {p}")));
    }

    if !problems.is_empty() {
        let diag = vm
            .sh(&format!(
                "ipvsadm -Ln --stats --exact; ip netns exec lb2 ipvsadm -Ln --stats --exact; \
                 tail -n 20 {}; for f in {}; do echo == $f; cat $f; done",
                daemon.log,
                clients
                    .iter()
                    .map(|c| c.log.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
            .map(|o| o.stdout)
            .unwrap_or_default();
        anyhow::bail!(
            "{} problems on kernel {k} (queries with data: {}):\n{}\n\nin the VM:\n{diag}\nclassic prometheus log:\n{}\nnative prometheus log:\n{}",
            problems.len(),
            with_data.join(", "),
            problems.join("\n"),
            classic.log(),
            native.log()
        );
    }
    let boot = vm.boot_time();
    let _ = vm.shutdown();
    Ok((boot, booted.elapsed()))
}

/// How a Prometheus stores the histograms it scrapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// As shipped: text scrapes, classic `_bucket` series.
    Classic,
    /// `--enable-feature=native-histograms`: protobuf scrapes, native histograms only.
    Native,
}

impl std::fmt::Display for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setup::Classic => "classic",
            Setup::Native => "native",
        })
    }
}

/// Every check against one Prometheus: rounds of every query until one round where all of them
/// return data, the treated alerts' own expressions, the rules loaded, the staged alerts, how
/// the histograms are stored, the target's health. Returns how many queries returned data and
/// the problems found.
fn check_setup(
    k: Kernel,
    setup: Setup,
    prom: &Prometheus,
    expressions: &[Query],
    checks: &[Query],
    started: Instant,
) -> Result<(usize, Vec<String>)> {
    // Rounds of every query until one round where all of them return data at once (an
    // alert's condition may hold for a moment before it holds for good, e.g. while the
    // increase over a young series hovers around its threshold), or the deadline.
    let answers = loop {
        let answers = checks
            .iter()
            .map(|(_, expr)| prom.query(expr))
            .collect::<Result<Vec<_>>>()?;
        let all = answers
            .iter()
            .all(|(status, json)| *status == 200 && has_finite_value(json));
        if all || started.elapsed() > DEADLINE {
            break answers;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let waited = started.elapsed();

    // What each query returned (series count and first value), for the record.
    let mut report = Vec::new();
    let mut problems = Vec::new();
    for ((source, expr), (status, json)) in checks.iter().zip(&answers) {
        let data = *status == 200 && has_finite_value(json);
        if !data {
            problems.push(format!(
                "{source}: no data after {DEADLINE:?}: HTTP {status} {json}\n    {expr}"
            ));
        }
        report.push(format!(
            "  {} {source}: HTTP {status}, {} series, e.g. {}",
            if data { "ok  " } else { "FAIL" },
            series_count(json),
            first_sample(json)
        ));
    }
    let with_data = checks.len() - problems.len();
    eprintln!(
        "kernel {k}, {setup} histograms: {with_data} of {} queries returned data in the same round ({waited:.0?} after the checks started):\n{}",
        checks.len(),
        report.join("\n")
    );

    // The treated alerts' own expressions parse, and say whether they fire.
    for (source, expr) in expressions {
        if !checks
            .iter()
            .any(|(s, _)| *s == format!("{source} (threshold removed)"))
        {
            continue;
        }
        match prom.query(expr)? {
            (200, json) if json["status"] == "success" => eprintln!(
                "  {source} as shipped: parses, {} series (fires only when events are lost)",
                series_count(&json)
            ),
            (status, json) => problems.push(format!("{source}: HTTP {status} {json}\n    {expr}")),
        }
    }
    // The rules Prometheus loaded are the ones read, and all evaluate without error.
    problems.extend(promql::loaded_rule_problems(&prom.api("/api/v1/rules")?)?);
    // The staged alerts are pending or firing on the object the scenario made faulty (the
    // alerting rules run on their own 1 s schedule, after the queries above saw the data).
    let missing = |alerts: &Value| -> Vec<String> {
        STAGED
            .iter()
            .filter(|(name, label, value)| {
                !alerts["data"]["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["labels"]["alertname"] == *name && a["labels"][*label] == *value)
            })
            .map(|(name, label, value)| format!("{name} for {label}={value:?}"))
            .collect()
    };
    let alerts = loop {
        let alerts = prom.api("/api/v1/alerts")?;
        if missing(&alerts).is_empty() || started.elapsed() > DEADLINE {
            break alerts;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let not_active = missing(&alerts);
    if not_active.is_empty() {
        eprintln!(
            "  staged alerts active (pending) after {:.0?}: {}",
            started.elapsed(),
            STAGED
                .iter()
                .map(|(name, label, value)| format!("{name} ({label}={value})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for m in not_active {
        problems.push(format!(
            "alert {m} is not active; active alerts: {}",
            alerts["data"]["alerts"]
        ));
    }
    // The histograms are stored the way this setup is about: every eBPF histogram family
    // native (a `histogram` sample, no `_bucket` series) or classic (the reverse); and the
    // target is healthy. Polled for a while: one scrape that times out on the loaded host
    // marks every series stale until the next one.
    let until = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let mut found = Vec::new();
        for family in HISTOGRAMS {
            let (_, stored) = prom.query(family)?;
            let (_, buckets) = prom.query(&format!("count({family}_bucket)"))?;
            let (native_stored, classic_stored) = (has_data(&stored), has_finite_value(&buckets));
            let native = setup == Setup::Native;
            if (native_stored, classic_stored) != (native, !native) {
                found.push(format!(
                    "{family} stored native: {native_stored}, classic: {classic_stored}"
                ));
            }
        }
        let targets = prom.api("/api/v1/targets?state=active")?;
        let t = &targets["data"]["activeTargets"][0];
        if t["health"] != "up" {
            found.push(format!("the daemon's target is not up: {t}"));
        }
        if found.is_empty() || Instant::now() > until {
            break found;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    problems.extend(last);
    Ok((with_data, problems))
}

/// The eBPF histogram families.
const HISTOGRAMS: &[&str] = &[
    "ipvs_ebpf_destination_first_response_seconds",
    "ipvs_ebpf_destination_connection_interarrival_seconds",
    "ipvs_ebpf_destination_connection_rate_per_second",
];

/// The first sample of an answer, as `{labels} value`, shortened.
fn first_sample(json: &Value) -> String {
    let result = &json["data"]["result"];
    let text = match json["data"]["resultType"].as_str() {
        Some("scalar") => result[1].to_string(),
        _ => {
            let s = &result[0];
            format!("{} {}", s["metric"], s["value"][1])
        }
    };
    text.chars().take(160).collect()
}
