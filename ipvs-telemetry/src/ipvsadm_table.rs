//! A [`Snapshot`] laid out exactly like `ipvsadm -Ln --stats --exact` (same header, column
//! widths, sort order), each namespace after a `# netns NAME` line, so an operator can diff the
//! two (`snapshot --format table`).

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::model::{Destination, Family, IpvsState, Protocol, Service, ServiceAddress, Snapshot};

/// Renders every namespace like `ipvsadm -Ln --stats --exact`, each after a `# netns` line.
pub fn render_table(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    for ns in &snapshot.namespaces {
        match &ns.ipvs {
            Ok(state) => {
                let _ = writeln!(out, "# netns {}", ns.netns.name);
                render_state(&mut out, state);
            }
            Err(f) => {
                let _ = writeln!(out, "# netns {}: error: {}", ns.netns.name, f.message);
            }
        }
    }
    out
}

/// One namespace, exactly as `ipvsadm -Ln --stats --exact` prints it.
fn render_state(out: &mut String, state: &IpvsState) {
    let _ = writeln!(
        out,
        "IP Virtual Server version {} (size={})",
        state.info.version_string(),
        state.info.conn_tab_size
    );
    let _ = writeln!(
        out,
        "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    );
    out.push_str("  -> RemoteAddress:Port\n");
    let mut services: Vec<&Service> = state.services.iter().collect();
    services.sort_by(|a, b| ipvsadm_service_order(a, b));
    for svc in services {
        let mut name = service_name(svc);
        if svc.family != Family::Inet6 {
            truncate(&mut name, 33);
        }
        let _ = write!(out, "{name:<33}");
        push_counters(out, &svc.stats);
        let mut dests: Vec<&Destination> = svc.destinations.iter().collect();
        dests.sort_by(|a, b| ipvsadm_dest_order(a, b));
        for d in dests {
            let mut name = addr_port(d.address, d.port);
            if svc.family != Family::Inet6 {
                truncate(&mut name, 28);
            }
            let _ = write!(out, "  -> {name:<28}");
            push_counters(out, &d.stats);
        }
    }
}

fn push_counters(out: &mut String, s: &crate::model::Stats) {
    for v in [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes] {
        let _ = write!(out, " {v:>8}");
    }
    out.push('\n');
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        s.truncate(max);
    }
}

/// `TCP  10.0.0.1:80`, `SCTP 10.0.0.1:5000`, `UDP  [2001:db8::1]:53`, `FWM  260`,
/// `FWM  260 IPv6`.
fn service_name(svc: &Service) -> String {
    match svc.address {
        ServiceAddress::Fwmark { mark } if svc.family == Family::Inet6 => {
            format!("FWM  {} IPv6", mark as i32)
        }
        ServiceAddress::Fwmark { mark } => format!("FWM  {}", mark as i32),
        ServiceAddress::Inet {
            protocol,
            address,
            port,
        } => {
            let proto = match protocol {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
                Protocol::Sctp => "SCTP",
                Protocol::Other(_) => "?",
            };
            // ipvsadm pads the protocol to 4 columns: `TCP  a:p`, `SCTP a:p`.
            format!("{proto:<4} {}", addr_port(address, port))
        }
    }
}

