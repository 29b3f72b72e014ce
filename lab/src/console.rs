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
pub struct Console {
    buf: Mutex<Vec<u8>>,
    panicked: AtomicBool,
    ended: AtomicBool,
    log: PathBuf,
}

impl Console {
    /// Starts copying `from` (QEMU's stdout) into `log`.
    pub fn start(from: impl Read + Send + 'static, log: &Path) -> std::io::Result<Arc<Console>> {
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
    pub fn panicked(&self) -> bool {
        self.panicked.load(Ordering::SeqCst)
    }

    /// Whether QEMU closed the console (it exited).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines, carriage returns removed.
    pub fn tail(&self, lines: usize) -> String {
        let b = self.buf.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&b).replace('\r', "");
        let all: Vec<&str> = text.trim_end().lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
