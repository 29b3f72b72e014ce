//! `lab-client`: makes a known number of TCP connections or UDP request/replies, at a given rate
//! or as fast as possible, and prints one summary line.
//!
//! ```text
//! lab-client tcp|udp ADDR:PORT [-n COUNT] [-c CONCURRENCY] [--rate R[/s]] [--timeout DUR]
//!                               [--payload TEXT] [--connect-only] [--no-reply] [--allow-errors]
//!                               [--one-flow] [--rtt]
//! lab-client wait-tcp ADDR:PORT [--timeout DUR]
//! lab-client idle ADDR:PORT [--half-header] [--timeout DUR]
//! lab-client unix-get SOCKET PATH
//! ```
//! - `tcp`: each operation connects, sends the payload (default `ping\n`), shuts down its write
//!   side and reads the reply to the end. `--connect-only` closes right after the handshake.
//! - `udp`: each operation uses a fresh socket (so a fresh source port, so a new IPVS
//!   connection), sends the payload and waits for one reply datagram (`--no-reply`: doesn't wait).
//! - `--rtt` (tcp): also reports the median of the kernel's handshake round-trip times
//!   (`TCP_INFO`'s `tcpi_rtt` read right after connecting: SYN sent to SYN-ACK received, timed
//!   by the kernel in softirq, so without the client thread's wake-up) as ` rtt_p50=…ms`.
//! - `--one-flow` (udp): each worker sends all its request/replies over one socket, so they are
//!   the packets of one long-lived IPVS connection (packet rate rather than connection rate).
//! - `--rate`: operation i starts at `i / rate` seconds; without it, as fast as possible.
//! - `-c`: operations in flight at once (default 1). `-n`: total (default 1).
//! - `wait-tcp`: retries connecting until it succeeds or the timeout (default 30s) expires.
//! - `idle`: connects, sends nothing (`--half-header`: the first two lines of an HTTP request,
//!   never its end) and waits for the server to close the connection, at most the timeout
//!   (default 30s); prints `target=… idle=nothing closed_after=10.004s` (or
//!   `still_open_after=30.000s`, exit status 1; `error="…"` when connecting or reading failed).
//!   For checking a server's header timeout from inside the VM, without QEMU's port forward.
//! - `unix-get`: `GET PATH` over HTTP/1.0 on the unix socket SOCKET (e.g. the Docker Engine API
//!   on `/var/run/docker.sock`, far cheaper under emulation than a docker CLI run); prints the
//!   body of a 2xx answer, exit status 1 otherwise.
//!
//! Output (stdout), e.g.:
//! `proto=tcp target=10.0.0.1:80 ok=100 errors=0 elapsed=1.204s rate=83.1/s p50=1.8ms p99=52.0ms max=60.1ms`
//! (percentiles of the successful operations' durations, connect to last reply byte) plus
//! ` first_error="..."` when something failed. Exit status 1 when any operation failed
//! (unless `--allow-errors`), 2 on a usage error.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipvs_lab_tools::args::{ArgIter, parse_duration, parse_rate};

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Tcp,
    Udp,
}

struct Opts {
    proto: Proto,
    target: SocketAddr,
    count: u64,
    concurrency: u64,
    rate: Option<f64>,
    timeout: Duration,
    payload: Vec<u8>,
    connect_only: bool,
    no_reply: bool,
    allow_errors: bool,
    one_flow: bool,
    rtt: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("lab-client: {msg}");
    eprintln!(
        "usage: lab-client tcp|udp ADDR:PORT [-n COUNT] [-c CONC] [--rate R] [--timeout DUR] \
         [--payload TEXT] [--connect-only] [--no-reply] [--allow-errors] [--one-flow] [--rtt]\n       \
         lab-client wait-tcp ADDR:PORT [--timeout DUR]\n       \
         lab-client idle ADDR:PORT [--half-header] [--timeout DUR]\n       \
         lab-client unix-get SOCKET PATH"
    );
    std::process::exit(2);
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("invalid address {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {s:?} resolves to nothing"))
}

