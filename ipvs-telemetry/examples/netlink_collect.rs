//! Times full IPVS collections of the calling process's network namespace over netlink.
//!
//! ```text
//! netlink_collect [--sockets N] [--runs R]
//! ```
//!
//! Each run opens a fresh [`Client`] (as a new process would: socket, family lookup) and reads
//! version, timeouts, every service and every destination — with `--sockets 1`, `read_state`:
//! the daemon's collection, without any output. `--sockets N` (default 4, at most min(CPUs, 4), from 128 services on) is the
//! experiment the daemon dropped: the destination dumps spread over N sockets, each read on its
//! own thread (the kernel serialises IPVS requests: no faster, twice the CPU, BENCHMARKS.md).
//! Prints one line per run: wall time, and the process's CPU time (user, system; every thread,
//! from `getrusage`) spent in it.
//! Needs IPVS with services (run it in the lab VM: `cargo xtask bench netlink`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipvs_telemetry::model::IpvsState;
use ipvs_telemetry::netlink::Client;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Fewer services than this are dumped on one socket whatever `--sockets` says.
const PARALLEL_MIN_SERVICES: usize = 128;

/// One collection: `read_state` on one socket, or the destination dumps shared by `sockets`
/// sockets (this one and extra ones, each on its own thread, taking services in turn).
fn collect(sockets: usize) -> IpvsState {
    let mut client = Client::open(TIMEOUT).expect("netlink socket");
    if sockets <= 1 {
        return client.read_state().expect("IPVS collection");
    }
    let info = client.info().expect("IPVS_CMD_GET_INFO");
    let timeouts = client.timeouts().expect("IPVS_CMD_GET_CONFIG");
    let mut services = client.services().expect("IPVS_CMD_GET_SERVICE");
    let sockets = if services.len() < PARALLEL_MIN_SERVICES {
        1
    } else {
        sockets
    };
    let next = &AtomicUsize::new(0);
    let shared = &services;
    let mut read: Vec<(usize, _)> = std::thread::scope(|scope| {
        let dump = move |mut c: Client| {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(service) = shared.get(i) else {
                    return out;
                };
                out.push((i, c.destinations(service).expect("IPVS_CMD_GET_DEST")));
            }
        };
        let extra: Vec<_> = (1..sockets)
            .map(|_| {
                // Opened here: a socket belongs to the namespace of the thread creating it.
                let c = Client::open(TIMEOUT).expect("netlink socket");
                scope.spawn(move || dump(c))
            })
            .collect();
        let mut all = dump(client);
        for t in extra {
            all.extend(t.join().expect("dump thread"));
        }
        all
    });
    read.sort_unstable_by_key(|(i, _)| *i);
    for (i, destinations) in read {
        services[i].destinations = destinations;
    }
    IpvsState {
        info,
        timeouts,
        services,
    }
}

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
    // At most min(CPUs, 4), as the daemon's experiment had it.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sockets = option(&args, "--sockets", 4).clamp(1, 4).min(cpus);
    let runs = option(&args, "--runs", 1);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for run in 1..=runs {
        let (user0, sys0) = cpu();
        let start = Instant::now();
        let state = collect(sockets);
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
