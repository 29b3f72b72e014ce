//! The agent's wire protocol: framed requests from the host, framed replies from the VM, over
//! one byte stream (a virtio serial port in the VM, a unix socket on the host).
//!
//! Every frame starts with one ASCII header line beginning with [`MAGIC`]; payloads follow the
//! header and their lengths are in it, so payloads may contain any bytes. A reader skips lines
//! that do not start with the magic, which resynchronises the stream after bytes were lost while
//! nobody listened (the host pings until the agent answers).
//!
//! Requests:
//! - `IPVSLAB PING <id>`
//! - `IPVSLAB RUN <id> <timeout_ms> <len>` + `len` bytes of script: run `sh -c script`, reply with
//!   its status and output.
//! - `IPVSLAB SPAWN <id> <timeout_ms> <len>` + script: start `sh -c script` in its own session
//!   with output to a log file, reply at once with `<pid> <log path>` on stdout.
//!
//! Replies:
//! - `IPVSLAB PONG <id>`
//! - `IPVSLAB DONE <id> <status> <timed_out 0|1> <stdout_len> <stderr_len>` + stdout + stderr.
//!   `status` is the exit code, 128 + signal when killed by a signal, -1 when the command could
//!   not be started (the reason is in stderr).

use std::io::{self, BufRead, Write};

/// First word of every header line.
pub const MAGIC: &str = "IPVSLAB";

/// Name of the virtio serial port the agent listens on (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "ipvs-lab.agent";

/// Largest payload accepted in either direction (64 MiB).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// A request from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Liveness probe.
    Ping {
        /// Request id, echoed in the reply.
        id: u64,
    },
    /// Run a script and wait for it.
    Run {
        /// Request id, echoed in the reply.
        id: u64,
        /// The agent kills the script's process group after this many milliseconds.
        timeout_ms: u64,
        /// The `sh -c` script.
        script: Vec<u8>,
    },
    /// Start a script in the background.
    Spawn {
        /// Request id, echoed in the reply.
        id: u64,
        /// Unused (kept for a uniform header).
        timeout_ms: u64,
        /// The `sh -c` script.
        script: Vec<u8>,
    },
}

/// A reply from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The request id.
        id: u64,
    },
    /// Result of [`Request::Run`] or [`Request::Spawn`].
    Done {
        /// The request id.
        id: u64,
        /// Exit code, 128 + signal, or -1 when the command could not be started.
        status: i32,
        /// Whether the agent killed the command at its timeout.
        timed_out: bool,
        /// Captured standard output.
        stdout: Vec<u8>,
        /// Captured standard error.
        stderr: Vec<u8>,
    },
}

