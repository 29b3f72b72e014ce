//! The daemon's text exposition (Prometheus 0.0.4 or OpenMetrics) read back into samples, and
//! lookups by name and labels, for tests that scrape the daemon directly.
//!
//! Include it from a test file with `#[path = "common/exposition.rs"] mod exposition;`.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// One sample of the daemon's text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Series name as written (`_total`, `_bucket`, ... included).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k`, empty when absent.
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }

    /// Whether every `(label, value)` of `want` matches.
    pub fn matches(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == *v)
    }
}

/// Parses the Prometheus text format (0.0.4 or OpenMetrics), skipping comments.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => match line.split_once(' ') {
                Some((n, v)) => (n, v),
                None => continue,
            },
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if line.contains('{') {
            loop {
                rest = rest.trim_start_matches(',');
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let Some((k, r)) = rest.split_once("=\"") else {
                    break;
                };
                let mut v = String::new();
                let mut chars = r.char_indices();
                let mut end = r.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                v.push(match e {
                                    'n' => '\n',
                                    other => other,
                                });
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                labels.insert(k.to_string(), v);
                rest = &r[end..];
            }
        }
        let value = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        if let Some(value) = value {
            out.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    out
}

/// One scrape, parsed.
#[derive(Debug, Clone)]
pub struct Metrics(pub Vec<Sample>);

impl Metrics {
    /// Parses a scrape.
    pub fn parse(text: &str) -> Metrics {
        Metrics(parse_metrics(text))
    }

    /// The samples of `name` whose labels match `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0
            .iter()
            .filter(move |s| s.name == name && s.matches(labels))
    }

    /// The sum of the samples of `name` matching `labels`; `None` when none matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name, labels)
            .map(|s| s.value)
            .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
    }

    /// Whether some sample of `name` matches `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples(name, labels).next().is_some()
    }

    /// The names of every sample, deduplicated.
    pub fn names(&self) -> std::collections::BTreeSet<&str> {
        self.0.iter().map(|s| s.name.as_str()).collect()
    }
}

#[test]
fn parser_reads_labels_and_values() {
    let m = Metrics::parse(
        "# HELP x y\nipvs_up{netns=\"ingress_sbox\"} 1\nipvs_destination_connections_total{netns=\"a\\\"b\",fwmark=\"256\",protocol=\"tcp\"} 12 1700000000\nplain 3.5\nipvs_up{netns=\"b\"} 0\n",
    );
    assert_eq!(m.0.len(), 4);
    assert_eq!(m.0[0].label("netns"), "ingress_sbox");
    assert_eq!(m.0[1].label("netns"), "a\"b");
    assert_eq!(m.0[1].label("fwmark"), "256");
    assert_eq!(m.0[1].value, 12.0);
    assert_eq!((m.0[2].name.as_str(), m.0[2].value), ("plain", 3.5));
    assert_eq!(m.value("ipvs_up", &[("netns", "b")]), Some(0.0));
    assert_eq!(m.value("ipvs_up", &[]), Some(1.0));
    assert_eq!(m.value("ipvs_up", &[("netns", "c")]), None);
    assert!(m.has("plain", &[]));
}
