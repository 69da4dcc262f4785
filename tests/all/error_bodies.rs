//! Every error the gateway sends carries its one-line reason, those that
//! hyper and axum produce themselves included; suffix ranges longer than
//! the object select all of it (RFC 9110 §14.1.2); origin URLs stay out of
//! error bodies unless `server.expose_origin_urls` lets them in.

use crate::support::*;

/// The malformed requests hyper refuses before routing (garbage request
/// line, a control byte in a header, an oversized head), axum's
/// fallbacks (no route, no key, wrong method) and a `Range: bytes=-`: each
/// answer has a body naming the cause, and a Content-Length that matches.
#[tokio::test]
async fn every_error_has_a_reason() {
    let (dir, nginx) = origin();
    let data = pseudo_random(1000, 3);
    nginx.put("x.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400, "malformed HTTP request"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n".to_vec(),
            400,
            "malformed HTTP request",
        ),
        (big.into_bytes(), 431, "server.max_header_bytes"),
        (
            b"GET /o/www HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            404,
            "names no object of origin 'www'",
        ),
        (
            b"GET /o/www/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            404,
            "names no object of origin 'www'",
        ),
        (
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            b"PUT /o/www/x.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec(),
            405,
            "PUT is not allowed",
        ),
        (
            b"GET /o/www/x.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-\r\nConnection: close\r\n\r\n"
                .to_vec(),
            400,
            "Range",
        ),
    ];
    for (request, want, why) in cases {
        let (status, head, body) = raw_request(&sg, &request).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        assert_eq!(status, want, "{shown:?}: {head}\n{body}");
        assert!(body.contains(why), "{shown:?}: body {body:?}");
        assert!(
            body.ends_with('\n') && body.lines().count() == 1,
            "{shown:?}: {body:?}"
        );
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("{shown:?}: no content-length in {head}"));
        assert_eq!(
            length.trim().parse::<usize>().unwrap(),
            body.len(),
            "{shown:?}"
        );
        if want == 405 {
            assert!(head.to_ascii_lowercase().contains("allow: "), "{head}");
        }
    }
    // The server took none of it badly.
    assert_eq!(get(&sg.url("/healthz")).await.status(), 200);
}

/// `Range: bytes=-N` with N past the object's length selects the whole
/// object (206 with all of it), not 416.
#[tokio::test]
async fn a_suffix_longer_than_the_object_selects_all_of_it() {
    let (dir, nginx) = origin();
    let data = pseudo_random(1000, 4);
    nginx.put("x.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    for warm in [false, true] {
        let resp = client()
            .get(sg.url("/o/www/x.bin"))
            .header("range", "bytes=-5000")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206, "stored: {warm}");
        assert_eq!(resp.headers()["content-range"], "bytes 0-999/1000");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);
        wait_stored(&sg.url("/o/www/x.bin")).await;
    }
    let resp = client()
        .get(sg.url("/o/www/x.bin"))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[990..]);
    let resp = client()
        .get(sg.url("/o/www/x.bin"))
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
}

/// With `server.expose_origin_urls = false`, an object read's error keeps
/// its reason but not the origin's URL; by default on loopback the URL is
/// shown.
#[tokio::test]
async fn origin_urls_stay_out_of_error_bodies_unless_allowed() {
    let (dir, nginx) = origin();
    let origin_url = nginx.base_url();
    for (expose, shown) in [("", true), ("expose_origin_urls = false", false)] {
        let sg = Seedgate::start(
            dir.path(),
            &format!("[server]\n{expose}\n{}", http_origin_config(&origin_url)),
        );
        let resp = get(&sg.url("/o/www/missing.bin")).await;
        assert_eq!(resp.status(), 404);
        let body = resp.text().await.unwrap();
        assert!(body.contains("answered 404"), "{body}");
        assert_eq!(body.contains(&origin_url), shown, "{expose:?}: {body}");
        assert_eq!(body.contains("<origin URL>"), !shown, "{expose:?}: {body}");
        let resp = get(&sg.url("/o/www/a%2f..%2fb")).await;
        assert_eq!(resp.status(), 400);
        drop(sg);
    }
}

/// A plugin that says its own config is wrong (`config.misconfigured`)
/// makes the answer the operator's problem: a 502 that names the plugin and
/// the key, not the client's 400. The same plugin's complaint about a bad
/// key stays a 400, and the other origins keep serving.
#[tokio::test]
async fn a_misconfigured_plugin_is_a_502_naming_it_not_the_clients_400() {
    let (dir, nginx) = origin();
    let data = pseudo_random(5000, 9);
    nginx.put("ok.bin", &data);
    let config = format!(
        r#"{www}
[origins.s3bad]
plugin = "s3"
base_url = "s3://bucket/"
[origins.s3bad.config]
endpoint = "not a url"

[origins.lfsbad]
plugin = "gitlab-lfs"
base_url = "http://127.0.0.1:9/repo.git/info/lfs/objects/"
[origins.lfsbad.config]
auth = "kerberos"

[origins.lfs]
plugin = "gitlab-lfs"
base_url = "http://127.0.0.1:9/repo.git/info/lfs/objects/"
"#,
        www = http_origin_config(&nginx.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    let oid = "a".repeat(64);
    for (path, plugin, key) in [
        ("/o/s3bad/layer.bin".to_string(), "s3", "endpoint"),
        (format!("/o/lfsbad/{oid}/10"), "gitlab-lfs", "auth"),
    ] {
        for head in [false, true] {
            let req = if head {
                client().head(sg.url(&path))
            } else {
                client().get(sg.url(&path))
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert_eq!(status, 502, "{path} (head {head}): {body}");
            // A HEAD answer has no body to carry the reason.
            assert!(
                head || body.contains(&format!(
                    "plugin '{plugin}' is misconfigured (config '{key}')"
                )),
                "{path}: {body}"
            );
        }
    }
    // The same plugin, configured well, blames a bad key on the client.
    let resp = get(&sg.url("/o/lfs/not-an-oid")).await;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("LFS keys are OID/SIZE"), "{body}");
    assert!(!body.contains("misconfigured"), "{body}");
    // And everything else is served.
    let resp = get(&sg.url("/o/www/ok.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
}
