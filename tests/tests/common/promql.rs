//! Every PromQL expression the project ships: the Grafana dashboard's panel queries and variable
//! queries, and the expressions of the Prometheus rules, with Grafana's template variables
//! replaced so that each one runs as is against Prometheus' HTTP API.
//!
//! Include it from a test file with `#[path = "common/promql.rs"] mod promql;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Repository-relative path of the Grafana dashboard.
pub(crate) const DASHBOARD: &str = "dashboards/ipvs-telemetry.json";
/// Repository-relative path of the Prometheus rules.
pub(crate) const RULES: &str = "rules/ipvs-telemetry.rules.yml";

/// What each template variable becomes when an expression runs outside Grafana: every
/// non-empty value (`.+`, so that a misspelt label name selects nothing, where `.*` would also
/// match the absent label), and for `service`, whose value is a list of label matchers, a
/// matcher every service series satisfies. Grafana's interval variables become one minute.
pub(crate) const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("instance", ".+"),
    ("netns", ".+"),
    ("destination", ".+"),
    ("service", r#"family=~".+""#),
    ("__rate_interval", "1m"),
    ("__interval", "1m"),
    ("__interval_ms", "60000"),
    ("__range", "1h"),
    ("__range_s", "3600"),
];

/// Variables Grafana defines itself.
pub(crate) const GRAFANA_BUILTINS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__org",
    "__user",
    "timeFilter",
];

/// The repository root (the parent of the `tests` crate).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the repository")
        .to_path_buf()
}

/// Every expression of the dashboard and the rules, variables substituted, as
/// `(where it comes from, expression)`.
pub(crate) fn all_expressions() -> Result<Vec<(String, String)>> {
    let mut raw = dashboard_expressions(&load_dashboard()?);
    raw.extend(rule_expressions(&load_rules()?));
    raw.into_iter()
        .map(|(source, expr)| {
            let expr = substitute(&expr).with_context(|| format!("{source}: {expr}"))?;
            Ok((source, expr))
        })
        .collect()
}

/// [`all_expressions`] without the alerts' expressions: those return data only while the alert
/// fires, so against a healthy system (the lab) only these must all return data.
pub(crate) fn non_alert_expressions() -> Result<Vec<(String, String)>> {
    Ok(all_expressions()?
        .into_iter()
        .filter(|(source, _)| !is_alert(source))
        .collect())
}

/// Whether an expression's source (as returned by [`all_expressions`]) is an alerting rule.
pub(crate) fn is_alert(source: &str) -> bool {
    source.starts_with(RULES) && source.contains(" alert ")
}

/// The alert's name, when an expression's source (as returned by [`all_expressions`]) is an
/// alerting rule.
pub(crate) fn alert_name(source: &str) -> Option<&str> {
    source.strip_prefix(RULES)?.strip_prefix(" alert ")
}

/// `expr` without its outermost threshold comparison against a number (`X > 0` becomes `X`,
/// also with `bool` or with the number on the left), so that an alert's condition can be
/// evaluated while the alert does not fire; `None` when the expression does not end in such a
/// comparison at the top level.
pub(crate) fn without_threshold(expr: &str) -> Option<String> {
    let bytes = expr.as_bytes();
    let (mut depth, mut in_string) = (0i32, false);
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'(' | b'{' | b'[' => depth += 1,
                b')' | b'}' | b']' => depth -= 1,
                b'>' | b'<' | b'=' | b'!' if depth == 0 => {
                    let two = bytes.get(i + 1) == Some(&b'=');
                    // `=~`, `!~` only occur inside selectors; a lone `=` is no operator.
                    if two || matches!(c, b'>' | b'<') {
                        let len = if two { 2 } else { 1 };
                        last = Some((i, i + len));
                        i += len;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    let (start, end) = last?;
    let is_number = |s: &str| s.trim().parse::<f64>().is_ok();
    let left = expr[..start].trim();
    let right = expr[end..].trim();
    let right = right.strip_prefix("bool ").map(str::trim).unwrap_or(right);
    if is_number(right) {
        Some(left.to_owned())
    } else if is_number(left) {
        Some(right.to_owned())
    } else {
        None
    }
}

/// Writes a copy of the rules file into `dir` whose groups are evaluated every `interval`
/// (the shipped recording group runs every 30 s) and returns its path.
pub(crate) fn rules_evaluated_every(dir: &Path, interval: &str) -> Result<PathBuf> {
    let text = load_rules()?;
    if !text.contains("interval: 30s") {
        bail!("{RULES} has no `interval: 30s` to replace");
    }
    let path = dir.join("ipvs-telemetry.rules.yml");
    std::fs::write(
        &path,
        text.replace("interval: 30s", &format!("interval: {interval}")),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `promtool check rules` on the shipped rules file: an error with promtool's output unless it
/// succeeds and counts as many rules as [`rule_expressions`] reads. Returns promtool's output.
pub(crate) fn promtool_check_rules() -> Result<String> {
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", RULES])
        .current_dir(repo_root())
        .output()
        .context("running promtool")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("promtool check rules failed:\n{text}");
    }
    let found = rule_expressions(&load_rules()?).len();
    if !text.contains(&format!("SUCCESS: {found} rules found")) {
        bail!(
            "promtool and the expression reader disagree on the number of rules ({found}):\n{text}"
        );
    }
    Ok(text)
}

/// Compares the answer of Prometheus' `/api/v1/rules` with the rules file: one line per rule
/// Prometheus loaded that the expression reader did not find (or the reverse), and per rule
/// whose last evaluation failed.
pub(crate) fn loaded_rule_problems(api_rules: &Value) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut loaded = Vec::new();
    for group in api_rules["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let kind = if rule["type"] == "alerting" {
                "alert"
            } else {
                "record"
            };
            let name = rule["name"].as_str().unwrap_or("?");
            loaded.push(format!("{RULES} {kind} {name}"));
            if rule["health"] == "err" {
                problems.push(format!("rule {name} fails: {}", rule["lastError"]));
            }
        }
    }
    let mut read: Vec<String> = rule_expressions(&load_rules()?)
        .into_iter()
        .map(|(source, _)| source)
        .collect();
    loaded.sort();
    read.sort();
    if loaded != read {
        problems.push(format!(
            "rules loaded by Prometheus {loaded:?} differ from the rules read from {RULES} {read:?}"
        ));
    }
    Ok(problems)
}

