//! The artifacts operators deploy, each run or checked by its real tool:
//! the OCI image (scripts/image, buildah, run by podman), the systemd unit
//! (systemd-analyze), the alert rules (promtool) and the Helm chart
//! (rendered by Go's text/template with sprig, validated against the
//! Kubernetes schemas of kubernetes-validate).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/setup installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// podman with the runtime and limits this machine's kernel allows: runc
/// (crun refuses hybrid cgroup v1/v2 hosts) and ulimits within the hard
/// ones (podman's default of 1048576 descriptors cannot be set without
/// CAP_SYS_RESOURCE, which this sandbox lacks).
fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

fn limits() -> [String; 4] {
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(65536)
        .min(65536);
    [
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

/// The image: built FROM scratch by scripts/image (twice: the same id),
/// run by podman as 65532 with a read-only root and the data on a
/// volume, it reads an object from an origin on the host (sha256), stops
/// cleanly on SIGTERM, and a new container on the same volume serves the
/// object as a hit (the origin is not asked again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_read_only_as_non_root_and_keeps_its_data() {
    let tag = format!("localhost/seedgate-test:{}", std::process::id());
    let binary = env!("CARGO_BIN_EXE_seedgate");
    let build = || {
        text(&run(Command::new(project().join("scripts/image"))
            .args(["--binary", binary, "--tag", &tag])
            .env("SOURCE_DATE_EPOCH", "1700000000")))
    };
    let first = build();
    let second = build();
    let id = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix("id "))
            .unwrap()
            .to_string()
    };
    assert_eq!(id(&first), id(&second), "the same binary, the same image");
    println!("{first}");
    let size: u64 = text(&run(podman().args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &tag,
    ])))
    .trim()
    .parse()
    .unwrap();
    println!(
        "image size {:.1} MiB (this test's debug binary; scripts/image of a release build: BENCHMARKS.md)",
        size as f64 / 1048576.0
    );
    let user = text(&run(podman().args([
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        &tag,
    ])));
    assert_eq!(user.trim(), "65532:65532");

    let (dir, nginx) = origin();
    let data = pseudo_random(12 << 20, 7101);
    nginx.put("img/a.bin", &data);
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    run(Command::new("chown").args(["65532:65532", volume.to_str().unwrap()]));
    let config = dir.path().join("seedgate.toml");
    std::fs::write(&config, http_origin_config(&nginx.base_url())).unwrap();
    let port = free_port();
    let name = format!("seedgate-test-{}", std::process::id());
    let start = || {
        run(podman()
            .args([
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "host",
                "--read-only",
            ])
            .args(limits())
            .arg("-v")
            .arg(format!("{}:/var/lib/seedgate", volume.display()))
            .arg("-v")
            .arg(format!(
                "{}:/etc/seedgate/seedgate.toml:ro",
                config.display()
            ))
            .arg(&tag)
            .args([
                "serve",
                "--config",
                "/etc/seedgate/seedgate.toml",
                "--data-dir",
                "/var/lib/seedgate",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}")));
    };
    let url = format!("http://127.0.0.1:{port}");
    let wait_ready = || async {
        let t = tokio::time::Instant::now();
        loop {
            if let Ok(r) = client().get(format!("{url}/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the container is not ready: {}",
                text(
                    &Command::new("podman")
                        .args(["logs", &name])
                        .output()
                        .unwrap()
                )
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let stop = || {
        run(podman().args(["stop", "-t", "30", &name]));
        let code = text(&run(podman().args([
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            &name,
        ])));
        let logs = Command::new("podman")
            .args(["logs", &name])
            .output()
            .unwrap();
        let logs = format!("{}{}", text(&logs), String::from_utf8_lossy(&logs.stderr));
        run(podman().args(["rm", &name]));
        (code.trim().to_string(), logs)
    };
    let _ = podman().args(["rm", "-f", &name]).output();
    start();
    wait_ready().await;
    let body = client()
        .get(format!("{url}/o/www/img/a.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(sha256(&body.bytes().await.unwrap()), sha256(&data));
    wait_stored(&format!("{url}/o/www/img/a.bin")).await;
    let (code, logs) = stop();
    assert_eq!(code, "0", "a clean exit on SIGTERM:\n{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(
        logs.lines().any(|l| l.starts_with('{')),
        "JSON logs: {logs}"
    );
    let asked = nginx.requests("/img/a.bin").len();

    start();
    wait_ready().await;
    let again = client()
        .get(format!("{url}/o/www/img/a.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(sha256(&again.bytes().await.unwrap()), sha256(&data));
    let (code, _) = stop();
    assert_eq!(code, "0");
    assert_eq!(
        nginx.requests("/img/a.bin").len(),
        asked,
        "the restarted container serves its stored copy"
    );
    let _ = podman().args(["rmi", &tag]).output();
}

/// The unit passes `systemd-analyze verify`, and `systemd-analyze
/// security` rates its exposure at most 2.0 (printed).
#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let unit =
        std::fs::read_to_string(project().join("packaging/systemd/seedgate.service")).unwrap();
    for must in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=seedgate",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "# MemoryDenyWriteExecute=yes cannot be set",
    ] {
        assert!(unit.contains(must), "the unit lacks {must:?}");
    }
    // verify checks that ExecStart's binary exists: point it at this one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seedgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/seedgate", env!("CARGO_BIN_EXE_seedgate")),
    )
    .unwrap();
    let verify = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path));
    let report = text(&security);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{report}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    println!("systemd-analyze security: {}", line.trim());
    assert!(score <= 2.0, "{report}");
}

/// The alert rules pass `promtool check rules` and their unit tests
/// (`promtool test rules`), and every seedgate metric they name is one a
/// real seedgate exports.
#[tokio::test]
async fn the_alert_rules_check_and_name_real_metrics() {
    let dir = project().join("packaging/prometheus");
    run(Command::new("promtool")
        .args(["check", "rules", "seedgate.rules.yml"])
        .current_dir(&dir));
    run(Command::new("promtool")
        .args(["test", "rules", "seedgate.rules.test.yml"])
        .current_dir(&dir));

    let (sdir, nginx) = origin();
    let sg = Seedgate::start(sdir.path(), &http_origin_config(&nginx.base_url()));
    let metrics = get(&sg.url("/metrics")).await.text().await.unwrap();
    let families: Vec<(String, String)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect();
    // A family is printed once it has a sample; the others are checked
    // against what src/metrics.rs registers (same prefix, same names).
    let source = std::fs::read_to_string(project().join("src/metrics.rs")).unwrap();
    let registered: Vec<String> = source
        .split("registry.register(")
        .skip(1)
        .filter_map(|r| Some(format!("seedgate_{}", r.split('"').nth(1)?)))
        .collect();
    assert!(
        families.iter().all(|(f, _)| registered.contains(f)),
        "{families:?}"
    );
    let exported = |name: &str| {
        let base = name.strip_suffix("_total").unwrap_or(name);
        families.iter().any(|(f, _)| f == name || f == base)
            || registered.iter().any(|r| r == name || r == base)
    };
    let rules = std::fs::read_to_string(dir.join("seedgate.rules.yml")).unwrap();
    let named: std::collections::BTreeSet<&str> = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:") || l.starts_with("          "))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("seedgate_"))
        .collect();
    assert!(named.len() >= 6, "{named:?}");
    for name in &named {
        assert!(
            exported(name),
            "the rules name {name}, which seedgate does not export"
        );
    }
}

/// Where `scripts/setup` installs kubernetes-validate.
fn k8s_validate() -> std::path::PathBuf {
    let venv = std::env::var("SEEDGATE_K8S_VALIDATE_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/seedgate/k8s-validate-venv",
            std::env::var("HOME").unwrap()
        )
    });
    Path::new(&venv).join("bin")
}

/// Builds tests/fixtures/helm-render (Go's text/template with sprig,
/// from Debian, in GOPATH mode: no module download).
fn helm_render() -> std::path::PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-render");
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(project().join("tests/fixtures/helm-render"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", ""));
    out
}

fn render(renderer: &Path, chart: &Path, values: &[&Path]) -> Output {
    let mut c = Command::new(renderer);
    for v in values {
        c.arg("-f").arg(v);
    }
    c.args(["--name", "prod"]).arg(chart).output().unwrap()
}

/// Each document's `data."seedgate.toml"`, read by PyYAML (from the
/// validator's venv).
fn configs_of(rendered: &Path) -> Vec<String> {
    let out = run(Command::new(k8s_validate().join("python"))
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
             print(json.dumps([d['data']['seedgate.toml'] for d in docs if d['kind'] == 'ConfigMap']))",
        ])
        .arg(rendered));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The chart renders (default values, and values using every option) to
/// objects valid against the Kubernetes 1.30 schemas, strictly (no unknown
/// field); the config it makes passes `seedgate config check`; and a
/// broken chart fails: a template syntax error, a misspelled field, a
/// value the templates do not have.
#[test]
fn the_helm_chart_renders_valid_objects_and_a_valid_config() {
    let renderer = helm_render();
    let chart = project().join("packaging/helm/seedgate");
    let dir = tempfile::tempdir().unwrap();
    let full = project().join("tests/fixtures/helm-values-full.yaml");
    let validate = |file: &Path| {
        Command::new(k8s_validate().join("kubernetes-validate"))
            .args(["--strict", "-k", "1.30.0"])
            .arg(file)
            .output()
            .unwrap()
    };
    for (name, values) in [("default", vec![]), ("full", vec![full.as_path()])] {
        let out = render(&renderer, &chart, &values);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &out.stdout).unwrap();
        let checked = validate(&file);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        assert!(checked.status.success(), "{name}: {said}");
        let rendered = text(&out);
        let kinds: Vec<&str> = rendered
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .collect();
        for kind in ["StatefulSet", "ConfigMap", "PodDisruptionBudget", "Service"] {
            assert!(kinds.contains(&kind), "{name}: no {kind} in {kinds:?}");
        }
        let passed = said.matches("passed for resource").count();
        println!("helm chart, {name} values: {kinds:?}; {passed} validated");
        assert_eq!(passed, kinds.len() - usize::from(name == "full"), "{said}");
        if name == "full" {
            for must in [
                "kind: Secret",
                "kind: ServiceMonitor",
                "volumeClaimTemplates:",
                "path: /readyz",
                "path: /healthz",
                "name: prod-seedgate-scheduler",
                "- drain",
            ] {
                assert!(rendered.contains(must), "full: no {must:?}");
            }
        }
        // The config the pods read passes the binary's own check.
        for config in configs_of(&file) {
            let token = dir.path().join("token");
            std::fs::write(&token, "a-token-of-32-characters-or-so!!").unwrap();
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(
                &path,
                config.replace("/etc/seedgate/secret/api-token", token.to_str().unwrap()),
            )
            .unwrap();
            let o = Command::new(env!("CARGO_BIN_EXE_seedgate"))
                .args(["config", "check"])
                .arg(&path)
                .env("REGISTRY_USER", "someone")
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{name}: {config}\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    // Broken charts fail, each where it should.
    let broken = |file: &str, from: &str, to: &str| {
        let copy = dir.path().join(format!(
            "broken-{}",
            to.replace(['/', ' ', '{', '}', ':'], "-")
        ));
        run(Command::new("cp").arg("-r").arg(&chart).arg(&copy));
        let path = copy.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        copy
    };
    let syntax = broken("templates/pdb.yaml", "{{ .Values", "{{ .Values }");
    let out = render(&renderer, &syntax, &[]);
    assert!(!out.status.success(), "a template syntax error renders");
    let missing = broken(
        "templates/pdb.yaml",
        ".Values.podDisruptionBudget",
        ".Values.podDisruptionBudgett",
    );
    let out = render(&renderer, &missing, &[]);
    assert!(!out.status.success(), "a value that does not exist renders");
    assert!(String::from_utf8_lossy(&out.stderr).contains("podDisruptionBudgett"));
    let field = broken(
        "templates/statefulset.yaml",
        "terminationGracePeriodSeconds:",
        "terminationGracePeriod:",
    );
    let out = render(&renderer, &field, &[]);
    assert!(out.status.success());
    let file = dir.path().join("misspelled.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let checked = validate(&file);
    assert!(!checked.status.success(), "a misspelled field validates");
}
