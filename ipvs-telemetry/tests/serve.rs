//! The real binary on the host: endpoints, negotiation, gzip, exit codes, TLS and basic auth
//! with curl, many concurrent scrapes, promtool. The host has no IPVS, so the `host` namespace
//! reports `ipvs_up 0`; the values themselves are checked against ipvsadm in the lab tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ipvs_lab::skip;

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-telemetry");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether curl (and openssl when `openssl`) are installed; skips `test` when not
/// (`ipvs_lab::skip`: a failure under `cargo xtask test`).
fn tools(test: &str, openssl: bool) -> bool {
    let mut need = vec![skip::tool("curl", "curl")];
    if openssl {
        need.push(skip::tool("openssl", "openssl"));
    }
    skip::require(test, &need)
}

/// Whether promtool is installed for the part of `test` that needs it; skips that part
/// (counted as a skip of `test`, a failure under `cargo xtask test`) when not.
fn promtool(test: &str) -> bool {
    skip::require(
        &format!("{test} (its promtool check)"),
        &[skip::tool("promtool", "prometheus")],
    )
}

/// The daemon, killed on drop.
struct Daemon {
    child: Child,
    port: u16,
    /// Everything the daemon wrote to stderr so far (a thread reads it).
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        Daemon::start_env(args, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    fn start_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args([
                "--web.listen-address",
                &listen,
                "--collection.max-age",
                "200ms",
            ])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = Some(read_log(child.stderr.take().unwrap(), log.clone()));
        let d = Daemon {
            child,
            port,
            log,
            reader,
        };
        d.wait_port();
        d
    }

    /// Starts the daemon with exactly `args`, without waiting for it to listen (for a start
    /// that must fail: [`Daemon::wait_exit`] then gives its exit code instead of hanging).
    fn start_any(args: &[&str]) -> Daemon {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = Some(read_log(child.stderr.take().unwrap(), log.clone()));
        Daemon {
            child,
            port: 0,
            log,
            reader,
        }
    }

    fn wait_port(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "daemon did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits until the daemon has logged a line containing `needle`; returns that line.
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log.lock().unwrap().clone();
            if let Some(l) = log.lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon never logged {needle:?}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    r.join().unwrap();
                }
                return (st.code().unwrap_or(-1), self.log.lock().unwrap().clone());
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A thread appending every line of `stderr` to `log`.
fn read_log(
    stderr: std::process::ChildStderr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut l = log.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    })
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A curl answer: status, lower-cased headers, body.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

fn curl(args: &[&str]) -> Result<Answer, String> {
    let dir = tempdir();
    let hdr = dir.join("h");
    let body = dir.join("b");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let headers = std::fs::read_to_string(&hdr).unwrap().to_ascii_lowercase();
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = std::fs::read(&body).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "ipvs-telemetry-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wait_ready(d: &Daemon) {
    wait_ready_with(d, &[]);
}

