//! The capabilities the daemon uses, read from its own effective set, so that a refusal by the
//! kernel can name the one that is missing (see docs/deploy.md for what each is for).

/// A capability the daemon uses: its number (`linux/capability.h`) and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Capability number.
    pub number: u32,
    /// Name as the kernel headers spell it.
    pub name: &'static str,
}

/// IPVS generic netlink (every command, reads included).
pub const NET_ADMIN: Cap = Cap {
    number: 12,
    name: "CAP_NET_ADMIN",
};
/// `setns()` into other network namespaces; also grants what `CAP_BPF`/`CAP_PERFMON` grant.
pub const SYS_ADMIN: Cap = Cap {
    number: 21,
    name: "CAP_SYS_ADMIN",
};
/// `perf_event_open` of the kprobes, kernel memory reads by the probes.
pub const PERFMON: Cap = Cap {
    number: 38,
    name: "CAP_PERFMON",
};
/// Loading the probes, creating their maps.
pub const BPF: Cap = Cap {
    number: 39,
    name: "CAP_BPF",
};

/// Every capability the daemon uses, in the order the documentation lists them.
pub const USED: [Cap; 4] = [NET_ADMIN, SYS_ADMIN, BPF, PERFMON];

/// An effective capability set (`CapEff` of `/proc/self/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// This process's effective set; `None` when `/proc/self/status` cannot be read.
    pub fn effective() -> Option<CapSet> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        CapSet::from_status(&status)
    }

    /// Parses the `CapEff:` line of a `/proc/PID/status` text.
    pub fn from_status(status: &str) -> Option<CapSet> {
        let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
        u64::from_str_radix(hex.trim(), 16).ok().map(CapSet)
    }

    /// Whether `cap` is in the set.
    pub fn has(self, cap: Cap) -> bool {
        cap.number < 64 && self.0 & (1u64 << cap.number) != 0
    }

    /// Names of the used capabilities in the set, comma-separated (empty when none).
    pub fn held(self) -> String {
        self.names(true)
    }

    /// Names of the used capabilities not in the set, comma-separated (empty when none).
    pub fn missing(self) -> String {
        self.names(false)
    }

    fn names(self, held: bool) -> String {
        USED.iter()
            .filter(|c| self.has(**c) == held)
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Whether this process holds `cap` effectively; `None` when that cannot be read.
pub fn holds(cap: Cap) -> Option<bool> {
    CapSet::effective().map(|s| s.has(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set_and_names_held_and_missing() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000201000\n";
        let s = CapSet::from_status(status).unwrap();
        assert!(s.has(NET_ADMIN) && s.has(SYS_ADMIN) && s.has(BPF) && s.has(PERFMON));
        assert_eq!(s.held(), "CAP_NET_ADMIN,CAP_SYS_ADMIN,CAP_BPF,CAP_PERFMON");
        assert_eq!(s.missing(), "");
        let s = CapSet::from_status("CapEff:\t0000004000001000\n").unwrap();
        assert_eq!(s.held(), "CAP_NET_ADMIN,CAP_PERFMON");
        assert_eq!(s.missing(), "CAP_SYS_ADMIN,CAP_BPF");
        assert_eq!(CapSet::from_status("CapEff:\tzz\n"), None);
        assert_eq!(CapSet::from_status(""), None);
    }
}
