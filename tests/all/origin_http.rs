//! The built-in http plugin against nginx: the configured Authorization,
//! forwarded client headers, validators passed on, and upstream statuses
//! mapped onto the error taxonomy.

use crate::support::*;

fn config(base: &str) -> String {
    // Retries and breakers off: these tests look at single answers.
    format!(
        r#"
[retry]
max_attempts = 1

[breaker]
consecutive_failures = 0

[origins.cfg]
plugin = "http"
base_url = "{base}private/"
[origins.cfg.config]
authorization = "env:SEEDGATE_TEST_PRIVATE_AUTH"

[origins.anon]
plugin = "http"
base_url = "{base}private/"

[origins.fwd]
plugin = "http"
base_url = "{base}private/"
forward_headers = ["authorization"]

[origins.www]
plugin = "http"
base_url = "{base}"
"#
    )
}

fn start(dir: &std::path::Path, nginx: &Nginx) -> Seedgate {
    // SAFETY: tests in this binary never read this variable concurrently
    // with a write; it only reaches the spawned seedgate.
    unsafe { std::env::set_var("SEEDGATE_TEST_PRIVATE_AUTH", "Bearer s3cret") };
    Seedgate::start(dir, &config(&nginx.base_url()))
}

/// `/private/` needs `Authorization: Bearer s3cret`: the configured header
/// (from an `env:` secret) reads it; without credentials the origin's 401
/// is a 403 naming the status; a forwarded client header reads it only when
/// the client sends the right one.
#[tokio::test]
async fn authorization_from_config_and_forwarded_from_the_client() {
    let (dir, nginx) = origin();
    let data = pseudo_random(300_000, 51);
    nginx.put("a.bin", &data); // served as /private/a.bin
    nginx.put("b.bin", &data);
    let sg = start(dir.path(), &nginx);

    let resp = get(&sg.url("/o/anon/a.bin")).await;
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("401") && body.contains("origin 'anon'"),
        "{body}"
    );

    let resp = get(&sg.url("/o/cfg/a.bin")).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));

    let resp = get(&sg.url("/o/fwd/b.bin")).await;
    assert_eq!(
        resp.status(),
        403,
        "no client credentials, nothing forwarded"
    );
    let resp = client()
        .get(sg.url("/o/fwd/b.bin"))
        .header("authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client()
        .get(sg.url("/o/fwd/b.bin"))
        .header("authorization", "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    let statuses: Vec<u16> = nginx
        .requests("/private/b.bin")
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(&statuses[..3], &[401, 401, 200], "{statuses:?}");
}

/// nginx's ETag and Last-Modified reach the client unchanged.
#[tokio::test]
async fn validators_are_passed_on() {
    let (dir, nginx) = origin();
    nginx.put("v.bin", b"validators");
    let sg = start(dir.path(), &nginx);
    let direct = client()
        .head(format!("{}v.bin", nginx.base_url()))
        .send()
        .await
        .unwrap();
    let resp = get(&sg.url("/o/www/v.bin")).await;
    assert_eq!(resp.status(), 200);
    for h in ["etag", "last-modified"] {
        assert_eq!(resp.headers()[h], direct.headers()[h], "{h}");
    }
}

/// 500 → 502 (transient), 503 → 503, 404 → 404; each reason names the
/// upstream status.
#[tokio::test]
async fn upstream_statuses_map_onto_the_taxonomy() {
    let (dir, nginx) = origin();
    let sg = start(dir.path(), &nginx);
    for (path, want, says) in [
        ("/o/www/status/500", 502, "500"),
        ("/o/www/status/503", 503, "503"),
        ("/o/www/nothing-here", 404, "404"),
    ] {
        let resp = get(&sg.url(path)).await;
        assert_eq!(resp.status(), want, "{path}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(says), "{path}: {body}");
    }
}
