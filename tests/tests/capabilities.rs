//! Least privilege, with the daemon itself: `ipvs-telemetry serve` started by `capsh` as an
//! unprivileged user (uid 65534) holding exactly the documented capabilities as ambient
//! capabilities (`CAP_NET_ADMIN`, `CAP_SYS_ADMIN`, `CAP_BPF`, `CAP_PERFMON`, and `CAP_NET_RAW`,
//! which only Swarm's legacy iptables rules need and tests/tests/swarm.rs covers;
//! docs/deploy.md, deploy/ipvs-telemetry.service) serves every series — netlink ones of the host namespace and
//! of a foreign namespace, and the eBPF ones — with the right values; with one capability
//! dropped at a time it keeps serving what it still can, and its log and the reason of the
//! affected metric name the missing capability.
//!
//! One VM per kernel, the daemon started eight times in it:
//!
//! | held | `perf_event_paranoid` | expected |
//! |---|---|---|
//! | all five | 3 | everything, both namespaces, eBPF counts = traffic |
//! | all but `CAP_NET_ADMIN` | 3 | `ipvs_up 0` everywhere, `reason="missing_cap_net_admin"`; eBPF still attached |
//! | all but `CAP_SYS_ADMIN` | 3 | host served; `blue` `ipvs_up 0`, `reason="missing_cap_sys_admin"`; eBPF off, `reason="missing CAP_SYS_ADMIN (perf_event_paranoid 3)"` |
//! | all but `CAP_BPF` | 3 | everything: `CAP_SYS_ADMIN` grants what `CAP_BPF` does |
//! | all but `CAP_PERFMON` | 3 | everything: `CAP_SYS_ADMIN` grants what `CAP_PERFMON` does |
//! | `CAP_NET_ADMIN`, `CAP_BPF`, `CAP_PERFMON` | 2 | the set for the daemon's own namespace: everything of the host namespace, eBPF included |
//! | `CAP_NET_ADMIN`, `CAP_PERFMON` | 2 | that set without `CAP_BPF`: netlink served, `ipvs_ebpf_up 0`, `reason="missing CAP_BPF"`; `--ebpf on` refuses to start |
//! | `CAP_NET_ADMIN`, `CAP_BPF` | 2 | the same for `CAP_PERFMON` |
//!
//! Relies on: Debian's kernels (the lab's) defaulting to `kernel.perf_event_paranoid=3`, a
//! Debian patch under which `perf_event_open` needs `CAP_SYS_ADMIN` (`CAP_PERFMON` suffices at
//! 2, the upstream default); the kernel's `bpf_capable()`/`perfmon_capable()` accepting
//! `CAP_SYS_ADMIN` in place of `CAP_BPF`/`CAP_PERFMON` (which is why the last two cases drop
//! from the set for the daemon's own namespace); IPVS checking `CAP_NET_ADMIN` on every generic
//! netlink command (`GENL_ADMIN_PERM`); `setns()` needing `CAP_SYS_ADMIN`; netlink counters
//! refreshed by the estimator every 2 s.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipvs_telemetry_e2e::contract;
use ipvs_telemetry_e2e::exposition::{self, Sample};
use ipvs_telemetry_e2e::{
    Spawned, Vm, VmConfig, for_each_kernel, lab_or_skip, start_daemon_wrapped,
};

/// One scrape of the daemon, parsed, with lookups by name and labels.
struct Metrics(Vec<Sample>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics(exposition::parse(text))
    }

    /// The samples of `name` whose labels include every `(label, value)` of `labels`.
    fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0
            .iter()
            .filter(move |s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
    }

    /// The sum of the samples of `name` matching `labels`; `None` when none matches.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name, labels)
            .map(|s| s.value)
            .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
    }

    /// Whether some sample of `name` matches `labels`.
    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples(name, labels).next().is_some()
    }
}

