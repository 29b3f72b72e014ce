//! A real Docker Swarm in the lab (issue 9): the ingress routing mesh is IPVS fwmark services in
//! `/var/run/docker/netns/ingress_sbox`, marked by Docker's own mangle rules, balancing
//! requests to published ports over the replicas. `ipvsadm` and `iptables-save` inside the
//! namespace are the independent source of truth.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ipvs_lab::swarm::{self, INGRESS_NETNS, Publish};
use ipvs_telemetry_e2e::{Vm, VmConfig, for_each_kernel, lab_or_skip};

/// Whether the Swarm profile can run here; prints why not (and skips) like [`lab_or_skip`].
fn swarm_or_skip(test: &str) -> bool {
    if !lab_or_skip(test) {
        return false;
    }
    match swarm::prerequisites() {
        Ok(()) => true,
        Err(why) => {
            if std::env::var_os("IPVS_LAB_REQUIRED").is_some_and(|v| !v.is_empty() && v != "0") {
                panic!("{test}: the lab is required (IPVS_LAB_REQUIRED) but unavailable: {why}");
            }
            eprintln!("skipped {test}: {why}");
            false
        }
    }
}

/// Runs `cmd` in the ingress namespace.
fn in_ingress(vm: &Vm, cmd: &str) -> anyhow::Result<String> {
    vm.sh_ok(&format!("nsenter --net={INGRESS_NETNS} {cmd}"))
}

/// The marks of Docker's mangle rules in the ingress namespace: (protocol, port) -> mark.
fn ingress_marks(vm: &Vm) -> anyhow::Result<BTreeMap<(String, u16), u32>> {
    let save = in_ingress(vm, "iptables-save -t mangle")?;
    let mut marks = BTreeMap::new();
    for l in save.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let arg = |flag: &str| w.iter().position(|x| *x == flag).and_then(|i| w.get(i + 1));
        if w.first() != Some(&"-A") || w.get(1) != Some(&"PREROUTING") {
            continue;
        }
        let (Some(proto), Some(port), Some(mark)) = (arg("-p"), arg("--dport"), arg("--set-xmark"))
        else {
            continue;
        };
        let (value, mask) = mark.split_once('/').unwrap_or((mark, "0xffffffff"));
        assert_eq!(mask, "0xffffffff", "unexpected mask in {l:?}");
        let value = u32::from_str_radix(value.trim_start_matches("0x"), 16)?;
        marks.insert((proto.to_string(), port.parse()?), value);
    }
    Ok(marks)
}

/// Per-destination connection counters of fwmark service `mark` in the ingress namespace, from
/// `ipvsadm -Ln --stats --exact`: destination address -> (conns, inpkts, outpkts, inbytes, outbytes).
fn ipvsadm_fwm(vm: &Vm, mark: u32) -> anyhow::Result<BTreeMap<String, [u64; 5]>> {
    let out = in_ingress(vm, "ipvsadm -Ln --stats --exact")?;
    let mut dests = BTreeMap::new();
    let mut inside = false;
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.first() {
            Some(&"FWM") => inside = w.get(1) == Some(&mark.to_string().as_str()),
            Some(&"TCP") | Some(&"UDP") | Some(&"SCTP") => inside = false,
            Some(&"->") if inside && w.len() == 7 => {
                let n: Vec<u64> = w[2..7]
                    .iter()
                    .map(|x| x.parse())
                    .collect::<Result<_, _>>()?;
                dests.insert(w[1].to_string(), [n[0], n[1], n[2], n[3], n[4]]);
            }
            _ => {}
        }
    }
    Ok(dests)
}

/// Waits until every destination of fwmark `mark` counts `per_dest` connections.
fn wait_balanced(vm: &Vm, mark: u32, replicas: usize, per_dest: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = ipvsadm_fwm(vm, mark)?;
        if d.len() == replicas && d.values().all(|c| c[0] == per_dest) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "fwmark {mark}: expected {replicas} destinations with {per_dest} connections each, ipvsadm shows {d:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The Swarm profile alone: a single-node swarm with a TCP and a UDP service published through
/// the routing mesh, seen by IPVS in ingress_sbox and balanced round-robin over the replicas.
#[test]
fn swarm_routing_mesh_is_ipvs() -> anyhow::Result<()> {
    if !swarm_or_skip("swarm_routing_mesh_is_ipvs") {
        return Ok(());
    }
    for_each_kernel(|k| {
        let t0 = Instant::now();
        let vm = Vm::boot(VmConfig::swarm(k))?;
        let boot = vm.boot_time();
        let up = swarm::up(&vm)?;
        eprintln!(
            "kernel {k}: swarm VM booted in {boot:.1?}; dockerd {:.1?}, swarm init {:.1?}, image {:.1?}",
            up.dockerd, up.swarm_init, up.image
        );
        let t = Instant::now();
        swarm::create_service(&vm, "web", 2, &[Publish::tcp(30080, 80)], "")?;
        swarm::create_service(&vm, "dns", 2, &[Publish::udp(30053, 53)], "")?;
        eprintln!(
            "kernel {k}: two services of 2 replicas in {:.1?}",
            t.elapsed()
        );

        let marks = ingress_marks(&vm)?;
        let web = marks[&("tcp".to_string(), 30080)];
        let dns = marks[&("udp".to_string(), 30053)];
        assert_ne!(web, dns, "one mark per published port: {marks:?}");
        let save = in_ingress(&vm, "iptables-save -t mangle")?;
        assert!(
            save.contains(&format!(
                "-A PREROUTING -p tcp -m tcp --dport 30080 -j MARK --set-xmark {web:#x}/0xffffffff"
            )),
            "Docker's rule for 30080 as iptables-save prints it:\n{save}"
        );
        let table = in_ingress(&vm, "ipvsadm -Ln")?;
        for m in [web, dns] {
            assert!(
                table.contains(&format!("FWM  {m} rr")),
                "fwmark {m} service in ingress_sbox:\n{table}"
            );
        }
        assert_eq!(ipvsadm_fwm(&vm, web)?.len(), 2, "{table}");
        assert_eq!(ipvsadm_fwm(&vm, dns)?.len(), 2, "{table}");

        // Through the routing mesh: loopback and the VM's address.
        let out = vm.sh_ok(
            "lab-client tcp 127.0.0.1:30080 -n 10 && lab-client tcp 10.0.2.15:30080 -n 10",
        )?;
        assert!(out.contains("ok=10 errors=0"), "{out}");
        vm.sh_ok("lab-client udp 127.0.0.1:30053 -n 10 && lab-client udp 10.0.2.15:30053 -n 10")?;
        wait_balanced(&vm, web, 2, 10)?;
        wait_balanced(&vm, dns, 2, 10)?;
        // Two different replicas answered (lab-server replies with the container's host name).
        let names = vm
            .sh_ok("for i in 1 2 3 4; do echo ping | nc 127.0.0.1 30080; done | sort -u | wc -l")?;
        assert_eq!(names.trim(), "2", "replies from two replicas");

        swarm::down(&vm)?;
        eprintln!("kernel {k}: swarm profile test took {:.1?}", t0.elapsed());
        Ok(())
    })
}
