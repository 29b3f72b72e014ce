//! Names for services and destinations from outside IPVS: a names file ([`file`]) and the
//! Docker Engine API ([`docker`]).
//!
//! A source never touches the collection: after each collection the daemon asks every source
//! to name what that collection found ([`resolve`]), and hands the result to the encoders next
//! to the snapshot ([`NameState`] in [`crate::metrics::Inputs`]). Names become info series
//! (`ipvs_service_name_info`, `ipvs_destination_name_info`, always 1) keyed by the very labels
//! of the counters, so a renamed service never starts new counter series. A source that fails
//! names nothing; the IPVS series never depend on it.

pub mod docker;
pub mod file;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use crate::model::{IpvsState, Snapshot};

/// A name one source gives to one service or destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The `source` label: `file` or `docker`.
    pub source: &'static str,
    /// The `name` label.
    pub name: String,
    /// The `namespace` label (a Docker stack, a Kubernetes or OpenStack project); may be empty.
    pub namespace: String,
    /// Further labels of the source, sorted by name.
    pub labels: Vec<(&'static str, String)>,
}

/// The names of one namespace's services and destinations, by position in its
/// [`IpvsState`] (service index; service and destination index). Sparse: what no source
/// names is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetnsNames {
    /// `(service index, name)`, at most one per source.
    pub services: Vec<(usize, Arc<Name>)>,
    /// `(service index, destination index, name)`, at most one per source.
    pub destinations: Vec<(usize, usize, Arc<Name>)>,
}

impl NetnsNames {
    fn is_empty(&self) -> bool {
        self.services.is_empty() && self.destinations.is_empty()
    }
}

/// The state of the names file, for `ipvs_names_file_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStatus {
    /// Whether the last (re)load was valid.
    pub last_reload_ok: bool,
    /// Invalid reloads since the daemon started.
    pub reload_failures: u64,
}

/// The state of the Docker source, for `ipvs_names_docker_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerStatus {
    /// Whether the last refresh read the Engine API.
    pub up: bool,
    /// `ok`, or why not (see [`docker::Unreachable::reason`]).
    pub reason: &'static str,
    /// Refreshes (successful or not) since the daemon started.
    pub refreshes: u64,
}

/// Everything the encoders need about names: one collection's names and the sources' state.
#[derive(Debug, Clone, Default)]
pub struct NameState {
    /// Names by namespace name (the `netns` label).
    pub netns: BTreeMap<String, NetnsNames>,
    /// The names file, when `--names.file` is given.
    pub file: Option<FileStatus>,
    /// The Docker source, while it is active.
    pub docker: Option<DockerStatus>,
}

/// Something that names services and destinations of one namespace.
pub trait Source {
    /// Adds the names of `ipvs` (the state of namespace `netns`) to `out`.
    fn name(&self, netns: &str, ipvs: &IpvsState, out: &mut NetnsNames);
}

/// The names every source gives to the services and destinations of `snapshot`.
pub fn resolve(snapshot: &Snapshot, sources: &[&dyn Source]) -> BTreeMap<String, NetnsNames> {
    let mut out = BTreeMap::new();
    if sources.is_empty() {
        return out;
    }
    for ns in &snapshot.namespaces {
        let Ok(ipvs) = &ns.ipvs else { continue };
        let mut names = NetnsNames::default();
        for s in sources {
            s.name(&ns.netns.name, ipvs, &mut names);
        }
        if !names.is_empty() {
            out.insert(ns.netns.name.clone(), names);
        }
    }
    out
}

/// The label names a source may not use for its own labels: the service and destination
/// labels, the name labels, and what Prometheus sets itself.
pub const RESERVED_LABELS: &[&str] = &[
    "netns",
    "family",
    "protocol",
    "virtual_address",
    "virtual_port",
    "fwmark",
    "real_address",
    "real_port",
    "source",
    "name",
    "namespace",
    "job",
    "instance",
];

/// A label name as `&'static str` (what the encoders take), stored once per distinct name for
/// the life of the daemon: names come from a file that may be reloaded, and the set of
/// distinct label names an operator writes stays small.
pub fn intern(label: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = set.get(label) {
        return s;
    }
    let s: &'static str = Box::leak(label.to_string().into_boxed_str());
    set.insert(s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_are_stored_once() {
        let a = intern("team");
        let b = intern(&String::from("team"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(intern("site"), "site");
    }
}
