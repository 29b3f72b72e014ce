//! Times full IPVS collections of the calling process's network namespace over netlink.
//!
//! ```text
//! netlink_collect [--sockets N] [--runs R]
//! ```
//!
//! Each run opens a fresh [`Client`] (as a new process would: socket, family lookup) and reads
//! version, timeouts, every service and every destination with `read_state` — the daemon's
//! collection, without any output. `--sockets N` lets the client spread the destination dumps
//! over up to N sockets (default 4, at most 4; the daemon uses 1). Prints one line per run: wall
//! time, and the process's CPU time (user, system; every thread, from `getrusage`) spent in it.
//! Needs IPVS with services (run it in the lab VM: `cargo xtask bench netlink`).

use std::time::{Duration, Instant};

use ipvs_telemetry::netlink::Client;

/// User and system CPU time of the whole process so far.
fn cpu() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage is valid, and getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to one rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (time(usage.ru_utime), time(usage.ru_stime))
}

fn option(args: &[String], name: &str, default: usize) -> usize {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number")),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sockets = option(&args, "--sockets", 4);
    let runs = option(&args, "--runs", 1);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for run in 1..=runs {
        let (user0, sys0) = cpu();
        let start = Instant::now();
        let mut client = Client::open(Duration::from_secs(120)).expect("netlink socket");
        client.set_max_sockets(sockets);
        let state = client.read_state().expect("IPVS collection");
        let wall = start.elapsed();
        let (user1, sys1) = cpu();
        let destinations: usize = state.services.iter().map(|s| s.destinations.len()).sum();
        println!(
            "run={run} sockets={sockets} services={} destinations={destinations} wall_ms={:.1} cpu_ms={:.1} user_ms={:.1} sys_ms={:.1}",
            state.services.len(),
            ms(wall),
            ms(user1 - user0 + (sys1 - sys0)),
            ms(user1 - user0),
            ms(sys1 - sys0),
        );
    }
}
