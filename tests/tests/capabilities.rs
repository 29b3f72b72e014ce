//! Least privilege for the eBPF side: run under `capsh` with only the documented capabilities
//! (`CAP_NET_ADMIN`, `CAP_SYS_ADMIN`, `CAP_BPF`, `CAP_PERFMON`; see docs/deploy.md) the probes
//! attach, including the first-response probes. `CAP_SYS_ADMIN` grants everything `CAP_BPF` and
//! `CAP_PERFMON` do (the kernel's `bpf_capable()`/`perfmon_capable()`), so the drop cases run
//! with the set for the daemon's own namespace only (`CAP_NET_ADMIN`, `CAP_BPF`,
//! `CAP_PERFMON`): with `CAP_BPF` or `CAP_PERFMON` dropped from it the eBPF side names exactly
//! the missing capability, in its log and in the reason (`ipvs_ebpf_info{reason}`), and
//! (`--ebpf on`) refuses to start.
//!
//! Uses `ebpf-dump` (the daemon's eBPF code alone; see tests/ebpf.rs). The daemon's netlink
//! side under the same capabilities is tested with the daemon itself.

use std::time::Duration;

use anyhow::Result;
use ipvs_telemetry_e2e::{Vm, VmConfig, kernels, lab_or_skip};

/// The documented capabilities, as capsh names them.
const DOCUMENTED: [&str; 4] = ["cap_net_admin", "cap_sys_admin", "cap_bpf", "cap_perfmon"];

/// A shell command running `cmd` (a shell script) as root with only `keep` capabilities:
/// everything else is dropped from the bounding set, which for root is what an `exec` grants.
fn with_caps(keep: &[&str], cmd: &str) -> String {
    format!(
        "capsh --drop=$(capsh --print | sed -n 's/^Bounding set =//p' | tr ',' '\\n' | grep -vxE '{}' | paste -sd, -) --shell=/bin/sh -- -c '{cmd}'",
        keep.join("|")
    )
}

#[test]
fn ebpf_runs_with_the_documented_capabilities_and_names_a_missing_one() -> Result<()> {
    if !lab_or_skip("ebpf_runs_with_the_documented_capabilities_and_names_a_missing_one") {
        return Ok(());
    }
    let dump = ipvs_telemetry_e2e::ebpf_dump_binary()?;
    for k in kernels() {
        eprintln!("kernel {k}");
        let vm = Vm::boot(VmConfig::new(k).file(&dump, "/usr/local/bin/ebpf-dump"))?;
        // All documented capabilities: attached, first-response probes included.
        let p = vm.spawn(&with_caps(
            &DOCUMENTED,
            "grep Cap /proc/self/status; EBPF_DUMP_OUT=/tmp/all.json exec /usr/local/bin/ebpf-dump --ebpf on",
        ))?;
        vm.wait_until(
            "grep -q '\"up\":true' /tmp/all.json",
            Duration::from_secs(60),
        )?;
        vm.wait_until(
            &format!("grep -q 'first-response probes attached' {}", p.log),
            Duration::from_secs(30),
        )?;
        let log = vm.sh_ok(&format!("cat {}", p.log))?;
        eprintln!("{log}");
        assert!(!log.contains("unavailable"), "{log}");
        vm.sh_ok(&format!("kill {}", p.pid))?;
        for dropped in ["cap_bpf", "cap_perfmon"] {
            let keep: Vec<&str> = ["cap_net_admin", "cap_bpf", "cap_perfmon"]
                .into_iter()
                .filter(|c| *c != dropped)
                .collect();
            let want = format!("missing {}", dropped.to_uppercase());
            // --ebpf on: exits 1 naming the capability.
            let out = vm.sh(&with_caps(&keep, "exec /usr/local/bin/ebpf-dump --ebpf on"))?;
            eprintln!(
                "without {dropped}, --ebpf on: status {:?}: {}",
                out.status,
                out.stderr.trim()
            );
            assert!(!out.success(), "{dropped}");
            assert!(
                out.stderr.contains(&format!("{want}:")),
                "{dropped}: {}",
                out.stderr
            );
            // --ebpf auto: keeps running, the reason names it.
            let out_file = format!("/tmp/no-{dropped}.json");
            let p = vm.spawn(&with_caps(
                &keep,
                &format!("EBPF_DUMP_OUT={out_file} exec /usr/local/bin/ebpf-dump --ebpf auto"),
            ))?;
            vm.wait_until(&format!("test -s {out_file}"), Duration::from_secs(60))?;
            let json = vm.sh_ok(&format!("cat {out_file}"))?;
            eprintln!("without {dropped}, --ebpf auto: {json}");
            assert!(json.contains(&format!("\"reason\":\"{want}\"")), "{json}");
            assert!(json.contains("\"up\":false"), "{json}");
            vm.sh_ok(&format!("kill {}", p.pid))?;
        }
    }
    Ok(())
}
