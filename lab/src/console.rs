//! The VM's serial console: QEMU writes it to its stdout, a thread copies it to `console.log`
//! and keeps the recent part in memory, watching for a kernel panic.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// How much console output stays in memory.
const KEEP: usize = 1 << 20;

/// Console texts that mean the kernel is dead.
const PANIC_MARKERS: &[&str] = &["Kernel panic - not syncing", "---[ end Kernel panic"];

/// The console of one VM.
pub(crate) struct Console {
    buf: Mutex<Vec<u8>>,
    panicked: AtomicBool,
    ended: AtomicBool,
    log: PathBuf,
}

impl Console {
    /// Starts copying `from` (QEMU's stdout) into `log`.
    pub(crate) fn start(
        from: impl Read + Send + 'static,
        log: &Path,
    ) -> std::io::Result<Arc<Console>> {
        let mut file = File::create(log)?;
        let console = Arc::new(Console {
            buf: Mutex::new(Vec::new()),
            panicked: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            log: log.to_path_buf(),
        });
        let c = Arc::clone(&console);
        let mut from = from;
        thread::Builder::new()
            .name("ipvs-lab-console".into())
            .spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    let n = match from.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let _ = file.write_all(&chunk[..n]);
                    let _ = file.flush();
                    if let Ok(mut b) = c.buf.lock() {
                        let start = b.len().saturating_sub(64);
                        b.extend_from_slice(&chunk[..n]);
                        let recent = String::from_utf8_lossy(&b[start..]);
                        if PANIC_MARKERS.iter().any(|m| recent.contains(m)) {
                            c.panicked.store(true, Ordering::SeqCst);
                        }
                        if b.len() > 2 * KEEP {
                            let cut = b.len() - KEEP;
                            b.drain(..cut);
                        }
                    }
                }
                c.ended.store(true, Ordering::SeqCst);
            })?;
        Ok(console)
    }

    /// Whether the kernel printed a panic.
    pub(crate) fn panicked(&self) -> bool {
        self.panicked.load(Ordering::SeqCst)
    }

    /// Whether QEMU closed the console (it exited).
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// The log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The lines worth showing in an error: after a panic, from a few lines before the first
    /// oops/panic line (up to 120 lines), otherwise the last `lines` lines.
    pub(crate) fn report(&self, lines: usize) -> String {
        if !self.panicked() {
            return self.tail(lines);
        }
        let text = self.tail(400);
        let all: Vec<&str> = text.lines().collect();
        let first = all
            .iter()
            .position(|l| {
                ["BUG:", "Oops:", "sysrq: ", "Kernel panic - not syncing"]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .unwrap_or(0);
        let start = first.saturating_sub(3);
        let end = all.len().min(start + 120);
        all[start..end].join("\n")
    }

    /// Waits up to `max` for QEMU to close the console (after a panic or exit), so that errors
    /// carry everything it printed.
    pub(crate) fn settle(&self, max: std::time::Duration) {
        let deadline = std::time::Instant::now() + max;
        while !self.ended() && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The last `lines` lines, carriage returns removed.
    pub(crate) fn tail(&self, lines: usize) -> String {
        let b = self.buf.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&b).replace('\r', "");
        let all: Vec<&str> = text.trim_end().lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
