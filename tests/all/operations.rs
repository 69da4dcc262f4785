//! What an operator runs seedgate with: JSON logs carrying request ids,
//! OTLP traces into a real receiver, the systemd notify protocol (READY,
//! WATCHDOG, RELOADING, STOPPING) with SIGHUP reload, and `seedgate drain`.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

use crate::dragonfly::seed_config;
use crate::support::*;

const MIB: usize = 1 << 20;

fn launch(env: &[(&str, &str)]) -> Launch {
    Launch {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Launch::default()
    }
}

/// Every log line of a request carries its id, in JSON: the id a client
/// sent (X-Request-Id, echoed back) or one made for it; the lines of the
/// download it starts carry the task's id and origin as well.
#[tokio::test]
async fn json_logs_carry_the_request_id_into_the_task_it_starts() {
    let (dir, nginx) = origin();
    let data = pseudo_random(6 * MIB, 7001);
    nginx.put("ops/log.bin", &data);
    let mut sg = Seedgate::start_launched(
        dir.path(),
        &http_origin_config(&nginx.base_url()),
        &Launch {
            level: Some("seedgate=debug".into()),
            ..launch(&[("SEEDGATE_LOG_FORMAT", "json")])
        },
    );
    let resp = client()
        .get(sg.url("/o/www/ops/log.bin"))
        .header("x-request-id", "req-ops-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-ops-1");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    // Without one, an id is made (a UUID) and returned.
    let resp = get(&sg.url("/o/www/ops/missing.bin")).await;
    assert_eq!(resp.status(), 404);
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
    wait_stored(&sg.url("/o/www/ops/log.bin")).await;
    assert!(sg.terminate(Duration::from_secs(20)).is_some());

    let log = std::fs::read_to_string(dir.path().join("seedgate.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_span = |line: &Value, field: &str, value: &str| {
        line["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s[field] == value))
    };
    let of_request: Vec<&Value> = lines
        .iter()
        .filter(|l| in_span(l, "request_id", "req-ops-1"))
        .collect();
    assert!(!of_request.is_empty(), "no line names req-ops-1:\n{log}");
    let succeeded = lines
        .iter()
        .find(|l| l["message"] == "task succeeded")
        .unwrap_or_else(|| panic!("no 'task succeeded' line:\n{log}"));
    assert!(
        in_span(succeeded, "request_id", "req-ops-1") && in_span(succeeded, "origin", "www"),
        "the download's lines carry the request and the task: {succeeded}"
    );
    let task = succeeded["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "task")
        .unwrap();
    assert_eq!(task["task_id"].as_str().unwrap().len(), 64, "{task}");
    assert!(
        lines.iter().any(|l| in_span(l, "request_id", &made)),
        "the made id is logged too"
    );
}

/// A real OTLP/gRPC trace service: the collector's own service
/// definition, keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone());
            assert!(
                matches!(&service, Some(AnyValue::StringValue(s)) if s == "seedgate-test"),
                "service.name: {service:?}"
            );
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

/// One cold GET exports one trace: the request span at its root, the task
/// under it, and under the task the plugin calls (stat, plan) and one
/// fetch span per piece; spans still batched are sent at SIGTERM.
// Two threads: the receiver answers while the test waits for the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_get_exports_its_span_tree_over_otlp() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (dir, nginx) = origin();
    let data = pseudo_random(10 * MIB, 7002);
    nginx.put("ops/trace.bin", &data);
    let config = format!(
        "{}[download]\npiece_length = \"4MiB\"\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\nservice_name = \"seedgate-test\"\n",
        http_origin_config(&nginx.base_url())
    );
    let mut sg = Seedgate::start_launched(dir.path(), &config, &launch(&[]));
    let resp = client()
        .get(sg.url("/o/www/ops/trace.bin"))
        .header("x-request-id", "trace-me")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    wait_stored(&sg.url("/o/www/ops/trace.bin")).await;
    assert!(sg.terminate(Duration::from_secs(30)).is_some());
    serving.abort();

    let spans = receiver.spans.lock().clone();
    let request = spans
        .iter()
        .find(|s| s.name == "request" && attr(s, "request_id").as_deref() == Some("trace-me"))
        .unwrap_or_else(|| {
            panic!(
                "no request span for trace-me among {:?}; the log:\n{}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
                std::fs::read_to_string(dir.path().join("seedgate.log")).unwrap_or_default()
            )
        });
    assert!(request.parent_span_id.is_empty(), "the request is the root");
    assert_eq!(
        attr(request, "path").as_deref(),
        Some("/o/www/ops/trace.bin")
    );
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == request.trace_id)
        .collect();
    let children = |parent: &Span, name: &str| -> Vec<&Span> {
        trace
            .iter()
            .copied()
            .filter(|s| s.parent_span_id == parent.span_id && s.name == name)
            .collect()
    };
    let tasks = children(request, "task");
    assert_eq!(tasks.len(), 1, "one task under the request");
    let task = tasks[0];
    assert_eq!(attr(task, "origin").as_deref(), Some("www"));
    assert_eq!(attr(task, "task_id").map(|t| t.len()), Some(64));
    let calls = children(task, "plugin_call");
    let ops: Vec<String> = calls.iter().filter_map(|s| attr(s, "op")).collect();
    assert!(
        ops.iter().any(|o| o == "stat") && ops.iter().any(|o| o == "plan_read"),
        "plugin calls under the task: {ops:?}"
    );
    assert!(
        calls
            .iter()
            .all(|c| attr(c, "plugin").as_deref() == Some("http"))
    );
    let mut pieces: Vec<u32> = children(task, "piece")
        .iter()
        .filter_map(|s| attr(s, "piece")?.parse().ok())
        .collect();
    pieces.sort();
    assert_eq!(pieces, vec![0, 1, 2], "a fetch span per 4 MiB piece");
    for s in &trace {
        assert!(
            s.end_time_unix_nano >= s.start_time_unix_nano,
            "{} ends after it starts",
            s.name
        );
    }
    let summary: HashMap<&str, usize> = trace.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.name.as_str()).or_default() += 1;
        m
    });
    println!("the cold GET's trace: {summary:?}");
}

