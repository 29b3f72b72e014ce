//! A reader of the daemon's text exposition (0.0.4 or OpenMetrics) for the end-to-end tests.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value (a timestamp, if any, is ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, with any `_bucket`/`_total` suffix as exposed.
    pub name: String,
    /// Label names to values, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k`, or "" when absent.
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Parses an exposition, skipping comments and blank lines.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (name, mut rest, has_labels) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..], true),
        None => {
            let (n, v) = line.split_once(' ')?;
            (n, v, false)
        }
    };
    let mut labels = BTreeMap::new();
    if has_labels {
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (k, r) = rest.split_once("=\"")?;
            let mut v = String::new();
            let mut chars = r.char_indices();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            v.push(if e == 'n' { '\n' } else { e });
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
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_labels_and_values() {
        let s = parse(
            "# HELP x y\nipvs_up{netns=\"ingress_sbox\"} 1\nipvs_destination_connections_total{netns=\"a\\\"b\",fwmark=\"256\",protocol=\"tcp\"} 12 1700000000\nplain 3.5\nbad{x=\"1\"} nan-ish\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].label("netns"), "ingress_sbox");
        assert_eq!(s[1].label("netns"), "a\"b");
        assert_eq!(s[1].label("fwmark"), "256");
        assert_eq!(s[1].value, 12.0);
        assert_eq!((s[2].name.as_str(), s[2].value), ("plain", 3.5));
    }
}
