//! Namespace mechanics against real network namespaces of the test host (`ip netns add`):
//! selection, de-duplication by inode, deletion and re-creation, regular-file replacement,
//! interface counters against `ip -s -j link`, conntrack counts, mangle-rule ports, timeouts.
//!
//! Needs root and iproute2; skipped with a printed reason otherwise (a failure under
//! `cargo xtask test`). The test host has no IPVS,
//! so these tests put a stand-in IPVS reader in the workers (it runs on the worker thread inside
//! the namespace like the real one); the IPVS values themselves are tested in the lab
//! (`tests/tests/netns.rs`).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ipvs_lab::skip;

use super::Collector;
use super::worker::IpvsReader;
use crate::cli::Cli;
use crate::model::{
    CollectFailure, ErrorReason, Family, IpvsState, Protocol, Service, ServiceAddress, Snapshot,
};

/// Whether the host can run `test` (root and iproute2); skips it when not (`ipvs_lab::skip`:
/// a failure under `cargo xtask test`).
fn can_run(test: &str) -> bool {
    skip::require(
        test,
        &[skip::root("ip netns add"), skip::tool("ip", "iproute2")],
    )
}

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace made with `ip netns add`, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(test: &str, suffix: &str) -> Netns {
        let name = format!("itest-{}-{test}-{suffix}", std::process::id());
        sh(&format!("ip netns add {name}"));
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }

    fn exec(&self, script: &str) -> String {
        sh(&format!("ip netns exec {} sh -ec '{script}'", self.0))
    }

    fn inode(&self) -> u64 {
        std::fs::metadata(self.path()).unwrap().ino()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let path = self.path();
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        // A test may have left a regular file in its place.
        if path.exists()
            && !matches!(
                super::select::inspect(&path),
                super::select::Kind::Namespace(_)
            )
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn collector(args: &[&str], reader: IpvsReader, timeout: Duration) -> Collector {
    let mut argv = vec!["ipvs-telemetry"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("flags");
    let mut c = Collector::new(&cli.common, timeout).expect("collector");
    let mut config = (*c.config).clone();
    config.reader = Some(reader);
    c.config = std::sync::Arc::new(config);
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn no_ipvs(_: Duration) -> Result<IpvsState, CollectFailure> {
    Err(CollectFailure {
        reason: ErrorReason::ModuleNotLoaded,
        message: "test host has no IPVS".into(),
    })
}

fn names(s: &Snapshot) -> Vec<&str> {
    s.namespaces.iter().map(|n| n.netns.name.as_str()).collect()
}

fn entry<'a>(s: &'a Snapshot, name: &str) -> &'a crate::model::NamespaceSnapshot {
    s.namespaces
        .iter()
        .find(|n| n.netns.name == name)
        .unwrap_or_else(|| panic!("no namespace {name} in {:?}", names(s)))
}

/// Network namespace inodes referenced by this process's threads.
fn namespaces_held() -> Vec<u64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(m) = std::fs::metadata(task.path().join("ns/net")) {
            out.push(m.ino());
        }
    }
    out
}

