//! `lab-agent`: runs inside the lab VM and executes the host's scripts.
//!
//! It opens the virtio serial port named [`proto::PORT_NAME`] (or the path given as the only
//! argument), reads requests (see `ipvs_lab_tools::proto`) and answers each one from its own
//! thread, so a hung command never blocks the others. `RUN` scripts run as `/bin/sh -c` in their
//! own process group; at the request's timeout the whole group is killed and the reply says so.
//! `SPAWN` scripts run in a new session with output in `/var/log/lab/spawn-<id>.log`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ipvs_lab_tools::proto::{self, Reply, Request};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SPAWN_LOG_DIR: &str = "/var/log/lab";

fn main() {
    let port = match std::env::args_os().nth(1) {
        Some(p) => PathBuf::from(p),
        None => match find_port() {
            Some(p) => p,
            None => {
                eprintln!("lab-agent: no virtio port named {}", proto::PORT_NAME);
                std::process::exit(1);
            }
        },
    };
    let file = match OpenOptions::new().read(true).write(true).open(&port) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("lab-agent: cannot open {}: {e}", port.display());
            std::process::exit(1);
        }
    };
    let writer = match file.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            eprintln!("lab-agent: cannot clone the port handle: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("lab-agent: listening on {}", port.display());
    let mut reader = BufReader::new(file);
    loop {
        match Request::read(&mut reader) {
            Ok(Some(req)) => {
                let writer = Arc::clone(&writer);
                thread::spawn(move || {
                    let reply = handle(req);
                    if let Ok(mut w) = writer.lock() {
                        if let Err(e) = proto::write_frame(&mut *w, &reply.encode()) {
                            eprintln!("lab-agent: write failed: {e}");
                        }
                    }
                });
            }
            // The port reports end of stream while the host side is disconnected: wait for it.
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                eprintln!("lab-agent: read failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Finds `/dev/vportNpM` whose sysfs name is the agent's port name.
fn find_port() -> Option<PathBuf> {
    for _ in 0..300 {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == proto::PORT_NAME {
                    return Some(PathBuf::from("/dev").join(e.file_name()));
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}

fn handle(req: Request) -> Reply {
    match req {
        Request::Ping { id } => Reply::Pong { id },
        Request::Run {
            id,
            timeout_ms,
            script,
        } => run(id, timeout_ms, &script),
        Request::Spawn { id, script, .. } => spawn(id, &script),
    }
}

fn shell(script: &[u8]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(std::ffi::OsStr::new(&*String::from_utf8_lossy(script)))
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("TERM", "dumb")
        .current_dir("/root");
    cmd
}

fn failed(id: u64, what: String) -> Reply {
    Reply::Done {
        id,
        status: -1,
        timed_out: false,
        stdout: Vec::new(),
        stderr: what.into_bytes(),
    }
}

fn code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn run(id: u64, timeout_ms: u64, script: &[u8]) -> Reply {
    let mut cmd = shell(script);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(id, format!("lab-agent: cannot start /bin/sh: {e}")),
    };
    let pid = child.id() as i32;
    let (done_tx, done_rx) = mpsc::channel();
    let out = collect(child.stdout.take(), done_tx.clone());
    let err = collect(child.stderr.take(), done_tx);
    let (exit_tx, exit_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let (status, timed_out) = match exit_rx.recv_timeout(timeout) {
        Ok(Ok(status)) => (code(status), false),
        Ok(Err(e)) => return failed(id, format!("lab-agent: wait failed: {e}")),
        Err(_) => {
            // SAFETY: kill(2) on the process group we created; no memory is involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let status = exit_rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(Result::ok)
                .map(code)
                .unwrap_or(-1);
            (status, true)
        }
    };
    // Background children may keep the pipes open: give the readers a short grace period only.
    for _ in 0..2 {
        if done_rx.recv_timeout(Duration::from_millis(500)).is_err() {
            break;
        }
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map(|v| v.clone()).unwrap_or_default();
    Reply::Done {
        id,
        status,
        timed_out,
        stdout: take(&out),
        stderr: take(&err),
    }
}

/// Reads a pipe to its end on a thread; signals `done` at the end.
fn collect(
    pipe: Option<impl Read + Send + 'static>,
    done: mpsc::Sender<()>,
) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = Arc::clone(&buf);
    thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let mut chunk = [0u8; 16384];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut v) = b.lock() {
                    if v.len() + n <= proto::MAX_PAYLOAD / 2 {
                        v.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
        let _ = done.send(());
    });
    buf
}

fn spawn(id: u64, script: &[u8]) -> Reply {
    let _ = fs::create_dir_all(SPAWN_LOG_DIR);
    let log = format!("{SPAWN_LOG_DIR}/spawn-{id}.log");
    let file = match File::create(&log) {
        Ok(f) => f,
        Err(e) => return failed(id, format!("lab-agent: cannot create {log}: {e}")),
    };
    let file2 = match file.try_clone() {
        Ok(f) => f,
        Err(e) => return failed(id, format!("lab-agent: cannot clone {log}: {e}")),
    };
    let mut cmd = shell(script);
    cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(mut child) => {
            let pid = child.id();
            // Reap it when it ends (the agent is not PID 1).
            thread::spawn(move || {
                let _ = child.wait();
            });
            Reply::Done {
                id,
                status: 0,
                timed_out: false,
                stdout: format!("{pid} {log}\n").into_bytes(),
                stderr: Vec::new(),
            }
        }
        Err(e) => failed(id, format!("lab-agent: cannot start /bin/sh: {e}")),
    }
}
