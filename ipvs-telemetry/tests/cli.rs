//! The real binary's command line on the host: each command takes only its own flags, `snapshot`
//! logs as told, boolean environment variables take the usual forms, a missing discovery
//! directory is said once, and errors follow `--log.format json`. The host has no IPVS, so the
//! commands run with `--no-netns.host` (or its variables) unless a test wants the host's error.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-telemetry");

/// Runs the binary with `args` and the extra environment `env` (the test's own
/// `IPVS_TELEMETRY_*` variables removed, so a developer's shell cannot change the outcome).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("IPVS_TELEMETRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The namespaces `snapshot --format json` printed.
fn namespaces(out: &Output) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["netns"].as_str().unwrap().to_string())
        .collect()
}

/// `snapshot` refuses the daemon's flags (before or after the command) with one line and exit
/// 2; the daemon's flags without a command are still the daemon's.
#[test]
fn each_command_takes_only_its_own_flags() {
    for args in [
        &["snapshot", "--ebpf", "on"][..],
        &["snapshot", "--poll.interval", "5s"],
        &["snapshot", "--web.listen-address", ":1"],
        &["--ebpf", "on", "snapshot"],
        &["serve", "--format", "json"],
    ] {
        let out = run(args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // Without a command the daemon's flags are parsed (a bad value is still exit 2 and names
    // the daemon's flag, not "unexpected argument").
    let out = run(&["--poll.interval", "0s"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--poll.interval"), "{}", stderr(&out));
}

/// `snapshot` sets up logging: a missing `--netns.discover` directory is a warning at the
/// default level, gone with `--log.level error`, JSON with `--log.format json`.
#[test]
fn snapshot_logs_and_says_a_discovery_directory_is_missing() {
    let missing = "/nonexistent/ipvs-telemetry-test/netns";
    let base = [
        "snapshot",
        "--format",
        "json",
        "--no-netns.host",
        "--netns.discover",
        missing,
    ];
    let out = run(&base, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("level=warn"), "{err}");
    assert!(
        err.contains(&format!(
            "--netns.discover directory {missing} does not exist"
        )),
        "{err}"
    );
    let out = run(&[&base[..], &["--log.level", "error"]].concat(), &[]);
    assert_eq!(stderr(&out), "");
    let out = run(&[&base[..], &["--log.format", "json"]].concat(), &[]);
    let line: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(line["level"], "warn");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
}

/// `IPVS_TELEMETRY_NETNS_HOST` and `IPVS_TELEMETRY_NO_NETNS_HOST` take true/false, 1/0,
/// yes/no, on/off; the command line wins over them; anything else is exit 2.
#[test]
fn boolean_environment_variables() {
    let json = ["snapshot", "--format", "json"];
    for (var, value) in [
        ("IPVS_TELEMETRY_NO_NETNS_HOST", "1"),
        ("IPVS_TELEMETRY_NO_NETNS_HOST", "true"),
        ("IPVS_TELEMETRY_NO_NETNS_HOST", "yes"),
        ("IPVS_TELEMETRY_NETNS_HOST", "0"),
        ("IPVS_TELEMETRY_NETNS_HOST", "false"),
        ("IPVS_TELEMETRY_NETNS_HOST", "off"),
    ] {
        let out = run(&json, &[(var, value)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{var}={value}: {}",
            stderr(&out)
        );
        assert!(namespaces(&out).is_empty(), "{var}={value}");
    }
    // The host namespace is read (and fails: no IPVS here, exit 1) when the variable says so
    // or the command line overrides it.
    for (args, env) in [
        (&json[..], ("IPVS_TELEMETRY_NO_NETNS_HOST", "0")),
        (&json[..], ("IPVS_TELEMETRY_NETNS_HOST", "on")),
        (
            &["snapshot", "--format", "json", "--netns.host"][..],
            ("IPVS_TELEMETRY_NO_NETNS_HOST", "1"),
        ),
    ] {
        let out = run(args, &[env]);
        assert_eq!(namespaces(&out), ["host"], "{args:?} {env:?}");
    }
    let out = run(&json, &[("IPVS_TELEMETRY_NETNS_HOST", "maybe")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("IPVS_TELEMETRY_NETNS_HOST: invalid boolean \"maybe\""),
        "{}",
        stderr(&out)
    );
}

/// Errors that stop the command are one JSON line under `--log.format json` (usage errors
/// too), and stay `ipvs-telemetry: ...` under logfmt.
#[test]
fn fatal_errors_follow_the_log_format() {
    /// Arguments, environment, exit status, text of the message.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 5] = [
        (&["--log.format", "json", "--bogus"], &[], 2, "--bogus"),
        (
            &["--bogus"],
            &[("IPVS_TELEMETRY_LOG_FORMAT", "json")],
            2,
            "--bogus",
        ),
        (
            &[
                "--log.format=json",
                "--web.config.file",
                "/nonexistent/web.yml",
            ],
            &[],
            2,
            "--web.config.file",
        ),
        (
            &["snapshot", "--log.format", "json"],
            &[("IPVS_TELEMETRY_NETNS_HOST", "maybe")],
            2,
            "invalid boolean",
        ),
        // The host namespace cannot be read here: exit 1 with the reason, as JSON.
        (
            &["snapshot", "--log.format", "json"],
            &[],
            1,
            "netns \"host\"",
        ),
    ];
    for (args, env, code, text) in cases {
        let out = run(args, env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or_default();
        let line: serde_json::Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {err}"));
        assert_eq!(line["level"], "error", "{err}");
        assert!(line["msg"].as_str().unwrap().contains(text), "{err}");
        assert!(line["ts"].is_string(), "{err}");
    }
    let out = run(&["--web.config.file", "/nonexistent/web.yml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("ipvs-telemetry: --web.config.file: "));
}

/// The collection flags' bad values, on the command line or in their environment variables,
/// are exit 2 with one line naming the flag.
#[test]
fn collection_flags_refuse_bad_values() {
    for (args, env) in [
        (&["serve", "--collection.ahead", "maybe"][..], None),
        (&["serve", "--collection.ahead"][..], None),
        (
            &["serve"][..],
            Some(("IPVS_TELEMETRY_COLLECTION_AHEAD", "maybe")),
        ),
        (&["serve", "--collection.max-age", "2h"][..], None),
        (
            &["serve"][..],
            Some(("IPVS_TELEMETRY_COLLECTION_MAX_AGE", "soon")),
        ),
        (&["serve", "--collection.timeout", "0s"][..], None),
        (&["serve", "--collection.timeout", "11m"][..], None),
        (
            &["serve"][..],
            Some(("IPVS_TELEMETRY_COLLECTION_TIMEOUT", "1x")),
        ),
    ] {
        let out = run(args, env.as_slice());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?} {env:?}: {err}");
        assert!(err.contains("--collection."), "{args:?} {env:?}: {err}");
    }
}
