//! Which namespaces one collection reads: the daemon's own, every `--netns` file and every entry
//! of the `--netns.discover` directories, named, filtered and de-duplicated.
//!
//! A namespace is identified by the device and inode of its file, so two paths to one namespace
//! are read once and the daemon's own namespace is recognised whatever path names it. The scan
//! ([`scan`]) touches the file system; the choice ([`select`]) is pure and unit-tested.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use regex::Regex;

/// Device and inode of a namespace file: what makes two paths the same namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// `st_dev` (the nsfs device for namespace files).
    pub dev: u64,
    /// `st_ino` (the namespace's `ns.inum`).
    pub ino: u64,
}

impl Identity {
    /// The identity of the file `path` names (symlinks followed).
    pub fn of(path: &Path) -> std::io::Result<Identity> {
        let m = std::fs::metadata(path)?;
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Where a candidate namespace came from; explicit `--netns` names beat discovered ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Origin {
    /// The daemon's own namespace (`--netns.host`).
    Host,
    /// A `--netns [NAME=]PATH` flag.
    Explicit,
    /// An entry of a `--netns.discover` directory.
    Discovered,
}

/// What a candidate path turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// A network-namespace file (nsfs), with its identity.
    Namespace(Identity),
    /// Something that cannot be entered: the path is missing or is not a namespace file. The
    /// text says why; the identity is the file's when it exists.
    Broken(String, Option<Identity>),
}

/// One path found by the scan, before naming rules, filters and de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    /// The name the path gives (`NAME` of `NAME=PATH`, else the file name).
    pub name: String,
    /// The namespace file.
    pub path: PathBuf,
    /// Flag that produced it.
    pub origin: Origin,
    /// What the path is.
    pub kind: Kind,
}

/// A namespace a collection reads (or reports as broken), with its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// The `netns` label.
    pub name: String,
    /// The file entered (`None` for the daemon's own namespace, which is never entered).
    pub path: Option<PathBuf>,
    /// What the path is.
    pub kind: Kind,
}

/// Name filters of `--netns.include/--netns.exclude`; exclude wins.
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    /// Only names that match, when set.
    pub include: Option<Regex>,
    /// Never names that match.
    pub exclude: Option<Regex>,
}

impl NameFilter {
    /// Whether a namespace of this name is collected.
    pub fn allows(&self, name: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|r| r.is_match(name)) {
            return false;
        }
        self.include.as_ref().is_none_or(|r| r.is_match(name))
    }
}

/// The result of choosing targets: what to read, and names dropped because a different
/// namespace already has them (reported in the log).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Selection {
    /// Sorted by name, names unique.
    pub targets: Vec<Target>,
    /// `(name, path)` of candidates left out because another namespace has the same name.
    pub name_conflicts: Vec<(String, PathBuf)>,
}

/// The `netns` label of the daemon's own namespace.
pub(super) const HOST: &str = "host";

/// Chooses the namespaces to read from the scanned candidates.
///
/// Rules, in order: a candidate whose identity is the daemon's namespace is named `host` (and
/// dropped with `--no-netns.host`); the name filter applies to every name, `host` included;
/// candidates with the same identity are read once under one name — the host's, else an explicit
/// `--netns` name, else the lexicographically smallest; two different namespaces claiming the
/// same name keep the one chosen by the same order (the other is reported as a conflict).
pub(super) fn select(
    candidates: Vec<Candidate>,
    host: Identity,
    include_host: bool,
    filter: &NameFilter,
) -> Selection {
    // Preferred-first order: origin, then name, then path.
    let mut candidates: Vec<Candidate> = candidates
        .into_iter()
        .filter_map(|mut c| {
            if matches!(c.kind, Kind::Namespace(id) if id == host) {
                if !include_host {
                    return None;
                }
                c.name = HOST.to_string();
                c.origin = Origin::Host;
            }
            filter.allows(&c.name).then_some(c)
        })
        .collect();
    candidates.sort_by(|a, b| (a.origin, &a.name, &a.path).cmp(&(b.origin, &b.name, &b.path)));

    let mut seen_ids = HashSet::new();
    let mut by_name: BTreeMap<String, Target> = BTreeMap::new();
    let mut name_conflicts = Vec::new();
    for c in candidates {
        if let Kind::Namespace(id) = c.kind
            && !seen_ids.insert(id)
        {
            continue; // another path to a namespace already chosen
        }
        if by_name.contains_key(&c.name) {
            // The same path listed twice (explicit and discovered) is not a conflict.
            let same_path = by_name[&c.name].path.as_deref() == Some(c.path.as_path());
            if !same_path {
                name_conflicts.push((c.name, c.path));
            }
            continue;
        }
        let path = (c.origin != Origin::Host).then_some(c.path);
        by_name.insert(
            c.name.clone(),
            Target {
                name: c.name,
                path,
                kind: c.kind,
            },
        );
    }
    Selection {
        targets: by_name.into_values().collect(),
        name_conflicts,
    }
}

