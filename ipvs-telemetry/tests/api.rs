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
    let d = std::env::temp_dir().join(format!("ipvs-telemetry-api-{}", std::process::id()));
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
