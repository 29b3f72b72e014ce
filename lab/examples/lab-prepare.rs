//! Prepares (and times) the lab inputs without booting: kernels, base initramfs images and the
//! lab tools. `cargo run -p ipvs-lab --example lab-prepare` (set `IPVS_LAB_CACHE` first).

use std::time::Instant;

use ipvs_lab::{Kernel, binaries, ensure_kernel, initramfs};

fn main() -> anyhow::Result<()> {
    for k in Kernel::all() {
        let t = Instant::now();
        let kf = ensure_kernel(k)?;
        let kt = t.elapsed();
        let t = Instant::now();
        let img = initramfs::base_image(&kf)?;
        let it = t.elapsed();
        let size = std::fs::metadata(&img)?.len();
        println!(
            "kernel {k} ({}): kernel ready in {kt:.2?}, base initramfs in {it:.2?} ({:.1} MiB)",
            kf.release,
            size as f64 / 1048576.0
        );
    }
    let t = Instant::now();
    let d = binaries::tools_dir()?;
    println!("lab tools ready in {:.2?} ({})", t.elapsed(), d.display());
    Ok(())
}
