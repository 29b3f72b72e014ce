//! Tests that cannot run here (no lab, a missing tool, not root, a missing fixture) either skip
//! and say so, or fail: one switch for every test of the workspace.
//!
//! `IPVS_LAB_REQUIRED=1` (set by `cargo xtask test` unless `--allow-skips`) makes every missing
//! prerequisite a panic naming it. Otherwise a skip prints `skipped <test>: <why>` and, when
//! `IPVS_TEST_SKIP_LOG` names a file, appends that line to it, so that `cargo xtask test` can
//! count skipped tests (libtest counts them as passed).

use std::io::Write;

/// Whether every prerequisite is required (`IPVS_LAB_REQUIRED` set, not empty, not `0`).
pub fn required() -> bool {
    std::env::var_os("IPVS_LAB_REQUIRED").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips `test` because of `why`: panics under [`required`], else prints and records the skip.
/// The caller returns right after.
pub fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test}: {why} (IPVS_LAB_REQUIRED is set: every test must run)");
    }
    let line = format!("skipped {test}: {why}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("IPVS_TEST_SKIP_LOG").filter(|p| !p.is_empty()) {
        // One short append per line: concurrent tests do not interleave within a line.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
}

/// `Ok` when `program` is an executable file on `PATH`, else why not (with the Debian package
/// that provides it).
pub fn tool(program: &str, package: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    if found {
        Ok(())
    } else {
        Err(format!(
            "{program} is not installed (Debian package {package})"
        ))
    }
}

/// `Ok` when the process runs as root, else why it is needed.
pub fn root(what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(format!("needs root ({what})"))
    }
}

/// Checks every prerequisite in order; on the first missing one, [`skip`]s `test` and returns
/// `false` (the test then returns).
pub fn require(test: &str, prerequisites: &[Result<(), String>]) -> bool {
    match prerequisites.iter().find_map(|p| p.as_ref().err()) {
        None => true,
        Some(why) => {
            skip(test, why);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_tool_names_its_package() {
        assert_eq!(
            super::tool("no-such-tool-ipvs-lab", "pkg"),
            Err("no-such-tool-ipvs-lab is not installed (Debian package pkg)".into())
        );
        assert_eq!(super::tool("sh", "dash"), Ok(()));
    }
}
