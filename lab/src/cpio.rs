//! A writer of uncompressed `newc` cpio archives, the format the kernel unpacks as initramfs.
//!
//! Parent directories are emitted automatically before their first entry. Paths under `/bin`,
//! `/sbin`, `/lib` and `/lib64` are written under `/usr` (merged-/usr layout), with the four
//! top-level directories as symlinks, so host paths from `ldd` land in one place. Uncompressed,
//! because decompression is the slow part of unpacking under TCG.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// The merged-/usr symlinks every archive starts with.
const MERGED: &[(&str, &str)] = &[
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

/// An archive being written.
pub(crate) struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
    written: u64,
}

/// Maps a guest path to its place in the merged-/usr layout, without leading slash.
pub(crate) fn normalize(path: &str) -> String {
    let p = path.trim_start_matches('/');
    for (link, target) in MERGED {
        if p == *link {
            return target.to_string();
        }
        if let Some(rest) = p.strip_prefix(link).and_then(|r| r.strip_prefix('/')) {
            return format!("{target}/{rest}");
        }
    }
    p.trim_end_matches('/').to_string()
}

impl CpioWriter<BufWriter<File>> {
    /// Creates `path` and starts an archive in it.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        Ok(Self::new(BufWriter::with_capacity(
            1 << 20,
            File::create(path)?,
        )))
    }
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out` with the merged-/usr symlinks.
    pub(crate) fn new(out: W) -> Self {
        let mut w = Self {
            out,
            ino: 1000,
            dirs: BTreeSet::new(),
            written: 0,
        };
        w.dirs.insert(String::new());
        w
    }

    /// Writes the top-level merged-/usr symlinks (only the first archive of an initrd needs them).
    pub(crate) fn merged_usr(&mut self) -> io::Result<()> {
        for (link, target) in MERGED {
            self.dir(&format!("/{target}"))?;
            self.entry(link, S_IFLNK | 0o777, 0, 0, target.len() as u64)?;
            self.data(target.as_bytes())?;
        }
        Ok(())
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            if self.dirs.insert(cur.clone()) {
                let name = cur.clone();
                self.entry(&name, S_IFDIR | 0o755, 0, 0, 0)?;
            }
        }
        Ok(())
    }

    /// Adds a directory (and its parents).
    pub(crate) fn dir(&mut self, path: &str) -> io::Result<()> {
        let p = normalize(path);
        self.parents(&p)?;
        if self.dirs.insert(p.clone()) {
            self.entry(&p, S_IFDIR | 0o755, 0, 0, 0)?;
        }
        Ok(())
    }

    /// Adds a regular file with the given contents.
    pub(crate) fn file(&mut self, path: &str, mode: u32, contents: &[u8]) -> io::Result<()> {
        let p = normalize(path);
        self.parents(&p)?;
        self.entry(&p, S_IFREG | (mode & 0o7777), 0, 0, contents.len() as u64)?;
        self.data(contents)
    }

    /// Adds a copy of a host file (following symlinks), keeping its permission bits.
    pub(crate) fn host_file(&mut self, path: &str, host: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut f = File::open(host)?;
        let meta = f.metadata()?;
        let p = normalize(path);
        self.parents(&p)?;
        let len = meta.len();
        self.entry(
            &p,
            S_IFREG | (meta.permissions().mode() & 0o7777),
            0,
            0,
            len,
        )?;
        let mut copied = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        while copied < len {
            let want = (len - copied).min(buf.len() as u64) as usize;
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while being archived", host.display()),
                ));
            }
            self.out.write_all(&buf[..n])?;
            copied += n as u64;
        }
        self.written += len;
        self.pad()
    }

    /// Adds a symlink.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let p = normalize(path);
        self.parents(&p)?;
        self.entry(&p, S_IFLNK | 0o777, 0, 0, target.len() as u64)?;
        self.data(target.as_bytes())
    }

    /// Adds a character device node.
    pub(crate) fn char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let p = normalize(path);
        self.parents(&p)?;
        self.entry(&p, S_IFCHR | (mode & 0o7777), major, minor, 0)
    }

    /// Writes the trailer and returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 0, 0, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, mode: u32, rmaj: u32, rmin: u32, size: u64) -> io::Result<()> {
        if size > u32::MAX as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is too large for cpio"),
            ));
        }
        self.ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rmaj,
            rmin,
            name.len() + 1,
            0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += header.len() as u64 + name.len() as u64 + 1;
        self.pad()
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.pad()
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.written += n as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_to_merged_usr() {
        assert_eq!(
            normalize("/lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            normalize("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(normalize("/sbin"), "usr/sbin");
        assert_eq!(normalize("/libexec/x"), "libexec/x");
        assert_eq!(normalize("/etc/passwd"), "etc/passwd");
    }

    #[test]
    fn writes_aligned_newc_entries() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/etc/a/b", 0o644, b"hello").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        // Parents first, then the file, then the trailer.
        let etc = text.find("etc\0").unwrap();
        let ea = text.find("etc/a\0").unwrap();
        let eab = text.find("etc/a/b\0").unwrap();
        assert!(etc < ea && ea < eab);
        assert!(text.contains("hello"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
        assert!(bytes.starts_with(b"070701"));
    }
}
