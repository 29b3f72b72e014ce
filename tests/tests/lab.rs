//! The lab itself: both kernels boot with what the other tests rely on (IPVS via ipvsadm, BTF,
//! kprobes, iptables marks, netem, namespaces, the traffic tools), and the harness fails loudly
//! and cleanly on a kernel panic or a hung command.

use std::path::Path;
use std::time::{Duration, Instant};

use ipvs_telemetry_e2e::{Kernel, Vm, VmConfig, kernels, lab_or_skip};

/// Services of every kind, created with ipvsadm.
const SERVICES: &str = "
ipvsadm -A -t 10.10.0.1:80 -s rr
ipvsadm -a -t 10.10.0.1:80 -r 10.10.1.2:80 -m -w 2
ipvsadm -a -t 10.10.0.1:80 -r 10.10.1.3:80 -m -w 0
ipvsadm -A -u 10.10.0.1:53 -s wrr
ipvsadm -a -u 10.10.0.1:53 -r 10.10.1.3:53 -m
ipvsadm -A -f 7 -s lc
ipvsadm -a -f 7 -r 10.10.1.2:0 -m
ipvsadm -A -t [fd00::1]:443 -s sh
ipvsadm -a -t [fd00::1]:443 -r [fd00:1::2]:443 -m -w 3
";

/// What `ipvsadm -Ln` prints for [`SERVICES`], one block per service (the kernel lists services
/// in hash order, which depends on a per-namespace random seed, so blocks are compared as a set).
const EXPECTED_BLOCKS: &[&str] = &[
    "TCP  10.10.0.1:80 rr\n  -> 10.10.1.2:80                 Masq    2      0          0         \n  -> 10.10.1.3:80                 Masq    0      0          0",
    "UDP  10.10.0.1:53 wrr\n  -> 10.10.1.3:53                 Masq    1      0          0",
    "FWM  7 lc\n  -> 10.10.1.2:0                  Masq    1      0          0",
    "TCP  [fd00::1]:443 sh\n  -> [fd00:1::2]:443              Masq    3      0          0",
];

const HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn";

/// Splits `ipvsadm -Ln` output into its 3 header lines and sorted service blocks.
fn blocks(out: &str) -> (String, Vec<String>) {
    let lines: Vec<&str> = out.lines().collect();
    let header = lines.iter().take(3).copied().collect::<Vec<_>>().join("\n");
    let mut blocks: Vec<String> = Vec::new();
    for l in lines.iter().skip(3) {
        if l.starts_with("  ->") {
            if let Some(b) = blocks.last_mut() {
                b.push('\n');
                b.push_str(l);
            }
        } else {
            blocks.push(l.to_string());
        }
    }
    // Trailing spaces are part of ipvsadm's format except at the very end of a block.
    let mut blocks: Vec<String> = blocks
        .into_iter()
        .map(|b| b.trim_end().to_string())
        .collect();
    blocks.sort();
    (header, blocks)
}

/// Kernel behaviour relied on: IPVS netlink configuration through ipvsadm (TCP, UDP, fwmark,
/// IPv6 services, masq destinations, weights including 0), identical on 6.1 and 6.12.
#[test]
fn ipvsadm_round_trip_on_each_kernel() -> anyhow::Result<()> {
    if !lab_or_skip("ipvsadm_round_trip_on_each_kernel") {
        return Ok(());
    }
    for k in kernels() {
        let t = Instant::now();
        let vm = Vm::boot(VmConfig::new(k))?;
        eprintln!(
            "kernel {k}: agent answered {:?} after qemu started ({:?} in boot())",
            vm.boot_time(),
            t.elapsed()
        );
        let release = vm.sh_ok("uname -r")?;
        let want = if k == Kernel::V6_1 { "6.1." } else { "6.12." };
        assert!(release.starts_with(want), "kernel {k} runs {release}");
        vm.sh_ok(&format!("set -e\n{SERVICES}"))?;
        let (header, got) = blocks(&vm.sh_ok("ipvsadm -Ln")?);
        assert_eq!(header, HEADER, "kernel {k}");
        let mut want: Vec<String> = EXPECTED_BLOCKS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "kernel {k}");
        // Status and both output streams come back separately.
        let out = vm.sh("echo out; echo err >&2; exit 3")?;
        assert_eq!(
            (out.status, out.stdout.as_str(), out.stderr.as_str()),
            (3, "out\n", "err\n")
        );
    }
    Ok(())
}

