//! Golden expositions: the fixed model of [`super::tests::sample_inputs`] (every family, every
//! option on) encoded in both formats and compared byte for byte with the committed files in
//! `fixtures/`. A change to a metric's name, type, help, labels, order or formatting shows up
//! here as a diff of those files, reviewed with the change.
//!
//! Regenerate after an intended change, then review `git diff`:
//!
//! ```text
//! IPVS_TELEMETRY_BLESS=1 cargo test -p ipvs-telemetry --lib metrics::golden
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use super::tests::sample_inputs;
use super::{ExportOptions, Format, encode};

/// Set to `1` to write the fixtures instead of comparing with them.
const BLESS_ENV: &str = "IPVS_TELEMETRY_BLESS";

fn check(format: Format, file: &str) {
    let got = encode(
        &Arc::new(sample_inputs()),
        &ExportOptions::everything(),
        format,
        false,
    )
    .unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/metrics/fixtures")
        .join(file);
    if std::env::var_os(BLESS_ENV).is_some_and(|v| v == "1") {
        std::fs::write(&path, &got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (write it with {BLESS_ENV}=1, see metrics/golden.rs)",
            path.display()
        )
    });
    if got[..] != want[..] {
        let (got, want) = (
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
        );
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{} differs from the encoding, first at line {}:\n  got:  {:?}\n  want: {:?}\n\
             If the change is intended, regenerate with {BLESS_ENV}=1 (see metrics/golden.rs) \
             and review the diff; update docs/metrics.md with it.",
            path.display(),
            first + 1,
            got.lines().nth(first).unwrap_or("<end>"),
            want.lines().nth(first).unwrap_or("<end>"),
        );
    }
}

#[test]
fn text_exposition_equals_the_golden_file() {
    check(Format::Text, "exposition.txt");
}

#[test]
fn openmetrics_exposition_equals_the_golden_file() {
    check(Format::OpenMetrics, "exposition.openmetrics.txt");
}

/// The families of the golden text exposition (`# TYPE` lines).
fn golden_families() -> std::collections::BTreeSet<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/metrics/fixtures/exposition.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(String::from)
        .collect()
}

/// The families docs/metrics.md names: every backquoted `ipvs_…`/`process_…` name, and the
/// short forms after one on the same line (`ipvs_service_incoming_bytes_total` /
/// `_outgoing_bytes_total`), expanded against `known`: the full name with one of its
/// `_`-suffixes replaced by the short form.
fn documented_families(
    known: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut full: Option<&str> = None;
        for (i, token) in line.split('`').enumerate() {
            if i % 2 == 0 || !token.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            if token.starts_with("ipvs_") || token.starts_with("process_") {
                full = Some(token);
                out.insert(token.to_string());
            } else if let (Some(f), true) = (full, token.starts_with('_')) {
                let expanded = f
                    .match_indices('_')
                    .map(|(at, _)| format!("{}{token}", &f[..at]))
                    .find(|name| known.contains(name));
                if let Some(name) = expanded {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// The golden exposition and docs/metrics.md name the same families: a family added, renamed
/// or removed in the code fails here until the reference says so too.
#[test]
fn golden_families_equal_the_documented_ones() {
    let golden = golden_families();
    let documented = documented_families(&golden);
    let undocumented: Vec<_> = golden.difference(&documented).collect();
    let unexposed: Vec<_> = documented.difference(&golden).collect();
    assert!(
        undocumented.is_empty() && unexposed.is_empty(),
        "in the golden exposition but not in docs/metrics.md: {undocumented:?}; \
         in docs/metrics.md but not in the golden exposition: {unexposed:?}"
    );
    assert!(golden.len() > 50, "{}", golden.len());
}
