//! The gateway's object and task API against nginx: conditional requests,
//! full-URL reads (only for origins that allow them, and only under their
//! base URL), and the task list.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

async fn json(sg: &Seedgate, path: &str) -> (u16, Value) {
    let resp = get(&sg.url(path)).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn config(nginx: &Nginx) -> String {
    format!(
        r#"
[origins.www]
plugin = "http"
base_url = "{base}"
allow_full_urls = true

[origins.closed]
plugin = "http"
base_url = "{base}closed/"
"#,
        base = nginx.base_url()
    )
}

/// `If-None-Match` with the current ETag, or `If-Modified-Since` at or
/// after Last-Modified, is 304 with the validators, and a conditional GET
/// of an object not stored yet starts no download (one HEAD, no GET).
#[tokio::test]
async fn conditional_requests_get_304_without_a_download() {
    let (dir, nginx) = origin();
    let data = pseudo_random(200_000, 71);
    nginx.put("cond/a.bin", &data);
    let sg = Seedgate::start(dir.path(), &config(&nginx));
    let url = sg.url("/o/www/cond/a.bin");
    let head = client().head(&url).send().await.unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    let modified = head.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();

    for (name, value) in [
        ("if-none-match", etag.clone()),
        ("if-none-match", format!("\"nope\", W/{etag}")),
        ("if-none-match", "*".to_string()),
        ("if-modified-since", modified.clone()),
    ] {
        let resp = client()
            .get(&url)
            .header(name, &value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304, "{name}: {value}");
        assert_eq!(resp.headers()["etag"], etag.as_str());
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let gets = || {
        nginx
            .requests("/cond/a.bin")
            .iter()
            .filter(|r| r.0 == "GET")
            .count()
    };
    assert_eq!(gets(), 0, "no download for a 304");

    // A stale validator gets the object.
    let resp = client()
        .get(&url)
        .header("if-none-match", "\"old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    wait_stored(&url).await;
    let resp = client()
        .get(&url)
        .header("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    // And HEAD answers 304 as well.
    let resp = client()
        .head(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
}

/// `GET /fetch?url=` serves a full URL through the origin it falls under
/// (sharing the task with `/o/`), and refuses URLs of origins that do not
/// allow it and URLs under no origin (no fetching of arbitrary addresses).
#[tokio::test]
async fn full_urls_only_under_origins_that_allow_them() {
    let (dir, nginx) = origin();
    let data = pseudo_random(300_000, 72);
    nginx.put("full/a.bin", &data);
    nginx.put("closed/b.bin", b"closed");
    let sg = Seedgate::start(dir.path(), &config(&nginx));
    let full = format!("{}full/a.bin", nginx.base_url());
    let fetch = |u: &str| sg.url(&format!("/fetch?url={}", urlencode(u)));

    let resp = get(&fetch(&full)).await;
    assert_eq!(resp.status(), 200);
    let task = task_of(&resp);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    wait_stored(&sg.url("/o/www/full/a.bin")).await;
    let resp = get(&sg.url("/o/www/full/a.bin")).await;
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(task_of(&resp), task, "one task for both ways in");

    // The longest base_url wins: /closed/ belongs to `closed`, which does
    // not take full URLs.
    let resp = get(&fetch(&format!("{}closed/b.bin", nginx.base_url()))).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("allow_full_urls"));
    for (u, status) in [
        ("http://169.254.169.254/latest/meta-data/", 403),
        ("http://127.0.0.1:1/x", 403),
        ("file:///etc/passwd", 403),
        ("not a url", 400),
    ] {
        let resp = get(&fetch(u)).await;
        assert_eq!(resp.status(), status, "{u}");
    }
    assert_eq!(get(&sg.url("/fetch")).await.status(), 400, "no url");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /api/v1/tasks` lists stored tasks, most recently read first, and
/// `GET /api/v1/tasks/{id}` shows one; unknown ids are 404.
#[tokio::test]
async fn tasks_are_listed_and_shown() {
    let (dir, nginx) = origin();
    for i in 0..3 {
        nginx.put(&format!("t/{i}.bin"), &pseudo_random(50_000 + i, 73));
    }
    let sg = Seedgate::start(dir.path(), &config(&nginx));
    let mut ids = Vec::new();
    for i in 0..3 {
        let url = sg.url(&format!("/o/www/t/{i}.bin"));
        let resp = get(&url).await;
        ids.push(task_of(&resp));
        resp.bytes().await.unwrap();
        wait_stored(&url).await;
    }
    let (status, list) = json(&sg, "/api/v1/tasks").await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    for t in list {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["bytes_stored"], t["content_length"]);
    }
    let (status, one) = json(&sg, &format!("/api/v1/tasks/{}", ids[1])).await;
    assert_eq!(status, 200);
    assert_eq!(one["content_length"], 50_001);
    assert!(one["url"].as_str().unwrap().ends_with("/t/1.bin"));
    let (status, limited) = json(&sg, "/api/v1/tasks?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(limited.as_array().unwrap().len(), 2);
    assert_eq!(json(&sg, "/api/v1/tasks/nope").await.0, 404);

    // The same traffic in metrics: 3 misses and now 1 hit.
    let resp = get(&sg.url("/o/www/t/0.bin")).await;
    resp.bytes().await.unwrap();
    let total = (50_000 + 50_001 + 50_002) as f64;
    let m = |s: &'static str| metric(&sg, s);
    assert_eq!(
        m(r#"seedgate_object_requests_total{source="origin"}"#).await,
        3.0
    );
    assert_eq!(
        m(r#"seedgate_object_requests_total{source="local"}"#).await,
        1.0
    );
    assert_eq!(
        m(r#"seedgate_served_bytes_total{source="origin"}"#).await,
        total
    );
    assert_eq!(
        m(r#"seedgate_served_bytes_total{source="local"}"#).await,
        50_000.0
    );
    assert_eq!(
        m(r#"seedgate_origin_bytes_total{origin="www"}"#).await,
        total
    );
    assert_eq!(m("seedgate_hit_ratio").await, 0.25);
    assert_eq!(m(r#"seedgate_storage_bytes{kind="stored"}"#).await, total);
    let (used, limit) = (
        m(r#"seedgate_storage_bytes{kind="used"}"#).await,
        m(r#"seedgate_storage_bytes{kind="limit"}"#).await,
    );
    assert!(used >= total && limit > used, "{used} of {limit}");
}

/// With `server.api_token`, the API (and metrics) need the bearer token;
/// health and object reads do not, unless `token_for_reads` is set. The
/// token comes from a `file:` secret.
#[tokio::test]
async fn the_api_token_guards_everything_but_reads_and_health() {
    const TOKEN: &str = "s3cret-token-0123456789";
    let (dir, nginx) = origin();
    nginx.put("sec/a.bin", b"guarded");
    let secret = dir.path().join("api-token");
    std::fs::write(&secret, format!("{TOKEN}\n")).unwrap();
    let start = |reads: bool| {
        let sub = dir.path().join(if reads { "reads" } else { "api" });
        std::fs::create_dir_all(&sub).unwrap();
        Seedgate::start(
            &sub,
            &format!(
                "[server]\napi_token = \"file:{}\"\ntoken_for_reads = {reads}\n{}",
                secret.display(),
                config(&nginx)
            ),
        )
    };
    let sg = start(false);
    let ask = |path: &str, token: Option<&str>| {
        let mut req = client().get(sg.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ask("/healthz", None).await, 200);
    let (status, ready) = json(&sg, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["storage"], "writable", "{ready}");
    assert_eq!(ready["plugins"], 4, "the built-in origin plugins");
    assert_eq!(ask("/o/www/sec/a.bin", None).await, 200);
    assert_eq!(ask("/healthy", None).await, 200);
    for path in [
        "/api/v1/tasks",
        "/api/v1/preheat",
        "/metrics",
        "/api/v1/plugins",
        "/oapi/v1/jobs",
    ] {
        assert_eq!(ask(path, None).await, 401, "{path}");
        assert_eq!(
            ask(path, Some("wrong-token-0123456789")).await,
            401,
            "{path}"
        );
        assert_eq!(ask(path, Some(TOKEN)).await, 200, "{path}");
    }
    let resp = client()
        .post(sg.url("/api/v1/preheat"))
        .header("content-type", "application/json")
        .body(r#"{"origin":"www","keys":["sec/a.bin"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    drop(sg);

    let sg = start(true);
    let url = sg.url("/o/www/sec/a.bin");
    assert_eq!(get(&url).await.status(), 401);
    let resp = client().get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"guarded");
    assert_eq!(get(&sg.url("/healthz")).await.status(), 200);
}

/// Hostile clients cost nothing: one that sends its request head too
/// slowly is disconnected at `server.header_read_timeout`, an oversized
/// head is refused with 431, and a key climbing out of the origin's base
/// URL (sent raw, as no well-behaved client would) is 400; meanwhile the
/// gateway keeps serving.
#[tokio::test]
async fn slow_oversized_and_traversing_clients_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (dir, nginx) = origin();
    nginx.put("h/a.bin", b"fine");
    let sg = Seedgate::start(
        dir.path(),
        &format!(
            "[server]\nheader_read_timeout = \"1s\"\nmax_header_bytes = \"16 KiB\"\n{}",
            config(&nginx)
        ),
    );

    // Slowloris: half a request line, then nothing.
    let mut slow = tokio::net::TcpStream::connect(sg.addr).await.unwrap();
    slow.write_all(b"GET /o/www/h/a.bin HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    let waited = t.elapsed();
    assert!(read.is_ok(), "still connected after 5 s");
    assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    // Served meanwhile, and after.
    assert_eq!(get(&sg.url("/o/www/h/a.bin")).await.status(), 200);

    let resp = client()
        .get(sg.url("/o/www/h/a.bin"))
        .header("x-big", "a".repeat(32 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);

    for raw in [
        "/o/www/../../etc/passwd",
        "/o/www/h/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let mut s = tokio::net::TcpStream::connect(sg.addr).await.unwrap();
        s.write_all(
            format!("GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{raw}: {answer}");
        assert!(answer.contains("'..'"), "{raw}: {answer}");
    }
    assert_eq!(nginx.requests("/etc/passwd").len(), 0);
    assert_eq!(get(&sg.url("/o/www/h/a.bin")).await.status(), 200);
}