/// What the eBPF, netns and latency tests need from the guest: BTF of vmlinux and of the ip_vs
/// module, kprobes on `ip_vs_conn_new`, iptables MARK, netem, named namespaces, and the tools at
/// their documented paths.
#[test]
fn guest_has_what_the_other_tests_need() -> anyhow::Result<()> {
    if !lab_or_skip("guest_has_what_the_other_tests_need") {
        return Ok(());
    }
    for k in kernels() {
        let vm = Vm::boot(VmConfig::new(k))?;
        vm.sh_ok("test -s /sys/kernel/btf/vmlinux && test -s /sys/kernel/btf/ip_vs")?;
        let probes = vm.sh_ok(
            "echo 'r:labprobe ip_vs_conn_new' >> /sys/kernel/tracing/kprobe_events && \
             cat /sys/kernel/tracing/kprobe_events && \
             echo '-:labprobe' >> /sys/kernel/tracing/kprobe_events",
        )?;
        // The maxactive prefix differs between kernels (r10 on 6.1, r128 on 6.12).
        assert!(
            probes.trim().ends_with(":kprobes/labprobe ip_vs_conn_new"),
            "kernel {k}: {probes}"
        );
        for tool in [
            "/usr/sbin/ipvsadm",
            "/usr/sbin/ip",
            "/usr/sbin/tc",
            "/usr/sbin/iptables",
            "/usr/sbin/iptables-save",
            "/usr/sbin/ip6tables",
            "/usr/sbin/iptables-legacy",
            "/usr/local/bin/lab-client",
            "/usr/local/bin/lab-server",
        ] {
            let found = vm.sh_ok(&format!("command -v {}", Path::new(tool).display()))?;
            assert_eq!(found.trim(), tool);
            let name = Path::new(tool)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            assert_eq!(
                vm.sh_ok(&format!("command -v {name}"))?.trim(),
                tool,
                "PATH finds {name}"
            );
        }
        // Programs started through setsid/timeout/nsenter find the real ip, not busybox's.
        let ip = vm.sh_ok("setsid ip -V && timeout 5 ip -V && echo x | xargs ip -V")?;
        assert_eq!(ip.matches("iproute2").count(), 3, "{ip}");
        vm.sh_ok("iptables -t mangle -A PREROUTING -d 10.10.0.1 -p tcp -j MARK --set-mark 7")?;
        assert!(
            vm.sh_ok("iptables-save -t mangle")?.contains(
                "-A PREROUTING -d 10.10.0.1/32 -p tcp -j MARK --set-xmark 0x7/0xffffffff"
            )
        );
        vm.sh_ok(
            "ip netns add ns1 && ip -n ns1 link set lo up && ip netns exec ns1 ip -o link show lo",
        )?;
        vm.sh_ok("tc qdisc add dev lo root netem delay 1ms")?;
        assert!(vm.sh_ok("tc qdisc show dev lo")?.contains("netem"));
    }
    Ok(())
}