/// The daemon's port in the VM (forwarded to the host).
const PORT: u16 = 10054;
/// The unprivileged user and group the daemon runs as.
const NOBODY: u32 = 65534;
/// Connections made to the host's service, and to `blue`'s, in each run.
const HOST_CONNS: u64 = 12;
const BLUE_CONNS: u64 = 7;
/// Deadline for a condition on the daemon's metrics (estimator ticks, TCG).
const SETTLE: Duration = Duration::from_secs(60);
/// `ipvs_ebpf_info` reason when only `CAP_SYS_ADMIN` may open perf events.
const PARANOID_REASON: &str = "missing CAP_SYS_ADMIN (perf_event_paranoid 3)";

/// A capability as capsh names it, its number and the name the daemon prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cap {
    capsh: &'static str,
    bit: u32,
    name: &'static str,
}

const NET_ADMIN: Cap = Cap {
    capsh: "cap_net_admin",
    bit: 12,
    name: "CAP_NET_ADMIN",
};
const SYS_ADMIN: Cap = Cap {
    capsh: "cap_sys_admin",
    bit: 21,
    name: "CAP_SYS_ADMIN",
};
const PERFMON: Cap = Cap {
    capsh: "cap_perfmon",
    bit: 38,
    name: "CAP_PERFMON",
};
const BPF: Cap = Cap {
    capsh: "cap_bpf",
    bit: 39,
    name: "CAP_BPF",
};
/// Only for Swarm's legacy iptables rules (tests/tests/swarm.rs); not in the daemon's
/// `effective capabilities` line.
const NET_RAW: Cap = Cap {
    capsh: "cap_net_raw",
    bit: 13,
    name: "CAP_NET_RAW",
};

/// The documented set (docs/deploy.md, the systemd unit, the DaemonSet, the Containerfile).
const DOCUMENTED: [Cap; 5] = [NET_ADMIN, SYS_ADMIN, BPF, PERFMON, NET_RAW];

fn without(set: &[Cap], drop: Cap) -> Vec<Cap> {
    set.iter().copied().filter(|c| *c != drop).collect()
}

fn mask(set: &[Cap]) -> u64 {
    set.iter().fold(0, |m, c| m | (1u64 << c.bit))
}

/// A shell command running `cmd` (a shell command) as uid/gid 65534 with exactly `keep` as
/// ambient (so effective and permitted) capabilities and as bounding set: what systemd's
/// `DynamicUser=yes` with `AmbientCapabilities=`/`CapabilityBoundingSet=` gives.
fn under_capsh(keep: &[Cap], cmd: &str) -> String {
    let names: Vec<&str> = keep.iter().map(|c| c.capsh).collect();
    let list = names.join(",");
    format!(
        "exec capsh --drop=$(capsh --print | sed -n 's/^Bounding set =//p' | tr ',' '\\n' | grep -vxE '{}' | paste -sd, -) \
         --caps='{list}+eip cap_setpcap,cap_setuid,cap_setgid+ep' --keep=1 \
         --groups={NOBODY} --gid={NOBODY} --uid={NOBODY} --addamb={list} \
         --shell=/bin/sh -- -c '{cmd}'",
        names.join("|")
    )
}

/// The host's and `blue`'s services: one TCP service each, balanced to a local server.
const SETUP: &str = "
set -e
ip addr add 10.200.0.1/32 dev lo
ipvsadm -A -t 10.200.0.1:80 -s rr
ipvsadm -a -t 10.200.0.1:80 -r 10.200.0.1:80 -m
ip netns add blue
ip link add h1 type veth peer name n0 netns blue
ip addr add 10.1.0.2/24 dev h1; ip link set h1 up
ip -n blue link set lo up
ip -n blue addr add 10.1.0.1/24 dev n0; ip -n blue link set n0 up
ip netns exec blue ipvsadm -A -t 10.1.0.1:80 -s rr
ip netns exec blue ipvsadm -a -t 10.1.0.1:80 -r 10.1.0.1:80 -m
";

/// The scenario's state across runs: connections made so far, per namespace.
struct Lab {
    vm: Vm,
    host_total: u64,
    blue_total: u64,
}

