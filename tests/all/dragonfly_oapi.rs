//! Dragonfly's open API for preheat jobs (`/oapi/v1/jobs`), called by a
//! client written only from Dragonfly's documented types (manager
//! `models/job.go`, `internal/job/types.go`) and with Harbor's exact
//! request (`goharbor/harbor` `src/pkg/p2p/preheat/provider/dragonfly.go`),
//! against a real registry and a real nginx.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::oci::{Images, config, digests};
use crate::registry::*;
use crate::support::*;

const TOKEN: &str = "open-api-token-0123456789";

/// `models.Job`, as Dragonfly's manager answers it.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Job {
    id: u64,
    /// Go's `time.Time`: RFC 3339.
    created_at: String,
    updated_at: String,
    task_id: String,
    #[serde(rename = "type")]
    kind: String,
    state: String,
    args: Value,
    result: GroupJobState,
}

/// `internal/job.GroupJobState`.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GroupJobState {
    group_uuid: String,
    state: String,
    job_states: Vec<JobState>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct JobState {
    task_uuid: String,
    task_name: String,
    state: String,
    error: String,
    results: Vec<PreheatResult>,
}

#[derive(Debug, Deserialize)]
struct PreheatResult {
    success_tasks: Vec<SuccessTask>,
    failure_tasks: Vec<FailureTask>,
    #[allow(dead_code)]
    scheduler_cluster_id: u64,
}