fn addr_port(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// ipvsadm compares with C `int` subtraction of unsigned values; wrapping reproduces its order.
fn c_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// The address as ipvsadm compares it: one host-order word for IPv4, four for IPv6.
fn addr_words(a: IpAddr) -> Vec<u32> {
    match a {
        IpAddr::V4(a) => vec![u32::from(a)],
        IpAddr::V6(a) => a
            .octets()
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

fn addr_diff(a: IpAddr, b: IpAddr) -> i32 {
    let (wa, wb) = (addr_words(a), addr_words(b));
    if a.is_ipv6() {
        for (x, y) in wa.iter().zip(wb.iter().chain(std::iter::repeat(&0))) {
            let r = c_diff(*x, *y);
            if r != 0 {
                return r;
            }
        }
        0
    } else {
        c_diff(wa[0], wb.first().copied().unwrap_or(0))
    }
}

/// libipvs `ipvs_cmp_services`: fwmark, family, protocol, address, port.
fn ipvsadm_service_order(a: &Service, b: &Service) -> Ordering {
    let key = |s: &Service| match s.address {
        ServiceAddress::Fwmark { mark } => (mark, 0u16, None, 0u16),
        ServiceAddress::Inet {
            protocol,
            address,
            port,
        } => (0, protocol.number(), Some(address), port),
    };
    let (fa, pa, aa, porta) = key(a);
    let (fb, pb, ab, portb) = key(b);
    let mut r = c_diff(fa, fb);
    if r == 0 {
        r = i32::from(a.family.af()) - i32::from(b.family.af());
    }
    if r == 0 {
        r = i32::from(pa) - i32::from(pb);
    }
    if r == 0
        && let (Some(x), Some(y)) = (aa, ab)
    {
        r = addr_diff(x, y);
    }
    if r == 0 {
        r = i32::from(porta) - i32::from(portb);
    }
    r.cmp(&0)
}

/// libipvs `ipvs_cmp_dests`: address, then port.
fn ipvsadm_dest_order(a: &Destination, b: &Destination) -> Ordering {
    let mut r = addr_diff(a.address, b.address);
    if r == 0 {
        r = i32::from(a.port) - i32::from(b.port);
    }
    r.cmp(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;
    use crate::model::{Info, NamespaceSnapshot, NetnsContext, NetnsId, Stats, Timeouts};
    use std::time::Duration;

    fn stats(conns: u64) -> Stats {
        Stats {
            conns,
            inpkts: conns * 10,
            outpkts: conns * 9,
            inbytes: conns * 1000,
            outbytes: 5_000_000_000,
            ..Stats::default()
        }
    }

    fn dest(addr: &str, port: u16, conns: u64) -> Destination {
        Destination {
            stats: stats(conns),
            ..fixtures::destination(addr, port)
        }
    }

    fn service(family: Family, address: ServiceAddress, dests: Vec<Destination>) -> Service {
        Service {
            flags: 2,
            stats: stats(dests.iter().map(|d| d.stats.conns).sum()),
            ..fixtures::service(family, address, dests)
        }
    }

    /// The expected text is what `ipvsadm -Ln --stats --exact` prints for the same services
    /// (layout from ipvsadm's `print_title`/`print_service_entry`, order from libipvs).
    #[test]
    fn table_matches_ipvsadm_layout_and_order() {
        let services = vec![
            service(
                Family::Inet6,
                ServiceAddress::Inet {
                    protocol: Protocol::Udp,
                    address: "2001:db8::1".parse().unwrap(),
                    port: 53,
                },
                vec![dest("2001:db8::20", 53, 2)],
            ),
            service(Family::Inet, ServiceAddress::Fwmark { mark: 260 }, vec![]),
            service(
                Family::Inet,
                ServiceAddress::Inet {
                    protocol: Protocol::Tcp,
                    address: "10.0.0.1".parse().unwrap(),
                    port: 80,
                },
                vec![
                    dest("10.0.1.3", 8080, 7),
                    dest("10.0.1.2", 8080, 123_456_789),
                ],
            ),
            service(Family::Inet6, ServiceAddress::Fwmark { mark: 7 }, vec![]),
            service(
                Family::Inet,
                ServiceAddress::Inet {
                    protocol: Protocol::Sctp,
                    address: "10.0.0.1".parse().unwrap(),
                    port: 5000,
                },
                vec![],
            ),
        ];
        let snapshot = Snapshot {
            namespaces: vec![NamespaceSnapshot {
                netns: NetnsId {
                    name: "host".into(),
                    dev: 0,
                    inode: 1,
                },
                ipvs: Ok(IpvsState {
                    info: Info {
                        version: 0x010201,
                        conn_tab_size: 4096,
                    },
                    timeouts: Timeouts::default(),
                    services,
                }),
                context: NetnsContext::default(),
                duration: Duration::ZERO,
                timestamp: std::time::SystemTime::UNIX_EPOCH,
            }],
        };
        let expected = "\
# netns host
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                  123456796 1234567960 1111111164 123456796000 5000000000
  -> 10.0.1.2:8080                123456789 1234567890 1111111101 123456789000 5000000000
  -> 10.0.1.3:8080                       7       70       63     7000 5000000000
SCTP 10.0.0.1:5000                       0        0        0        0 5000000000
UDP  [2001:db8::1]:53                    2       20       18     2000 5000000000
  -> [2001:db8::20]:53                   2       20       18     2000 5000000000
FWM  7 IPv6                              0        0        0        0 5000000000
FWM  260                                 0        0        0        0 5000000000
";
        assert_eq!(render_table(&snapshot), expected);
    }

    #[test]
    fn ipvsadm_order_quirks() {
        // libipvs subtracts unsigned addresses as int: 10.0.0.1 sorts after 192.168.0.1.
        assert!(c_diff(0x0a00_0001, 0xc0a8_0001) > 0);
    }
}