impl Lab {
    fn boot(k: ipvs_telemetry_e2e::Kernel) -> Result<Lab> {
        let vm = Vm::boot(VmConfig::new(k).forward(PORT).with_daemon())?;
        vm.sh_ok(SETUP).context("setting up the services")?;
        // Debian's kernels (the lab's) default to 3: only CAP_SYS_ADMIN may open perf events.
        let paranoid = vm.sh_ok("cat /proc/sys/kernel/perf_event_paranoid")?;
        ensure!(
            paranoid.trim() == "3",
            "perf_event_paranoid {paranoid:?}, expected Debian's default 3"
        );
        vm.spawn("exec lab-server --tcp 80 --name host")?;
        vm.spawn("exec ip netns exec blue lab-server --tcp 80 --name blue")?;
        for addr in ["10.200.0.1:80", "10.1.0.1:80"] {
            vm.wait_until(
                &format!("lab-client wait-tcp {addr} --timeout 1s"),
                Duration::from_secs(30),
            )?;
        }
        // The waits above made connections through IPVS (one, or more when the server was
        // not listening yet): count them once the estimator has published them all (the same
        // non-zero reading twice, an estimator tick apart).
        let conns = |ns: &str| -> Result<u64> {
            let out = vm.sh_ok(&format!(
                "{ns}ipvsadm -Ln --stats --exact | awk '/^TCP/ {{print $3}}'"
            ))?;
            out.trim()
                .parse()
                .with_context(|| format!("ipvsadm conns {out:?}"))
        };
        let read = || -> Result<(u64, u64)> { Ok((conns("")?, conns("ip netns exec blue ")?)) };
        let deadline = Instant::now() + SETTLE;
        let mut last = read()?;
        let (host_total, blue_total) = loop {
            std::thread::sleep(Duration::from_millis(2500));
            let now = read()?;
            if now == last && now.0 > 0 && now.1 > 0 {
                break now;
            }
            ensure!(
                Instant::now() < deadline,
                "ipvsadm never settled on the first connections: {now:?}"
            );
            last = now;
        };
        Ok(Lab {
            vm,
            host_total,
            blue_total,
        })
    }

    /// Makes this run's connections (to the host's service and `blue`'s).
    fn traffic(&mut self) -> Result<()> {
        self.vm
            .sh_ok(&format!("lab-client tcp 10.200.0.1:80 -n {HOST_CONNS}"))?;
        self.vm
            .sh_ok(&format!("lab-client tcp 10.1.0.1:80 -n {BLUE_CONNS}"))?;
        self.host_total += HOST_CONNS;
        self.blue_total += BLUE_CONNS;
        Ok(())
    }

    /// Starts the daemon under capsh with `keep`, checks its identity, and waits for its
    /// first collection.
    fn start(&self, keep: &[Cap], args: &str) -> Result<Daemon> {
        let p = start_daemon_wrapped(
            &self.vm,
            PORT,
            &|cmd| under_capsh(keep, cmd),
            &format!("--collection.max-age 1s {args}"),
        )?;
        let status = self.vm.sh_ok(&format!("cat /proc/{}/status", p.pid))?;
        let field = |k: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        };
        let hex = |k: &str| u64::from_str_radix(&field(k), 16).unwrap_or(u64::MAX);
        ensure!(
            field("Name:") == "ipvs-telemetry" && field("Uid:") == NOBODY.to_string(),
            "pid {} is not the daemon running as {NOBODY}:\n{status}",
            p.pid
        );
        for k in ["CapEff:", "CapPrm:", "CapAmb:", "CapBnd:"] {
            ensure!(
                hex(k) == mask(keep),
                "{k} {:x}, expected {:x}:\n{status}",
                hex(k),
                mask(keep)
            );
        }
        let d = Daemon { p };
        d.wait(self, "the first collection", |m| {
            ensure!(m.has("ipvs_up", &[("netns", "host")]), "no ipvs_up yet");
            ensure!(m.has("ipvs_ebpf_info", &[]), "no ipvs_ebpf_info yet");
            Ok(())
        })?;
        Ok(d)
    }
}