#[test]
fn endpoints_negotiation_and_gzip() {
    if !tools("endpoints_negotiation_and_gzip", false) {
        return;
    }
    let d = Daemon::start(&[]);
    wait_ready(&d);
    let a = curl(&[&d.url("/-/healthy")]).unwrap();
    assert_eq!(a.status, 200);
    let a = curl(&[&d.url("/")]).unwrap();
    let page = String::from_utf8(a.body).unwrap();
    assert!(page.contains("href=\"/metrics\""), "{page}");
    assert!(page.contains(env!("CARGO_PKG_VERSION")), "{page}");

    // No Accept: 0.0.4, identity.
    let a = curl(&[&d.url("/metrics")]).unwrap();
    assert_eq!(a.status, 200);
    assert!(
        a.headers
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        a.headers
    );
    assert!(!a.headers.contains("content-encoding"));
    let text = String::from_utf8(a.body).unwrap();
    assert!(text.contains("ipvs_up{netns=\"host\"} 0\n"), "{text}");
    assert!(text.contains("ipvs_telemetry_build_info{version=\""));
    assert!(text.contains("process_resident_memory_bytes "));
    assert!(text.contains("process_open_fds "));
    assert!(!text.contains("# EOF"));

    // Prometheus' Accept and gzip.
    let a = curl(&[
        "-H",
        "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "-H",
        "Accept-Encoding: gzip",
        &d.url("/metrics"),
    ])
    .unwrap();
    assert!(
        a.headers
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{}",
        a.headers
    );
    assert!(a.headers.contains("content-encoding: gzip"));
    let mut om = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&a.body[..])
        .read_to_string(&mut om)
        .unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE ipvs_collection_errors counter"));

    // Prometheus with native histograms on: protobuf, gzipped, decoded by the `prometheus`
    // crate's generated types.
    let a = curl(&[
        "-H",
        "Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "-H",
        "Accept-Encoding: gzip",
        &d.url("/metrics"),
    ])
    .unwrap();
    assert!(
        a.headers.contains(
            "content-type: application/vnd.google.protobuf; proto=io.prometheus.client.metricfamily; encoding=delimited"
        ),
        "{}",
        a.headers
    );
    assert!(a.headers.contains("content-encoding: gzip"));
    let mut pb = Vec::new();
    flate2::read::GzDecoder::new(&a.body[..])
        .read_to_end(&mut pb)
        .unwrap();
    let mut families = Vec::new();
    let mut rest = &pb[..];
    while !rest.is_empty() {
        use ::protobuf::Message;
        let mut is = ::protobuf::CodedInputStream::from_bytes(rest);
        let len = is.read_raw_varint64().unwrap() as usize;
        let start = is.pos() as usize;
        families.push(
            prometheus::proto::MetricFamily::parse_from_bytes(&rest[start..start + len]).unwrap(),
        );
        rest = &rest[start + len..];
    }
    let up = families.iter().find(|f| f.name() == "ipvs_up").unwrap();
    assert_eq!(up.metric[0].label[0].value(), "host");
    assert_eq!(up.metric[0].gauge.value(), 0.0);
    assert!(
        families
            .iter()
            .any(|f| f.name() == "process_resident_memory_bytes")
    );
    assert!(
        families
            .iter()
            .any(|f| f.name() == "ipvs_collection_errors_total")
    );

    // promtool on the live 0.0.4 output.
    if promtool("endpoints_negotiation_and_gzip") {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && report.trim().is_empty(), "{report}");
    }

    assert_eq!(curl(&[&d.url("/nope")]).unwrap().status, 404);
    let a = curl(&["-X", "POST", &d.url("/metrics")]).unwrap();
    assert_eq!(a.status, 405);
    let a = curl(&["-I", &d.url("/metrics")]).unwrap();
    assert_eq!(a.status, 200);

    // The collection loop keeps publishing: the error counter grows.
    let count = |t: &str| -> u64 {
        t.lines()
            .find(|l| l.starts_with("ipvs_collection_errors_total{netns=\"host\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let first = count(&text);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = String::from_utf8(curl(&[&d.url("/metrics")]).unwrap().body).unwrap();
        if count(&t) > first {
            break;
        }
        assert!(Instant::now() < deadline, "collections do not advance");
        std::thread::sleep(Duration::from_millis(100));
    }

    d.signal("TERM");
    let (code, err) = d.wait_exit();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("level=info msg=\"received SIGTERM, shutting down\""),
        "{err}"
    );
}

#[test]
fn hundred_concurrent_scrapes() {
    if !tools("hundred_concurrent_scrapes", false) {
        return;
    }
    let d = Daemon::start(&[]);
    wait_ready(&d);
    let url = d.url("/metrics");
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let gzip = i % 2 == 0;
                let mut args = vec!["-H", "Accept: application/openmetrics-text"];
                if gzip {
                    args.push("--compressed");
                }
                args.push(&url);
                curl(&args).map(|a| (a.status, a.body.len()))
            })
        })
        .collect();
    for h in handles {
        let (status, len) = h.join().unwrap().unwrap();
        assert_eq!(status, 200);
        assert!(len > 100);
    }
}

#[test]
fn exit_codes() {
    // Bad flag: 2, one line.
    let out = Command::new(BIN)
        .arg("--collection.max-age=0s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = Command::new(BIN)
        .args(["--web.listen-address", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Bad web config: 2, naming the key (TLS10 itself: tls_basic_auth_and_client_certificates,
    // which has a certificate and key to get that far).
    let dir = tempdir();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, "tls_server_config:\n  cert_file: x\n").unwrap();
    let out = Command::new(BIN)
        .arg("--web.config.file")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("tls_server_config.key_file: missing"), "{err}");
    std::fs::write(&cfg, "basic_auth_users:\n  alice: plaintext\n").unwrap();
    let out = Command::new(BIN)
        .arg("--web.config.file")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("basic_auth_users.alice"), "{err}");
    // Address taken: 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--web.listen-address", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    // SIGINT: 0.
    let d = Daemon::start(&[]);
    d.signal("INT");
    let (code, err) = d.wait_exit();
    assert_eq!(code, 0, "{err}");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out: Output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &a);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        ),
        // The server's next certificate, for rotation.
        (
            "rotated",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let mut a = vec!["req"];
        a.extend(ec);
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let subj = format!("/CN={name}");
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        let crt = format!("{name}.crt");
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// `openssl s_client` to the daemon on `port` with one protocol flag (`-tls1_1`, ...), trusting
/// `ca`, at security level 0 so that the client allows old versions and the server decides;
/// returns whether the handshake completed and the whole output.
fn s_client(port: u16, ca: &str, version: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-brief", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-CAfile", ca, "-cipher", "DEFAULT:@SECLEVEL=0", version])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text.contains("CONNECTION ESTABLISHED"), text)
}