/// The traffic tools through a real IPVS NAT service: a client in the director's namespace, two
/// backends in a namespace behind a veth, one of them replying after 50 ms.
#[test]
fn traffic_tools_through_ipvs() -> anyhow::Result<()> {
    if !lab_or_skip("traffic_tools_through_ipvs") {
        return Ok(());
    }
    let k = *kernels().last().unwrap_or(&Kernel::V6_12);
    let vm = Vm::boot(VmConfig::new(k))?;
    vm.sh_ok(
        "set -e
         ip netns add be
         ip link add veth0 type veth peer name veth1 netns be
         ip addr add 10.20.0.1/24 dev veth0 && ip link set veth0 up
         ip -n be addr add 10.20.0.2/24 dev veth1 && ip -n be addr add 10.20.0.3/24 dev veth1
         ip -n be link set veth1 up && ip -n be link set lo up
         ip -n be route add default via 10.20.0.1
         ip addr add 10.10.0.1/32 dev lo
         ipvsadm -A -t 10.10.0.1:80 -s rr
         ipvsadm -a -t 10.10.0.1:80 -r 10.20.0.2:8080 -m
         ipvsadm -a -t 10.10.0.1:80 -r 10.20.0.3:8080 -m
         ipvsadm -A -u 10.10.0.1:53 -s rr
         ipvsadm -a -u 10.10.0.1:53 -r 10.20.0.2:8053 -m",
    )?;
    vm.spawn(
        "exec ip netns exec be lab-server --bind 10.20.0.2 --tcp 8080 --udp 8053 --name fast",
    )?;
    vm.spawn(
        "exec ip netns exec be lab-server --bind 10.20.0.3 --tcp 8080 --delay 50ms --name slow",
    )?;
    vm.wait_until(
        "lab-client wait-tcp 10.20.0.2:8080 --timeout 1s && lab-client wait-tcp 10.20.0.3:8080 --timeout 1s",
        Duration::from_secs(30),
    )?;
    let tcp = vm.sh_ok("lab-client tcp 10.10.0.1:80 -n 40 -c 4")?;
    assert!(tcp.contains("ok=40 errors=0"), "{tcp}");
    // Commands from several threads at once share the VM.
    let udp = std::thread::scope(|s| {
        let slow = s.spawn(|| vm.sh_ok("sleep 2; echo slow"));
        let udp = vm.sh_ok("lab-client udp 10.10.0.1:53 -n 25 -c 5");
        assert_eq!(
            slow.join()
                .expect("thread")
                .map(|o| o.trim().to_string())
                .ok()
                .as_deref(),
            Some("slow")
        );
        udp
    })?;
    assert!(udp.contains("ok=25 errors=0"), "{udp}");
    // The delaying backend answers after its delay (client-side p50, connect to reply).
    let slow = vm.sh_ok("lab-client tcp 10.20.0.3:8080 -n 5")?;
    let p50: f64 = slow
        .split_whitespace()
        .find_map(|w| w.strip_prefix("p50=")?.strip_suffix("ms")?.parse().ok())
        .unwrap_or(0.0);
    assert!((50.0..1000.0).contains(&p50), "{slow}");
    // Who answered: round robin alternates between the two backends.
    let names =
        vm.sh_ok("for i in 1 2 3 4; do printf 'x\\n' | nc 10.10.0.1 80; done | sort | uniq -c")?;
    assert!(
        names.contains("2 fast") && names.contains("2 slow"),
        "{names}"
    );
    // IPVS counted every connection (exact totals; they reach netlink when the estimator runs,
    // every 2 s).
    vm.wait_until(
        "ipvsadm -Ln --stats --exact | grep -E '^TCP  10.10.0.1:80 +44 ' && \
         ipvsadm -Ln --stats --exact | grep -E '^UDP  10.10.0.1:53 +25 '",
        Duration::from_secs(30),
    )?;
    Ok(())
}

fn qemu_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map(|c| c.contains("qemu-system"))
        .unwrap_or(false)
}

/// A kernel panic (sysrq crash) ends the command with an error naming the panic, with the
/// console tail, well within the command's timeout; QEMU is gone afterwards.
#[test]
fn kernel_panic_fails_fast_with_console_tail() -> anyhow::Result<()> {
    if !lab_or_skip("kernel_panic_fails_fast_with_console_tail") {
        return Ok(());
    }
    let k = *kernels().last().unwrap_or(&Kernel::V6_12);
    let vm = Vm::boot(VmConfig::new(k))?;
    let pid = vm.qemu_pid();
    let t = Instant::now();
    let timeout = Duration::from_secs(60);
    let err = match vm.sh_timeout("echo c > /proc/sysrq-trigger; sleep 100", timeout) {
        Ok(out) => panic!("a panicking kernel answered: {out:?}"),
        Err(e) => format!("{e:#}"),
    };
    let took = t.elapsed();
    eprintln!("panic detected after {took:?}:\n{err}");
    assert!(took < timeout, "took {took:?}");
    assert!(err.contains("kernel panic"), "{err}");
    assert!(
        err.contains("Kernel panic - not syncing"),
        "console tail missing: {err}"
    );
    assert!(err.contains("console.log"), "{err}");
    drop(vm);
    assert!(!qemu_alive(pid), "qemu {pid} survived");
    Ok(())
}

