//! `lab-server`: a TCP and UDP backend that answers every request, optionally after a delay.
//!
//! ```text
//! lab-server [--tcp PORT]... [--udp PORT]... [--bind ADDR] [--delay DUR] [--name TEXT]
//! ```
//! - Listens on `ADDR` (default `::`, which on Linux also accepts IPv4) for each port given.
//! - TCP: per connection, reads up to the first newline (or the end of the request, or 5 s),
//!   waits `--delay` (default 0), writes `NAME\n` and closes. The reply is what makes the first
//!   response the director sees, so its timing is `--delay` after the request arrived.
//! - UDP: answers each datagram with `NAME\n` after `--delay`.
//! - `--name` defaults to the host name; tests use it to see which backend answered.
//!
//! Runs until killed; prints one `listening ...` line per socket on stderr.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ipvs_lab_tools::args::{ArgIter, parse_duration};

fn usage(msg: &str) -> ! {
    eprintln!("lab-server: {msg}");
    eprintln!(
        "usage: lab-server [--tcp PORT]... [--udp PORT]... [--bind ADDR] [--delay DUR] [--name TEXT]"
    );
    std::process::exit(2);
}

fn main() {
    let mut args = ArgIter::from_env();
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut bind: IpAddr = IpAddr::from([0u16; 8]);
    let mut delay = Duration::ZERO;
    let mut name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "lab-server".into());
    while let Some(a) = args.next() {
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--tcp" => tcp.push(port(&args.value(&a)?)?),
                "--udp" => udp.push(port(&args.value(&a)?)?),
                "--bind" => {
                    let v = args.value(&a)?;
                    bind = v.parse().map_err(|_| format!("invalid address {v:?}"))?;
                }
                "--delay" => delay = parse_duration(&args.value(&a)?)?,
                "--name" => name = args.value(&a)?,
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            usage(&e);
        }
    }
    if tcp.is_empty() && udp.is_empty() {
        usage("give at least one --tcp or --udp port");
    }
    let reply: Arc<[u8]> = format!("{name}\n").into_bytes().into();
    let mut threads = Vec::new();
    for p in tcp {
        let addr = SocketAddr::new(bind, p);
        let l = TcpListener::bind(addr)
            .unwrap_or_else(|e| fail(&format!("cannot listen on tcp {addr}: {e}")));
        eprintln!("lab-server: listening tcp {addr} delay={delay:?}");
        let reply = Arc::clone(&reply);
        threads.push(thread::spawn(move || serve_tcp(l, delay, reply)));
    }
    for p in udp {
        let addr = SocketAddr::new(bind, p);
        let s = UdpSocket::bind(addr)
            .unwrap_or_else(|e| fail(&format!("cannot listen on udp {addr}: {e}")));
        eprintln!("lab-server: listening udp {addr} delay={delay:?}");
        let reply = Arc::clone(&reply);
        threads.push(thread::spawn(move || serve_udp(s, delay, reply)));
    }
    for t in threads {
        let _ = t.join();
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("lab-server: {msg}");
    std::process::exit(1);
}

fn port(s: &str) -> Result<u16, String> {
    s.parse().map_err(|_| format!("invalid port {s:?}"))
}

fn serve_tcp(l: TcpListener, delay: Duration, reply: Arc<[u8]>) {
    loop {
        match l.accept() {
            Ok((s, _)) => {
                let reply = Arc::clone(&reply);
                thread::spawn(move || answer_tcp(s, delay, &reply));
            }
            Err(e) => {
                eprintln!("lab-server: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn answer_tcp(mut s: TcpStream, delay: Duration, reply: &[u8]) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    // Read the request up to its first newline or its end; a client that only connects and
    // closes gets nothing.
    let mut got = false;
    loop {
        match s.read(&mut buf) {
            Ok(0) if got => break,
            Ok(0) => return,
            Ok(n) if buf[..n].contains(&b'\n') => break,
            Ok(_) => got = true,
            Err(_) => return,
        }
    }
    if !delay.is_zero() {
        thread::sleep(delay);
    }
    let _ = s.write_all(reply);
}

fn serve_udp(s: UdpSocket, delay: Duration, reply: Arc<[u8]>) {
    let s = Arc::new(s);
    let mut buf = [0u8; 65536];
    loop {
        match s.recv_from(&mut buf) {
            Ok((_, peer)) => {
                if delay.is_zero() {
                    let _ = s.send_to(&reply, peer);
                } else {
                    let (s, reply) = (Arc::clone(&s), Arc::clone(&reply));
                    thread::spawn(move || {
                        thread::sleep(delay);
                        let _ = s.send_to(&reply, peer);
                    });
                }
            }
            Err(e) => {
                eprintln!("lab-server: recv: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
