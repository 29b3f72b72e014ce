//! The lab: Debian cloud kernels with IPVS, booted under QEMU from an initramfs, driven by tests,
//! benchmarks and `cargo xtask lab`.
