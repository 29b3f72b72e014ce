//! The standard `process_*` metrics of the daemon itself, read from `/proc/self`.
//!
//! A failed read leaves the metric out and logs at debug level: the scrape still succeeds.

use std::time::{SystemTime, UNIX_EPOCH};

/// What `/proc/self` said at one collection; `None` where a read failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit of open file descriptors.
    pub max_fds: Option<u64>,
    /// Process start time, Unix seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current values; never fails as a whole.
    pub fn read() -> ProcessStats {
        let mut p = ProcessStats::default();
        match std::fs::read_to_string("/proc/self/stat") {
            Ok(stat) => match parse_stat(&stat) {
                Some(s) => {
                    let tick = clock_ticks();
                    let page = page_size();
                    p.cpu_seconds = Some((s.utime + s.stime) as f64 / tick);
                    p.virtual_memory_bytes = Some(s.vsize);
                    p.resident_memory_bytes = Some(s.rss_pages.saturating_mul(page));
                    p.start_time_seconds = boot_time().map(|b| b + s.starttime as f64 / tick);
                }
                None => tracing::debug!("unexpected /proc/self/stat layout"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot read /proc/self/stat"),
        }
        match std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            Ok(d) => p.open_fds = Some(d.count().saturating_sub(1) as u64),
            Err(e) => tracing::debug!(error = %e, "cannot read /proc/self/fd"),
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            p.max_fds = Some(lim.rlim_cur);
        }
        p
    }
}

struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses `/proc/PID/stat`; the command name (field 2) may contain spaces and parentheses,
/// so fields are counted after its last `)`.
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let get = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: get(14)?,
        stime: get(15)?,
        starttime: get(22)?,
        vsize: get(23)?,
        rss_pages: get(24)?,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line[6..].trim().parse::<u64>().ok().map(|b| b as f64)
}

/// Seconds since the Unix epoch, 0 before it.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let s = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                 5000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(s).unwrap();
        assert_eq!((st.utime, st.stime), (250, 50));
        assert_eq!(st.starttime, 5000);
        assert_eq!(st.vsize, 123456789);
        assert_eq!(st.rss_pages, 2048);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn reads_own_process() {
        let p = ProcessStats::read();
        assert!(p.resident_memory_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() >= 3);
        let start = p.start_time_seconds.unwrap();
        let now = unix_seconds(SystemTime::now());
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start}"
        );
    }
}
