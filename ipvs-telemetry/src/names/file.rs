//! The names file (`--names.file`, YAML): names for keepalived directors, OpenStack routers and
//! hand-made setups. Format and examples: docs/names.md.
//!
//! ```yaml
//! services:
//!   - { netns: host, address: 192.0.2.10, port: 443, protocol: tcp, name: shop, labels: { team: web } }
//!   - { fwmark: 7, family: inet6, name: dns-v6 }
//! destinations:
//!   - { address: 10.1.0.0/24, port: 8080, name: shop-backend }
//! ```
//!
//! Every key of an entry but `name`, `namespace` and `labels` is a condition; an entry applies
//! when all its conditions hold, and the first entry that applies wins. [`FileSource`] owns the
//! file's state: the names in force, and what the file looked like when they were read, so that
//! a change is noticed by one `stat` per collection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use regex::Regex;
use serde::Deserialize;

use super::{Name, NetnsNames, RESERVED_LABELS, Source, intern};
use crate::model::{Family, IpvsState, Protocol, Service, ServiceAddress};

/// Extra labels one entry may carry.
pub const MAX_LABELS: usize = 8;

/// The names file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NamesFileError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid names file; `message` names the line and the key.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `line N column M: KEY: what is wrong`.
        message: String,
    },
}

/// A validated names file.
#[derive(Debug, Default)]
pub struct NamesFile {
    services: Vec<ServiceEntry>,
    destinations: Vec<DestinationEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    services: Vec<ServiceEntry>,
    #[serde(default)]
    destinations: Vec<DestinationEntry>,
}

/// One `services:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawServiceEntry")]
struct ServiceEntry {
    netns: Option<NetnsPattern>,
    family: Option<Family>,
    address: Option<Cidr>,
    port: Option<u16>,
    protocol: Option<Protocol>,
    fwmark: Option<u32>,
    name: Arc<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceEntry {
    netns: Option<NetnsPattern>,
    family: Option<FamilyKey>,
    address: Option<Cidr>,
    port: Option<u16>,
    protocol: Option<ProtocolKey>,
    fwmark: Option<u32>,
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: Labels,
}

impl TryFrom<RawServiceEntry> for ServiceEntry {
    type Error = String;

    fn try_from(r: RawServiceEntry) -> Result<Self, String> {
        if r.address.is_none()
            && r.port.is_none()
            && r.protocol.is_none()
            && r.fwmark.is_none()
            && r.family.is_none()
            && r.netns.is_none()
        {
            return Err(format!(
                "entry {:?} has no condition (netns, family, address, port, protocol or fwmark)",
                r.name
            ));
        }
        if r.fwmark.is_some() && r.address.is_some() {
            return Err(format!(
                "entry {:?}: a fwmark service has no address; give fwmark or address, not both",
                r.name
            ));
        }
        let family = r.family.map(|f| f.0);
        if let (Some(f), Some(a)) = (family, &r.address)
            && f != a.family()
        {
            return Err(format!(
                "entry {:?}: address {} is not {}",
                r.name,
                a.text,
                f.as_str()
            ));
        }
        Ok(ServiceEntry {
            netns: r.netns,
            family,
            address: r.address,
            port: r.port,
            protocol: r.protocol.map(|p| p.0),
            fwmark: r.fwmark,
            name: make_name(r.name, r.namespace, r.labels)?,
        })
    }
}

/// One `destinations:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawDestinationEntry")]
struct DestinationEntry {
    netns: Option<NetnsPattern>,
    address: Option<Cidr>,
    port: Option<u16>,
    name: Arc<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestinationEntry {
    netns: Option<NetnsPattern>,
    address: Option<Cidr>,
    port: Option<u16>,
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: Labels,
}

impl TryFrom<RawDestinationEntry> for DestinationEntry {
    type Error = String;