/// Reads and parses the dashboard JSON.
pub(crate) fn load_dashboard() -> Result<Value> {
    let path = repo_root().join(DASHBOARD);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Reads the rules file.
pub(crate) fn load_rules() -> Result<String> {
    let path = repo_root().join(RULES);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every panel of the dashboard, rows' nested panels included.
pub(crate) fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The template variables of the dashboard.
pub(crate) fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

/// The text of a query variable's query (Grafana stores either a string or an object).
pub(crate) fn variable_query(variable: &Value) -> Option<&str> {
    let query = &variable["query"];
    query
        .as_str()
        .or_else(|| query.get("query").and_then(Value::as_str))
}

/// The PromQL expressions of the dashboard, variables not yet substituted: every panel
/// target's `expr`, and the PromQL inside `label_values(SELECTOR, label)` and
/// `query_result(EXPR)` variable queries.
pub(crate) fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for variable in variables(dashboard) {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("?");
        if let Some(expr) = variable_query(variable).and_then(variable_promql) {
            out.push((format!("dashboard variable {name}"), expr));
        }
    }
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let ref_id = target["refId"].as_str().unwrap_or("?");
                out.push((
                    format!("dashboard panel {title:?} query {ref_id}"),
                    expr.to_owned(),
                ));
            }
        }
    }
    out
}

/// The PromQL inside a Grafana variable query, if it has any.
fn variable_promql(query: &str) -> Option<String> {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return Some(inner.trim().to_owned());
    }
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))?;
    // label_values(SELECTOR, label): the selector is everything before the last top-level comma.
    let mut depth = 0i32;
    let mut in_string = false;
    let mut split = None;
    let mut prev = '\0';
    for (i, c) in inner.char_indices() {
        match c {
            '"' if prev != '\\' => in_string = !in_string,
            '{' | '(' | '[' if !in_string => depth += 1,
            '}' | ')' | ']' if !in_string => depth -= 1,
            ',' if !in_string && depth == 0 => split = Some(i),
            _ => {}
        }
        prev = c;
    }
    split.map(|i| inner[..i].trim().to_owned())
}

/// The expressions of a Prometheus rules file, as `(rule kind and name, expression)`.
///
/// A small reader for the subset of YAML the rules file uses: `- record: NAME` / `- alert: NAME`
/// items whose `expr:` is a plain or quoted scalar on the same line or a block scalar (`|`, `>`,
/// with chomping indicators). The test that uses it also compares the rule names with what
/// Prometheus itself loaded, so a rule this reader missed fails the test.
pub(crate) fn rule_expressions(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut current = String::from("?");
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let item = line.trim_start().trim_start_matches("- ");
        for kind in ["record", "alert"] {
            if let Some(name) = item.strip_prefix(kind).and_then(|r| r.strip_prefix(':')) {
                current = format!("{kind} {}", unquote(name.trim()));
            }
        }
        if let Some(rest) = item.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                let mut body = Vec::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let l_indent = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && l_indent <= indent {
                        break;
                    }
                    body.push(l.trim());
                    i += 1;
                }
                let expr = body.join("\n").trim().to_owned();
                out.push((format!("{RULES} {current}"), expr));
                continue;
            }
            out.push((format!("{RULES} {current}"), unquote(rest)));
        }
        i += 1;
    }
    out
}

/// Removes YAML single or double quotes around a scalar.
fn unquote(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        s[1..s.len() - 1].replace("''", "'")
    } else if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        s.to_owned()
    }
}

/// Grafana template variables referenced in a text: `$name`, `${name}`, `${name:format}` and
/// `[[name]]`. `$1`-style references (label_replace) are not variables and are skipped.
pub(crate) fn referenced_variables(text: &str) -> Vec<String> {
    references(text).into_iter().map(|r| r.name).collect()
}

