//! Advisory file locks (`flock`): serialise kernel downloads and initramfs builds between
//! processes, and cap the number of VMs running at once on this machine.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// An exclusive lock held until drop (the kernel releases it when the file is closed).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))
}

/// Blocks until the exclusive lock on `path` is ours.
pub(crate) fn lock(path: &Path) -> Result<FileLock> {
    let file = open(path)?;
    loop {
        // SAFETY: flock(2) on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(FileLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
    }
}

/// Takes the exclusive lock on `path` if nobody holds it.
pub(crate) fn try_lock(path: &Path) -> Result<Option<FileLock>> {
    let file = open(path)?;
    // SAFETY: flock(2) on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(FileLock { _file: file }))
    } else {
        Ok(None)
    }
}

/// Takes one of `slots` lock files `<dir>/slot-N.lock`, waiting (and saying so once on stderr)
/// while all are held.
pub(crate) fn take_slot(dir: &Path, slots: usize) -> Result<FileLock> {
    let mut said = false;
    loop {
        for n in 0..slots.max(1) {
            if let Some(l) = try_lock(&dir.join(format!("slot-{n}.lock")))? {
                return Ok(l);
            }
        }
        if !said {
            eprintln!(
                "ipvs-lab: {slots} VMs already run on this machine (IPVS_LAB_MAX_VMS); waiting for one to end"
            );
            said = true;
        }
        thread::sleep(Duration::from_millis(250));
    }
}