/// The notify socket a test opens in place of systemd's.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl Manager {
    fn open(dir: &std::path::Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self { socket, path }
    }

    /// Messages until one has `line`, within `timeout`; all of them.
    fn until(&self, line: &str, timeout: Duration) -> Vec<String> {
        let t = tokio::time::Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while t.elapsed() < timeout {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let done = msg.lines().any(|l| l == line);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {line} within {timeout:?}; got {seen:?}")
    }
}

fn hangup(sg: &Seedgate) {
    let status = Command::new("kill")
        .args(["-HUP", &sg.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Under a service manager: READY=1 only once /readyz says ready,
/// WATCHDOG=1 twice per WATCHDOG_USEC, RELOADING=1 then READY=1 around a
/// SIGHUP that swaps in a rotated API token and a replaced plugin file
/// (and reports a change that needs a restart), a config that does not load refused with the old one
/// kept, and STOPPING=1 at SIGTERM. (systemd is not PID 1 here: the test
/// is the manager, as `systemd-run` would be.)
#[tokio::test]
async fn the_notify_protocol_watchdog_and_sighup_reload() {
    let (dir, nginx) = origin();
    let manager = Manager::open(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-token-0123456789\n").unwrap();
    // A platform team's plugin, checked only on SIGHUP here.
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    let plugin = plugins.join("extra.wasm");
    std::fs::copy(seedgate::plugin::test_components::EXAMPLE_ARTIFACT, &plugin).unwrap();
    let config = format!(
        "[server]\napi_token = \"file:{}\"\n[plugins]\ndir = \"{}\"\nreload_interval = \"0s\"\n{}",
        token_file.display(),
        plugins.display(),
        http_origin_config(&nginx.base_url())
    );
    let mut sg = Seedgate::start_launched(
        dir.path(),
        &config,
        &Launch {
            watchdog_pid: true,
            ..launch(&[
                ("NOTIFY_SOCKET", manager.path.to_str().unwrap()),
                ("WATCHDOG_USEC", "1000000"),
            ])
        },
    );
    let seen = manager.until("READY=1", Duration::from_secs(30));
    let ready = get(&sg.url("/readyz")).await;
    assert_eq!(ready.status(), 200, "READY=1 came with /readyz ready");
    assert!(
        seen.last().unwrap().contains("STATUS=serving on http://"),
        "{seen:?}"
    );
    // Pings every half second while the loops run.
    let t = tokio::time::Instant::now();
    manager.until("WATCHDOG=1", Duration::from_secs(3));
    manager.until("WATCHDOG=1", Duration::from_secs(3));
    let two = t.elapsed();
    assert!(two < Duration::from_millis(2500), "two pings in {two:?}");

    let list = |token: &'static str| {
        let url = sg.url("/api/v1/tasks");
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(list("first-token-0123456789").await, 200);
    let digest = |plugins: &Value| {
        plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "extra")
            .map(|p| p["digest"].as_str().unwrap().to_string())
            .expect("the extra plugin is listed")
    };
    let plugins_now = |token: &'static str| {
        let url = sg.url("/api/v1/plugins");
        async move { json(client().get(url).bearer_auth(token).send().await.unwrap()).await }
    };
    let before = digest(&plugins_now("first-token-0123456789").await);
    // The secret is rotated, the plugin file replaced, and a key that
    // needs a restart changes too.
    std::fs::write(&token_file, "second-token-0123456789\n").unwrap();
    std::fs::copy(seedgate::plugin::test_components::HOSTILE, &plugin).unwrap();
    std::fs::write(
        &sg.config,
        config.replace("[server]\n", "[server]\nheader_read_timeout = \"7s\"\n"),
    )
    .unwrap();
    hangup(&sg);
    manager.until("RELOADING=1", Duration::from_secs(10));
    manager.until("READY=1", Duration::from_secs(30));
    assert_eq!(list("second-token-0123456789").await, 200);
    assert_eq!(list("first-token-0123456789").await, 401);
    let after = digest(&plugins_now("second-token-0123456789").await);
    assert_ne!(before, after, "SIGHUP swapped in the replaced plugin file");

    // A config that no longer loads: refused, the running one stays.
    std::fs::write(&sg.config, "[server\nbroken").unwrap();
    hangup(&sg);
    manager.until("READY=1", Duration::from_secs(30));
    assert_eq!(list("second-token-0123456789").await, 200);
    assert_eq!(get(&sg.url("/healthz")).await.status(), 200);

    let status = sg.terminate(Duration::from_secs(20)).expect("stops");
    assert!(status.success(), "{status:?}");
    manager.until("STOPPING=1", Duration::from_secs(5));
    let log = std::fs::read_to_string(dir.path().join("seedgate.log")).unwrap();
    assert!(log.contains("server.api_token replaced"), "{log}");
    assert!(
        log.contains("[server] changed: takes effect at restart"),
        "{log}"
    );
    assert!(log.contains("reload on SIGHUP refused"), "{log}");
    assert!(log.contains("plugin 'extra' reloaded"), "{log}");
    assert!(
        !log.contains("second-token-0123456789"),
        "the token is never logged"
    );
}

/// `seedgate drain`: the server leaves its scheduler (which stops listing
/// its host), refuses new tasks and preheat jobs with the reason, keeps
/// serving what it stores, reports NOT ready, and the command waits for an
/// upload in flight to a peer to end before saying it is drained.
#[tokio::test]
async fn drain_leaves_the_scheduler_and_waits_for_uploads_in_flight() {
    let (dir, nginx) = origin();
    let data = pseudo_random(8 * MIB, 7003);
    nginx.put("ops/stored.bin", &data);
    nginx.put("ops/new.bin", &data[..MIB]);
    // A scheduler: another seedgate, scheduler only.
    let sched_port = free_port();
    let sched_dir = dir.path().join("scheduler");
    std::fs::create_dir_all(&sched_dir).unwrap();
    let (sched_config, _) = seed_config(
        &nginx.base_url(),
        &[],
        &format!("[scheduler]\nlisten = \"127.0.0.1:{sched_port}\"\nlocal_seed = false\n"),
    );
    let sched_config = sched_config.replace("hostname = \"sg-test\"", "hostname = \"sched-only\"");
    let scheduler = Seedgate::start(&sched_dir, &sched_config);
    let (config, ports) = seed_config(
        &nginx.base_url(),
        &[format!("http://127.0.0.1:{sched_port}")],
        "announce_interval = \"1s\"\nupload_rate_limit = \"2MiB\"\n[download]\npiece_length = \"4MiB\"\n",
    );
    let sg_dir = dir.path().join("seed");
    std::fs::create_dir_all(&sg_dir).unwrap();
    let sg = Seedgate::start_launched(&sg_dir, &config, &launch(&[]));
    let hosts = || async { json(get(&scheduler.url("/api/v1/cluster/hosts")).await).await };
    wait_until_async(
        "the scheduler lists the seed host",
        Duration::from_secs(20),
        || async { hosts().await.to_string().contains("sg-test") },
    )
    .await;
    let stored = get(&sg.url("/o/www/ops/stored.bin")).await;
    let task_id = task_of(&stored);
    assert_eq!(sha256(&stored.bytes().await.unwrap()), sha256(&data));
    wait_stored(&sg.url("/o/www/ops/stored.bin")).await;

    // A peer's piece upload, paced to 2 MiB/s: about 2 s in flight.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", ports.piece))
        .await
        .unwrap();
    let upload = {
        let task_id = task_id.clone();
        tokio::spawn(async move { fetch_piece(&mut conn, &task_id, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    // Async: the test's runtime keeps reading the piece meanwhile.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .args(["drain", "--timeout", "60s", "--server", &sg.url("")])
        .env_remove("SEEDGATE_TOKEN")
        .output()
        .await
        .unwrap();
    let waited = started.elapsed();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("uploads in flight 1"), "{said}");
    assert!(said.contains("drained: safe to stop"), "{said}");
    let (meta, bytes) = upload
        .await
        .map_err(|e| format!("{e:?}"))
        .and_then(|r| r.map_err(|e| format!("{e:?}")))
        .unwrap_or_else(|e| {
            panic!(
                "the upload in flight ends whole: {e:?}\n{}",
                std::fs::read_to_string(sg_dir.join("seedgate.log")).unwrap()
            )
        });
    assert!(upload_is_done(waited), "drain returned after {waited:?}");
    assert_eq!(
        sha256(&bytes),
        sha256(&data[4 * MIB..8 * MIB]),
        "piece {}",
        meta.number
    );

    // Left the scheduler; refuses what is new, serves what it has.
    assert!(
        !hosts().await.to_string().contains("sg-test"),
        "the scheduler still lists the drained host"
    );
    let new = get(&sg.url("/o/www/ops/new.bin")).await;
    assert_eq!(new.status(), 503);
    assert!(new.text().await.unwrap().contains("draining"));
    let again = get(&sg.url("/o/www/ops/stored.bin")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(sha256(&again.bytes().await.unwrap()), sha256(&data));
    let (status, body) = create_preheat(
        &sg,
        serde_json::json!({"origin": "www", "keys": ["ops/new.bin"]}),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("draining"), "{body}");
    let ready = get(&sg.url("/readyz")).await;
    assert_eq!(ready.status(), 503);
    assert_eq!(json(ready).await["draining"], true);
    assert_eq!(
        nginx.gets("/ops/new.bin") + nginx.piece_gets("/ops/new.bin"),
        0
    );
}

/// The drain waited for the paced upload (about 2 s of a 4 MiB piece at
/// 2 MiB/s, 0.3 s of it gone before the command started).
fn upload_is_done(waited: Duration) -> bool {
    waited > Duration::from_millis(1000)
}

async fn wait_until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> F,
) {
    let t = tokio::time::Instant::now();
    while !done().await {
        assert!(t.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
