//! The operator-facing files: the Grafana dashboard, the Prometheus rules and example
//! configuration, and the systemd unit. Host-side only (no VM): promtool, a real Prometheus
//! parsing every shipped expression, and systemd-analyze.
//!
//! Tools missing on the host (promtool, prometheus, systemd-analyze; `cargo xtask deps`
//! installs them) make the test that needs them skip (`ipvs_lab::skip`: a failure under
//! `cargo xtask test`).

#[path = "common/prometheus.rs"]
mod prometheus;
#[path = "common/promql.rs"]
mod promql;
#[path = "common/synthetic.rs"]
mod synthetic;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ipvs_telemetry_e2e::{contract, skip};
use prometheus::{Prometheus, TempDir};
use promql::{
    DASHBOARD, GRAFANA_BUILTINS, RULES, dashboard_expressions, load_dashboard, load_rules,
    metric_names, panels, referenced_variables, repo_root, rule_expressions, variable_query,
    variables,
};
use serde_json::Value;

/// Whether `program` (from Debian package `package`) is installed; skips `test` when not.
fn needs(test: &str, program: &str, package: &str) -> bool {
    skip::require(test, &[skip::tool(program, package)])
}

/// Runs a command; returns (success, stdout + stderr).
fn run(program: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `promtool check rules` accepts the rules file and counts as many rules as the expression
/// reader of `common/promql.rs` finds.
#[test]
fn promtool_checks_rules() {
    if !needs("promtool_checks_rules", "promtool", "prometheus") {
        return;
    }
    promql::promtool_check_rules().unwrap();
}

/// `promtool check config` accepts the example configuration, rule files included.
#[test]
fn promtool_checks_example_config() {
    if !needs("promtool_checks_example_config", "promtool", "prometheus") {
        return;
    }
    let (ok, out) = run(
        "promtool",
        &["check", "config", "examples/prometheus.yml"],
        &repo_root(),
    );
    assert!(ok, "promtool check config failed:\n{out}");
    assert!(out.contains("1 rule files found"), "{out}");
}

/// The alerts' unit tests (rules/tests/): each alert fires on its scenario with the expected
/// labels and rendered annotations, and stays silent where it must (backup director, quiesced
/// destination, before `for:` elapses).
#[test]
fn promtool_unit_tests_of_alerts_pass() {
    if !needs(
        "promtool_unit_tests_of_alerts_pass",
        "promtool",
        "prometheus",
    ) {
        return;
    }
    let (ok, out) = run(
        "promtool",
        &["test", "rules", "rules/tests/ipvs-telemetry.test.yml"],
        &repo_root(),
    );
    assert!(
        ok && out.contains("SUCCESS"),
        "promtool test rules failed:\n{out}"
    );
    // Every alert of the rules file has a unit test.
    let tests =
        std::fs::read_to_string(repo_root().join("rules/tests/ipvs-telemetry.test.yml")).unwrap();
    for (source, _) in rule_expressions(&load_rules().unwrap()) {
        if let Some(alert) = source.split("alert ").nth(1) {
            assert!(
                tests.contains(&format!("alertname: {alert}")),
                "alert {alert} has no unit test in rules/tests/ipvs-telemetry.test.yml"
            );
        }
    }
}

/// The Kubernetes joins (rules/kubernetes.rules.yml) pass `promtool check rules` and their unit
/// tests on kube-state-metrics v2 series: every VIP kind, a Service with two ports on two
/// nodes, an ambiguous shared IP left unnamed, a pod IP reused after a restart, finished and
/// host-network pods left out.
#[test]
fn promtool_unit_tests_of_kubernetes_joins_pass() {
    if !needs(
        "promtool_unit_tests_of_kubernetes_joins_pass",
        "promtool",
        "prometheus",
    ) {
        return;
    }
    let root = repo_root();
    let (ok, out) = run(
        "promtool",
        &["check", "rules", "rules/kubernetes.rules.yml"],
        &root,
    );
    assert!(ok, "promtool check rules failed:\n{out}");
    let (ok, out) = run(
        "promtool",
        &["test", "rules", "rules/tests/kubernetes.test.yml"],
        &root,
    );
    assert!(
        ok && out.contains("SUCCESS"),
        "promtool test rules failed:\n{out}"
    );
}

/// The dashboard is importable Grafana JSON: a data source variable, every panel (rows
/// included) titled and described, every non-row panel with a unit and queries on the
/// `${datasource}` variable, unique panel ids, panels inside the 24-column grid and not
/// overlapping, heatmaps fed by `le` buckets.
#[test]
fn dashboard_is_well_formed() {
    let dashboard = load_dashboard().unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert!(dashboard["uid"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(dashboard["title"].as_str().is_some_and(|s| !s.is_empty()));

    let vars = variables(&dashboard);
    let datasource = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");
    assert_eq!(datasource["name"], "datasource");
    for name in ["netns", "service", "destination"] {
        let var = vars
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable"));
        assert_eq!(var["datasource"]["uid"], "${datasource}", "variable {name}");
    }

    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    let mut problems = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let kind = panel["type"].as_str().unwrap_or_default();
        if title.trim().is_empty() {
            problems.push(format!("a {kind} panel without a title"));
        }
        if panel["description"]
            .as_str()
            .is_none_or(|d| d.trim().len() < 20)
        {
            problems.push(format!("panel {title:?} has no real description"));
        }
        if !ids.insert(panel["id"].as_u64().unwrap_or(0)) {
            problems.push(format!("panel {title:?} repeats id {}", panel["id"]));
        }
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap_or(u64::MAX));
        if x.saturating_add(w) > 24 || w == 0 || h == 0 {
            problems.push(format!("panel {title:?} has a bad gridPos {g}"));
        }
        for (other, [ox, oy, ow, oh]) in &boxes {
            if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                problems.push(format!("panels {title:?} and {other:?} overlap"));
            }
        }
        boxes.push((title.to_owned(), [x, y, w, h]));
        if kind == "row" {
            continue;
        }
        if panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("panel {title:?} has no unit"));
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("panel {title:?} does not use ${{datasource}}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        let mut ref_ids = BTreeSet::new();
        for target in &targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.is_empty() {
                problems.push(format!("panel {title:?} has a query without expr"));
            }
            if !ref_ids.insert(target["refId"].as_str().unwrap_or_default().to_owned()) {
                problems.push(format!("panel {title:?} repeats a refId"));
            }
            if target["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "panel {title:?}: a query does not use ${{datasource}}"
                ));
            }
            if kind == "heatmap"
                && (target["format"] != "heatmap"
                    || !expr.contains("sum by (le)")
                    || !expr.contains("_bucket"))
            {
                problems.push(format!(
                    "heatmap {title:?} must sum `le` buckets with format heatmap: {expr}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));
}

/// Every template variable the dashboard references (queries, variable queries, titles,
/// descriptions, legends) is defined, and every defined variable is used.
#[test]
fn dashboard_variables_are_defined_and_used() {
    let dashboard = load_dashboard().unwrap();
    let defined: BTreeSet<String> = variables(&dashboard)
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    let mut texts = Vec::new();
    collect_strings(&dashboard["panels"], &mut texts);
    for var in variables(&dashboard) {
        texts.extend(variable_query(var).map(str::to_owned));
    }
    let mut used = BTreeSet::new();
    let mut undefined = BTreeSet::new();
    for text in &texts {
        for name in referenced_variables(text) {
            if !defined.contains(&name) && !GRAFANA_BUILTINS.contains(&name.as_str()) {
                undefined.insert(format!("${name} in {text:?}"));
            }
            used.insert(name);
        }
    }
    assert!(undefined.is_empty(), "undefined variables: {undefined:#?}");
    let unused: Vec<_> = defined.difference(&used).collect();
    assert!(unused.is_empty(), "variables never used: {unused:?}");
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Every series the dashboard and the rules read exists: `ipvs_*` names are in the metric
/// contract, `ipvs:*` names are recorded by the rules file.
#[test]
fn every_series_read_is_in_the_contract_or_recorded() {
    let rules = rule_expressions(&load_rules().unwrap());
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter_map(|(source, _)| source.split("record ").nth(1).map(str::to_owned))
        .collect();
    let mut known: BTreeSet<String> = contract::all_plain().map(str::to_owned).collect();
    for h in contract::HISTOGRAMS {
        for suffix in ["_bucket", "_sum", "_count"] {
            known.insert(format!("{h}{suffix}"));
        }
        // The native histogram, one series by the family's own name (protobuf scrapes with
        // native histograms on, docs/metrics.md).
        known.insert(h.to_string());
    }
    let mut all = dashboard_expressions(&load_dashboard().unwrap());
    all.extend(rules);
    let mut unknown = BTreeMap::new();
    for (source, expr) in &all {
        for name in metric_names(expr) {
            let ok = if name.contains(':') {
                recorded.contains(&name)
            } else {
                known.contains(&name)
            };
            if !ok {
                unknown.insert(name, source.clone());
            }
        }
    }
    assert!(unknown.is_empty(), "series nobody produces: {unknown:#?}");
}

/// Every recording rule is read by the dashboard or by another rule: no series is recorded for
/// nothing.
#[test]
fn every_recording_rule_is_used() {
    let rules = rule_expressions(&load_rules().unwrap());
    let mut read = BTreeSet::new();
    for (_, expr) in dashboard_expressions(&load_dashboard().unwrap())
        .iter()
        .chain(&rules)
    {
        read.extend(metric_names(expr));
    }
    let unused: BTreeSet<&str> = rules
        .iter()
        .filter_map(|(source, _)| source.split("record ").nth(1))
        .filter(|name| !read.contains(*name))
        .collect();
    assert!(unused.is_empty(), "recorded but never read: {unused:?}");
}

/// Every expression of the dashboard and the rules, template variables substituted, parses in
/// a real Prometheus (an HTTP 400 `bad_data` answer is a parse error), and Prometheus loaded
/// exactly the rules the expression reader found, all healthy.
#[test]
fn every_expression_parses_in_prometheus() {
    if !needs(
        "every_expression_parses_in_prometheus",
        "prometheus",
        "prometheus",
    ) {
        return;
    }
    let expressions = promql::all_expressions().unwrap();
    assert!(
        expressions.len() > 30,
        "only {} expressions",
        expressions.len()
    );

    let rules_path = repo_root().join(RULES);
    let server = Prometheus::start(&prometheus::config(&[rules_path], &[], "15s")).unwrap();

    let mut failures = Vec::new();
    for (source, expr) in &expressions {
        match server.query(expr) {
            Ok((200, json)) if json["status"] == "success" => {}
            Ok((status, json)) => failures.push(format!(
                "{source}: HTTP {status} {} {}\n    {expr}",
                json["errorType"], json["error"]
            )),
            Err(e) => failures.push(format!("{source}: {e:#}\n    {expr}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} expressions fail:\n{}",
        failures.len(),
        expressions.len(),
        failures.join("\n")
    );

    // The reader of the rules file saw what Prometheus loaded, and every rule is healthy.
    let problems = promql::loaded_rule_problems(&server.api("/api/v1/rules").unwrap()).unwrap();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A known-bad expression is reported as a parse error, so the test above can fail.
#[test]
fn prometheus_reports_parse_errors() {
    if !needs(
        "prometheus_reports_parse_errors",
        "prometheus",
        "prometheus",
    ) {
        return;
    }
    let server = Prometheus::start(&prometheus::config(&[], &[], "15s")).unwrap();
    let (status, json) = server.query("sum by (le (rate(x[1m]))").unwrap();
    assert_eq!(status, 400);
    assert_eq!(json["errorType"], "bad_data");
    let (status, json) = server.query("vector(1)").unwrap();
    assert_eq!((status, &json["status"]), (200, &Value::from("success")));
}

/// `systemd-analyze verify` accepts the unit (ExecStart pointed at an existing binary in a
/// temporary copy), its capability sets match, the settings that would break the daemon are
/// absent (kernel tunables read-only without hiding /proc/kallsyms), and `systemd-analyze
/// security` rates its exposure below 3.0.
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/ipvs-telemetry.service")).unwrap();
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    assert_eq!(get("ExecStart"), Some("/usr/local/bin/ipvs-telemetry"));
    let caps = "CAP_NET_ADMIN CAP_SYS_ADMIN CAP_BPF CAP_PERFMON CAP_NET_RAW";
    assert_eq!(get("AmbientCapabilities"), Some(caps));
    assert_eq!(get("CapabilityBoundingSet"), Some(caps));
    assert_eq!(get("RestrictNamespaces"), Some("net"));
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectKernelModules", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(get(key), Some(value), "{key}");
    }
    // ProtectKernelTunables would hide /proc/kallsyms, where the probes' symbol names are
    // looked up: the unit spells out its read-only paths instead.
    for forbidden in [
        "PrivateNetwork",
        "PrivateUsers",
        "ProcSubset",
        "ProtectKernelTunables",
    ] {
        assert_eq!(get(forbidden), None, "{forbidden} breaks the daemon");
    }
    let read_only = get("ReadOnlyPaths").unwrap_or_default();
    for path in ["/proc/sys", "/sys"] {
        assert!(
            read_only.split_whitespace().any(|p| p == path),
            "{path} read-only"
        );
    }
    assert!(!unit.contains("InaccessiblePaths=/proc/kallsyms"));
    let families = get("RestrictAddressFamilies").unwrap_or_default();
    for family in ["AF_NETLINK", "AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.split_whitespace().any(|f| f == family), "{family}");
    }
    let filter = get("SystemCallFilter").unwrap_or_default();
    for needed in ["bpf", "perf_event_open"] {
        assert!(filter.split_whitespace().any(|f| f == needed), "{needed}");
    }

    if !needs("systemd_unit_verifies", "systemd-analyze", "systemd") {
        return;
    }
    let dir = TempDir::new("ipvs-telemetry-unit").unwrap();
    let copy = dir.path().join("ipvs-telemetry.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/ipvs-telemetry",
            "ExecStart=/bin/true",
        ),
    )
    .unwrap();
    let copy = copy.to_str().unwrap();
    let (ok, out) = run("systemd-analyze", &["verify", copy], dir.path());
    assert!(ok, "systemd-analyze verify failed:\n{out}");
    assert!(
        !out.contains("ipvs-telemetry.service"),
        "systemd-analyze verify complains:\n{out}"
    );

    let (ok, out) = run(
        "systemd-analyze",
        &["security", "--offline=yes", copy],
        dir.path(),
    );
    if !ok && out.contains("offline") {
        return skip::skip("systemd_unit_verifies", "systemd-analyze has no --offline");
    }
    let exposure: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(exposure < 3.0, "exposure {exposure} >= 3.0:\n{out}");
}

/// Against a stand-in exporter serving every contract series (common/synthetic.rs, with one
/// staged problem per alert) and the rules evaluated every second: every dashboard query,
/// variable query, recording rule and alert expression returns data. Then the service variable
/// works as Grafana uses it: each value, taken from the `query_result` text with the variable's
/// regex, is a matcher list selecting exactly one service, and its display text is readable.
#[test]
fn every_expression_returns_data_from_contract_series() {
    if !needs(
        "every_expression_returns_data_from_contract_series",
        "prometheus",
        "prometheus",
    ) {
        return;
    }
    let exporter = synthetic::Exporter::start().unwrap();
    // The same rules, evaluated every second instead of every 30 s.
    let dir = TempDir::new("ipvs-telemetry-rules").unwrap();
    let rules = promql::rules_evaluated_every(dir.path(), "1s").unwrap();
    let server =
        Prometheus::start(&prometheus::config(&[rules], &[exporter.target()], "1s")).unwrap();

    let expressions = promql::all_expressions().unwrap();
    let alerts = expressions
        .iter()
        .filter(|(s, _)| promql::is_alert(s))
        .count();
    assert_eq!(
        alerts, 8,
        "the five alerts of issue 8 and the three of issue 15, each staged by the stand-in"
    );
    let failures = server.wait_for_data(&expressions, Duration::from_secs(120));
    assert!(
        failures.is_empty(),
        "{} of {} expressions return no data:\n{}\nprometheus log:\n{}",
        failures.len(),
        expressions.len(),
        failures.join("\n"),
        server.log()
    );

    // The service variable, as Grafana evaluates it.
    let dashboard = load_dashboard().unwrap();
    let vars = variables(&dashboard);
    let service = vars.iter().find(|v| v["name"] == "service").unwrap();
    assert_eq!(
        service["regex"], r#"/display="(?<text>[^"]*)",(?<value>[^}]*)}/"#,
        "the emulation below follows this regex"
    );
    let query = variable_query(service).unwrap();
    let promql = promql::substitute(
        query
            .strip_prefix("query_result(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap(),
    )
    .unwrap();
    let (_, answer) = server.query(&promql).unwrap();
    let mut shown = BTreeMap::new();
    for result in answer["data"]["result"].as_array().unwrap() {
        // Grafana's query_result text: name{k="v",...} value timestamp, labels in the order
        // Prometheus sends them (sorted).
        let labels = result["metric"].as_object().unwrap();
        let text = format!(
            "{{{}}} {} {}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap()))
                .collect::<Vec<_>>()
                .join(","),
            result["value"][1],
            result["value"][0]
        );
        let rest = text
            .strip_prefix("{display=\"")
            .unwrap_or_else(|| panic!("display is not the first label: {text}"));
        let (display, rest) = rest.split_once("\",").unwrap();
        let value = &rest[..rest.find('}').unwrap()];
        let (_, count) = server
            .query(&format!("count(ipvs_service_destinations{{{value}}})"))
            .unwrap();
        assert_eq!(
            count["data"]["result"][0]["value"][1], "1",
            "service value {value} must select exactly one service"
        );
        // The destination variable with this service selected.
        let dest_query = vars
            .iter()
            .find(|v| v["name"] == "destination")
            .and_then(|v| variable_query(v))
            .unwrap()
            .replace("${service:raw}", value);
        let selector = promql::substitute(
            dest_query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(sel, _)| sel)
                .unwrap(),
        )
        .unwrap();
        let (_, dests) = server.query(&selector).unwrap();
        let mut addrs: Vec<String> = dests["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metric"]["real_address"].as_str().unwrap().to_owned())
            .collect();
        addrs.sort();
        shown.insert(display.to_owned(), addrs);
    }
    let expected: BTreeMap<String, Vec<String>> = [
        // Named services show their name first (the synthetic exporter names two).
        (
            "shop — tcp 10.0.0.1:80",
            vec!["10.1.0.1", "10.1.0.2", "10.1.0.3"],
        ),
        (
            "udp [2001:db8::1]:53",
            vec!["2001:db8:1::1", "2001:db8:1::2"],
        ),
        ("web — fwmark 256 (inet) tcp 443", vec!["10.0.1.2"]),
        ("fwmark 7 (inet)", vec!["10.2.0.1", "10.2.0.2"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(shown, expected);
}

/// The deployment files keep what the daemon and docs/deploy.md rely on: the DaemonSet runs on
/// the host network with capabilities instead of privileged, mounts the namespace directories
/// with HostToContainer propagation and BTF read-only, probes the health endpoints; the
/// Containerfile builds with the project's xtask and ships only the binary; every file uses the
/// daemon's port.
#[test]
fn deploy_files_keep_their_contract() {
    let read = |p: &str| std::fs::read_to_string(repo_root().join(p)).unwrap();
    let ds = read("deploy/kubernetes/daemonset.yaml");
    let ds_lines: Vec<&str> = ds
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for needed in [
        "hostNetwork: true",
        "hostPID: false",
        "privileged: false",
        "drop: [ALL]",
        "- NET_ADMIN",
        "- SYS_ADMIN",
        "- BPF",
        "- PERFMON",
        "path: /-/ready",
        "path: /-/healthy",
        "mountPath: /run/netns",
        "mountPath: /var/run/docker/netns",
        "mountPath: /sys/kernel/btf",
        "path: /sys/kernel/btf",
        "prometheus.io/port: \"10054\"",
        "containerPort: 10054",
    ] {
        assert!(
            ds_lines.contains(&needed),
            "daemonset.yaml lacks `{needed}`"
        );
    }
    assert_eq!(
        ds_lines
            .iter()
            .filter(|l| **l == "mountPropagation: HostToContainer")
            .count(),
        2,
        "both namespace directories propagate host mounts"
    );
    assert!(!ds_lines.contains(&"privileged: true"));
    assert!(!ds_lines.contains(&"hostPID: true"));
    // Every mount is read-only.
    assert_eq!(
        ds_lines.iter().filter(|l| **l == "readOnly: true").count(),
        ds_lines
            .iter()
            .filter(|l| l.starts_with("mountPath:"))
            .count(),
        "every volume mount is read-only"
    );

    let containerfile = read("deploy/Containerfile");
    for needed in [
        "cargo xtask build --release",
        "llvm-22-dev",
        "bpf-linker",
        "rust-src",
        "FROM docker.io/library/debian:bookworm-slim",
        "COPY --from=build /out/ipvs-telemetry /usr/local/bin/ipvs-telemetry",
        "EXPOSE 10054",
    ] {
        assert!(
            containerfile.contains(needed),
            "Containerfile lacks `{needed}`"
        );
    }
    assert!(read("examples/prometheus.yml").contains("\"localhost:10054\""));
}
