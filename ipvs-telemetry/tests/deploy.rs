//! The shipped files and the build script, checked where a mistake would only show in
//! production: the build script's revision override (container builds) and architecture guard,
//! the image's runtime stage, the capability sets, the systemd unit's reload, and the Docker
//! namespace filter of every shipped command line that discovers `/var/run/docker/netns`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-telemetry");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The most recently built build script of this crate (`target/<profile>/build/
/// ipvs-telemetry-*/build-script-build`, next to the `deps` directory this test runs from).
fn build_script() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let build = exe.parent().unwrap().parent().unwrap().join("build");
    std::fs::read_dir(&build)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            // `ipvs-telemetry-<hash>`, not `ipvs-telemetry-common-<hash>` or the like.
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("ipvs-telemetry-")
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(|e| e.path().join("build-script-build"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("no build script of ipvs-telemetry under target/*/build")
}

/// Runs the build script outside any git checkout, as cargo would for `arch`, with `env`.
fn run_build_script(arch: &str, env: &[(&str, &str)]) -> Output {
    let out_dir = std::env::temp_dir().join(format!("ipvs-telemetry-build-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    // Any existing file will do as the probe object: the script only checks that it exists.
    let object = repo().join("Cargo.toml");
    let out = Command::new(build_script())
        .current_dir("/")
        .env_remove("IPVS_TELEMETRY_REVISION")
        .env("CARGO_CFG_TARGET_ARCH", arch)
        .env("CARGO_MANIFEST_DIR", repo().join("ipvs-telemetry"))
        .env("OUT_DIR", &out_dir)
        .env("IPVS_TELEMETRY_EBPF_OBJECT", object)
        .env("GIT_DIR", "/nonexistent")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&out_dir);
    out
}

/// A container build has no `.git`: `IPVS_TELEMETRY_REVISION` (the Containerfile's `REVISION`
/// build argument) names the revision, else it is `unknown`; and the Containerfile passes it.
#[test]
fn revision_comes_from_the_environment_without_git() {
    let out = run_build_script("x86_64", &[("IPVS_TELEMETRY_REVISION", "0123456789ab")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cargo:rustc-env=IPVS_TELEMETRY_REVISION=0123456789ab\n"),
        "{stdout}"
    );
    let out = run_build_script("x86_64", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cargo:rustc-env=IPVS_TELEMETRY_REVISION=unknown\n"),
        "{stdout}"
    );
    let containerfile = read("deploy/Containerfile");
    let build_stage = containerfile.split("\nFROM ").nth(1).unwrap();
    assert!(build_stage.contains("ARG REVISION"), "{build_stage}");
    assert!(
        build_stage.contains("IPVS_TELEMETRY_REVISION=\"$REVISION\" cargo xtask build"),
        "{build_stage}"
    );
}

/// A build for another architecture stops at once, saying why.
#[test]
fn other_architectures_are_refused_with_a_reason() {
    for arch in ["aarch64", "riscv64", "x86"] {
        let out = run_build_script(arch, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{arch} accepted");
        assert!(
            stderr.contains(&format!("builds for x86-64 only, not \"{arch}\""))
                && stderr.contains("pt_regs"),
            "{stderr}"
        );
    }
    assert!(read("README.md").contains("x86-64"));
}

/// The image's runtime stage carries `iptables-save` (both backends: Debian's `iptables`), and
/// every shipped capability set grants `CAP_NET_RAW`, which the legacy backend needs (the
/// Swarm lab test runs the daemon with exactly that set).
#[test]
fn the_image_and_the_capability_sets_can_read_docker_rules() {
    let containerfile = read("deploy/Containerfile");
    let runtime = containerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        runtime.contains("apt-get install -y --no-install-recommends iptables"),
        "{runtime}"
    );
    assert!(containerfile.contains("--cap-add NET_RAW"));
    assert!(read("deploy/kubernetes/daemonset.yaml").contains("- NET_RAW"));
    let unit = read("deploy/ipvs-telemetry.service");
    for key in ["AmbientCapabilities=", "CapabilityBoundingSet="] {
        let line = unit.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(line.contains("CAP_NET_RAW"), "{line}");
    }
    assert!(read("docs/swarm.md").contains("--cap-add NET_RAW"));
}

/// `systemctl reload` (documented in docs/web.md) sends SIGHUP.
#[test]
fn the_unit_reloads_with_sighup() {
    let unit = read("deploy/ipvs-telemetry.service");
    assert!(
        unit.lines()
            .any(|l| l == "ExecReload=/bin/kill -HUP $MAINPID"),
        "{unit}"
    );
}

/// The namespaces `snapshot` selects with `filter_args` among namespace files named like the
/// ones a Docker host and an OpenStack node have (regular files here: they are listed, as
/// unreadable, under their names, which is all the filter looks at).
fn selected(filter_args: &[String]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("ipvs-telemetry-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = [
        "ingress_sbox",
        "lb_njw64m6pr",
        "1-njw64m6prx",
        "0123456789ab",
        "f00dfeedbeef",
        "qrouter-5a1b",
    ];
    let mut args: Vec<String> = ["snapshot", "--format", "json"].map(String::from).to_vec();
    for n in names {
        let path = dir.join(n);
        std::fs::write(&path, b"").unwrap();
        args.push(format!("--netns={n}={}", path.display()));
    }
    args.extend_from_slice(filter_args);
    let out = Command::new(BIN).args(&args).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    json["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["netns"].as_str().unwrap().to_string())
        .collect()
}

/// Every shipped command line that discovers `/var/run/docker/netns` leaves out the
/// per-container and overlay namespaces (a thread, two sockets and series each, for nothing)
/// and keeps Swarm's load balancers, the node's namespace and `/run/netns` ones.
#[test]
fn docker_discovery_is_filtered_everywhere() {
    // The DaemonSet's args.
    let ds = read("deploy/kubernetes/daemonset.yaml");
    let args: Vec<String> = ds
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|a| format!("--{a}"))
        .collect();
    assert!(args.contains(&"--netns.discover=/var/run/docker/netns".to_string()));
    let filters: Vec<String> = args
        .iter()
        .filter(|a| a.starts_with("--netns.include") || a.starts_with("--netns.exclude"))
        .cloned()
        .collect();
    assert_eq!(
        selected(&filters),
        ["host", "ingress_sbox", "lb_njw64m6pr", "qrouter-5a1b"],
        "DaemonSet filter {filters:?}"
    );
    // Commands in the docs: each one that discovers Docker's directory has a filter on the
    // same (continued) command line, and the filter keeps the load balancers only.
    let mut checked = 0;
    for doc in [
        "README.md",
        "docs/swarm.md",
        "docs/namespaces.md",
        "docs/deploy.md",
    ] {
        let text = read(doc).replace("\\\n", " ");
        for line in text
            .lines()
            .filter(|l| l.contains("--netns.discover /var/run/docker/netns"))
        {
            let regex = line
                .split("--netns.include '")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap_or_else(|| panic!("{doc}: no --netns.include in {line:?}"));
            let got = selected(&[format!("--netns.include={regex}")]);
            assert!(
                got.iter()
                    .all(|n| ["host", "ingress_sbox", "lb_njw64m6pr"].contains(&n.as_str()))
                    && got.contains(&"ingress_sbox".to_string())
                    && got.contains(&"lb_njw64m6pr".to_string()),
                "{doc}: {line:?} selects {got:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} command lines found");
}