fn main() {
    let mut args = ArgIter::from_env();
    let mode = args.next().unwrap_or_else(|| usage("missing mode"));
    if mode == "unix-get" {
        let socket = args.next().unwrap_or_else(|| usage("missing SOCKET"));
        let path = args.next().unwrap_or_else(|| usage("missing PATH"));
        if let Some(extra) = args.next() {
            usage(&format!("unknown argument {extra:?}"));
        }
        unix_get(&socket, &path);
    }
    let target = args.next().unwrap_or_else(|| usage("missing ADDR:PORT"));
    let target = resolve(&target).unwrap_or_else(|e| usage(&e));
    let mut o = Opts {
        proto: Proto::Tcp,
        target,
        count: 1,
        concurrency: 1,
        rate: None,
        timeout: Duration::from_secs(5),
        payload: b"ping\n".to_vec(),
        connect_only: false,
        no_reply: false,
        allow_errors: false,
        one_flow: false,
        rtt: false,
    };
    let mut timeout_set = false;
    let mut half_header = false;
    while let Some(a) = args.next() {
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "-n" | "--count" => {
                    o.count = args.value(&a)?.parse().map_err(|_| "invalid count")?;
                }
                "-c" | "--concurrency" => {
                    o.concurrency = args.value(&a)?.parse().map_err(|_| "invalid concurrency")?;
                    if o.concurrency == 0 {
                        return Err("concurrency must be at least 1".into());
                    }
                }
                "--rate" => o.rate = Some(parse_rate(&args.value(&a)?)?),
                "--timeout" => {
                    o.timeout = parse_duration(&args.value(&a)?)?;
                    timeout_set = true;
                }
                "--payload" => o.payload = args.value(&a)?.into_bytes(),
                "--connect-only" => o.connect_only = true,
                "--no-reply" => o.no_reply = true,
                "--allow-errors" => o.allow_errors = true,
                "--one-flow" => o.one_flow = true,
                "--rtt" => o.rtt = true,
                "--half-header" if mode == "idle" => half_header = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            usage(&e);
        }
    }
    match mode.as_str() {
        "tcp" => o.proto = Proto::Tcp,
        "udp" => o.proto = Proto::Udp,
        "wait-tcp" => {
            if !timeout_set {
                o.timeout = Duration::from_secs(30);
            }
            wait_tcp(o.target, o.timeout)
        }
        "idle" => {
            if !timeout_set {
                o.timeout = Duration::from_secs(30);
            }
            idle(o.target, half_header, o.timeout)
        }
        other => usage(&format!("unknown mode {other:?}")),
    }
    run(o);
}

fn wait_tcp(target: SocketAddr, timeout: Duration) -> ! {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            Ok(_) => {
                println!(
                    "target={target} ready after {:.3}s",
                    start.elapsed().as_secs_f64()
                );
                std::process::exit(0);
            }
            Err(e) if start.elapsed() >= timeout => {
                println!("target={target} not ready after {timeout:?}: {e}");
                std::process::exit(1);
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn idle(target: SocketAddr, half_header: bool, timeout: Duration) -> ! {
    let what = if half_header {
        "half-header"
    } else {
        "nothing"
    };
    let start = Instant::now();
    let result = (|| -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(10))?;
        if half_header {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: idle\r\n")?;
        }
        let mut buf = [0u8; 4096];
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(false);
            }
            s.set_read_timeout(Some(left))?;
            match s.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })();
    let secs = start.elapsed().as_secs_f64();
    match result {
        Ok(true) => {
            println!("target={target} idle={what} closed_after={secs:.3}s");
            std::process::exit(0);
        }
        Ok(false) => {
            println!("target={target} idle={what} still_open_after={secs:.3}s");
            std::process::exit(1);
        }
        Err(e) => {
            println!("target={target} idle={what} error={:?}", e.to_string());
            std::process::exit(1);
        }
    }
}