/// A running daemon.
struct Daemon {
    p: Spawned,
}

impl Daemon {
    fn log(&self, lab: &Lab) -> Result<String> {
        lab.vm.sh_ok(&format!("cat {}", self.p.log))
    }

    /// Scrapes until `check` passes; the metrics of that scrape, or the last mismatch.
    fn wait(
        &self,
        lab: &Lab,
        what: &str,
        check: impl Fn(&Metrics) -> Result<()>,
    ) -> Result<Metrics> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let result = lab
                .vm
                .http_get(PORT, "/metrics")
                .map(|t| Metrics::parse(&t))
                .and_then(|m| check(&m).map(|()| m));
            match result {
                Ok(m) => return Ok(m),
                Err(e) if Instant::now() > deadline => {
                    let log = self.log(lab).unwrap_or_default();
                    bail!("{what}: not reached within {SETTLE:?}: {e:#}\ndaemon log:\n{log}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    fn stop(self, lab: &Lab) -> Result<String> {
        let log = self.log(lab)?;
        lab.vm.sh_ok(&format!("kill {}", self.p.pid))?;
        lab.vm.wait_until(
            &format!("! kill -0 {} 2>/dev/null", self.p.pid),
            Duration::from_secs(20),
        )?;
        Ok(log)
    }
}

/// The eBPF families of a destination with traffic.
const EBPF_DESTINATION_FAMILIES: &[&str] = &[
    "ipvs_ebpf_destination_new_connections_total",
    "ipvs_ebpf_destination_connection_rate_per_second_bucket",
    "ipvs_ebpf_destination_connection_rate_per_second_count",
    "ipvs_ebpf_destination_peak_connection_rate_per_second",
    "ipvs_ebpf_destination_connection_interarrival_seconds_bucket",
    "ipvs_ebpf_destination_first_response_seconds_bucket",
    "ipvs_ebpf_destination_first_response_seconds_count",
];

fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    m.value(name, labels)
        .ok_or_else(|| anyhow::anyhow!("no {name}{labels:?}"))
}

/// Checks `got == want` for a metric, naming it.
fn expect(m: &Metrics, name: &str, labels: &[(&str, &str)], want: f64) -> Result<()> {
    let got = value(m, name, labels)?;
    ensure!(got == want, "{name}{labels:?} = {got}, expected {want}");
    Ok(())
}

/// Namespace `ns` is read: every family present, `ipvs_up 1`, the netlink counters equal
/// the connections made so far (`total`), no collection error.
fn served(m: &Metrics, ns: &str, total: u64) -> Result<()> {
    let l = [("netns", ns)];
    for f in contract::NAMESPACE {
        ensure!(m.has(f, &l), "{f}{{netns={ns:?}}} missing");
    }
    expect(m, "ipvs_up", &l, 1.0)?;
    expect(m, "ipvs_services", &l, 1.0)?;
    expect(m, "ipvs_service_connections_total", &l, total as f64)?;
    expect(m, "ipvs_destination_connections_total", &l, total as f64)?;
    let real = if ns == "host" {
        "10.200.0.1"
    } else {
        "10.1.0.1"
    };
    expect(
        m,
        "ipvs_destination_info",
        &[("netns", ns), ("real_address", real), ("real_port", "80")],
        1.0,
    )?;
    ensure!(
        !m.has("ipvs_collection_errors_total", &l),
        "collection errors for {ns}"
    );
    Ok(())
}

/// The probes are attached and counted exactly this run's connections; `ns_conns`: the
/// namespaces whose destinations must carry eBPF series, with their connections.
fn ebpf_counted(m: &Metrics, ns_conns: &[(&str, u64)]) -> Result<()> {
    for f in contract::DAEMON
        .iter()
        .chain(&["process_start_time_seconds"])
    {
        ensure!(m.has(f, &[]), "{f} missing");
    }
    expect(m, "ipvs_ebpf_up", &[], 1.0)?;
    expect(
        m,
        "ipvs_ebpf_info",
        &[("mode", "auto"), ("reason", "attached")],
        1.0,
    )?;
    expect(
        m,
        "ipvs_ebpf_events_total",
        &[("kind", "new_connection")],
        (HOST_CONNS + BLUE_CONNS) as f64,
    )?;
    expect(m, "ipvs_ebpf_events_lost_total", &[], 0.0)?;
    for (ns, conns) in ns_conns {
        let l = [("netns", *ns)];
        for f in EBPF_DESTINATION_FAMILIES {
            ensure!(m.has(f, &l), "{f}{{netns={ns:?}}} missing");
        }
        expect(
            m,
            "ipvs_ebpf_destination_new_connections_total",
            &l,
            *conns as f64,
        )?;
        // The local server answers every connection: each one is timed once.
        expect(
            m,
            "ipvs_ebpf_destination_first_response_seconds_count",
            &l,
            *conns as f64,
        )?;
    }
    Ok(())
}

/// The probes are not attached, for `reason`; nothing is counted.
fn ebpf_off(m: &Metrics, reason: &str) -> Result<()> {
    expect(m, "ipvs_ebpf_up", &[], 0.0)?;
    expect(
        m,
        "ipvs_ebpf_info",
        &[("mode", "auto"), ("reason", reason)],
        1.0,
    )?;
    ensure!(
        m.samples("ipvs_ebpf_info", &[]).count() == 1,
        "more than one ipvs_ebpf_info"
    );
    expect(m, "ipvs_ebpf_events_total", &[], 0.0)?;
    ensure!(
        !m.has("ipvs_ebpf_destination_new_connections_total", &[]),
        "eBPF destination series while detached"
    );
    Ok(())
}

/// Namespace `ns` is unreadable for `reason`, and nothing of it is served but the health
/// series.
fn unreadable(m: &Metrics, ns: &str, reason: &str) -> Result<()> {
    let l = [("netns", ns)];
    expect(m, "ipvs_up", &l, 0.0)?;
    let errors = value(
        m,
        "ipvs_collection_errors_total",
        &[("netns", ns), ("reason", reason)],
    )?;
    ensure!(
        errors >= 1.0,
        "ipvs_collection_errors_total{{netns={ns:?}}} = {errors}"
    );
    let reasons: Vec<&str> = m
        .samples("ipvs_collection_errors_total", &l)
        .map(|s| s.label("reason"))
        .collect();
    ensure!(reasons == [reason], "reasons of {ns}: {reasons:?}");
    for f in [
        "ipvs_service_connections_total",
        "ipvs_ebpf_destination_new_connections_total",
    ] {
        ensure!(
            !m.has(f, &l),
            "{f}{{netns={ns:?}}} served although unreadable"
        );
    }
    Ok(())
}

/// The log's `effective capabilities` line.
fn caps_line(log: &str) -> Result<&str> {
    log.lines()
        .find(|l| l.contains("msg=\"effective capabilities\""))
        .ok_or_else(|| anyhow::anyhow!("no capabilities line in the log:\n{log}"))
}

/// Prints the log lines that matter for the report: capabilities, warnings, eBPF.
fn show(case: &str, log: &str) {
    eprintln!("--- {case}");
    for l in log
        .lines()
        .filter(|l| l.contains("level=warn") || l.contains("capabilities") || l.contains("ebpf:"))
    {
        eprintln!("    {l}");
    }
}

#[test]
fn daemon_serves_everything_with_the_documented_capabilities_and_names_a_missing_one() -> Result<()>
{
    if !lab_or_skip(
        "daemon_serves_everything_with_the_documented_capabilities_and_names_a_missing_one",
    ) {
        return Ok(());
    }
    for_each_kernel(|k| {
        let started = Instant::now();
        let mut lab = Lab::boot(k)?;
        let both = "--netns.discover /run/netns";

        // All documented capabilities: every series of both namespaces and the eBPF ones.
        let d = lab.start(&DOCUMENTED, both)?;
        lab.traffic()?;
        let m = d.wait(&lab, "all capabilities", |m| {
            served(m, "host", lab.host_total)?;
            served(m, "blue", lab.blue_total)?;
            ebpf_counted(m, &[("host", HOST_CONNS), ("blue", BLUE_CONNS)])
        })?;
        let log = d.stop(&lab)?;
        show("all documented capabilities", &log);
        ensure!(
            caps_line(&log)?.ends_with("held=CAP_NET_ADMIN,CAP_SYS_ADMIN,CAP_BPF,CAP_PERFMON"),
            "{log}"
        );
        ensure!(
            log.contains("ebpf: probes attached to ip_vs_conn_new"),
            "{log}"
        );
        ensure!(
            log.contains("ebpf: first-response probes attached"),
            "{log}"
        );
        ensure!(
            !log.contains("level=warn"),
            "a warning with every capability:\n{log}"
        );
        eprintln!("    {} series", m.0.len());

        // Without CAP_NET_ADMIN: no namespace readable, each says why; eBPF unaffected.
        let d = lab.start(&without(&DOCUMENTED, NET_ADMIN), both)?;
        lab.traffic()?;
        d.wait(&lab, "without CAP_NET_ADMIN", |m| {
            unreadable(m, "host", "missing_cap_net_admin")?;
            unreadable(m, "blue", "missing_cap_net_admin")?;
            expect(m, "ipvs_ebpf_up", &[], 1.0)?;
            expect(
                m,
                "ipvs_ebpf_events_total",
                &[("kind", "new_connection")],
                (HOST_CONNS + BLUE_CONNS) as f64,
            )
        })?;
        let log = d.stop(&lab)?;
        show("without CAP_NET_ADMIN", &log);
        ensure!(caps_line(&log)?.ends_with("missing=CAP_NET_ADMIN"), "{log}");
        for ns in ["host", "blue"] {
            ensure!(
                log.lines().any(|l| l.contains("msg=\"cannot read IPVS\"")
                    && l.contains(&format!("netns={ns} "))
                    && l.contains("needs CAP_NET_ADMIN in the initial user namespace")),
                "{ns}: {log}"
            );
        }

        // Without CAP_SYS_ADMIN: the host is served, blue cannot be entered, and under
        // Debian's perf_event_paranoid 3 the probes cannot attach (perf_event_open needs
        // CAP_SYS_ADMIN there, CAP_PERFMON is not enough).
        let d = lab.start(&without(&DOCUMENTED, SYS_ADMIN), both)?;
        lab.traffic()?;
        d.wait(&lab, "without CAP_SYS_ADMIN", |m| {
            served(m, "host", lab.host_total)?;
            unreadable(m, "blue", "missing_cap_sys_admin")?;
            ebpf_off(m, PARANOID_REASON)
        })?;
        let log = d.stop(&lab)?;
        show("without CAP_SYS_ADMIN (perf_event_paranoid 3)", &log);
        ensure!(caps_line(&log)?.ends_with("missing=CAP_SYS_ADMIN"), "{log}");
        ensure!(
            log.lines().any(|l| l.contains("msg=\"cannot read IPVS\"")
                && l.contains("netns=blue ")
                && l.contains(
                    "cannot enter network namespace /run/netns/blue: setns needs CAP_SYS_ADMIN"
                )),
            "{log}"
        );
        ensure!(
            log.lines().any(|l| l.contains("level=warn")
                && l.contains(&format!(
                    "msg=\"ebpf: {PARANOID_REASON}: attaching to ip_vs_conn_new: "
                ))
                && l.contains("grant CAP_SYS_ADMIN or set kernel.perf_event_paranoid=2")),
            "{log}"
        );

        // Without CAP_BPF or CAP_PERFMON but with CAP_SYS_ADMIN: the kernel accepts
        // CAP_SYS_ADMIN for both, everything is served; the log says which one is not held.
        for dropped in [BPF, PERFMON] {
            let d = lab.start(&without(&DOCUMENTED, dropped), both)?;
            lab.traffic()?;
            d.wait(
                &lab,
                &format!("without {} (with CAP_SYS_ADMIN)", dropped.name),
                |m| {
                    served(m, "host", lab.host_total)?;
                    served(m, "blue", lab.blue_total)?;
                    ebpf_counted(m, &[("host", HOST_CONNS), ("blue", BLUE_CONNS)])
                },
            )?;
            let log = d.stop(&lab)?;
            show(
                &format!("without {} (with CAP_SYS_ADMIN)", dropped.name),
                &log,
            );
            ensure!(
                caps_line(&log)?.ends_with(&format!("missing={}", dropped.name)),
                "{log}"
            );
            ensure!(!log.contains("level=warn"), "{log}");
        }

        // The set for the daemon's own namespace (no CAP_SYS_ADMIN), where perf_event_paranoid
        // is at most 2 (the upstream default): everything of the host namespace, eBPF included.
        lab.vm
            .sh_ok("echo 2 > /proc/sys/kernel/perf_event_paranoid")?;
        let own = [NET_ADMIN, BPF, PERFMON];
        let d = lab.start(&own, "")?;
        lab.traffic()?;
        d.wait(&lab, "own namespace set, perf_event_paranoid 2", |m| {
            served(m, "host", lab.host_total)?;
            ensure!(
                !m.has("ipvs_up", &[("netns", "blue")]),
                "blue is not selected"
            );
            ebpf_counted(m, &[("host", HOST_CONNS)])
        })?;
        let log = d.stop(&lab)?;
        show(
            "CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON (perf_event_paranoid 2)",
            &log,
        );
        ensure!(caps_line(&log)?.ends_with("missing=CAP_SYS_ADMIN"), "{log}");
        ensure!(!log.contains("level=warn"), "{log}");

        // That set without CAP_BPF or CAP_PERFMON: netlink served, eBPF off naming the
        // capability; `--ebpf on` refuses to start.
        for dropped in [BPF, PERFMON] {
            let keep = without(&own, dropped);
            let reason = format!("missing {}", dropped.name);
            let d = lab.start(&keep, "")?;
            lab.traffic()?;
            d.wait(
                &lab,
                &format!("own namespace without {}", dropped.name),
                |m| {
                    served(m, "host", lab.host_total)?;
                    ensure!(
                        !m.has("ipvs_up", &[("netns", "blue")]),
                        "blue is not selected"
                    );
                    ebpf_off(m, &reason)
                },
            )?;
            let log = d.stop(&lab)?;
            show(&format!("CAP_NET_ADMIN only with {}", keep[1].name), &log);
            ensure!(
                caps_line(&log)?.ends_with(&format!("missing=CAP_SYS_ADMIN,{}", dropped.name)),
                "{log}"
            );
            ensure!(
                log.lines().any(|l| l.contains("level=warn")
                    && l.contains(&format!("reason=\"{reason}\""))
                    && l.contains(&format!("msg=\"ebpf: {reason}: "))),
                "{log}"
            );
            let out = lab.vm.sh_timeout(
                &under_capsh(
                    &keep,
                    "exec ipvs-telemetry serve --ebpf on --web.listen-address 127.0.0.1:10055",
                ),
                Duration::from_secs(60),
            )?;
            eprintln!(
                "    --ebpf on: status {}: {}",
                out.status,
                out.stderr.trim()
            );
            ensure!(
                out.status == 1,
                "--ebpf on without {}: {out:?}",
                dropped.name
            );
            ensure!(
                out.stderr
                    .contains(&format!("ipvs-telemetry: --ebpf on: {reason}: ")),
                "{out:?}"
            );
        }
        eprintln!("kernel {k}: {:.0?}", started.elapsed());
        Ok(())
    })
}