impl Request {
    /// Serialises the request into one buffer (header line + payload).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Ping { id } => format!("{MAGIC} PING {id}\n").into_bytes(),
            Request::Run {
                id,
                timeout_ms,
                script,
            } => frame(
                format!("{MAGIC} RUN {id} {timeout_ms} {}\n", script.len()),
                &[script],
            ),
            Request::Spawn {
                id,
                timeout_ms,
                script,
            } => frame(
                format!("{MAGIC} SPAWN {id} {timeout_ms} {}\n", script.len()),
                &[script],
            ),
        }
    }

    /// Reads the next request; `Ok(None)` at end of stream. Garbage lines are skipped.
    pub fn read(r: &mut impl BufRead) -> io::Result<Option<Request>> {
        loop {
            let Some(words) = next_header(r)? else {
                return Ok(None);
            };
            let w: Vec<&str> = words.split(' ').collect();
            let req = match w.as_slice() {
                ["PING", id] => id.parse().ok().map(|id| Request::Ping { id }),
                [kind @ ("RUN" | "SPAWN"), id, t, len] => {
                    match (id.parse(), t.parse(), parse_len(len)) {
                        (Ok(id), Ok(timeout_ms), Some(len)) => {
                            let script = read_payload(r, len)?;
                            Some(if *kind == "RUN" {
                                Request::Run {
                                    id,
                                    timeout_ms,
                                    script,
                                }
                            } else {
                                Request::Spawn {
                                    id,
                                    timeout_ms,
                                    script,
                                }
                            })
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(req) = req {
                return Ok(Some(req));
            }
        }
    }
}

impl Reply {
    /// Serialises the reply into one buffer (header line + payload).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Pong { id } => format!("{MAGIC} PONG {id}\n").into_bytes(),
            Reply::Done {
                id,
                status,
                timed_out,
                stdout,
                stderr,
            } => frame(
                format!(
                    "{MAGIC} DONE {id} {status} {} {} {}\n",
                    u8::from(*timed_out),
                    stdout.len(),
                    stderr.len()
                ),
                &[stdout, stderr],
            ),
        }
    }

    /// Reads the next reply; `Ok(None)` at end of stream. Garbage lines are skipped.
    pub fn read(r: &mut impl BufRead) -> io::Result<Option<Reply>> {
        loop {
            let Some(words) = next_header(r)? else {
                return Ok(None);
            };
            let w: Vec<&str> = words.split(' ').collect();
            let reply = match w.as_slice() {
                ["PONG", id] => id.parse().ok().map(|id| Reply::Pong { id }),
                ["DONE", id, status, to, olen, elen] => {
                    match (id.parse(), status.parse(), parse_len(olen), parse_len(elen)) {
                        (Ok(id), Ok(status), Some(olen), Some(elen)) => {
                            let stdout = read_payload(r, olen)?;
                            let stderr = read_payload(r, elen)?;
                            Some(Reply::Done {
                                id,
                                status,
                                timed_out: *to == "1",
                                stdout,
                                stderr,
                            })
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(reply) = reply {
                return Ok(Some(reply));
            }
        }
    }
}

fn frame(header: String, payloads: &[&Vec<u8>]) -> Vec<u8> {
    let mut buf = header.into_bytes();
    for p in payloads {
        buf.extend_from_slice(p);
    }
    buf
}

fn parse_len(s: &str) -> Option<usize> {
    s.parse().ok().filter(|&n| n <= MAX_PAYLOAD)
}

/// Returns the words after the magic of the next header line, skipping anything else.
fn next_header(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        // The magic may follow garbage on the same line (a partial frame lost earlier).
        if let Some(pos) = text.find(MAGIC) {
            let rest = text[pos + MAGIC.len()..].trim_start();
            return Ok(Some(rest.to_string()));
        }
    }
}

fn read_payload(r: &mut impl BufRead, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes a whole frame and flushes.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_after_garbage() {
        let reqs = [
            Request::Ping { id: 7 },
            Request::Run {
                id: 1,
                timeout_ms: 5000,
                script: b"echo hi\nprintf '\\0'".to_vec(),
            },
            Request::Spawn {
                id: 2,
                timeout_ms: 0,
                script: Vec::new(),
            },
        ];
        let mut bytes = b"noise\nIPVSLAB BOGUS 1\n".to_vec();
        for r in &reqs {
            bytes.extend(r.encode());
        }
        let mut cur = io::Cursor::new(bytes);
        for r in &reqs {
            assert_eq!(Request::read(&mut cur).unwrap().as_ref(), Some(r));
        }
        assert_eq!(Request::read(&mut cur).unwrap(), None);
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Pong { id: 3 },
            Reply::Done {
                id: 4,
                status: -1,
                timed_out: true,
                stdout: b"out\n\n".to_vec(),
                stderr: b"IPVSLAB PONG 9\n".to_vec(),
            },
        ];
        let mut bytes = b"partialIPVS".to_vec();
        for r in &replies {
            bytes.extend(r.encode());
        }
        let mut cur = io::Cursor::new(bytes);
        for r in &replies {
            assert_eq!(Reply::read(&mut cur).unwrap().as_ref(), Some(r));
        }
        assert_eq!(Reply::read(&mut cur).unwrap(), None);
    }

    #[test]
    fn oversized_length_is_skipped() {
        let mut cur = io::Cursor::new(b"IPVSLAB RUN 1 1 999999999999\nIPVSLAB PING 2\n".to_vec());
        assert_eq!(
            Request::read(&mut cur).unwrap(),
            Some(Request::Ping { id: 2 })
        );
    }
}
