//! Boots a lab VM and runs each argument as a script, printing status and output:
//! `cargo run -p ipvs-lab --example lab-sh -- 6.12 'ipvsadm -Ln' 'uname -a'`.

use std::time::Instant;

use ipvs_lab::{Kernel, Vm, VmConfig};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let kernel: Kernel = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: lab-sh KERNEL SCRIPT..."))?
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let t = Instant::now();
    let vm = Vm::boot(VmConfig::new(kernel))?;
    eprintln!(
        "booted {kernel} in {:?} ({:?} with preparation)",
        vm.boot_time(),
        t.elapsed()
    );
    for script in args {
        let t = Instant::now();
        let out = vm.sh(&script)?;
        println!("$ {script}  # status {} in {:?}", out.status, t.elapsed());
        print!("{}", out.stdout);
        if !out.stderr.is_empty() {
            print!("stderr: {}", out.stderr);
        }
    }
    Ok(())
}