#[test]
fn selection_dedup_host_and_filters() {
    if !can_run("selection_dedup_host_and_filters") {
        return;
    }
    let a = Netns::new("sel", "a");
    let b = Netns::new("sel", "b");
    let c = Netns::new("sel", "c");
    // A second path to `a`, made the way Docker publishes its namespaces (a bind mount).
    let dir = std::env::temp_dir().join(format!("itest-{}-sel", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alias = dir.join("second-path");
    std::fs::write(&alias, b"").unwrap();
    sh(&format!(
        "mount --bind {} {}",
        a.path().display(),
        alias.display()
    ));

    let include = format!("^(host|first|itest-{}-sel-.*)$", std::process::id());
    let alias_arg = format!("first={}", alias.display());
    let mut col = collector(
        &[
            "--netns.discover",
            "/run/netns",
            "--netns",
            &alias_arg,
            "--netns",
            "/proc/1/ns/net", // the host again, by another path
            "--netns.include",
            &include,
            "--netns.exclude=-c$",
        ],
        no_ipvs,
        Duration::from_secs(2),
    );
    let snap = runtime().block_on(col.collect());
    sh(&format!("umount {}", alias.display()));
    std::fs::remove_dir_all(&dir).unwrap();

    // `a` is read once, under its explicit name; `c` is excluded; the host appears once.
    let b_name = b.0.as_str();
    assert_eq!(names(&snap), ["first", "host", b_name]);
    assert_eq!(entry(&snap, "first").netns.inode, a.inode());
    assert_eq!(entry(&snap, b_name).netns.inode, b.inode());
    assert_eq!(
        entry(&snap, "host").netns.inode,
        std::fs::metadata("/proc/self/ns/net").unwrap().ino()
    );
    assert_eq!(
        entry(&snap, b_name).ipvs.as_ref().unwrap_err().reason,
        ErrorReason::ModuleNotLoaded
    );
    drop(c);
}

/// Counters of every interface the device filter lets through equal `ip -s -j link` inside the
/// namespace (`lo` is included here: it is the `UNKNOWN` operstate case).
#[test]
fn interface_counters_equal_ip_link() {
    if !can_run("interface_counters_equal_ip_link") {
        return;
    }
    let a = Netns::new("if", "a");
    let b = Netns::new("if", "b");
    for ns in [&a, &b] {
        // No IPv6: router solicitations would change counters between two reads.
        ns.exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip link set lo up");
    }
    sh(&format!(
        "ip link add v0 netns {} type veth peer name v1 netns {}",
        a.0, b.0
    ));
    a.exec("ip addr add 10.99.0.1/24 dev v0; ip link set v0 up; ip link add x0 type veth peer name x1; ip link set x0 up");
    b.exec("ip addr add 10.99.0.2/24 dev v1; ip link set v1 up");
    a.exec("busybox ping -c 3 -i 0.2 -W 2 10.99.0.2 >/dev/null");

    let include = format!("^itest-{}-if-", std::process::id());
    let mut col = collector(
        &[
            "--netns.discover",
            "/run/netns",
            "--netns.include",
            &include,
            "--netns.devices.exclude=^x1$",
        ],
        no_ipvs,
        Duration::from_secs(2),
    );
    let rt = runtime();
    for ns in [&a, &b] {
        // Retry if a packet arrived between the two reads (none is expected).
        let mut last = None;
        for _ in 0..5 {
            let before = ns.exec("ip -s -j link");
            let snap = rt.block_on(col.collect());
            let after = ns.exec("ip -s -j link");
            if before != after {
                continue;
            }
            last = Some((snap, after));
            break;
        }
        let (snap, json) = last.expect("counters kept changing");
        let links: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        let got = &entry(&snap, &ns.0).context.interfaces;
        let mut expected = Vec::new();
        for l in &links {
            let name = l["ifname"].as_str().unwrap().to_string();
            if name == "x1" {
                continue;
            }
            let flags: Vec<&str> = l["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            let oper = l["operstate"].as_str().unwrap();
            let up = oper == "UP"
                || (oper == "UNKNOWN" && flags.contains(&"UP") && flags.contains(&"LOWER_UP"));
            let s = &l["stats64"];
            let n = |v: &serde_json::Value| v.as_u64().unwrap();
            expected.push(crate::model::InterfaceStats {
                device: name,
                up,
                rx_bytes: n(&s["rx"]["bytes"]),
                tx_bytes: n(&s["tx"]["bytes"]),
                rx_packets: n(&s["rx"]["packets"]),
                tx_packets: n(&s["tx"]["packets"]),
                rx_dropped: n(&s["rx"]["dropped"]),
                tx_dropped: n(&s["tx"]["dropped"]),
            });
        }
        expected.sort_by(|x, y| x.device.cmp(&y.device));
        assert_eq!(got, &expected, "namespace {}", ns.0);
        let dev = |name: &str| got.iter().find(|i| i.device == name).unwrap();
        assert!(dev("lo").up, "lo is UNKNOWN with UP,LOWER_UP");
        if ns.0 == a.0 {
            assert!(dev("v0").tx_packets >= 3 && dev("v0").up);
            assert!(!dev("x0").up, "x0's peer is down");
            assert!(got.iter().all(|i| i.device != "x1"));
        }
    }
}

/// The conntrack count is the namespace's own, read by the thread inside it.
#[test]
fn conntrack_count_is_per_namespace() {
    if !can_run("conntrack_count_is_per_namespace") {
        return;
    }
    if !Path::new("/proc/sys/net/netfilter/nf_conntrack_count").exists() {
        return skip::skip(
            "conntrack_count_is_per_namespace",
            "nf_conntrack is not loaded on this host (modprobe nf_conntrack)",
        );
    }
    let a = Netns::new("ct", "a");
    let b = Netns::new("ct", "b");
    a.exec("ip link set lo up; iptables -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT; busybox ping -c1 -W1 127.0.0.1 >/dev/null; busybox ping -c1 -W1 127.0.0.2 >/dev/null");
    let include = format!("^itest-{}-ct-", std::process::id());
    let mut col = collector(
        &[
            "--netns.discover",
            "/run/netns",
            "--netns.include",
            &include,
        ],
        no_ipvs,
        Duration::from_secs(2),
    );
    let snap = runtime().block_on(col.collect());
    let expected: u64 = a
        .exec("cat /proc/sys/net/netfilter/nf_conntrack_count")
        .trim()
        .parse()
        .unwrap();
    assert!(expected >= 2, "ping created no conntrack entries");
    assert_eq!(entry(&snap, &a.0).context.conntrack_entries, Some(expected));
    assert_eq!(entry(&snap, &b.0).context.conntrack_entries, Some(0));
}

/// Deletion drops the series and the thread (releasing the namespace); re-creation is picked up
/// with its new inode; a path replaced by a regular file reports `namespace` errors.
#[test]
fn deletion_recreation_and_regular_file() {
    if !can_run("deletion_recreation_and_regular_file") {
        return;
    }
    let keep = Netns::new("life", "keep");
    let gone = Netns::new("life", "gone");
    let include = format!("^itest-{}-life-", std::process::id());
    let explicit_file =
        std::env::temp_dir().join(format!("itest-{}-life-file", std::process::id()));
    std::fs::write(&explicit_file, b"").unwrap();
    let explicit_arg = format!(
        "itest-{}-life-explicit={}",
        std::process::id(),
        explicit_file.display()
    );
    let mut col = collector(
        &[
            "--netns.discover",
            "/run/netns",
            "--netns.include",
            &include,
            "--netns",
            &explicit_arg,
        ],
        no_ipvs,
        Duration::from_secs(2),
    );
    let rt = runtime();
    let explicit_name = format!("itest-{}-life-explicit", std::process::id());

    let first = rt.block_on(col.collect());
    assert_eq!(names(&first), [explicit_name.as_str(), &gone.0, &keep.0]);
    // An explicit path that is a regular file is reported at once.
    let e = entry(&first, &explicit_name).ipvs.as_ref().unwrap_err();
    assert_eq!(e.reason, ErrorReason::Namespace);
    assert!(e.message.contains("not a namespace file"), "{}", e.message);
    let old_inode = gone.inode();
    assert!(namespaces_held().contains(&old_inode));

    // Deleted: gone at the next collection, and no thread of ours keeps it alive.
    sh(&format!("ip netns del {}", gone.0));
    let second = rt.block_on(col.collect());
    assert_eq!(names(&second), [explicit_name.as_str(), &keep.0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while namespaces_held().contains(&old_inode) {
        assert!(
            Instant::now() < deadline,
            "the deleted namespace is still held"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Re-created: a new inode, read by a new worker.
    sh(&format!("ip netns add {}", gone.0));
    let third = rt.block_on(col.collect());
    assert_eq!(names(&third), [explicit_name.as_str(), &gone.0, &keep.0]);
    let new_inode = gone.inode();
    assert_ne!(new_inode, old_inode);
    assert_eq!(entry(&third, &gone.0).netns.inode, new_inode);
    assert!(namespaces_held().contains(&new_inode));

    // Replaced by a regular file: ignored once (`ip netns add`/Docker leave a plain file for a
    // moment), then reported as broken; the other namespace is unaffected throughout.
    sh(&format!("ip netns del {0}; touch /run/netns/{0}", gone.0));
    let fourth = rt.block_on(col.collect());
    assert_eq!(names(&fourth), [explicit_name.as_str(), &keep.0]);
    let fifth = rt.block_on(col.collect());
    assert_eq!(names(&fifth), [explicit_name.as_str(), &gone.0, &keep.0]);
    let e = entry(&fifth, &gone.0).ipvs.as_ref().unwrap_err();
    assert_eq!(e.reason, ErrorReason::Namespace);
    assert!(e.message.contains(&gone.0), "{}", e.message);
    assert_eq!(
        entry(&fifth, &keep.0).ipvs.as_ref().unwrap_err().reason,
        ErrorReason::ModuleNotLoaded
    );
    assert_eq!(entry(&fifth, &keep.0).netns.inode, keep.inode());
    std::fs::remove_file(&explicit_file).unwrap();
}

static SLOW_INODE: AtomicU64 = AtomicU64::new(0);

fn current_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

/// How long [`slow_reader`] takes in the stuck namespace: far beyond the timeout.
const STUCK: Duration = Duration::from_secs(8);

/// Sleeps [`STUCK`] in the namespace named by `SLOW_INODE`.
fn slow_reader(_: Duration) -> Result<IpvsState, CollectFailure> {
    if current_inode() == SLOW_INODE.load(Ordering::SeqCst) {
        std::thread::sleep(STUCK);
    }
    Ok(IpvsState {
        info: Default::default(),
        timeouts: Default::default(),
        services: vec![],
    })
}

/// A stuck namespace reports `timeout` and does not hold up the others.
#[test]
fn a_stuck_namespace_times_out_alone() {
    if !can_run("a_stuck_namespace_times_out_alone") {
        return;
    }
    let spaces: Vec<Netns> = (0..6).map(|i| Netns::new("slow", &i.to_string())).collect();
    SLOW_INODE.store(spaces[2].inode(), Ordering::SeqCst);
    let include = format!("^itest-{}-slow-", std::process::id());
    let timeout = Duration::from_millis(500);
    let mut col = collector(
        &[
            "--netns.discover",
            "/run/netns",
            "--netns.include",
            &include,
        ],
        slow_reader,
        timeout,
    );
    let rt = runtime();
    for round in 0..2 {
        let start = Instant::now();
        let snap = rt.block_on(col.collect());
        let took = start.elapsed();
        // Not a speed bound: a collection that waited for the stuck namespace would take
        // `STUCK` (the timeout is 16 times shorter), however fast or slow the host.
        assert!(
            took < STUCK,
            "round {round} took {took:?}: it waited for the stuck namespace"
        );
        for (i, ns) in spaces.iter().enumerate() {
            let e = entry(&snap, &ns.0);
            if i == 2 {
                let err = e.ipvs.as_ref().unwrap_err();
                assert_eq!(err.reason, ErrorReason::Timeout, "{}", err.message);
            } else {
                assert!(e.ipvs.is_ok(), "round {round}: {:?}", e.ipvs);
            }
        }
    }
}

/// Marks of the fwmark services the stand-in reader reports.
static MARKS: Mutex<Vec<(Family, u32)>> = Mutex::new(Vec::new());

fn fwmark_reader(_: Duration) -> Result<IpvsState, CollectFailure> {
    let services = MARKS
        .lock()
        .unwrap()
        .iter()
        .map(|&(family, mark)| Service {
            family,
            address: ServiceAddress::Fwmark { mark },
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
            netmask: 0,
            persistence_engine: None,
            stats: Default::default(),
            destinations: vec![],
            published: None,
        })
        .collect();
    Ok(IpvsState {
        info: Default::default(),
        timeouts: Default::default(),
        services,
    })
}

fn published(s: &Snapshot, ns: &str) -> BTreeMap<(Family, u32), Option<(Protocol, u16)>> {
    entry(s, ns)
        .ipvs
        .as_ref()
        .unwrap()
        .services
        .iter()
        .map(|svc| match svc.address {
            ServiceAddress::Fwmark { mark } => ((svc.family, mark), svc.published),
            ServiceAddress::Inet { .. } => unreachable!(),
        })
        .collect()
}

/// Swarm-like mangle rules inside a namespace give fwmark services their published port; the
/// rules are read again when the fwmark set changes.
#[test]
fn fwmark_services_get_published_ports_from_mangle_rules() {
    if !can_run("fwmark_services_get_published_ports_from_mangle_rules") {
        return;
    }
    if !skip::require(
        "fwmark_services_get_published_ports_from_mangle_rules",
        &[skip::tool("iptables-save", "iptables")],
    ) {
        return;
    }
    let ingress = Netns::new("mark", "ingress");
    ingress.exec("iptables -t mangle -A PREROUTING -p tcp --dport 30000 -j MARK --set-mark 0x104; iptables -t mangle -A INPUT -d 10.255.0.5/32 -j MARK --set-mark 0x104; ip6tables -t mangle -A PREROUTING -p udp --dport 5353 -j MARK --set-mark 0x104");
    *MARKS.lock().unwrap() = vec![(Family::Inet, 260), (Family::Inet6, 260)];
    let include = format!("^itest-{}-mark-", std::process::id());
    let mut col = collector(
        &[
            "--netns.discover",
            "/run/netns",
            "--netns.include",
            &include,
        ],
        fwmark_reader,
        Duration::from_secs(5),
    );
    let rt = runtime();
    // Rules of the legacy backend only: `iptables-save` (nft) warns about them and the
    // collector reads them with `iptables-legacy-save`.
    let legacy = Netns::new("mark", "legacy");
    let has_legacy = Command::new("iptables-legacy-save")
        .arg("-V")
        .output()
        .is_ok();
    if has_legacy {
        legacy.exec(
            "iptables-legacy -t mangle -A PREROUTING -p tcp --dport 30000 -j MARK --set-mark 0x104",
        );
    }
    let snap = rt.block_on(col.collect());
    assert_eq!(
        published(&snap, &ingress.0),
        BTreeMap::from([
            ((Family::Inet, 260), Some((Protocol::Tcp, 30000))),
            ((Family::Inet6, 260), Some((Protocol::Udp, 5353))),
        ])
    );
    if has_legacy {
        assert_eq!(
            published(&snap, &legacy.0)[&(Family::Inet, 260)],
            Some((Protocol::Tcp, 30000))
        );
    }

    // `--no-iptables-save`: the rules are never read.
    let mut off = collector(
        &[
            "--netns.discover",
            "/run/netns",
            "--netns.include",
            &include,
            "--no-iptables-save",
        ],
        fwmark_reader,
        Duration::from_secs(5),
    );
    let snap = rt.block_on(off.collect());
    assert!(
        published(&snap, &ingress.0).values().all(Option::is_none),
        "{:?}",
        published(&snap, &ingress.0)
    );

    // A rule added now is not read while the fwmark set stays the same ...
    ingress.exec("iptables -t mangle -A PREROUTING -p udp --dport 30001 -j MARK --set-mark 0x105");
    let snap = rt.block_on(col.collect());
    assert_eq!(published(&snap, &ingress.0).len(), 2);
    // ... and is read when a service appears.
    MARKS.lock().unwrap().push((Family::Inet, 261));
    let snap = rt.block_on(col.collect());
    assert_eq!(
        published(&snap, &ingress.0)[&(Family::Inet, 261)],
        Some((Protocol::Udp, 30001))
    );
}
