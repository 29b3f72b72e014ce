//! Learned scrape cadences: when each client's next scrape is expected.
//!
//! A client (by address) whose last three intervals between scrapes agree within a tenth of
//! their median is a steady scraper: its next scrape is expected one median interval after its
//! last. Anything else (a first scrape, a burst, an irregular or interleaved scraper) expects
//! nothing, so nothing is collected ahead for it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Scrape arrivals kept per client: three intervals.
const KEEP: usize = 4;
/// Clients followed at once; more are not learned.
const MAX_CLIENTS: usize = 64;
/// Shortest interval learned: faster scrapers are served by `--collection.max-age`.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval learned.
const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// The next scrape a steady client is expected to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expected {
    /// When.
    pub at: Instant,
    /// Its median interval between scrapes.
    pub interval: Duration,
    /// The arrival it was predicted from (to tell whether a later scrape came since).
    pub after: Instant,
}

/// Recent scrape arrivals by client.
#[derive(Debug, Default)]
pub(super) struct Cadences {
    clients: HashMap<IpAddr, Vec<Instant>>,
}

impl Cadences {
    /// Records a scrape from `client` at `now`; returns its next scrape if it scrapes steadily.
    pub(super) fn record(&mut self, client: IpAddr, now: Instant) -> Option<Expected> {
        self.clients.retain(|_, t| {
            t.last()
                .is_some_and(|l| now.saturating_duration_since(*l) < 2 * MAX_INTERVAL)
        });
        if !self.clients.contains_key(&client) && self.clients.len() >= MAX_CLIENTS {
            return None;
        }
        let times = self.clients.entry(client).or_default();
        times.push(now);
        if times.len() > KEEP {
            times.remove(0);
        }
        expected(times)
    }

    /// Whether `client` scraped after `after`.
    pub(super) fn scraped_since(&self, client: IpAddr, after: Instant) -> bool {
        self.clients
            .get(&client)
            .and_then(|t| t.last())
            .is_none_or(|l| *l > after)
    }
}

/// The next arrival after `times` when its intervals are steady.
fn expected(times: &[Instant]) -> Option<Expected> {
    if times.len() < KEEP {
        return None;
    }
    let mut intervals: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    intervals.sort();
    let median = intervals[intervals.len() / 2];
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&median) {
        return None;
    }
    let tolerance = median / 10;
    if intervals.iter().any(|i| i.abs_diff(median) > tolerance) {
        return None;
    }
    let last = *times.last()?;
    Some(Expected {
        at: last + median,
        interval: median,
        after: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_steady_scraper_is_expected_after_three_intervals() {
        let t0 = Instant::now();
        let mut c = Cadences::default();
        assert_eq!(c.record(A, at(t0, 0)), None);
        assert_eq!(c.record(A, at(t0, 15_000)), None);
        assert_eq!(c.record(A, at(t0, 30_100)), None);
        let e = c.record(A, at(t0, 44_900)).unwrap();
        assert_eq!(e.interval, Duration::from_millis(15_000));
        assert_eq!(e.at, at(t0, 59_900));
        assert!(!c.scraped_since(A, e.after));
        // Another client does not disturb it.
        assert_eq!(c.record(B, at(t0, 50_000)), None);
        assert!(!c.scraped_since(A, e.after));
        assert!(c.record(A, at(t0, 60_000)).is_some());
        assert!(c.scraped_since(A, e.after));
    }

    #[test]
    fn irregular_bursty_and_too_fast_scrapers_expect_nothing() {
        let t0 = Instant::now();
        let mut c = Cadences::default();
        for ms in [0, 15_000, 30_000, 40_000, 55_000] {
            assert_eq!(c.record(A, at(t0, ms)), None, "irregular at {ms}");
        }
        let mut c = Cadences::default();
        for ms in [0, 10, 20, 30, 40] {
            assert_eq!(c.record(A, at(t0, ms)), None, "burst at {ms}");
        }
        // Two scrapers behind one address, interleaved.
        let mut c = Cadences::default();
        for ms in [0, 3_000, 15_000, 18_000, 30_000, 33_000] {
            assert_eq!(c.record(A, at(t0, ms)), None, "interleaved at {ms}");
        }
    }

    #[test]
    fn silent_clients_are_forgotten_and_clients_are_capped() {
        let t0 = Instant::now();
        let mut c = Cadences::default();
        for i in 0..MAX_CLIENTS as u8 {
            c.record(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)), t0);
        }
        assert_eq!(c.clients.len(), MAX_CLIENTS);
        c.record(A, t0);
        assert!(!c.clients.contains_key(&A));
        c.record(A, t0 + 2 * MAX_INTERVAL);
        assert_eq!(c.clients.len(), 1);
    }
}
