//! The lab itself: both kernels boot, IPVS works with ipvsadm, and the harness fails loudly and
//! cleanly on a kernel panic or a hung command.

use std::time::Instant;

use ipvs_telemetry_e2e::{Kernel, Vm, VmConfig, kernels, lab_or_skip};

#[test]
fn boots_and_runs_commands() -> anyhow::Result<()> {
    if !lab_or_skip("boots_and_runs_commands") {
        return Ok(());
    }
    for k in kernels() {
        let t = Instant::now();
        let vm = Vm::boot(VmConfig::new(k))?;
        eprintln!(
            "kernel {k}: booted in {:?} (boot() took {:?})",
            vm.boot_time(),
            t.elapsed()
        );
        let out = vm.sh("uname -r; echo err >&2; exit 3")?;
        assert_eq!(out.status, 3);
        assert!(
            out.stdout
                .contains(if k == Kernel::V6_1 { "6.1." } else { "6.12." }),
            "{out:?}"
        );
        assert_eq!(out.stderr, "err\n");
    }
    Ok(())
}