/// The name a path gives when no `NAME=` is set: its file name (`/run/netns/NAME` is `NAME`).
pub(super) fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned())
}

/// What a path is: a namespace file (by statfs type), or broken with a reason.
pub(super) fn inspect(path: &Path) -> Kind {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Kind::Broken("namespace file does not exist".into(), None);
        }
        Err(e) => return Kind::Broken(format!("cannot stat namespace file: {e}"), None),
    };
    let id = Identity {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    match nix::sys::statfs::statfs(path) {
        // NSFS_MAGIC (0x6e736673): the file is a namespace (a bind mount of /proc/PID/ns/*).
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC => Kind::Namespace(id),
        Ok(_) if meta.is_dir() => {
            Kind::Broken("is a directory, not a namespace file".into(), Some(id))
        }
        Ok(_) => Kind::Broken(
            "not a namespace file (not a mount of nsfs; was the namespace deleted?)".into(),
            Some(id),
        ),
        Err(e) => Kind::Broken(format!("cannot statfs namespace file: {e}"), Some(id)),
    }
}

/// Lists the entries of a discovery directory as candidates, sorted by name.
///
/// Entries that are directories, sockets, pipes or devices are skipped; namespace files and
/// regular files (a namespace file left behind after its namespace was unmounted) are returned.
/// A missing directory is an error of kind `NotFound`, which [`scan`] reports apart: Docker
/// creates its directory on first use, a typing mistake never.
pub(super) fn discover(dir: &Path) -> std::io::Result<Vec<Candidate>> {
    let entries = std::fs::read_dir(dir)?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        // Follow symlinks: a link to a namespace file is a namespace.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // vanished, or a dangling link
        };
        let ft = meta.file_type();
        if ft.is_dir()
            || ft.is_socket()
            || ft.is_fifo()
            || ft.is_block_device()
            || ft.is_char_device()
        {
            continue;
        }
        let kind = inspect(&path);
        out.push(Candidate {
            name: name_of(&path),
            path,
            origin: Origin::Discovered,
            kind,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The inputs of one scan, copied out of the flags so the scan can run on a blocking thread.
#[derive(Debug, Clone)]
pub(super) struct ScanConfig {
    /// `--netns` values: optional name and path.
    pub explicit: Vec<(Option<String>, PathBuf)>,
    /// `--netns.discover` directories.
    pub discover: Vec<PathBuf>,
    /// `--[no-]netns.host`.
    pub include_host: bool,
    /// Identity of the daemon's own namespace.
    pub host: Identity,
    /// `--netns.include/--netns.exclude`.
    pub filter: NameFilter,
}

/// What [`scan`] found, plus the problems worth a log line.
#[derive(Debug, Default)]
pub(super) struct ScanResult {
    /// The chosen namespaces.
    pub selection: Selection,
    /// Discovered paths that were not namespace files at this scan (see [`scan`]).
    pub suspects: HashSet<PathBuf>,
    /// Discovery directories that could not be read, with the error.
    pub unreadable_dirs: Vec<(PathBuf, String)>,
    /// Discovery directories that do not exist (yet): nothing found there, not an error.
    pub missing_dirs: Vec<PathBuf>,
}

/// Scans the file system and chooses the namespaces to read.
///
/// A discovered entry that is not a namespace file is reported (as broken) only when it was
/// already one at the previous scan (`previous_suspects`): `ip netns add` and Docker create the
/// file a moment before mounting the namespace on it, and unmount it a moment before removing
/// it, and a collection that falls into that gap must not report an error. Explicit `--netns`
/// paths are always reported: the operator asked for them.
pub(super) fn scan(config: &ScanConfig, previous_suspects: &HashSet<PathBuf>) -> ScanResult {
    let mut result = ScanResult::default();
    let mut candidates = Vec::new();
    if config.include_host {
        candidates.push(Candidate {
            name: HOST.into(),
            path: PathBuf::from("/proc/self/ns/net"),
            origin: Origin::Host,
            kind: Kind::Namespace(config.host),
        });
    }
    for (name, path) in &config.explicit {
        candidates.push(Candidate {
            name: name.clone().unwrap_or_else(|| name_of(path)),
            path: path.clone(),
            origin: Origin::Explicit,
            kind: inspect(path),
        });
    }
    for dir in &config.discover {
        match discover(dir) {
            Ok(found) => {
                for c in found {
                    if matches!(c.kind, Kind::Broken(..)) {
                        result.suspects.insert(c.path.clone());
                        if !previous_suspects.contains(&c.path) {
                            continue;
                        }
                    }
                    candidates.push(c);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                result.missing_dirs.push(dir.clone())
            }
            Err(e) => result.unreadable_dirs.push((dir.clone(), e.to_string())),
        }
    }
    result.selection = select(candidates, config.host, config.include_host, &config.filter);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_ID: Identity = Identity { dev: 4, ino: 1 };

    fn ns(name: &str, path: &str, origin: Origin, ino: u64) -> Candidate {
        Candidate {
            name: name.into(),
            path: path.into(),
            origin,
            kind: Kind::Namespace(Identity { dev: 4, ino }),
        }
    }

    fn host() -> Candidate {
        ns(HOST, "/proc/self/ns/net", Origin::Host, 1)
    }

    fn names(s: &Selection) -> Vec<&str> {
        s.targets.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn names_come_from_file_names() {
        assert_eq!(name_of(Path::new("/run/netns/blue")), "blue");
        assert_eq!(
            name_of(Path::new("/var/run/docker/netns/ingress_sbox")),
            "ingress_sbox"
        );
        assert_eq!(name_of(Path::new("/")), "/");
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = NameFilter {
            include: Some(Regex::new("^lb_").unwrap()),
            exclude: Some(Regex::new("^lb_bad$").unwrap()),
        };
        assert!(f.allows("lb_x"));
        assert!(!f.allows("lb_bad"));
        assert!(!f.allows("ingress_sbox"));
        assert!(NameFilter::default().allows("anything"));
    }

    #[test]
    fn two_paths_to_one_namespace_are_read_once_explicit_name_first() {
        let s = select(
            vec![
                host(),
                ns("a", "/run/netns/a", Origin::Discovered, 10),
                ns("zeta", "/other/zeta", Origin::Explicit, 10),
                ns("b", "/run/netns/b", Origin::Discovered, 11),
                ns("c2", "/x/c2", Origin::Discovered, 12),
                ns("c1", "/y/c1", Origin::Discovered, 12),
            ],
            HOST_ID,
            true,
            &NameFilter::default(),
        );
        assert_eq!(names(&s), ["b", "c1", "host", "zeta"]);
        assert!(s.name_conflicts.is_empty());
        assert_eq!(s.targets[3].path.as_deref(), Some(Path::new("/other/zeta")));
        assert_eq!(s.targets[2].path, None);
    }

    #[test]
    fn host_is_recognised_by_identity() {
        let s = select(
            vec![
                host(),
                ns("init", "/proc/1/ns/net", Origin::Explicit, 1),
                ns("a", "/run/netns/a", Origin::Discovered, 10),
            ],
            HOST_ID,
            true,
            &NameFilter::default(),
        );
        assert_eq!(names(&s), ["a", "host"]);
        // Without --netns.host the host namespace is left out whatever path names it.
        let s = select(
            vec![
                ns("init", "/proc/1/ns/net", Origin::Explicit, 1),
                ns("a", "/run/netns/a", Origin::Discovered, 10),
            ],
            HOST_ID,
            false,
            &NameFilter::default(),
        );
        assert_eq!(names(&s), ["a"]);
    }

    #[test]
    fn filters_apply_before_deduplication_and_to_host() {
        let filter = NameFilter {
            include: None,
            exclude: Some(Regex::new("^(excluded|host)$").unwrap()),
        };
        let s = select(
            vec![
                host(),
                ns("excluded", "/run/netns/excluded", Origin::Discovered, 10),
                ns("alias", "/run/netns/alias", Origin::Discovered, 10),
                ns("other", "/run/netns/other", Origin::Discovered, 11),
            ],
            HOST_ID,
            true,
            &filter,
        );
        // The excluded name does not hide the namespace's other, allowed name.
        assert_eq!(names(&s), ["alias", "other"]);
    }

    #[test]
    fn a_name_claimed_by_two_namespaces_keeps_the_explicit_one() {
        let s = select(
            vec![
                ns("x", "/var/run/docker/netns/x", Origin::Discovered, 10),
                ns("x", "/run/netns/x", Origin::Explicit, 11),
            ],
            HOST_ID,
            false,
            &NameFilter::default(),
        );
        assert_eq!(s.targets.len(), 1);
        assert_eq!(
            s.targets[0].kind,
            Kind::Namespace(Identity { dev: 4, ino: 11 })
        );
        assert_eq!(
            s.name_conflicts,
            [("x".to_string(), PathBuf::from("/var/run/docker/netns/x"))]
        );
    }

    #[test]
    fn broken_paths_are_targets_and_the_same_path_twice_is_no_conflict() {
        let broken = |origin| Candidate {
            name: "gone".into(),
            path: "/run/netns/gone".into(),
            origin,
            kind: Kind::Broken("namespace file does not exist".into(), None),
        };
        let s = select(
            vec![broken(Origin::Discovered), broken(Origin::Explicit)],
            HOST_ID,
            false,
            &NameFilter::default(),
        );
        assert_eq!(names(&s), ["gone"]);
        assert!(s.name_conflicts.is_empty());
    }

    #[test]
    fn inspect_tells_namespaces_from_regular_files() {
        assert!(matches!(
            inspect(Path::new("/proc/self/ns/net")),
            Kind::Namespace(_)
        ));
        let file = std::env::temp_dir().join(format!("netns-unit-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(inspect(&file), Kind::Broken(_, Some(_))));
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(inspect(&file), Kind::Broken(_, None)));
    }

    #[test]
    fn discovered_files_are_reported_only_when_seen_twice() {
        let dir = std::env::temp_dir().join(format!("netns-unit-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("subdir")).unwrap();
        std::fs::write(dir.join("stale"), b"").unwrap();
        std::os::unix::fs::symlink("/proc/self/ns/net", dir.join("self")).unwrap();
        let config = ScanConfig {
            explicit: vec![],
            discover: vec![dir.clone(), dir.join("missing")],
            include_host: false,
            host: HOST_ID,
            filter: NameFilter::default(),
        };
        let first = scan(&config, &HashSet::new());
        assert_eq!(names(&first.selection), ["self"]);
        assert!(first.unreadable_dirs.is_empty());
        assert_eq!(first.missing_dirs, [dir.join("missing")]);
        let second = scan(&config, &first.suspects);
        assert_eq!(names(&second.selection), ["self", "stale"]);
        assert!(matches!(second.selection.targets[1].kind, Kind::Broken(..)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