#[derive(Debug, Deserialize)]
struct SuccessTask {
    url: String,
    hostname: String,
    ip: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct FailureTask {
    url: String,
    hostname: String,
    ip: String,
    description: String,
}

async fn post(sg: &Seedgate, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut req = client()
        .post(sg.url("/oapi/v1/jobs"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Polls `GET /oapi/v1/jobs/{id}?access_token=` until it leaves PENDING.
async fn poll(sg: &Seedgate, id: u64) -> (Job, String) {
    let t = tokio::time::Instant::now();
    loop {
        let text = get(&sg.url(&format!("/oapi/v1/jobs/{id}?access_token={TOKEN}")))
            .await
            .text()
            .await
            .unwrap();
        let job: Job = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        for t in [&job.created_at, &job.updated_at] {
            chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        if job.state != "PENDING" {
            assert!(
                matches!(job.state.as_str(), "SUCCESS" | "FAILURE"),
                "{text}"
            );
            return (job, text);
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "still pending: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn results(job: &Job) -> (&[SuccessTask], &[FailureTask]) {
    let r = &job.result.job_states[0].results[0];
    (&r.success_tasks, &r.failure_tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harbor_and_dragonfly_clients_create_and_poll_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"), Auth::Basic);
    let images = Images::new();
    images.push(&registry).await;
    let (_www, nginx) = origin();
    nginx.put("files/a.bin", &pseudo_random(3 << 20, 7));
    let extra = format!(
        "[server]\napi_token = \"{TOKEN}\"\n[origins.www]\nplugin = \"http\"\nbase_url = \"{}\"\n",
        nginx.base_url()
    );
    let sg = Seedgate::start_logged(dir.path(), &config(&registry, None, &extra));
    let bearer = format!("Bearer {TOKEN}");
    let secret = basic(USER, PASSWORD);
    let manifest_url = format!("http://{}/v2/team/app/manifests/1.0", registry.host());

    // Harbor's probe, without a token.
    let resp = get(&sg.url("/healthy")).await;
    assert_eq!(resp.status(), 200);

    // Harbor's request, byte for byte as its provider marshals it.
    let harbor = json!({
        "type": "preheat",
        "args": {
            "type": "image", "url": manifest_url, "tag": "", "filtered_query_params": "",
            "headers": {"Authorization": secret}, "scope": "single_seed_peer",
            "concurrent_count": 3, "timeout": 0,
        },
        "scheduler_cluster_ids": null,
    })
    .to_string();
    let (status, text) = post(&sg, Some(&bearer), &harbor).await;
    assert_eq!(status, 200, "{text}");
    let created: Job = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (created.kind.as_str(), created.state.as_str()),
        ("preheat", "PENDING")
    );
    assert!(created.task_id.starts_with("group_"), "{}", created.task_id);
    assert!(
        !text.contains(secret.strip_prefix("Basic ").unwrap()),
        "{text}"
    );
    let (job, text) = poll(&sg, created.id).await;
    assert_eq!(job.state, "SUCCESS", "{text}");
    let (ok, failed) = results(&job);
    assert!(failed.is_empty());
    let mut got: Vec<String> = ok
        .iter()
        .map(|t| t.url.rsplit_once("/blobs/").unwrap().1.to_owned())
        .collect();
    let mut want = digests(&images.single);
    got.sort();
    want.sort();
    assert_eq!(got, want, "the config and every layer");
    assert!(
        ok.iter()
            .all(|t| !t.hostname.is_empty() && !t.ip.is_empty())
    );
    assert!(
        !text.contains(secret.strip_prefix("Basic ").unwrap()),
        "{text}"
    );
    assert_eq!(job.args["headers"]["Authorization"], "[redacted]");
    assert_eq!(
        job.args["timeout"], 3_600_000_000_000i64,
        "Dragonfly's default, in ns"
    );

    // A Dragonfly client: an index by platform with registry credentials
    // as username and password, the token as ?access_token=.
    let body = json!({"type": "preheat", "args": {
        "type": "image",
        "url": format!("http://{}/v2/team/multi/manifests/2.0", registry.host()),
        "platform": "linux/arm64", "username": USER, "password": PASSWORD,
        "concurrent_task_count": 2, "timeout": 120_000_000_000i64,
    }});
    let resp = client()
        .post(sg.url(&format!("/oapi/v1/jobs?access_token={TOKEN}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let created: Job = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    let (job, text) = poll(&sg, created.id).await;
    assert_eq!(job.state, "SUCCESS", "{text}");
    assert_eq!(results(&job).0.len(), digests(&images.arm64).len());
    assert!(!text.contains(PASSWORD), "{text}");

    // A file job with one URL that is missing: FAILURE, naming it (where
    // Dragonfly's single_seed_peer would say SUCCESS).
    let good = format!("{}files/a.bin", nginx.base_url());
    let missing = format!("{}files/none.bin", nginx.base_url());
    let body = json!({"type": "preheat", "args": {"type": "file", "urls": [good, missing]}});
    let (status, text) = post(&sg, Some(&bearer), &body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let created: Job = serde_json::from_str(&text).unwrap();
    let (job, text) = poll(&sg, created.id).await;
    assert_eq!(job.state, "FAILURE", "{text}");
    let (ok, failed) = results(&job);
    assert_eq!(
        ok.iter().map(|t| t.url.as_str()).collect::<Vec<_>>(),
        [good.as_str()]
    );
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].url, missing);
    assert!(failed[0].description.contains("404"), "{:?}", failed[0]);
    assert!(!job.result.job_states[0].error.is_empty());

    // The list holds the three, newest first.
    let list: Vec<Job> = serde_json::from_value(
        json(
            client()
                .get(sg.url("/oapi/v1/jobs"))
                .header("authorization", &bearer)
                .send()
                .await
                .unwrap(),
        )
        .await,
    )
    .unwrap();
    assert_eq!(list.iter().map(|j| j.id).collect::<Vec<_>>(), [3, 2, 1]);

    // `all_seed_peers` without the built-in scheduler: the job runs here,
    // and reports this host alone.
    let body = json!({"type": "preheat", "args": {"type": "file", "urls": [good], "scope": "all_seed_peers"}});
    let (status, text) = post(&sg, Some(&bearer), &body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let created: Job = serde_json::from_str(&text).unwrap();
    let (job, text) = poll(&sg, created.id).await;
    assert_eq!(job.state, "SUCCESS", "{text}");
    let (here, failed) = results(&job);
    assert!(failed.is_empty(), "{text}");
    assert_eq!(here.len(), 1, "{text}");
    assert_eq!(
        (here[0].url.as_str(), here[0].hostname.as_str()),
        (good.as_str(), ok[0].hostname.as_str())
    );

    // The token is checked; bad bodies are refused naming the field.
    let (status, _) = post(&sg, None, &harbor).await;
    assert_eq!(status, 401);
    let (status, _) = post(&sg, Some("Bearer wrong"), &harbor).await;
    assert_eq!(status, 401);
    for (body, field) in [
        (
            json!({"type": "preheat", "args": {"type": "image", "url": manifest_url, "timeout": "1h"}}),
            "args.timeout",
        ),
        (
            json!({"type": "preheat", "args": {"type": "video", "url": manifest_url}}),
            "args.type",
        ),
        (
            json!({"type": "preheat", "args": {"type": "image", "url": manifest_url, "filteredQueryParams": "X"}}),
            "filteredQueryParams",
        ),
        (
            json!({"type": "preheat", "args": {"type": "image", "url": manifest_url, "scope": "all_peers"}}),
            "args.scope",
        ),
        (
            json!({"type": "preheat", "args": {"type": "image"}}),
            "args.url",
        ),
        (json!({"type": "gc", "args": {}}), "type"),
        (
            json!({"type": "preheat", "args": {"type": "file", "url": "http://elsewhere.example/x"}}),
            "args.url",
        ),
    ] {
        let (status, text) = post(&sg, Some(&bearer), &body.to_string()).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
    let resp = get(&sg.url(&format!("/oapi/v1/jobs/99?access_token={TOKEN}"))).await;
    assert_eq!(resp.status(), 404);

    // The credentials are in no answer, no record and no log line.
    drop(sg);
    let b64 = secret.strip_prefix("Basic ").unwrap();
    for path in files_under(&dir.path().join("data"))
        .into_iter()
        .chain([dir.path().join("seedgate.log")])
    {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(b64.len()).any(|w| w == b64.as_bytes())
                && !bytes
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes()),
            "a credential is in {}",
            path.display()
        );
    }
}

/// `all_seed_peers` with the built-in scheduler: each object is also
/// downloaded on a real dfdaemon seed peer the scheduler knows, and the
/// job reports each host, failures included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_seed_peers_reaches_every_seed_host_and_reports_each() {
    let (dir, nginx) = origin();
    let data = pseudo_random(9 << 20, 77);
    nginx.put("fan/a.bin", &data);
    let scheduler_port = free_port();
    let (config, _) = crate::dragonfly::seed_config(
        &nginx.base_url(),
        &[],
        &format!("[scheduler]\nlisten = \"127.0.0.1:{scheduler_port}\"\n"),
    );
    let sg = Seedgate::start(dir.path(), &config);
    let seed = crate::dfdaemon::Dfdaemon::start("oapi-dfseed", scheduler_port, true).await;
    let good = format!("{}fan/a.bin", nginx.base_url());
    let missing = format!("{}fan/none.bin", nginx.base_url());
    let body = json!({"type": "preheat", "args": {"type": "file", "urls": [good, missing], "scope": "all_seed_peers"}});
    let (status, text) = post(&sg, None, &body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let created: Job = serde_json::from_str(&text).unwrap();
    let t = tokio::time::Instant::now();
    let (job, text) = loop {
        let text = get(&sg.url(&format!("/oapi/v1/jobs/{}", created.id)))
            .await
            .text()
            .await
            .unwrap();
        let job: Job = serde_json::from_str(&text).unwrap();
        if job.state != "PENDING" {
            break (job, text);
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job.state, "FAILURE", "one URL is missing: {text}");
    let (ok, failed) = results(&job);
    let mut ok_hosts: Vec<&str> = ok
        .iter()
        .filter(|t| t.url == good)
        .map(|t| t.hostname.as_str())
        .collect();
    ok_hosts.sort();
    assert_eq!(
        ok_hosts,
        ["oapi-dfseed", "sg-test"],
        "stored on both seed hosts: {text}"
    );
    let mut failed_hosts: Vec<&str> = failed
        .iter()
        .filter(|t| t.url == missing)
        .map(|t| t.hostname.as_str())
        .collect();
    failed_hosts.sort();
    assert_eq!(
        failed_hosts,
        ["oapi-dfseed", "sg-test"],
        "missing on both, each reported: {text}"
    );
    // The dfdaemon seed holds the object: a child fetching it through the
    // scheduler gets the bytes without the origin sending them again.
    let sent = nginx.bytes_sent("/fan/a.bin");
    let child = crate::dfdaemon::Dfdaemon::start("oapi-dfchild", scheduler_port, false).await;
    let out = child.dir.path().join("out.bin");
    child.dfget(&good, &out).await.unwrap();
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&data));
    // (A stat of the object may cost a byte or so.)
    let again = nginx.bytes_sent("/fan/a.bin") - sent;
    assert!(
        again < 4096,
        "the child's bytes came from the seeds, the origin sent {again} more"
    );
    drop(seed);
}