/// One variable reference: where it is and what it names.
struct Reference {
    start: usize,
    end: usize,
    name: String,
}

fn references(text: &str) -> Vec<Reference> {
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'{' {
                if let Some(close) = text[i..].find('}') {
                    let inner = &text[i + 2..i + close];
                    let name = inner.split(':').next().unwrap_or_default().to_owned();
                    out.push(Reference {
                        start: i,
                        end: i + close + 1,
                        name,
                    });
                    i += close + 1;
                    continue;
                }
            } else if bytes[i + 1].is_ascii_alphabetic() || bytes[i + 1] == b'_' {
                let mut end = i + 1;
                while end < bytes.len() && ident(bytes[end]) {
                    end += 1;
                }
                out.push(Reference {
                    start: i,
                    end,
                    name: text[i + 1..end].to_owned(),
                });
                i = end;
                continue;
            }
        } else if bytes[i..].starts_with(b"[[") {
            if let Some(close) = text[i..].find("]]") {
                let inner = &text[i + 2..i + close];
                if !inner.is_empty() && inner.bytes().all(|b| ident(b) || b == b':') {
                    let name = inner.split(':').next().unwrap_or_default().to_owned();
                    out.push(Reference {
                        start: i,
                        end: i + close + 2,
                        name,
                    });
                    i += close + 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// Replaces every template variable with its value from [`SUBSTITUTIONS`]; an unknown variable
/// is an error naming it.
pub(crate) fn substitute(expr: &str) -> Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut last = 0;
    for reference in references(expr) {
        let Some((_, value)) = SUBSTITUTIONS.iter().find(|(n, _)| *n == reference.name) else {
            bail!("no substitution for template variable ${}", reference.name);
        };
        out.push_str(&expr[last..reference.start]);
        out.push_str(value);
        last = reference.end;
    }
    out.push_str(&expr[last..]);
    Ok(out)
}

/// Metric names an expression reads: identifiers of the project's prefixes `ipvs_` and `ipvs:`
/// (label names and strings excluded by looking only outside `{...}` and quotes).
pub(crate) fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut in_string = false;
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
        } else if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth -= 1;
        } else if depth == 0
            && (c.is_ascii_alphabetic() || c == b'_')
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"_:".contains(&bytes[i]))
            {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("ipvs_") || word.starts_with("ipvs:") {
                names.push(word.to_owned());
            }
            continue;
        }
        i += 1;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_every_form_and_keeps_label_replace_references() {
        let got = substitute(
            r#"label_replace(rate(x{netns=~"$netns", ${service:raw}, a=~"[[destination]]"}[$__rate_interval]), "d", "$1", "a", "(.*)")"#,
        )
        .unwrap();
        assert_eq!(
            got,
            r#"label_replace(rate(x{netns=~".+", family=~".+", a=~".+"}[1m]), "d", "$1", "a", "(.*)")"#
        );
        assert!(substitute("x[$unknown]").is_err());
    }

    #[test]
    fn reads_block_and_inline_rule_expressions() {
        let yaml = "groups:\n  - name: g\n    rules:\n      - record: a:b:c\n        expr: rate(x[1m])\n      - alert: A\n        expr: |\n          x\n            > 1\n        for: 5m\n      - alert: 'B'\n        expr: \"y == 0\"\n";
        assert_eq!(
            rule_expressions(yaml),
            vec![
                (format!("{RULES} record a:b:c"), "rate(x[1m])".to_owned()),
                (format!("{RULES} alert A"), "x\n> 1".to_owned()),
                (format!("{RULES} alert B"), "y == 0".to_owned()),
            ]
        );
    }

    #[test]
    fn removes_the_outermost_threshold_only() {
        assert_eq!(
            without_threshold("increase(x_total[5m]) > 0").as_deref(),
            Some("increase(x_total[5m])")
        );
        assert_eq!(
            without_threshold("0.5 < bool histogram_quantile(0.99, x{a=~\">\"})").as_deref(),
            Some("histogram_quantile(0.99, x{a=~\">\"})")
        );
        assert_eq!(
            without_threshold("(a > 0) / b >= 10").as_deref(),
            Some("(a > 0) / b")
        );
        assert_eq!(without_threshold("a > on() b"), None);
        assert_eq!(without_threshold("a and (b == 0)"), None);
        assert_eq!(without_threshold("x{a!=\"1\"}"), None);
        assert_eq!(alert_name(&format!("{RULES} alert IpvsX")), Some("IpvsX"));
        assert_eq!(alert_name(&format!("{RULES} record a:b")), None);
    }

    #[test]
    fn finds_metric_names_outside_selectors_and_strings() {
        assert_eq!(
            metric_names(r#"sum by (netns) (rate(ipvs_a_total{x="ipvs_no"}[1m])) / ipvs:b:rate1m"#),
            vec!["ipvs_a_total", "ipvs:b:rate1m"]
        );
    }
}
