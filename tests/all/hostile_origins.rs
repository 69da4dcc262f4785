//! Origins that try to lead seedgate astray, and keys that try to climb
//! out of an origin: encoded dots and slashes, redirects off the base path
//! or to another port, and an origin that hangs while another origin of the
//! same plugin is healthy. nginx is the origin throughout.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::*;

/// nginx with `www/pub/real.bin` (the object) and `www/secret.txt`
/// (outside the base path), and seedgate with origin `demo` at
/// `http://127.0.0.1:PORT/pub/` (full URLs allowed).
fn pub_origin(extra: &str) -> (tempfile::TempDir, Nginx, Seedgate, Vec<u8>) {
    let (dir, nginx) = origin();
    let data = pseudo_random(300_000, 5);
    nginx.put("pub/real.bin", &data);
    nginx.put("secret.txt", b"the secret outside the base path\n");
    let sg = Seedgate::start(
        dir.path(),
        &format!(
            r#"
[origins.demo]
plugin = "http"
base_url = "{}pub/"
allow_full_urls = true
{extra}
"#,
            nginx.base_url()
        ),
    );
    (dir, nginx, sg, data)
}

/// Keys and full URLs are checked after percent-decoding, as the origin
/// decodes them: `..%2f`, `%2e%2e`, `.%2e` and encoded control bytes are
/// refused with 400 and a reason on objects, `/fetch` and preheat, and the
/// origin never sees a request for anything outside `/pub/`.
#[tokio::test]
async fn encoded_dots_and_slashes_never_leave_the_base_path() {
    let (_dir, nginx, sg, data) = pub_origin("");
    let base = nginx.base_url();
    let http = client();
    for path in [
        "/o/demo/..%2fsecret.txt",
        "/o/demo/x/..%2f..%2fsecret.txt",
        // Decoded once by the router, then once more by the origin.
        "/o/demo/..%252fsecret.txt",
        "/o/demo/x/..%252f..%252fsecret.txt",
        "/o/demo/%252e%252e/secret.txt",
        "/o/demo/%2e%2e/secret.txt",
        "/o/demo/.%2e/secret.txt",
        "/o/demo/..%5csecret.txt",
        "/o/demo/a%00b",
    ] {
        // As sent (curl --path-as-is): a client library would resolve the
        // dot segments itself.
        for method in ["GET", "HEAD"] {
            let request =
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let (status, _, body) = raw_request(&sg, request.as_bytes()).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            if method == "GET" {
                assert!(body.contains("not allowed"), "{path}: {body}");
            }
        }
    }
    for url in [
        format!("{base}pub/..%2fsecret.txt"),
        format!("{base}pub/x/..%2F..%2Fsecret.txt"),
        format!("{base}pub/%2e%2e%2fsecret.txt"),
    ] {
        let resp = http.get(fetch_url(&sg, &url)).send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status == 400 || status == 403, "{url}: {status} {body}");
        assert!(!body.contains("the secret"), "{url}: {body}");
        let (status, answer) =
            create_preheat(&sg, serde_json::json!({ "urls": [url] }), None).await;
        assert_eq!(status, 400, "preheat of {url}: {answer}");
        let (status, answer) = create_preheat(
            &sg,
            serde_json::json!({ "origin": "demo", "keys": ["..%2fsecret.txt"] }),
            None,
        )
        .await;
        assert_eq!(status, 400, "preheat of a key: {answer}");
    }
    assert_eq!(
        nginx.requests("/secret.txt"),
        vec![],
        "the origin was asked for the secret"
    );
    assert!(
        nginx.requests("/pub/..%2fsecret.txt").is_empty(),
        "the escape reached the origin"
    );
    // What is under the base path is served, escapes and all checks passed.
    let resp = get(&sg.url("/o/demo/real.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    // Legitimate escapes pass through to the origin as written.
    nginx.put("pub/a b.bin", b"spaced");
    let resp = get(&sg.url("/o/demo/a%20b.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"spaced");
}

/// The redirect policy: a redirect is followed only to the origin's own
/// authority (host and port) under its base path, or to an
/// `allowed_hosts` entry (with its port); each refusal is a 502 that names
/// the target and the rule, a listener on another port sees no connection,
/// and the redirect S3 and registries need (307 to a storage host on the
/// allowlist) still works.
#[tokio::test]
async fn redirects_are_followed_only_where_the_policy_allows() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = elsewhere.local_addr().unwrap().port();
    elsewhere.set_nonblocking(true).unwrap();
    let (dir, nginx) = origin();
    let data = pseudo_random(300_000, 6);
    nginx.put("pub/real.bin", &data);
    nginx.put("secret.txt", b"the secret outside the base path\n");
    let sg = Seedgate::start(
        dir.path(),
        &format!(
            r#"
[origins.demo]
plugin = "http"
base_url = "{}pub/"
allowed_hosts = ["127.0.0.2:{}"]
allow_full_urls = true
"#,
            nginx.base_url(),
            nginx.port
        ),
    );
    // Followed: under the base path on the same authority, and to the
    // storage host (another address) listed with its port.
    for key in ["moved.bin", "storage"] {
        let resp = get(&sg.url(&format!("/o/demo/{key}"))).await;
        assert_eq!(resp.status(), 200, "{key}");
        assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data), "{key}");
    }
    // Refused, each with the target and the rule in the reason (the port
    // case carries a query, so it goes through /fetch).
    for (key, target, why) in [
        (
            "escape",
            "/secret.txt".to_string(),
            "leaves the origin's base path",
        ),
        (
            "encoded",
            "/pub/..%2fsecret.txt".to_string(),
            "percent-encoded '/'",
        ),
        (
            &format!("port?to={to}")[..],
            format!("127.0.0.1:{to}/redirected"),
            "neither the origin's authority nor an allowed_hosts entry",
        ),
        ("loop", "/pub/loop".to_string(), "more than 5 redirects"),
    ] {
        let resp = get(&fetch_url(&sg, &format!("{}pub/{key}", nginx.base_url()))).await;
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 502, "{key}: {body}");
        assert!(
            body.contains(&target) && body.contains(why),
            "{key}: {body}"
        );
        assert!(body.contains("redirect to"), "{key}: {body}");
    }
    assert!(
        nginx.requests("/secret.txt").is_empty(),
        "the secret was fetched"
    );
    let mut connections = 0;
    while elsewhere.accept().is_ok() {
        connections += 1;
    }
    assert_eq!(connections, 0, "a listener on another port was reached");
    // Nothing of it was stored or negative-cached as missing.
    let resp = get(&sg.url("/o/demo/real.bin")).await;
    assert_eq!(resp.status(), 200);
}