    fn try_from(r: RawDestinationEntry) -> Result<Self, String> {
        if r.address.is_none() && r.port.is_none() {
            return Err(format!(
                "destination entry {:?} needs an address or a port",
                r.name
            ));
        }
        Ok(DestinationEntry {
            netns: r.netns,
            address: r.address,
            port: r.port,
            name: make_name(r.name, r.namespace, r.labels)?,
        })
    }
}

fn make_name(name: String, namespace: String, labels: Labels) -> Result<Arc<Name>, String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    Ok(Arc::new(Name {
        source: "file",
        name,
        namespace,
        labels: labels.0.into_iter().map(|(k, v)| (intern(&k), v)).collect(),
    }))
}

/// Deserializes a string through `parse` inside the deserializer's own visit, so that its
/// errors carry the position of the value (an error made after `String::deserialize` returns
/// gets the position of the enclosing entry).
fn from_str_with<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> serde::de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { expecting, parse })
}

/// `netns`: a regular expression that must match the whole namespace name.
#[derive(Debug)]
struct NetnsPattern(Regex);

impl<'de> Deserialize<'de> for NetnsPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a regular expression", |s| {
            Regex::new(&format!("^(?:{s})$"))
                .map(NetnsPattern)
                .map_err(|_| format!("invalid regular expression {s:?}"))
        })
    }
}

/// `address`: one address (`10.0.0.1`, `2001:db8::1`) or a network (`10.0.0.0/24`).
#[derive(Debug)]
struct Cidr {
    text: String,
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let bad =
            || format!("{s:?} is not an address or network (10.0.0.1, 10.0.0.0/24, 2001:db8::/64)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Cidr {
            text: s.to_string(),
            network,
            prefix,
        })
    }

    fn family(&self) -> Family {
        if self.network.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        }
    }

    fn contains(&self, a: IpAddr) -> bool {
        match (self.network, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an address or network", Cidr::parse)
    }
}

/// `family`: `inet` or `inet6`.
#[derive(Debug)]
struct FamilyKey(Family);

impl<'de> Deserialize<'de> for FamilyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "inet or inet6", |s| match s {
            "inet" | "ipv4" => Ok(FamilyKey(Family::Inet)),
            "inet6" | "ipv6" => Ok(FamilyKey(Family::Inet6)),
            other => Err(format!("unknown family {other:?} (expected inet or inet6)")),
        })
    }
}

/// `protocol`: `tcp`, `udp` or `sctp`.
#[derive(Debug)]
struct ProtocolKey(Protocol);

impl<'de> Deserialize<'de> for ProtocolKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "tcp, udp or sctp", |s| {
            match s.to_ascii_lowercase().as_str() {
                "tcp" => Ok(ProtocolKey(Protocol::Tcp)),
                "udp" => Ok(ProtocolKey(Protocol::Udp)),
                "sctp" => Ok(ProtocolKey(Protocol::Sctp)),
                other => Err(format!(
                    "unknown protocol {other:?} (expected tcp, udp or sctp)"
                )),
            }
        })
    }
}