fn unix_get(socket: &str, path: &str) -> ! {
    let result = (|| -> Result<(u16, Vec<u8>), String> {
        let mut s = std::os::unix::net::UnixStream::connect(socket)
            .map_err(|e| format!("connecting to {socket}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .map_err(|e| format!("sending to {socket}: {e}"))?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .map_err(|e| format!("reading from {socket}: {e}"))?;
        let end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no HTTP header in the answer")?;
        let head = String::from_utf8_lossy(&answer[..end]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line {:?}", head.lines().next()))?;
        Ok((status, answer[end + 4..].to_vec()))
    })();
    match result {
        Ok((status, body)) => {
            let _ = std::io::stdout().write_all(&body);
            if (200..300).contains(&status) {
                std::process::exit(0);
            }
            eprintln!("lab-client: GET {path} on {socket} answered {status}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("lab-client: {e}");
            std::process::exit(1);
        }
    }
}

fn run(o: Opts) {
    let o = Arc::new(o);
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let durations: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let start = Instant::now();
    let workers: Vec<_> = (0..o.concurrency.min(o.count.max(1)))
        .map(|_| {
            let (o, next, ok, errors, first_error, durations) = (
                Arc::clone(&o),
                Arc::clone(&next),
                Arc::clone(&ok),
                Arc::clone(&errors),
                Arc::clone(&first_error),
                Arc::clone(&durations),
            );
            thread::spawn(move || {
                let flow = if o.one_flow && o.proto == Proto::Udp {
                    Some(udp_socket(&o))
                } else {
                    None
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= o.count {
                        break;
                    }
                    if let Some(rate) = o.rate {
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                    }
                    let began = Instant::now();
                    let r = match o.proto {
                        Proto::Tcp => tcp_once(&o),
                        Proto::Udp => match &flow {
                            Some(Ok(sock)) => udp_exchange(&o, sock),
                            Some(Err(e)) => Err(e.clone()),
                            None => udp_socket(&o).and_then(|sock| udp_exchange(&o, &sock)),
                        },
                    };
                    match r {
                        Ok(()) => {
                            if let Ok(mut d) = durations.lock() {
                                d.push(began.elapsed());
                            }
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert(e);
                            }
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let proto = if o.proto == Proto::Tcp { "tcp" } else { "udp" };
    let mut line = format!(
        "proto={proto} target={} ok={ok} errors={errors} elapsed={elapsed:.3}s rate={:.1}/s",
        o.target,
        if elapsed > 0.0 {
            ok as f64 / elapsed
        } else {
            0.0
        }
    );
    let mut d = durations.lock().map(|d| d.clone()).unwrap_or_default();
    if !d.is_empty() {
        d.sort();
        let pct = |p: f64| {
            let i = ((d.len() as f64 * p).ceil() as usize).clamp(1, d.len()) - 1;
            d[i].as_secs_f64() * 1000.0
        };
        line.push_str(&format!(
            " p50={:.1}ms p99={:.1}ms max={:.1}ms",
            pct(0.50),
            pct(0.99),
            pct(1.0)
        ));
    }
    let mut rtts = RTTS.lock().map(|r| r.clone()).unwrap_or_default();
    if !rtts.is_empty() {
        rtts.sort();
        let i = rtts.len().div_ceil(2) - 1;
        line.push_str(&format!(" rtt_p50={:.3}ms", f64::from(rtts[i]) / 1000.0));
    }
    if let Some(e) = first_error.lock().ok().and_then(|f| f.clone()) {
        line.push_str(&format!(" first_error={e:?}"));
    }
    println!("{line}");
    if errors > 0 && !o.allow_errors {
        std::process::exit(1);
    }
}

/// The kernel's handshake round-trip times of the connections (`--rtt`), in microseconds.
static RTTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// `TCP_INFO`'s smoothed RTT of a socket, in microseconds (right after the handshake: the SYN
/// to SYN-ACK time).
fn handshake_rtt(s: &TcpStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a plain C struct.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (r == 0).then_some(info.tcpi_rtt)
    }
}

fn tcp_once(o: &Opts) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&o.target, o.timeout).map_err(|e| e.to_string())?;
    if o.rtt
        && let Some(rtt) = handshake_rtt(&s).filter(|&r| r > 0)
        && let Ok(mut r) = RTTS.lock()
    {
        r.push(rtt);
    }
    if o.connect_only {
        return Ok(());
    }
    s.set_read_timeout(Some(o.timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(o.timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(&o.payload).map_err(|e| format!("send: {e}"))?;
    let _ = s.shutdown(Shutdown::Write);
    if o.no_reply {
        return Ok(());
    }
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .map_err(|e| format!("receive: {e}"))?;
    if reply.is_empty() {
        return Err("empty reply".into());
    }
    Ok(())
}

/// A fresh UDP socket connected to the target (a fresh source port).
fn udp_socket(o: &Opts) -> Result<UdpSocket, String> {
    let bind: SocketAddr = if o.target.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| "bind address")?
    } else {
        "[::]:0".parse().map_err(|_| "bind address")?
    };
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    s.connect(o.target).map_err(|e| format!("connect: {e}"))?;
    Ok(s)
}

/// One request and (unless `--no-reply`) its reply on `s`.
fn udp_exchange(o: &Opts, s: &UdpSocket) -> Result<(), String> {
    s.send(&o.payload).map_err(|e| format!("send: {e}"))?;
    if o.no_reply {
        return Ok(());
    }
    s.set_read_timeout(Some(o.timeout))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    s.recv(&mut buf).map_err(|e| format!("receive: {e}"))?;
    Ok(())
}