/// A certificate rotated on disk (cert-manager, certbot: no SIGHUP) serves the next connection;
/// a half-done rotation (a certificate without its key) keeps the previous pair; a Kubernetes
/// secret volume's symlink swap is seen as well.
#[test]
fn rotated_certificates_are_picked_up_without_sighup() {
    if !tools("rotated_certificates_are_picked_up_without_sighup", true) {
        return;
    }
    let dir = tempdir();
    // Two unrelated CAs with their server certificates; the daemon reads ..data/server.*
    // through symlinks, as in a Kubernetes secret volume.
    let (one, two) = (dir.join("one"), dir.join("two"));
    for d in [&one, &two] {
        std::fs::create_dir_all(d).unwrap();
        make_certs(d);
    }
    let live = dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    for f in ["server.crt", "server.key"] {
        std::fs::copy(one.join(f), live.join(f)).unwrap();
    }
    let cfg = dir.join("web.yml");
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: live/server.crt\n  key_file: live/server.key\n",
    )
    .unwrap();
    let d = Daemon::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let url = format!("https://127.0.0.1:{}/-/healthy", d.port);
    let trusts = |ca: &Path| {
        curl(&["--cacert", ca.join("ca.crt").to_str().unwrap(), &url])
            .is_ok_and(|a| a.status == 200)
    };
    assert!(trusts(&one) && !trusts(&two));
    // Replace the files in place (new inode via rename, as most tools do).
    let replace = |from: &Path, name: &str| {
        let tmp = live.join(format!(".{name}.tmp"));
        std::fs::copy(from.join(name), &tmp).unwrap();
        std::fs::rename(&tmp, live.join(name)).unwrap();
    };
    // Half a rotation: the new certificate with the old key is refused, the old pair serves.
    replace(&two, "server.crt");
    assert!(trusts(&one), "the previous pair stopped serving");
    replace(&two, "server.key");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !trusts(&two) {
        assert!(Instant::now() < deadline, "rotated certificate not served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!trusts(&one));
    // Kubernetes: the files are symlinks into ..data, itself a symlink swapped atomically.
    let k8s = dir.join("k8s");
    std::fs::create_dir_all(k8s.join("v1")).unwrap();
    std::fs::create_dir_all(k8s.join("v2")).unwrap();
    for f in ["server.crt", "server.key"] {
        std::fs::copy(one.join(f), k8s.join("v1").join(f)).unwrap();
        std::fs::copy(two.join(f), k8s.join("v2").join(f)).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(f), k8s.join(f)).unwrap();
    }
    std::os::unix::fs::symlink("v1", k8s.join("..data")).unwrap();
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: k8s/server.crt\n  key_file: k8s/server.key\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !trusts(&one) {
        assert!(Instant::now() < deadline, "changed web.yml not picked up");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::os::unix::fs::symlink("v2", k8s.join("..data_tmp")).unwrap();
    std::fs::rename(k8s.join("..data_tmp"), k8s.join("..data")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !trusts(&two) {
        assert!(
            Instant::now() < deadline,
            "swapped secret volume not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_basic_auth_and_client_certificates() {
    if !tools("tls_basic_auth_and_client_certificates", true) {
        return;
    }
    let dir = tempdir();
    make_certs(&dir);
    let hash = bcrypt::hash_with_salt("s3cret", 4, [1; 16])
        .unwrap()
        .to_string();
    let cfg = dir.join("web.yml");
    std::fs::write(
        &cfg,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             min_version: TLS12\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n\
             basic_auth_users:\n  alice: {hash}\n"
        ),
    )
    .unwrap();
    if promtool("tls_basic_auth_and_client_certificates") {
        let out = Command::new("promtool")
            .args(["check", "web-config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check web-config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cfg_s = cfg.to_str().unwrap().to_string();
    let d = Daemon::start(&["--web.config.file", &cfg_s]);
    let https = format!("https://127.0.0.1:{}/metrics", d.port);
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let ok = curl(&["--cacert", ca, "-u", "alice:s3cret", &https]).unwrap();
    // Ready comes with the first collection; retry until then.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ok = ok;
    while ok.status == 503 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        ok = curl(&["--cacert", ca, "-u", "alice:s3cret", &https]).unwrap();
    }
    assert_eq!(ok.status, 200);
    assert!(
        ok.headers.contains("x-frame-options: deny"),
        "{}",
        ok.headers
    );
    let bad = curl(&["--cacert", ca, "-u", "alice:wrong", &https]).unwrap();
    assert_eq!(bad.status, 401);
    assert!(bad.headers.contains("www-authenticate: basic"));
    assert_eq!(
        curl(&["--cacert", ca, "-u", "bob:s3cret", &https])
            .unwrap()
            .status,
        401
    );
    assert_eq!(curl(&["--cacert", ca, &https]).unwrap().status, 401);
    // Plain HTTP to the TLS port fails.
    let plain = curl(&["-u", "alice:s3cret", &d.url("/metrics")]);
    assert!(plain.is_err() || plain.as_ref().is_ok_and(|a| a.status >= 400));
    // TLS 1.1 is refused by the server: a client that offers only TLS 1.1 (OpenSSL's security
    // level 0 so that the client itself allows it) gets an alert from the server (OpenSSL:
    // "SSL alert number N", only printed for a received alert), while the same client offering
    // TLS 1.2 completes the handshake.
    let (ok12, out12) = s_client(d.port, ca, "-tls1_2");
    assert!(
        ok12 && out12.contains("Protocol version: TLSv1.2"),
        "{out12}"
    );
    let (ok11, out11) = s_client(d.port, ca, "-tls1_1");
    assert!(
        !ok11 && out11.contains("SSL alert number"),
        "TLS 1.1 not refused by the server:\n{out11}"
    );
    drop(d);

    // min_version TLS13: the server refuses a TLS 1.2 client; TLS10 is a usage error naming it.
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         min_version: TLS13\n",
    )
    .unwrap();
    let d = Daemon::start(&["--web.config.file", &cfg_s]);
    let (ok12, out12) = s_client(d.port, ca, "-tls1_2");
    assert!(
        !ok12 && out12.contains("SSL alert number"),
        "TLS 1.2 not refused under min_version TLS13:\n{out12}"
    );
    let (ok13, out13) = s_client(d.port, ca, "-tls1_3");
    assert!(
        ok13 && out13.contains("Protocol version: TLSv1.3"),
        "{out13}"
    );
    drop(d);
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         min_version: TLS10\n",
    )
    .unwrap();
    let port = free_port().to_string();
    let (code, err) = Daemon::start_any(&[
        "--web.listen-address",
        &format!("127.0.0.1:{port}"),
        "--web.config.file",
        &cfg_s,
    ])
    .wait_exit();
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "tls_server_config.min_version: TLS10 is not supported (TLS12 and TLS13 only)"
        ),
        "{err}"
    );

    // RequireAndVerifyClientCert: no certificate -> refused; the client's certificate -> 200.
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    .unwrap();
    let d = Daemon::start(&["--web.config.file", &cfg_s]);
    let https = format!("https://127.0.0.1:{}/-/healthy", d.port);
    assert!(curl(&["--cacert", ca, &https]).is_err());
    let cert = dir.join("client.crt");
    let key = dir.join("client.key");
    let a = curl(&[
        "--cacert",
        ca,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        &https,
    ])
    .unwrap();
    assert_eq!(a.status, 200);

    // SIGHUP picks up a changed file: now plain HTTP with basic auth.
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(a) = curl(&[&d.url("/-/healthy")]) {
            assert_eq!(a.status, 401);
            break;
        }
        assert!(Instant::now() < deadline, "reload not picked up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // An invalid file on SIGHUP keeps the previous configuration: once the daemon has said so,
    // basic auth is still asked for and still accepted.
    std::fs::write(&cfg, "basic_auth_users: [").unwrap();
    d.signal("HUP");
    let line = d.wait_log("the new web configuration is invalid, keeping the previous one");
    assert!(line.contains("basic_auth_users"), "{line}");
    assert_eq!(curl(&[&d.url("/-/healthy")]).unwrap().status, 401);
    assert_eq!(
        curl(&["-u", "alice:s3cret", &d.url("/-/healthy")])
            .unwrap()
            .status,
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Basic auth covers every path, health endpoints included (a kubelet probe without
/// credentials gets 401), unless `--web.health-without-auth` opens `/-/healthy` and `/-/ready`
/// (and only those).
#[test]
fn health_endpoints_without_auth() {
    if !tools("health_endpoints_without_auth", false) {
        return;
    }
    let dir = tempdir();
    let hash = bcrypt::hash_with_salt("s3cret", 4, [1; 16])
        .unwrap()
        .to_string();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let cfg = cfg.to_str().unwrap();
    let status = |d: &Daemon, path: &str| curl(&[&d.url(path)]).unwrap().status;
    let d = Daemon::start(&["--web.config.file", cfg]);
    wait_ready_with(&d, &["-u", "alice:s3cret"]);
    for path in ["/-/healthy", "/-/ready", "/metrics", "/"] {
        assert_eq!(status(&d, path), 401, "{path}");
    }
    drop(d);
    let d = Daemon::start(&["--web.config.file", cfg, "--web.health-without-auth"]);
    wait_ready_with(&d, &[]);
    assert_eq!(status(&d, "/-/healthy"), 200);
    assert_eq!(status(&d, "/-/ready"), 200);
    assert_eq!(status(&d, "/metrics"), 401);
    assert_eq!(status(&d, "/"), 401);
    assert_eq!(status(&d, "/-/healthyx"), 401);
    drop(d);
    // The variable takes the usual boolean forms.
    let d = Daemon::start_env(
        &["--web.config.file", cfg],
        &[("IPVS_TELEMETRY_WEB_HEALTH_WITHOUT_AUTH", "1")],
    );
    wait_ready_with(&d, &[]);
    assert_eq!(status(&d, "/-/healthy"), 200);
    assert_eq!(status(&d, "/metrics"), 401);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `/-/ready` answers 200 when asked with `curl_args`.
fn wait_ready_with(d: &Daemon, curl_args: &[&str]) {
    let url = d.url("/-/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut args = curl_args.to_vec();
        args.push(&url);
        if curl(&args).is_ok_and(|a| a.status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn max_requests_answers_503_quickly() {
    if !tools("max_requests_answers_503_quickly", false) {
        return;
    }
    // Cost-12 bcrypt (~0.2-0.5 s each, one at a time) keeps requests in flight.
    let dir = tempdir();
    let hash = bcrypt::hash_with_salt("pw", 12, [2; 16])
        .unwrap()
        .to_string();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let d = Daemon::start(&[
        "--web.max-requests",
        "2",
        "--web.config.file",
        cfg.to_str().unwrap(),
    ]);
    let url = d.url("/metrics");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let user = format!("alice:wrong{i}");
                let a = curl(&["-u", &user, &url]).unwrap();
                (a.status, t.elapsed())
            })
        })
        .collect();
    let results: Vec<(u16, Duration)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let rejected: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!rejected.is_empty(), "{results:?}");
    assert!(
        results.iter().all(|(s, _)| *s == 503 || *s == 401),
        "{results:?}"
    );
    for (_, t) in &rejected {
        assert!(*t < Duration::from_secs(2), "503 took {t:?}");
    }
    drop(d);
    // 0 is no limit (not a limit of 0): every request is answered (401), none refused. A cheap
    // hash: on a loaded machine eight cost-12 verifications in a row outlast curl's 20 s.
    let cheap = bcrypt::hash_with_salt("pw", 4, [2; 16])
        .unwrap()
        .to_string();
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {cheap}\n")).unwrap();
    let d = Daemon::start(&[
        "--web.max-requests",
        "0",
        "--web.config.file",
        cfg.to_str().unwrap(),
    ]);
    let url = d.url("/metrics");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || curl(&["-u", &format!("alice:wrong{i}"), &url]).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().status, 401);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn any_address_listens_on_ipv4_and_ipv6() {
    if !tools("any_address_listens_on_ipv4_and_ipv6", false) {
        return;
    }
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return skip::skip(
            "any_address_listens_on_ipv4_and_ipv6",
            "no IPv6 loopback on this host",
        );
    }
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--web.listen-address", &format!(":{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "daemon did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    for url in [
        format!("http://127.0.0.1:{port}/-/healthy"),
        format!("http://[::1]:{port}/-/healthy"),
    ] {
        assert_eq!(curl(&[&url]).unwrap().status, 200, "{url}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The flags of docs/cli.md's tables, as written there (`--web.listen-address`, `--netns.host`).
fn documented_flags() -> Vec<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `--"))
        .flat_map(|l| {
            // A cell may name two flags ("`--a REGEX` / `--b REGEX`"), then aliases in
            // parentheses; `--[no-]x` is set through `--no-x`'s variable.
            let cell = l.split(" | ").next().unwrap_or("");
            let cell = cell.split(" (").next().unwrap_or("");
            cell.split("`--")
                .map(|f| {
                    f.replace("[no-]", "no-")
                        .split([' ', '`'])
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .filter(|f| !f.is_empty())
        .map(|f| format!("--{f}"))
        .collect()
}

/// docs/cli.md: every flag has an `IPVS_TELEMETRY_<FLAG>` variable (dots and dashes become
/// underscores); `--help` names exactly those, and the variables work: the listen address,
/// the telemetry path, a repeatable flag as a comma list, and a bad value is a usage error
/// naming the variable's flag.
#[test]
fn every_documented_flag_has_its_environment_variable() {
    if !tools("every_documented_flag_has_its_environment_variable", false) {
        return;
    }
    let flags = documented_flags();
    assert!(flags.len() >= 19, "{flags:?}");
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let help =
        help(&["serve", "--help"]) + &help(&["snapshot", "--help"]) + &help(&["top", "--help"]);
    let documented: std::collections::BTreeSet<String> = flags
        .iter()
        .map(|f| {
            format!(
                "IPVS_TELEMETRY_{}",
                f.trim_start_matches("--")
                    .replace(['.', '-'], "_")
                    .to_uppercase()
            )
        })
        .collect();
    let in_help: std::collections::BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split('=').next())
        .map(str::to_string)
        .collect();
    assert_eq!(documented, in_help, "docs/cli.md vs --help");

    // The variables take effect.
    let port = free_port();
    let mut child = Command::new(BIN)
        .env(
            "IPVS_TELEMETRY_WEB_LISTEN_ADDRESS",
            format!("127.0.0.1:{port}"),
        )
        .env("IPVS_TELEMETRY_WEB_TELEMETRY_PATH", "/m")
        .env("IPVS_TELEMETRY_NETNS_DEVICES_EXCLUDE", "^lo$")
        .env("IPVS_TELEMETRY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = read_log(child.stderr.take().unwrap(), log.clone());
    let d = Daemon {
        child,
        port,
        log,
        reader: Some(reader),
    };
    d.wait_port();
    wait_metrics(&d, "/m");
    assert_eq!(curl(&[&d.url("/metrics")]).unwrap().status, 404);
    let first = d.wait_log("starting ipvs-telemetry");
    assert!(first.starts_with('{'), "{first}");
    drop(d);
    let out = Command::new(BIN)
        .env("IPVS_TELEMETRY_POLL_INTERVAL", "0s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--poll.interval"), "{err}");
}

/// Waits until `path` serves the metrics (200 with `ipvs_up`).
fn wait_metrics(d: &Daemon, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = curl(&[&d.url(path)])
            && a.status == 200
        {
            assert!(String::from_utf8_lossy(&a.body).contains("ipvs_up{"));
            return;
        }
        assert!(Instant::now() < deadline, "{path} never served the metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--web.telemetry-path` (and its alias `--telemetry-path`) moves the metrics; the old path is
/// 404 and the landing page links the new one.
#[test]
fn telemetry_path_moves_the_metrics() {
    if !tools("telemetry_path_moves_the_metrics", false) {
        return;
    }
    for flag in ["--web.telemetry-path", "--telemetry-path"] {
        let d = Daemon::start(&[flag, "/x/metrics"]);
        wait_metrics(&d, "/x/metrics");
        assert_eq!(curl(&[&d.url("/metrics")]).unwrap().status, 404);
        let landing = curl(&[&d.url("/")]).unwrap();
        assert!(
            String::from_utf8_lossy(&landing.body).contains("/x/metrics"),
            "{flag}: landing page"
        );
    }
}

/// `--log.format json`: every line the daemon writes is one JSON object with `level`, `msg`
/// and `ts`; logfmt lines are `key=value` pairs.
#[test]
fn log_formats() {
    let d = Daemon::start(&["--log.format", "json"]);
    d.wait_log("starting ipvs-telemetry");
    let log = d.log.lock().unwrap().clone();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for k in ["level", "msg", "ts"] {
            assert!(v[k].is_string(), "{k} missing: {line}");
        }
    }
    drop(d);
    let d = Daemon::start(&["--log.format", "logfmt"]);
    let line = d.wait_log("starting ipvs-telemetry");
    assert!(
        line.contains("level=info") && line.contains("msg=\"starting ipvs-telemetry\""),
        "{line}"
    );
}

/// `snapshot --format prometheus` prints the series in the text format 0.0.4; `snapshot`
/// exits 1 when a namespace cannot be read (the reason on stderr, the others still printed),
/// 2 for a bad flag.
#[test]
fn snapshot_command_exit_codes_and_prometheus_format() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("snapshot")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--format", "prometheus", "--netns", "bad=/nonexistent/ns"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(out.contains("# TYPE ipvs_up gauge\n"), "{out}");
    assert!(out.contains("ipvs_up{netns=\"bad\"} 0\n"), "{out}");
    assert!(out.contains("ipvs_up{netns=\"host\"} "), "{out}");
    assert!(!out.contains("# EOF"), "{out}");
    assert!(
        err.contains("netns \"bad\": /nonexistent/ns: namespace file does not exist"),
        "{err}"
    );
    let (code, _, err) = run(&["--format", "yaml"]);
    assert_eq!(code, Some(2), "{err}");
}

/// `--web.max-requests 0` is no limit: requests far beyond the default's 40 in flight at once
/// are all answered, none with 503.
#[test]
fn max_requests_zero_is_unlimited() {
    if !tools("max_requests_zero_is_unlimited", false) {
        return;
    }
    // Cost-4 bcrypt (slow in a debug build), checked one at a time, keeps the 48 requests in
    // flight together.
    let dir = tempdir();
    let hash = bcrypt::hash_with_salt("pw", 4, [3; 16])
        .unwrap()
        .to_string();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let d = Daemon::start(&[
        "--web.max-requests",
        "0",
        "--web.config.file",
        cfg.to_str().unwrap(),
    ]);
    let url = d.url("/-/healthy");
    let handles: Vec<_> = (0..48)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let user = format!("alice:wrong{i}");
                curl(&["-u", &user, &url]).unwrap().status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/web.md: SIGHUP re-reads the certificates the web config names: after the files are
/// replaced, new connections get the new certificate without a restart.
#[test]
fn sighup_rotates_the_certificate() {
    if !tools("sighup_rotates_the_certificate", true) {
        return;
    }
    let dir = tempdir();
    make_certs(&dir);
    let cfg = dir.join("web.yml");
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let d = Daemon::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let (ok, out) = s_client(d.port, ca, "-tls1_3");
    assert!(ok && out.contains("Peer certificate: CN = server"), "{out}");
    for ext in ["crt", "key"] {
        std::fs::copy(
            dir.join(format!("rotated.{ext}")),
            dir.join(format!("server.{ext}")),
        )
        .unwrap();
    }
    d.signal("HUP");
    d.wait_log("reloaded the web configuration");
    let (ok, out) = s_client(d.port, ca, "-tls1_3");
    assert!(
        ok && out.contains("Peer certificate: CN = rotated"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 request on `s` (keep-alive), and the status line of its answer; `None` when
/// the daemon closed the connection without answering.
fn raw_request(s: &mut std::net::TcpStream, path: &str) -> Option<String> {
    use std::io::Read;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the end of the headers of the answer (the health endpoints' bodies are short and
    // come in the same read on loopback; what follows is not read).
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.lines().next().map(str::to_string)
}

/// docs/web.md's limits: at most 512 connections at once (the next one is closed at once, without
/// an answer, and served again when one ends), and request headers within 10 s (a client that
/// stops in the middle of them is disconnected, not kept forever).
#[test]
fn connection_limit_and_header_timeout() {
    let d = Daemon::start(&[]);
    let addr = ("127.0.0.1", d.port);
    let timeout = Some(Duration::from_secs(60));
    let open = || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(timeout).unwrap();
        s
    };
    // 512 keep-alive connections, each answered once (so each holds its place in the daemon).
    let mut held: Vec<std::net::TcpStream> = (0..512)
        .map(|i| {
            let mut s = open();
            let status = raw_request(&mut s, "/-/healthy");
            assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "connection {i}");
            s
        })
        .collect();
    let mut extra = open();
    assert_eq!(
        raw_request(&mut extra, "/-/healthy"),
        None,
        "the 513th connection was answered"
    );
    // One ends: a new connection is served (once the daemon has seen the close).
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = open();
        if raw_request(&mut s, "/-/healthy").as_deref() == Some("HTTP/1.1 200 OK") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served after one ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);

    // Half a request, then silence: closed after the 10 s header timeout (not at once, and
    // within 25 s: room for a loaded machine, below hyper's own 30 s default), without an answer.
    let mut s = open();
    s.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    let read = std::io::Read::read_to_end(&mut s, &mut rest);
    let waited = t.elapsed();
    assert!(
        read.is_ok(),
        "still open after {waited:?} (the read timed out): {read:?}"
    );
    assert!(
        waited >= Duration::from_secs(9),
        "closed after {waited:?}, before the header timeout"
    );
    assert!(
        rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

/// Issue 17's security checks. Basic auth: an unknown user costs a bcrypt verification like a
/// wrong password (the dummy hash), so the answer time does not tell which users exist. Each
/// request has a new password (no cached outcome); the two kinds alternate and their medians
/// are compared with a wide bound (a missing dummy makes the unknown user ~100 times faster).
#[test]
fn unknown_users_take_as_long_as_wrong_passwords() {
    if !tools("unknown_users_take_as_long_as_wrong_passwords", false) {
        return;
    }
    let dir = tempdir();
    // Cost 8: ~40 ms a verification in release, ~0.2 s in debug builds.
    let hash = bcrypt::hash_with_salt("s3cret", 8, [3; 16])
        .unwrap()
        .to_string();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let d = Daemon::start(&["--web.config.file", cfg.to_str().unwrap()]);
    wait_ready_with(&d, &["-u", "alice:s3cret"]);
    let url = d.url("/-/healthy");
    let time = |user: &str, i: usize| {
        let t = Instant::now();
        let a = curl(&["-u", &format!("{user}:guess{i}"), &url]).unwrap();
        assert_eq!(a.status, 401, "{user}");
        t.elapsed()
    };
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..7 {
        wrong.push(time("alice", i));
        unknown.push(time("mallory", i));
    }
    wrong.sort();
    unknown.sort();
    let (w, u) = (wrong[3], unknown[3]);
    let ratio = u.as_secs_f64() / w.as_secs_f64();
    eprintln!(
        "basic auth, cost 8, median of 7: wrong password {w:.1?}, unknown user {u:.1?} \
         (ratio {ratio:.2})"
    );
    assert!(
        (0.5..=2.0).contains(&ratio),
        "unknown user {unknown:?} vs wrong password {wrong:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One raw HTTP/1.1 request; the status of the answer (0 when there is none).
fn raw_status(port: u16, request: &[u8]) -> u16 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The daemon may answer and close before the whole request is sent: read what came.
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Issue 17's security checks: a header larger than hyper's buffer (1 MiB) or too many header
/// fields get 431, path traversal in any spelling gets 404 and no file, and the daemon keeps
/// serving.
#[test]
fn huge_headers_and_path_traversal_get_4xx() {
    let d = Daemon::start(&[]);
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    assert_eq!(raw_status(d.port, big.as_bytes()), 431);
    let mut many = String::from("GET /metrics HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw_status(d.port, many.as_bytes()), 431);
    for path in [
        "/../../../../etc/passwd",
        "/metrics/../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/-/../../etc/passwd",
        "//etc/passwd",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(d.port, req.as_bytes()), 404, "{path}");
    }
    let ok = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(d.port, ok), 200);
}

/// Issue 17's security checks: a web config that holds password hashes and is readable by
/// every user, and a bcrypt cost below 10, are reported (a warning each, at start and at each
/// reload); the daemon still serves (valid, merely unsafe).
#[test]
fn unsafe_web_config_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let cheap = bcrypt::hash_with_salt("pw", 5, [4; 16])
        .unwrap()
        .to_string();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {cheap}\n")).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = Daemon::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let line = d.wait_log("every user can read it (mode 644): chmod o-r");
    assert!(line.contains("level=warn"), "{line}");
    let line = d.wait_log("basic_auth_users.alice: bcrypt cost 5 is weak");
    assert!(line.contains("level=warn"), "{line}");
    // Fixed: 0600 and cost 10; a reload logs nothing more, a new weakness again.
    let good = bcrypt::hash_with_salt("pw", 10, [4; 16])
        .unwrap()
        .to_string();
    std::fs::write(
        &cfg,
        format!("basic_auth_users:\n  alice: {good}\n  bob: {cheap}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.signal("HUP");
    d.wait_log("basic_auth_users.bob: bcrypt cost 5 is weak");
    let log = d.log.lock().unwrap().clone();
    assert_eq!(log.matches("chmod o-r").count(), 1, "{log}");
    assert_eq!(log.matches("alice: bcrypt cost").count(), 1, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
