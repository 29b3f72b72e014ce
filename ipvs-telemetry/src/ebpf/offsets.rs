//! The struct member offsets the probes need, computed from the running kernel's BTF:
//! `/sys/kernel/btf/vmlinux` plus the split module BTF `/sys/kernel/btf/ip_vs` (or vmlinux
//! alone when IPVS is built in).

use std::path::Path;

use ipvs_telemetry_common::Offsets;

use super::btf::{self, Btf, BtfError, LoadError};

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
pub fn from_sysfs(dir: &Path) -> Result<Offsets, LoadError> {
    let mut btf = Btf::parse(btf::read_file(dir, "vmlinux")?)?;
    if btf.struct_id("ip_vs_conn").is_err() {
        btf.add_split(btf::read_file(dir, "ip_vs")?)?;
    }
    Ok(from_btf(&btf)?)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// The lab kernels (Debian's 6.1 and 6.12 cloud kernels) whose BTF is in `fixtures/`.
    const RELEASES: [&str; 2] = ["6.1.0-57-cloud-amd64", "6.12.118+deb12-cloud-amd64"];

    /// What the fixtures keep of each kernel's BTF: the structs [`from_btf`] reads (and
    /// `ns_common`, the type of `net.ns`) and the protocol state handlers.
    const STRUCTS: [&str; 6] = [
        "ip_vs_conn",
        "netns_ipvs",
        "net",
        "ns_common",
        "ip_vs_dest",
        "ip_vs_service",
    ];
    const HANDLERS: [&str; 3] = [
        "tcp_state_transition",
        "udp_state_transition",
        "sctp_state_transition",
    ];

    /// `fixtures/<release>.{vmlinux,ip_vs}.btf.gz`: the kernel's BTF cut down by
    /// [`minimized`](super::super::btf::minimize::minimized) (same type ids and string offsets,
    /// everything the test does not read blanked) and gzipped; see `fixtures/README.md`.
    fn fixture(release: &str, part: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/ebpf/fixtures")
            .join(format!("{release}.{part}.btf.gz"));
        let gz = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        raw
    }

    fn load(vmlinux: Vec<u8>, ip_vs: Vec<u8>) -> Btf {
        let mut btf = Btf::parse(vmlinux).unwrap();
        assert!(btf.struct_id("ip_vs_conn").is_err(), "ip_vs is a module");
        btf.add_split(ip_vs).unwrap();
        btf
    }

    /// The offsets of the lab kernels, pinned. The lab proves the same offsets against the
    /// running kernels (`tests/tests/ebpf.rs`); this pins the values and the BTF reader.
    #[test]
    fn offsets_of_the_lab_kernels() {
        let btf = |r| load(fixture(r, "vmlinux"), fixture(r, "ip_vs"));
        let a = from_btf(&btf(RELEASES[0])).unwrap();
        let b = from_btf(&btf(RELEASES[1])).unwrap();
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
        // The protocol state handlers (first response): both kernels carry the stable
        // update that appended `iph_len`, so `cp` and `direction` stay arguments 0 and 1.
        for release in RELEASES {
            let btf = btf(release);
            for f in HANDLERS {
                let params = btf.function_params(f).unwrap();
                assert_eq!(
                    params,
                    ["cp", "direction", "skb", "pd", "iph_len"],
                    "{release} {f}"
                );
                assert_eq!(super::super::state_args::positions(&params), Ok((0, 1)));
            }
            assert_eq!(btf.member_size("net", "ns.inum").unwrap(), Some(4));
        }
    }

    /// Writes the fixtures from the full BTF of the lab kernels and checks that the cut-down
    /// BTF gives the same answers as the full one. Run by hand when the lab kernels change:
    /// `IPVS_TELEMETRY_BTF_SOURCES=<dir> cargo test -p ipvs-telemetry -- --ignored
    /// write_btf_fixtures` (the directory's files are named as in `fixtures/README.md`).
    #[test]
    #[ignore = "regenerates fixtures from IPVS_TELEMETRY_BTF_SOURCES"]
    fn write_btf_fixtures() {
        use std::io::Write;
        let src = std::env::var_os("IPVS_TELEMETRY_BTF_SOURCES")
            .expect("IPVS_TELEMETRY_BTF_SOURCES names the directory of the full BTF");
        let src = Path::new(&src);
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ebpf/fixtures");
        for release in RELEASES {
            let read = |part: &str| {
                let p = src.join(format!("{release}.{part}.btf"));
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            };
            let full = load(read("vmlinux"), read("ip_vs"));
            let layers = super::super::btf::minimize::minimized(&full, &STRUCTS, &HANDLERS);
            let small = load(layers[0].clone(), layers[1].clone());
            assert_eq!(from_btf(&small), from_btf(&full), "{release}");
            for f in HANDLERS {
                assert_eq!(small.function_params(f), full.function_params(f));
            }
            for (part, data) in ["vmlinux", "ip_vs"].iter().zip(&layers) {
                let path = out.join(format!("{release}.{part}.btf.gz"));
                let mut gz = flate2::write::GzEncoder::new(
                    std::fs::File::create(&path).unwrap(),
                    flate2::Compression::best(),
                );
                gz.write_all(data).unwrap();
                gz.finish().unwrap();
            }
        }
    }
}