/// Origin `a` accepts connections and never answers; origin `b`, on the
/// same `http` plugin, is healthy. Twenty clients asking `a` get 504 at the
/// 2 s plugin deadline, which counts against `a`'s own breaker, not the
/// plugin's: meanwhile and afterwards `b` answers every request, as fast
/// as before, and the plugin's breaker stays closed.
#[tokio::test]
async fn a_hung_origin_does_not_stop_the_other_origins_of_its_plugin() {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    // Accept and hold every connection, never reading or answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept() {
            held.push(s);
        }
    });
    let (dir, nginx) = origin();
    let objects = 80;
    for i in 0..objects {
        nginx.put(&format!("b/{i}.bin"), &pseudo_random(64 * 1024, i as u64));
    }
    let sg = Seedgate::start(
        dir.path(),
        &format!(
            r#"
[plugins]
call_timeout = "2s"

[origins.a]
plugin = "http"
base_url = "http://127.0.0.1:{hung_port}/"
max_downloads = 64

[origins.b]
plugin = "http"
base_url = "{}b/"
"#,
            nginx.base_url()
        ),
    );
    let http = client();
    // b's latency on misses (each one calls the plugin: stat, plan).
    let b_round = |from: usize, n: usize| {
        let http = http.clone();
        let sg_url = sg.url("");
        async move {
            let mut took = Vec::new();
            let mut ok = 0;
            for i in from..from + n {
                let t = Instant::now();
                let resp = http
                    .get(format!("{sg_url}/o/b/{i}.bin"))
                    .send()
                    .await
                    .unwrap();
                if resp.status() == 200 && resp.bytes().await.unwrap().len() == 64 * 1024 {
                    ok += 1;
                }
                took.push(t.elapsed());
            }
            took.sort();
            (ok, took[took.len() / 2])
        }
    };
    let (ok, p50_before) = b_round(0, 20).await;
    assert_eq!(ok, 20);
    // The storm on a, twice, with b asked all along.
    let storm = async {
        let mut answers = Vec::new();
        for round in 0..2 {
            let asks = (0..20).map(|i| {
                let http = http.clone();
                let url = sg.url(&format!("/o/a/r{round}-{i}"));
                async move {
                    let t = Instant::now();
                    let resp = http.get(url).send().await.unwrap();
                    let status = resp.status().as_u16();
                    (status, resp.text().await.unwrap(), t.elapsed())
                }
            });
            answers.extend(futures_util::future::join_all(asks).await);
        }
        answers
    };
    let (answers, (ok_during, p50_during)) = tokio::join!(storm, b_round(20, 40));
    let (ok_after, p50_after) = b_round(60, 20).await;
    eprintln!("b p50: before {p50_before:?}, during a's storm {p50_during:?}, after {p50_after:?}");
    assert_eq!(ok_during, 40, "b failed while a hung");
    assert_eq!(ok_after, 20, "b failed after a hung");
    // "Does not move": well within one plugin deadline of where it was,
    // whatever the noise of a loaded runner.
    for p50 in [p50_during, p50_after] {
        assert!(
            p50 < p50_before * 4 + Duration::from_millis(250),
            "b's p50 moved from {p50_before:?} to {p50:?}"
        );
    }
    let first_round = &answers[..20];
    for (status, body, took) in first_round {
        assert_eq!(*status, 504, "{body}");
        assert!(body.contains("origin 'a'"), "{body}");
        assert!(
            *took < Duration::from_millis(4500),
            "504 after {took:?}: {body}"
        );
    }
    for (status, body, _) in &answers[20..] {
        // The second round finds a's breaker open (or times out again).
        assert!(*status == 504 || *status == 503, "{status}: {body}");
        assert!(!body.contains("plugin 'http' is not called"), "{body}");
    }
    let breakers = json(get(&sg.url("/api/v1/breakers")).await).await;
    let list = breakers.as_array().unwrap();
    let plugin = list
        .iter()
        .find(|b| b["plugin"] == "http")
        .expect("the plugin's breaker is listed");
    assert_eq!(plugin["state"], "closed", "{breakers}");
    assert_eq!(
        plugin["consecutive_failures"].as_u64().unwrap_or(0),
        0,
        "{breakers}"
    );
    let a = list
        .iter()
        .find(|b| b["origin"] == "a")
        .expect("a's breaker is listed");
    assert!(
        a["opens"].as_u64().unwrap_or(0) >= 1 || a["state"] != "closed",
        "{breakers}"
    );
    drop(dir);
}