/// A hung command fails at its timeout with its partial output and the console tail; the VM
/// still answers afterwards; QEMU is gone after drop.
#[test]
fn hung_command_fails_at_its_timeout() -> anyhow::Result<()> {
    if !lab_or_skip("hung_command_fails_at_its_timeout") {
        return Ok(());
    }
    let k = kernels()[0];
    let vm = Vm::boot(VmConfig::new(k))?;
    let pid = vm.qemu_pid();
    let t = Instant::now();
    let timeout = Duration::from_secs(3);
    let err = match vm.sh_timeout("echo started; sleep 1000", timeout) {
        Ok(out) => panic!("sleep 1000 returned: {out:?}"),
        Err(e) => format!("{e:#}"),
    };
    let took = t.elapsed();
    eprintln!("hung command failed after {took:?}:\n{err}");
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(10),
        "took {took:?}"
    );
    assert!(err.contains("timed out after 3s"), "{err}");
    assert!(err.contains("stdout: started"), "{err}");
    assert!(err.contains("--- console (full log kept: "), "{err}");
    // The agent killed the sleep; the VM still works.
    assert_eq!(vm.sh_ok("pgrep -x sleep || echo none")?.trim(), "none");
    drop(vm);
    assert!(!qemu_alive(pid), "qemu {pid} survived");
    Ok(())
}

/// Extracts the VM work directory (`.../vms/<kernel>-<pid>-<n>`) from an error message.
fn vm_dir(err: &str) -> Option<String> {
    let start = err.find("/vms/")?;
    let rest = &err[start..];
    let end = rest.find("/console.log")?;
    Some(rest[..end].to_string())
}

fn qemu_running_in(dir: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("cmdline"))
                .map(|c| c.contains("qemu-system") && c.contains(&format!("{dir}/")))
                .unwrap_or(false)
        })
}

/// A boot that cannot finish fails at the boot timeout ("hung boot"), and a kernel that panics
/// while booting (no init) fails at once; both with the console, and no QEMU left behind.
#[test]
fn boot_failures_are_reported() -> anyhow::Result<()> {
    if !lab_or_skip("boot_failures_are_reported") {
        return Ok(());
    }
    let k = kernels()[0];
    let mut cfg = VmConfig::new(k);
    cfg.boot_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let err = format!(
        "{:#}",
        Vm::boot(cfg)
            .err()
            .expect("a 2 s boot cannot succeed under TCG")
    );
    let took = t.elapsed();
    eprintln!("short boot timeout failed after {took:?}:\n{err}");
    assert!(
        err.contains("did not answer within 2s (hung boot?)"),
        "{err}"
    );
    let dir = vm_dir(&err).expect("console log path in the error");
    assert!(!qemu_running_in(&dir), "qemu of {dir} survived");

    let mut cfg = VmConfig::new(k);
    cfg.cmdline = "rdinit=/nonexistent".into();
    let t = Instant::now();
    let err = format!("{:#}", Vm::boot(cfg).err().expect("no init: no boot"));
    let took = t.elapsed();
    eprintln!("boot without init failed after {took:?}:\n{err}");
    assert!(took < Duration::from_secs(120), "took {took:?}");
    assert!(err.contains("Kernel panic - not syncing"), "{err}");
    let dir = vm_dir(&err).expect("console log path in the error");
    assert!(!qemu_running_in(&dir), "qemu of {dir} survived");
    Ok(())
}

/// A forwarded guest port reaches a server in the VM from the host.
#[test]
fn http_get_through_a_forwarded_port() -> anyhow::Result<()> {
    if !lab_or_skip("http_get_through_a_forwarded_port") {
        return Ok(());
    }
    let k = kernels()[0];
    let vm = Vm::boot(VmConfig::new(k).forward(8080))?;
    vm.write_file("/www/index.html", b"hello-from-the-lab\n")?;
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    vm.write_file("/tmp/deep/bin.dat", &binary)?;
    assert_eq!(vm.read_file("/tmp/deep/bin.dat")?, binary);
    vm.spawn("exec httpd -f -p 8080 -h /www")?;
    vm.wait_until(
        "lab-client wait-tcp 127.0.0.1:8080 --timeout 1s",
        Duration::from_secs(30),
    )?;
    assert_eq!(vm.http_get(8080, "/index.html")?, "hello-from-the-lab\n");
    let err = vm.http_get(8080, "/missing").map(|_| ()).unwrap_err();
    assert!(format!("{err}").contains("404"), "{err}");
    Ok(())
}
