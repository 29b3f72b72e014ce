//! The JSON API and `snapshot --format json` of the real binary on the host, validated against
//! `docs/api.schema.json`: basic auth (401), malformed queries (400, one line), unknown
//! namespaces (404). The host has no IPVS, so the `host` namespace carries an `error`; the
//! values themselves are checked in the lab (`tests/tests/top.rs`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipvs_lab::skip;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-telemetry");
const SCHEMA: &str = include_str!("../../docs/api.schema.json");

/// Validates `doc` against `docs/api.schema.json`.
fn validate(doc: &Value) -> Result<(), String> {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler
        .add_resource("https://ipvs-telemetry.invalid/api.schema.json", schema)
        .unwrap();
    let index = compiler
        .compile(
            "https://ipvs-telemetry.invalid/api.schema.json",
            &mut schemas,
        )
        .unwrap();
    schemas.validate(doc, index).map_err(|e| format!("{e:#}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The daemon, killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
                "--collection.max-age",
                "200ms",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "daemon did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status, content type and body of a curl request.
fn curl(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{content_type}",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    (code.parse().unwrap(), ctype.to_string(), body.to_string())
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "ipvs-telemetry-api-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Both documents of the API follow the schema; credentials, malformed queries and unknown
/// namespaces are refused with the right status and one line.
#[test]
fn api_documents_follow_the_schema_and_bad_requests_are_refused() {
    if !skip::require(
        "api_documents_follow_the_schema_and_bad_requests_are_refused",
        &[skip::tool("curl", "curl")],
    ) {
        return;
    }
    let dir = tempdir();
    let hash = bcrypt::hash_with_salt("s3cret", 4, [1; 16])
        .unwrap()
        .to_string();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let d = Daemon::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let get = |path: &str| curl(&["-u", "alice:s3cret", &d.url(path)]);

    // No credentials: 401, as for the metrics.
    let (code, _, body) = curl(&[&d.url("/api/v1/snapshot")]);
    assert_eq!((code, body.as_str()), (401, "Unauthorized\n"));
    let (code, _, _) = curl(&["-u", "alice:wrong", &d.url("/api/v1/destinations")]);
    assert_eq!(code, 401);

    let (code, ctype, body) = get("/api/v1/snapshot");
    assert_eq!((code, ctype.as_str()), (200, "application/json"), "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    validate(&doc).unwrap_or_else(|e| panic!("{e}\n{doc:#}"));
    assert_eq!(doc["namespaces"][0]["netns"], "host", "{doc}");
    let (code, _, body) = get("/api/v1/snapshot?netns=host");
    assert_eq!(code, 200, "{body}");

    let (code, ctype, body) = get("/api/v1/destinations");
    assert_eq!((code, ctype.as_str()), (200, "application/json"), "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    validate(&doc).unwrap_or_else(|e| panic!("{e}\n{doc:#}"));
    assert_eq!(doc["kind"], "destinations");

    for (path, status, line) in [
        (
            "/api/v1/destinations?service=tcp:10.0.0.1",
            400,
            "service \"tcp:10.0.0.1\": expected PROTOCOL:ADDRESS:PORT or fwm:MARK (tcp:10.0.0.1:80, udp:[2001:db8::1]:53, fwm:260)",
        ),
        (
            "/api/v1/destinations?destination=10.0.1.2",
            400,
            "destination \"10.0.1.2\": expected ADDRESS:PORT (10.0.1.2:8080, [2001:db8::20]:53)",
        ),
        (
            "/api/v1/snapshot?namespace=host",
            400,
            "unknown query parameter \"namespace\" (expected netns)",
        ),
        (
            "/api/v1/destinations?netns=a&netns=b",
            400,
            "query parameter \"netns\" given twice",
        ),
        ("/api/v1/snapshot?netns=nope", 404, "no namespace \"nope\""),
        (
            "/api/v1/destinations?netns=nope",
            404,
            "no namespace \"nope\"",
        ),
        ("/api/v2/snapshot", 404, "Not Found"),
    ] {
        let (code, _, body) = get(path);
        assert_eq!(
            (code, body.as_str()),
            (status, &*format!("{line}\n")),
            "{path}"
        );
    }
    let (code, _, _) = curl(&[
        "-u",
        "alice:s3cret",
        "-X",
        "POST",
        &d.url("/api/v1/snapshot"),
    ]);
    assert_eq!(code, 405);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `snapshot --format json` (one document, and one line per collection with `--repeat`)
/// follows the schema.
#[test]
fn snapshot_json_follows_the_schema() {
    let out = Command::new(BIN)
        .args(["snapshot", "--format", "json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    validate(&doc).unwrap_or_else(|e| panic!("{e}\n{doc:#}"));
    let out = Command::new(BIN)
        .args([
            "snapshot",
            "--format",
            "json",
            "--repeat",
            "2",
            "--interval",
            "10ms",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        validate(&serde_json::from_str(line).unwrap()).unwrap();
    }
}

/// `top --batch` with the real binary against the daemon: JSON frames follow the schema, the
/// text frame has its header, basic auth works from `--from.user`/`--from.password-file`, and
/// a refusal or a bad URL is one line and a non-zero exit.
#[test]
fn top_batch_reads_the_daemon_with_basic_auth() {
    let dir = tempdir();
    let hash = bcrypt::hash_with_salt("s3cret", 4, [1; 16])
        .unwrap()
        .to_string();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let d = Daemon::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let from = d.url("");
    let top = |args: &[&str]| {
        Command::new(BIN)
            .args(["top", "--from", &from, "--batch", "--delay", "100ms"])
            .args(args)
            .output()
            .unwrap()
    };
    let auth = [
        "--from.user",
        "alice",
        "--from.password-file",
        pw.to_str().unwrap(),
    ];
    let out = top(&[&auth[..], &["--iterations", "2", "--format", "json"]].concat());
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        validate(&doc).unwrap_or_else(|e| panic!("{e}\n{doc:#}"));
        assert_eq!(doc["kind"], "top");
    }
    let out = top(&[&auth[..], &["--iterations", "1", "--sort", "p99"]].concat());
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("sort P99") && text.contains("P99.9(ms)"),
        "{text}"
    );

    let out = top(&["--iterations", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/api/v1/snapshot: 401 Unauthorized"), "{err}");

    let out = Command::new(BIN)
        .args(["top", "--from", "ftp://x", "--batch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["top", "--from", &from, "--batch", "--sort", "bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sorting (numbers largest first, a missing quantile last, ties by name; destinations sorted
/// inside their service) and filtering (by namespace, service or destination).
#[test]
fn top_sorts_and_filters_rows() {
    use ipvs_telemetry::api::schema::QuantilesDoc;
    use ipvs_telemetry::top::{Row, SortKey, frame};
    let row = |netns: &str, svc: &str, dest: Option<&str>, cps: f64, p50: Option<f64>| Row {
        netns: netns.into(),
        service: svc.into(),
        destination: dest.map(str::to_string),
        names: String::new(),
        weight: dest.map(|_| 1),
        active_connections: 0,
        inactive_connections: 0,
        new_connections_per_second: cps,
        rate_source: "ebpf",
        bytes_per_second: 0,
        first_response_seconds: p50.map(|p| QuantilesDoc {
            p50: p,
            p90: p,
            p99: p,
            p999: p,
            max: p,
        }),
        unanswered: 0,
    };
    let groups = vec![
        (
            row("host", "tcp:10.0.0.1:80", None, 5.0, None),
            vec![
                row(
                    "host",
                    "tcp:10.0.0.1:80",
                    Some("10.0.1.1:80"),
                    1.0,
                    Some(0.05),
                ),
                row("host", "tcp:10.0.0.1:80", Some("10.0.1.2:80"), 4.0, None),
                row(
                    "host",
                    "tcp:10.0.0.1:80",
                    Some("10.0.1.3:80"),
                    0.0,
                    Some(0.01),
                ),
            ],
        ),
        (
            row("blue", "udp:10.0.0.2:53", None, 9.0, None),
            vec![row(
                "blue",
                "udp:10.0.0.2:53",
                Some("10.0.2.1:53"),
                9.0,
                None,
            )],
        ),
    ];
    let ids = |rows: Vec<Row>| -> Vec<String> {
        rows.into_iter()
            .map(|r| r.destination.unwrap_or(r.service))
            .collect()
    };
    assert_eq!(
        ids(frame(groups.clone(), SortKey::Conns, "")),
        [
            "udp:10.0.0.2:53",
            "10.0.2.1:53",
            "tcp:10.0.0.1:80",
            "10.0.1.2:80",
            "10.0.1.1:80",
            "10.0.1.3:80"
        ]
    );
    assert_eq!(
        ids(frame(groups.clone(), SortKey::P50, "tcp")),
        [
            "tcp:10.0.0.1:80",
            "10.0.1.1:80",
            "10.0.1.3:80",
            "10.0.1.2:80"
        ]
    );
    assert_eq!(
        ids(frame(groups.clone(), SortKey::Name, "10.0.2.")),
        ["udp:10.0.0.2:53", "10.0.2.1:53"]
    );
    assert_eq!(
        ids(frame(groups, SortKey::Name, "")),
        [
            "udp:10.0.0.2:53",
            "10.0.2.1:53",
            "tcp:10.0.0.1:80",
            "10.0.1.1:80",
            "10.0.1.2:80",
            "10.0.1.3:80"
        ]
    );
}

/// `top --from https://…` verifies the daemon's certificate with `--from.ca-file`, and refuses
/// (one line, exit 1) a certificate its CA did not sign.
#[test]
fn top_reads_an_https_daemon() {
    if !skip::require(
        "top_reads_an_https_daemon",
        &[skip::tool("openssl", "openssl")],
    ) {
        return;
    }
    let dir = tempdir();
    let openssl = |args: &str| {
        let out = Command::new("openssl")
            .current_dir(&dir)
            .args(args.split(' '))
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args}: {out:?}");
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    for ca in ["ca", "other"] {
        openssl(&format!(
            "req -x509 {ec} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN={ca} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
        ));
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&format!(
        "req {ec} -keyout server.key -out server.csr -subj /CN=server"
    ));
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
         -days 2 -extfile server.ext",
    );
    let cfg = dir.join("web.yml");
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let d = Daemon::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let top = |ca: &str| {
        Command::new(BIN)
            .args(["top", "--batch", "--iterations", "1", "--delay", "10ms"])
            .args(["--format", "json", "--from"])
            .arg(format!("https://127.0.0.1:{}", d.port))
            .arg("--from.ca-file")
            .arg(dir.join(ca))
            .output()
            .unwrap()
    };
    let out = top("ca.crt");
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    validate(&doc).unwrap();
    let out = top("other.crt");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