/// `labels`: a few more labels, valid Prometheus names none of which the series already has.
#[derive(Debug, Default)]
struct Labels(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of label names to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Labels, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(LabelKey(k)) = map.next_key()? {
                    let v: String = map.next_value()?;
                    out.insert(k, v);
                    if out.len() > MAX_LABELS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_LABELS} labels"
                        )));
                    }
                }
                Ok(Labels(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A key of `labels`: a valid Prometheus name the series does not have already.
struct LabelKey(String);

impl<'de> Deserialize<'de> for LabelKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a label name", |k| {
            if !valid_label_name(k) {
                return Err(format!(
                    "{k:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                ));
            }
            if RESERVED_LABELS.contains(&k) {
                return Err(format!(
                    "label {k:?} is reserved (the series has it already)"
                ));
            }
            Ok(LabelKey(k.to_string()))
        })
    }
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

impl NamesFile {
    /// Validates the text of a names file read from `path` (named in errors only).
    pub fn parse(text: &str, path: &Path) -> Result<NamesFile, NamesFileError> {
        if text.trim().is_empty() {
            return Ok(NamesFile::default());
        }
        let raw: RawFile = serde_norway::from_str(text).map_err(|e| NamesFileError::Invalid {
            path: path.to_path_buf(),
            message: describe(&e),
        })?;
        Ok(NamesFile {
            services: raw.services,
            destinations: raw.destinations,
        })
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<NamesFile, NamesFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| NamesFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Entries in the file.
    pub fn len(&self) -> usize {
        self.services.len() + self.destinations.len()
    }

    /// Whether the file names nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// serde_norway's message as one line: `line L column C: PATH: what`, the location first
/// (its own text puts it at the end, after the key path).
fn describe(e: &serde_norway::Error) -> String {
    let msg = e.to_string();
    let msg = msg.lines().next().unwrap_or_default();
    // "services[1].port: invalid value ... at line 7 column 11"
    let (what, _) = msg.rsplit_once(" at line ").unwrap_or((msg, ""));
    match e.location() {
        Some(l) => format!("line {} column {}: {what}", l.line(), l.column()),
        None => what.to_string(),
    }
}

impl ServiceEntry {
    fn matches(&self, svc: &Service) -> bool {
        if self.family.is_some_and(|f| f != svc.family) {
            return false;
        }
        let (protocol, address, port, mark) = match svc.address {
            ServiceAddress::Inet {
                protocol,
                address,
                port,
            } => (Some(protocol), Some(address), Some(port), None),
            ServiceAddress::Fwmark { mark } => (
                svc.published.map(|p| p.0),
                None,
                svc.published.map(|p| p.1),
                Some(mark),
            ),
        };
        self.fwmark.is_none_or(|m| mark == Some(m))
            && self.port.is_none_or(|p| port == Some(p))
            && self.protocol.is_none_or(|p| protocol == Some(p))
            && self
                .address
                .as_ref()
                .is_none_or(|c| address.is_some_and(|a| c.contains(a)))
    }
}

fn netns_matches(p: &Option<NetnsPattern>, netns: &str) -> bool {
    p.as_ref().is_none_or(|p| p.0.is_match(netns))
}

impl Source for NamesFile {
    fn name(&self, netns: &str, ipvs: &IpvsState, out: &mut NetnsNames) {
        let services: Vec<&ServiceEntry> = self
            .services
            .iter()
            .filter(|e| netns_matches(&e.netns, netns))
            .collect();
        let dests: Vec<&DestinationEntry> = self
            .destinations
            .iter()
            .filter(|e| netns_matches(&e.netns, netns))
            .collect();
        if services.is_empty() && dests.is_empty() {
            return;
        }
        for (si, svc) in ipvs.services.iter().enumerate() {
            if let Some(e) = services.iter().find(|e| e.matches(svc)) {
                out.services.push((si, e.name.clone()));
            }
            for (di, d) in svc.destinations.iter().enumerate() {
                let hit = dests.iter().find(|e| {
                    e.port.is_none_or(|p| p == d.port)
                        && e.address.as_ref().is_none_or(|c| c.contains(d.address))
                });
                if let Some(e) = hit {
                    out.destinations.push((si, di, e.name.clone()));
                }
            }
        }
    }
}

/// What identifies one version of the file: a change of any of these means "read it again"
/// (an editor's rename, a Kubernetes ConfigMap's symlink swap, a write in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// The names file in force and its reload state. A reload that fails keeps the names in force.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    current: Arc<NamesFile>,
    /// The file as last read (valid or not), `None` when it could not be read.
    seen: Option<Stamp>,
    last_reload_ok: bool,
    reload_failures: u64,
}

impl FileSource {
    /// Reads `path` at start; an invalid file is an error (the daemon exits 2).
    pub fn open(path: &Path) -> Result<FileSource, NamesFileError> {
        let seen = stamp(path);
        let current = NamesFile::load(path)?;
        Ok(FileSource {
            path: path.to_path_buf(),
            current: Arc::new(current),
            seen,
            last_reload_ok: true,
            reload_failures: 0,
        })
    }

    /// Reads the file again if it changed since it was last read.
    pub fn reload_if_changed(&mut self) {
        let now = stamp(&self.path);
        if now != self.seen {
            self.reload("the file changed");
        }
    }

    /// Reads the file again (`why`: what asked for it, for the log). A file that is missing or
    /// invalid leaves the names in force, logs one line and counts one failure.
    pub fn reload(&mut self, why: &str) {
        self.seen = stamp(&self.path);
        match NamesFile::load(&self.path) {
            Ok(f) => {
                tracing::info!(
                    file = %self.path.display(),
                    entries = f.len(),
                    reason = why,
                    "reloaded the names file"
                );
                self.current = Arc::new(f);
                self.last_reload_ok = true;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    reason = why,
                    "the names file is invalid, keeping the previous names"
                );
                self.last_reload_ok = false;
                self.reload_failures += 1;
            }
        }
    }

    /// The names in force.
    pub fn names(&self) -> Arc<NamesFile> {
        self.current.clone()
    }

    /// The reload state, for the metrics.
    pub fn status(&self) -> super::FileStatus {
        super::FileStatus {
            last_reload_ok: self.last_reload_ok,
            reload_failures: self.reload_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Destination;

    fn parse(text: &str) -> Result<NamesFile, String> {
        NamesFile::parse(text, Path::new("names.yml")).map_err(|e| e.to_string())
    }

    use crate::model::fixtures::{destination as dest, service};

    fn inet(proto: Protocol, addr: &str, port: u16, dests: Vec<Destination>) -> Service {
        let address: IpAddr = addr.parse().unwrap();
        let family = if address.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        };
        service(
            family,
            ServiceAddress::Inet {
                protocol: proto,
                address,
                port,
            },
            dests,
        )
    }

    fn fwmark(family: Family, mark: u32, published: Option<(Protocol, u16)>) -> Service {
        Service {
            published,
            ..service(family, ServiceAddress::Fwmark { mark }, vec![])
        }
    }

    fn state(services: Vec<Service>) -> IpvsState {
        IpvsState {
            info: Default::default(),
            timeouts: Default::default(),
            services,
        }
    }

    fn names(f: &NamesFile, netns: &str, ipvs: &IpvsState) -> NetnsNames {
        let mut out = NetnsNames::default();
        f.name(netns, ipvs, &mut out);
        out
    }

    const FILE: &str = "\
services:
  - netns: 'qrouter-.*'
    address: 10.0.0.0/24
    port: 80
    name: router-web
    namespace: tenant-a
    labels: { router: r1, team: edge, rack: 5 }
  - address: 192.0.2.10
    protocol: tcp
    port: 443
    name: shop
  - fwmark: 7
    family: inet6
    name: dns-v6
  - fwmark: 7
    name: dns-v4
  - address: 2001:db8::/64
    name: v6-net
  - port: 30080
    protocol: tcp
    name: published
destinations:
  - address: 10.1.0.0/24
    port: 8080
    name: backend
  - address: 2001:db8:1::5
    name: v6-backend
";

    #[test]
    fn entries_match_by_every_key_first_wins() {
        let f = parse(FILE).unwrap();
        assert_eq!(f.len(), 8);
        let ipvs = state(vec![
            inet(
                Protocol::Tcp,
                "10.0.0.9",
                80,
                vec![dest("10.1.0.3", 8080), dest("10.1.0.3", 9090)],
            ),
            inet(Protocol::Tcp, "192.0.2.10", 443, vec![]),
            inet(Protocol::Udp, "192.0.2.10", 443, vec![]),
            fwmark(Family::Inet6, 7, None),
            fwmark(Family::Inet, 7, None),
            inet(
                Protocol::Udp,
                "2001:db8::53",
                53,
                vec![dest("2001:db8:1::5", 53)],
            ),
            fwmark(Family::Inet, 256, Some((Protocol::Tcp, 30080))),
            fwmark(Family::Inet, 257, Some((Protocol::Udp, 30080))),
        ]);
        let n = names(&f, "qrouter-4f1c", &ipvs);
        let svc: Vec<(usize, &str)> = n
            .services
            .iter()
            .map(|(i, n)| (*i, n.name.as_str()))
            .collect();
        assert_eq!(
            svc,
            vec![
                (0, "router-web"),
                (1, "shop"),
                (3, "dns-v6"),
                (4, "dns-v4"),
                (5, "v6-net"),
                (6, "published")
            ]
        );
        let first = &n.services[0].1;
        assert_eq!(first.namespace, "tenant-a");
        assert_eq!(
            first.labels,
            vec![
                ("rack", "5".to_string()),
                ("router", "r1".to_string()),
                ("team", "edge".to_string())
            ]
        );
        let d: Vec<(usize, usize, &str)> = n
            .destinations
            .iter()
            .map(|(s, d, n)| (*s, *d, n.name.as_str()))
            .collect();
        assert_eq!(d, vec![(0, 0, "backend"), (5, 0, "v6-backend")]);
        // The netns pattern is anchored: "host" is not a qrouter.
        let n = names(&f, "host", &ipvs);
        assert!(n.services.iter().all(|(i, _)| *i != 0));
        let n = names(&f, "xqrouter-1", &ipvs);
        assert!(n.services.iter().all(|(i, _)| *i != 0));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert!(Cidr::parse("2001:db8::/129").is_err());
    }

    /// Every error is one line naming the line and the key.
    #[test]
    fn errors_name_line_and_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "services:\n  - address: 10.0.0.1\n    port: 99999\n    name: x\n",
                &["line 3", "services[0].port", "99999"],
            ),
            (
                "services:\n  - name: a\n    port: 1\n  - name: b\n    prot: tcp\n",
                &["line 5", "services[1]", "unknown field `prot`"],
            ),
            (
                "services:\n  - address: 10.0.0.300\n    name: x\n",
                &["line 2 column 14", "services[0].address", "10.0.0.300"],
            ),
            (
                "destinations:\n  - address: 10.0.0.1\n    name: x\n    labels: { job: y }\n",
                &[
                    "line 4 column 15",
                    "destinations[0].labels",
                    "\"job\" is reserved",
                ],
            ),
            (
                "services:\n  - netns: '('\n    name: x\n",
                &["line 2", "services[0].netns", "regular expression"],
            ),
            (
                "services:\n  - name: nothing\n",
                &["line 2", "services: entry \"nothing\"", "no condition"],
            ),
            (
                "services:\n  - fwmark: 1\n    address: 10.0.0.1\n    name: x\n",
                &["line 2", "entry \"x\"", "fwmark or address, not both"],
            ),
            (
                "services:\n  - family: inet6\n    address: 10.0.0.1\n    name: x\n",
                &["line 2", "entry \"x\"", "10.0.0.1 is not inet6"],
            ),
            ("services: [\n", &["line"]),
            ("nodes: []\n", &["line 1", "unknown field `nodes`"]),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(!e.contains('\n'), "one line: {e}");
            assert!(e.starts_with("names.yml: "), "{e}");
            for w in *want {
                assert!(e.contains(w), "{text:?}: {e:?} lacks {w:?}");
            }
        }
        assert!(parse("").unwrap().is_empty());
        assert!(parse("services: []\n").unwrap().is_empty());
    }

    #[test]
    fn label_names() {
        assert!(valid_label_name("team"));
        assert!(valid_label_name("_x9"));
        assert!(!valid_label_name("9x"));
        assert!(!valid_label_name("__x"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name(""));
        let many: String = (0..=MAX_LABELS).map(|i| format!("l{i}: v, ")).collect();
        let e = parse(&format!(
            "services:\n  - port: 1\n    name: x\n    labels: {{ {many} }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn reload_keeps_the_previous_names_when_invalid() {
        let dir = std::env::temp_dir().join(format!("ipvs-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("names.yml");
        std::fs::write(&path, "services:\n  - port: 80\n    name: one\n").unwrap();
        let mut src = FileSource::open(&path).unwrap();
        let ipvs = state(vec![inet(Protocol::Tcp, "10.0.0.1", 80, vec![])]);
        let first = |s: &FileSource| names(&s.names(), "host", &ipvs).services[0].1.name.clone();
        assert_eq!(first(&src), "one");
        src.reload_if_changed();
        assert_eq!(src.status().reload_failures, 0);
        std::fs::write(&path, "services:\n  - port: 80\n    name: two-two\n").unwrap();
        src.reload_if_changed();
        assert_eq!(first(&src), "two-two");
        std::fs::write(&path, "services:\n  - port: 80\n    nam: three\n").unwrap();
        src.reload_if_changed();
        assert_eq!(first(&src), "two-two");
        assert!(!src.status().last_reload_ok);
        assert_eq!(src.status().reload_failures, 1);
        // Unchanged since: not read (nor counted) again.
        src.reload_if_changed();
        assert_eq!(src.status().reload_failures, 1);
        std::fs::remove_file(&path).unwrap();
        src.reload_if_changed();
        assert_eq!(src.status().reload_failures, 2);
        assert_eq!(first(&src), "two-two");
        std::fs::write(&path, "services:\n  - port: 80\n    name: four\n").unwrap();
        src.reload("SIGHUP");
        assert_eq!(first(&src), "four");
        assert!(src.status().last_reload_ok);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
