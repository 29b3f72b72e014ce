//! Types shared by the probes (`ipvs-telemetry-ebpf`) and the daemon: the ring-buffer event
//! layout. `#![no_std]`, `#[repr(C)]`, explicit padding, sizes pinned at compile time.

#![no_std]
