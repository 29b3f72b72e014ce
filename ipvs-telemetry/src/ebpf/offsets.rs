//! The struct member offsets the probes need, computed from the running kernel's BTF:
//! `/sys/kernel/btf/vmlinux` plus the split module BTF `/sys/kernel/btf/ip_vs` (or vmlinux
//! alone when IPVS is built in).

use std::path::Path;

use ipvs_telemetry_common::Offsets;

use super::btf::{Btf, BtfError};

/// Computes [`Offsets`] from a kernel's BTF (vmlinux with the ip_vs module on top).
pub fn from_btf(btf: &Btf) -> Result<Offsets, BtfError> {
    let o = |s: &str, m: &str| btf.offset_of(s, m);
    Ok(Offsets {
        valid: 1,
        conn_af: o("ip_vs_conn", "af")?,
        conn_flags: o("ip_vs_conn", "flags")?,
        conn_dest: o("ip_vs_conn", "dest")?,
        conn_ipvs: o("ip_vs_conn", "ipvs")?,
        ipvs_net: o("netns_ipvs", "net")?,
        net_inum: o("net", "ns.inum")?,
        dest_af: o("ip_vs_dest", "af")?,
        dest_port: o("ip_vs_dest", "port")?,
        dest_addr: o("ip_vs_dest", "addr")?,
        dest_protocol: o("ip_vs_dest", "protocol")?,
        dest_vport: o("ip_vs_dest", "vport")?,
        dest_vaddr: o("ip_vs_dest", "vaddr")?,
        dest_vfwmark: o("ip_vs_dest", "vfwmark")?,
        conn_timer: o("ip_vs_conn", "timer")?,
        conn_refcnt: o("ip_vs_conn", "refcnt")?,
        conn_n_control: o("ip_vs_conn", "n_control")?,
        svc_af: o("ip_vs_service", "af")?,
        svc_protocol: o("ip_vs_service", "protocol")?,
        svc_addr: o("ip_vs_service", "addr")?,
        svc_port: o("ip_vs_service", "port")?,
        svc_fwmark: o("ip_vs_service", "fwmark")?,
        svc_ipvs: o("ip_vs_service", "ipvs")?,
        _pad: 0,
    })
}

/// Reads the BTF under `dir` (normally `/sys/kernel/btf`) and computes the offsets.
pub fn from_sysfs(dir: &Path) -> Result<Offsets, String> {
    let vmlinux = std::fs::read(dir.join("vmlinux"))
        .map_err(|e| format!("reading {}: {e}", dir.join("vmlinux").display()))?;
    let mut btf = Btf::parse(vmlinux).map_err(|e| e.to_string())?;
    if btf.struct_id("ip_vs_conn").is_err() {
        let module = dir.join("ip_vs");
        let data =
            std::fs::read(&module).map_err(|e| format!("reading {}: {e}", module.display()))?;
        btf.add_split(data).map_err(|e| e.to_string())?;
    }
    from_btf(&btf).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's 6.1 and 6.12 cloud kernels: BTF extracted from vmlinuz (`.BTF` of the
    /// decompressed ELF) and `ip_vs.ko` (`objcopy --dump-section .BTF=...`), named
    /// `<release>.vmlinux.btf` and `<release>.ip_vs.btf` in `$IPVS_TELEMETRY_BTF_FIXTURES`.
    /// The lab proves the same offsets against the running kernels; this pins the values.
    #[test]
    fn offsets_of_the_lab_kernels() {
        let Some(dir) = std::env::var_os("IPVS_TELEMETRY_BTF_FIXTURES") else {
            eprintln!("skipped: IPVS_TELEMETRY_BTF_FIXTURES is not set");
            return;
        };
        let dir = Path::new(&dir);
        let load = |release: &str| {
            let v = std::fs::read(dir.join(format!("{release}.vmlinux.btf"))).unwrap();
            let m = std::fs::read(dir.join(format!("{release}.ip_vs.btf"))).unwrap();
            let mut btf = Btf::parse(v).unwrap();
            assert!(btf.struct_id("ip_vs_conn").is_err());
            btf.add_split(m).unwrap();
            from_btf(&btf).unwrap()
        };
        let a = load("6.1.0-56-cloud-amd64");
        let b = load("6.12.117+deb12-cloud-amd64");
        let common = Offsets {
            valid: 1,
            conn_af: 22,
            conn_flags: 72,
            conn_dest: 184,
            conn_ipvs: 80,
            ipvs_net: 2160,
            net_inum: 144,
            dest_af: 32,
            dest_port: 34,
            dest_addr: 36,
            dest_protocol: 416,
            dest_vport: 418,
            dest_vaddr: 420,
            dest_vfwmark: 436,
            // Same on both kernels (read by the daemon in the lab VMs, issue 15).
            conn_timer: 96,
            conn_refcnt: 88,
            conn_n_control: 176,
            svc_af: 36,
            svc_protocol: 38,
            svc_addr: 40,
            svc_port: 56,
            svc_fwmark: 60,
            svc_ipvs: 80,
            _pad: 0,
        };
        assert_eq!(a, common);
        // The protocol state handlers (first response): both kernels carry the stable
        // update that appended `iph_len`, so `cp` and `direction` stay arguments 0 and 1.
        for release in ["6.1.0-56-cloud-amd64", "6.12.117+deb12-cloud-amd64"] {
            let v = std::fs::read(dir.join(format!("{release}.vmlinux.btf"))).unwrap();
            let m = std::fs::read(dir.join(format!("{release}.ip_vs.btf"))).unwrap();
            let mut btf = Btf::parse(v).unwrap();
            btf.add_split(m).unwrap();
            for f in [
                "tcp_state_transition",
                "udp_state_transition",
                "sctp_state_transition",
            ] {
                let params = btf.function_params(f).unwrap();
                assert_eq!(
                    params,
                    ["cp", "direction", "skb", "pd", "iph_len"],
                    "{release} {f}"
                );
                assert_eq!(super::super::state_args::positions(&params), Ok((0, 1)));
            }
        }
        assert_eq!(
            b,
            Offsets {
                ipvs_net: 2024,
                net_inum: 136,
                dest_protocol: 424,
                dest_vport: 426,
                dest_vaddr: 428,
                dest_vfwmark: 444,
                ..common
            }
        );
    }
}
