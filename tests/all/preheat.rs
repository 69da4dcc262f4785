//! Preheat jobs against real origins: a prefix listed from S3 (s3s-fs),
//! keys and full URLs on nginx, a missing object, idempotency, bad
//! requests, cancel, and a kill -9 in the middle of a job.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::s3_server::{S3Server, SECRET_KEY};
use crate::support::*;

const MIB: usize = 1 << 20;

pub async fn job(sg: &Seedgate, id: &str) -> Value {
    let resp = get(&sg.url(&format!("/api/v1/preheat/{id}"))).await;
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

/// Polls the job until it reaches a final state.
pub async fn finished(sg: &Seedgate, id: &str, within: Duration) -> Value {
    let t = Instant::now();
    loop {
        let j = job(sg, id).await;
        if matches!(
            j["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return j;
        }
        assert!(t.elapsed() < within, "job {id} still {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nginx with `count` objects of `len` bytes under `prefix/`, a fault proxy
/// in front that delays every piece answer by `delay`, and seedgate on it.
struct Slow {
    dir: tempfile::TempDir,
    nginx: Nginx,
    proxy: FaultProxy,
    sg: Seedgate,
    data: Vec<Vec<u8>>,
}

async fn slow_origin(prefix: &str, count: u64, len: usize, seed: u64, delay: Duration) -> Slow {
    let (dir, nginx) = origin();
    let proxy = FaultProxy::start(nginx.port).await;
    let data: Vec<Vec<u8>> = (0..count).map(|i| pseudo_random(len, seed + i)).collect();
    for (i, d) in data.iter().enumerate() {
        nginx.put(&format!("{prefix}/{i}.bin"), d);
    }
    let sg = Seedgate::start(dir.path(), &http_origin_config(&proxy.base_url()));
    proxy.inject(Fault::Delay(delay), Some(http::Method::GET), usize::MAX);
    Slow {
        dir,
        nginx,
        proxy,
        sg,
        data,
    }
}

fn s3_config(s3: &S3Server) -> String {
    s3.origin_config("s3", "data", SECRET_KEY)
}

/// A prefix is listed through the s3 plugin and every object under it is
/// stored: afterwards each reads as a hit with S3's bytes, S3 sent each
/// byte once, and the job's progress adds up.
#[tokio::test]
async fn a_prefix_from_s3_is_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("data");
    let mut objects = Vec::new();
    for i in 0..5 {
        let data = pseudo_random(3 * MIB + i * 1000, 100 + i as u64);
        let key = format!("models/m{i}.bin");
        s3.put("data", &key, &data);
        objects.push((key, data));
    }
    s3.put("data", "other/x.bin", b"not under the prefix");
    let sg = Seedgate::start(dir.path(), &s3_config(&s3));

    let (status, created) =
        create_preheat(&sg, json!({"origin": "s3", "prefix": "models/"}), None).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let j = finished(&sg, &id, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(j["progress"]["total"], 5);
    assert_eq!(j["progress"]["done"], 5);
    assert_eq!(j["progress"]["bytes_total"], total);
    assert_eq!(j["progress"]["bytes_done"], total);
    for o in j["objects"].as_array().unwrap() {
        assert_eq!(o["state"], "done", "{o}");
        assert!(o["task_id"].as_str().unwrap().len() == 64);
    }

    let gets_before = s3.requests().len();
    for (key, data) in &objects {
        let resp = get(&sg.url(&format!("/o/s3/{key}"))).await;
        assert_eq!(resp.headers()["x-seedgate-cache"], "hit", "{key}");
        assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(data), "{key}");
        // One ranged GET per 4 MiB piece: each object is one piece.
        assert_eq!(s3.count("GET", &format!("/data/{key}")), 1, "{key}");
    }
    assert_eq!(s3.requests().len(), gets_before, "hits cost S3 nothing");
    assert_eq!(s3.count("GET", "/data/other/x.bin"), 0);
}

/// Keys and full URLs on nginx, one of them missing: the missing one is
/// reported with the origin's reason and asked once (no retry storm); the
/// others are stored; the job ends `failed` because not all are there.
/// At most `concurrency` objects are fetched at once.
#[tokio::test]
async fn keys_urls_and_a_missing_object() {
    // Every piece answer takes 150 ms, so the concurrency limit shows.
    let Slow {
        dir: _dir,
        nginx,
        proxy,
        sg,
        data,
    } = slow_origin("pre", 6, MIB, 200, Duration::from_millis(150)).await;
    let body = json!({
        "origin": "www",
        "keys": ["pre/0.bin", "pre/1.bin", "pre/2.bin", "pre/missing.bin"],
        "urls": [
            format!("{}pre/3.bin", proxy.base_url()),
            format!("{}pre/4.bin", proxy.base_url()),
            format!("{}pre/5.bin", proxy.base_url()),
        ],
        "concurrency": 2,
    });
    let (status, created) = create_preheat(&sg, body, None).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let j = finished(&sg, &id, Duration::from_secs(30)).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["progress"]["done"], 6);
    assert_eq!(j["progress"]["missing"], 1);
    let missing = j["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["state"] == "missing")
        .unwrap();
    assert!(
        missing["url"]
            .as_str()
            .unwrap()
            .ends_with("pre/missing.bin")
    );
    assert!(
        missing["error"].as_str().unwrap().contains("404"),
        "{missing}"
    );
    assert_eq!(nginx.requests("/pre/missing.bin").len(), 1, "asked once");
    assert!(
        proxy.max_in_flight() <= 2,
        "{} at once",
        proxy.max_in_flight()
    );
    for (i, d) in data.iter().enumerate() {
        let resp = get(&sg.url(&format!("/o/www/pre/{i}.bin"))).await;
        assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
        assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(d));
        assert_eq!(
            nginx.requests(&format!("/pre/{i}.bin")).len(),
            2,
            "HEAD + GET"
        );
    }
    // The job is listed, newest first, without its objects.
    let list: Value =
        serde_json::from_slice(&get(&sg.url("/api/v1/preheat")).await.bytes().await.unwrap())
            .unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0].get("objects").is_none());
    let failed = r#"seedgate_preheat_jobs{state="failed"}"#;
    assert_eq!(metric(&sg, failed).await, 1.0);
}

/// The same request under one Idempotency-Key makes one job; a different
/// request under that key is refused; bad requests get 400 with a reason
/// and create nothing.
#[tokio::test]
async fn idempotency_and_bad_requests() {
    let (dir, nginx) = origin();
    nginx.put("i/a.bin", b"idempotent");
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let body = json!({"origin": "www", "keys": ["i/a.bin"]});
    let (s1, j1) = create_preheat(&sg, body.clone(), Some("rollout-42")).await;
    let (s2, j2) = create_preheat(&sg, body, Some("rollout-42")).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(j1["id"], j2["id"]);
    let (s3, e) = create_preheat(
        &sg,
        json!({"origin": "www", "keys": ["i/b.bin"]}),
        Some("rollout-42"),
    )
    .await;
    assert_eq!(s3, 409, "{e}");
    assert!(e.as_str().unwrap().contains("different request"), "{e}");

    for (body, why) in [
        (json!({}), "needs urls, keys, a prefix or an image"),
        (
            json!({"origin": "nope", "keys": ["a"]}),
            "unknown origin 'nope'",
        ),
        (
            json!({"urls": ["http://169.254.169.254/latest/meta-data"]}),
            "not under the base_url",
        ),
        (json!({"urls": ["not a url"]}), "is not a URL"),
        (json!({"origin": "www", "keys": ["../etc/passwd"]}), "'..'"),
        (
            json!({"origin": "www", "keys": ["a"], "piece_length": 1000}),
            "piece_length",
        ),
        (
            json!({"origin": "www", "keys": ["a"], "concurrency": 0}),
            "concurrency",
        ),
        (
            json!({"origin": "www", "keys": ["a"], "bogus": 1}),
            "unknown field",
        ),
        (json!({"keys": ["a"]}), "need an origin"),
    ] {
        let (status, e) = create_preheat(&sg, body.clone(), None).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert!(e.as_str().unwrap().contains(why), "{body}: {e}");
    }
    let resp = client()
        .post(sg.url("/api/v1/preheat"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let list: Value =
        serde_json::from_slice(&get(&sg.url("/api/v1/preheat")).await.bytes().await.unwrap())
            .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(get(&sg.url("/api/v1/preheat/nope")).await.status(), 404);
}

/// Cancel stops a job: objects not started are `cancelled`, and the job
/// ends `cancelled`.
#[tokio::test]
async fn cancel_stops_a_job() {
    let (dir, nginx) = origin();
    let proxy = FaultProxy::start(nginx.port).await;
    let keys: Vec<String> = (0..10).map(|i| format!("c/{i}.bin")).collect();
    for k in &keys {
        nginx.put(k, &pseudo_random(100_000, 7));
    }
    let sg = Seedgate::start(dir.path(), &http_origin_config(&proxy.base_url()));
    proxy.inject(
        Fault::Delay(Duration::from_millis(300)),
        Some(http::Method::GET),
        usize::MAX,
    );
    let (_, created) = create_preheat(
        &sg,
        json!({"origin": "www", "keys": keys, "concurrency": 1}),
        None,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = client()
        .delete(sg.url(&format!("/api/v1/preheat/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let j = finished(&sg, &id, Duration::from_secs(5)).await;
    assert_eq!(j["state"], "cancelled", "{j}");
    let cancelled = j["progress"]["cancelled"].as_u64().unwrap();
    assert!(cancelled >= 7, "{j}");
    assert_eq!(
        j["progress"]["done"].as_u64().unwrap() + cancelled,
        10,
        "{j}"
    );
}

/// kill -9 in the middle of a job: after a restart on the same data
/// directory the job resumes and succeeds; objects stored before the kill
/// are not fetched again.
#[tokio::test]
async fn a_job_resumes_after_kill_9() {
    let Slow {
        dir: _dir,
        nginx,
        proxy: _proxy,
        sg,
        data,
    } = slow_origin("r", 8, MIB, 300, Duration::from_millis(200)).await;
    let keys: Vec<String> = (0..8).map(|i| format!("r/{i}.bin")).collect();
    let (_, created) = create_preheat(
        &sg,
        json!({"origin": "www", "keys": keys, "concurrency": 1}),
        Some("resume-me"),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    let done_before = loop {
        let j = job(&sg, &id).await;
        let done = j["progress"]["done"].as_u64().unwrap();
        if done >= 3 {
            break done;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (config, data_dir) = sg.kill();
    // GETs the origin answered for the 8 objects.
    let gets = || -> usize {
        (0..8)
            .map(|i| {
                nginx
                    .requests(&format!("/r/{i}.bin"))
                    .iter()
                    .filter(|r| r.0 == "GET")
                    .count()
            })
            .sum()
    };
    let gets_at_kill = gets();

    let sg = Seedgate::start_with(&config, &data_dir);
    let j = finished(&sg, &id, Duration::from_secs(30)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["progress"]["done"], 8);
    let gets = gets();
    // Objects done before the kill were not fetched again: at most the
    // one in flight at the kill is fetched twice.
    assert!(
        (8..=9).contains(&gets),
        "{gets} GETs for 8 objects ({gets_at_kill} at the kill, {done_before} done)"
    );
    for (i, d) in data.iter().enumerate() {
        let resp = get(&sg.url(&format!("/o/www/r/{i}.bin"))).await;
        assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
        assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(d));
    }
    // The key still names the same job after the restart.
    let (status, again) = create_preheat(
        &sg,
        json!({"origin": "www", "keys": (0..8).map(|i| format!("r/{i}.bin")).collect::<Vec<_>>(), "concurrency": 1}),
        Some("resume-me"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], id.as_str());
}
