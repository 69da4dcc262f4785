//! The built-in s3 plugin against s3s-fs, a real S3 implementation that
//! checks SigV4 signatures: presigned plans the host splits into piece
//! ranges, the error taxonomy (missing key, missing bucket, wrong secret)
//! and ListObjectsV2 paging.

use crate::s3_server::{S3Server, SECRET_KEY};
use crate::support::*;

const MIB: usize = 1024 * 1024;

struct Setup {
    _dir: tempfile::TempDir,
    s3: S3Server,
    sg: Seedgate,
}

/// s3s-fs with bucket `data`, and seedgate with origins `s3` (good
/// credentials, secret read from a file), `wrong` (a wrong secret) and
/// `nobucket` (a bucket that does not exist).
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("data");
    let secret = dir.path().join("s3-secret");
    std::fs::write(&secret, format!("{SECRET_KEY}\n")).unwrap();
    let origin = |name: &str, bucket: &str, secret: &str| s3.origin_config(name, bucket, secret);
    let config = [
        origin("s3", "data", &format!("file:{}", secret.display())),
        origin("wrong", "data", "not-the-secret"),
        origin("nobucket", "no-such-bucket", SECRET_KEY),
    ]
    .concat();
    let sg = Seedgate::start(dir.path(), &config);
    Setup { _dir: dir, s3, sg }
}

/// A 20 MiB object arrives with S3's sha256 through presigned plans: one
/// signed HEAD, then one ranged GET per 4 MiB piece, each accepted by the
/// server's signature check; a second read costs S3 nothing.
#[tokio::test]
async fn object_is_read_through_presigned_ranged_plans() {
    let s = setup();
    let data = pseudo_random(20 * MIB, 31);
    s.s3.put("data", "layers/one.bin", &data);
    let path = "/data/layers/one.bin";

    let resp = get(&s.sg.url("/o/s3/layers/one.bin")).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    assert_eq!(
        etag,
        format!("\"{:x}\"", md5_of(&data)),
        "S3's ETag is passed on"
    );
    assert_eq!(s.s3.count("HEAD", path), 1, "{:?}", s.s3.requests());
    assert_eq!(s.s3.count("GET", path), 5, "{:?}", s.s3.requests());

    // A range of a second, cold object fetches only the piece it needs.
    let other = pseudo_random(12 * MIB, 32);
    s.s3.put("data", "layers/two.bin", &other);
    let resp = client()
        .get(s.sg.url("/o/s3/layers/two.bin"))
        .header("range", "bytes=9437184-9437283")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), &other[9437184..9437284]);

    wait_stored(&s.sg.url("/o/s3/layers/one.bin")).await;
    let before = s.s3.requests().len();
    let resp = get(&s.sg.url("/o/s3/layers/one.bin")).await;
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    let after: Vec<_> = s.s3.requests()[before..]
        .iter()
        .filter(|(_, p)| p == path)
        .cloned()
        .collect();
    assert!(after.is_empty(), "a hit must not reach S3: {after:?}");
}

/// A missing key and a missing bucket are 404, a wrong secret is 403
/// (S3 refused the signature); each costs S3 exactly one request: none is
/// retried, and none counts against the breaker.
#[tokio::test]
async fn missing_key_missing_bucket_and_wrong_secret() {
    let s = setup();
    s.s3.put("data", "present.bin", b"here");

    let resp = get(&s.sg.url("/o/s3/absent.bin")).await;
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap();
    assert!(body.contains("s3://data/absent.bin"), "{body}");
    assert_eq!(s.s3.count("HEAD", "/data/absent.bin"), 1);

    let resp = get(&s.sg.url("/o/nobucket/present.bin")).await;
    assert_eq!(resp.status(), 404, "{:?}", resp.text().await);
    assert_eq!(s.s3.count("HEAD", "/no-such-bucket/present.bin"), 1);

    let resp = get(&s.sg.url("/o/wrong/present.bin")).await;
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("origin 'wrong'") && body.contains("403"),
        "{body}"
    );
    assert_eq!(s.s3.count("HEAD", "/data/present.bin"), 1);
    // Permanent: asked again, each is one request and a 403 again; more of
    // them in a row than the breaker's threshold never open it.
    for _ in 0..12 {
        assert_eq!(get(&s.sg.url("/o/wrong/present.bin")).await.status(), 403);
    }
    assert_eq!(s.s3.count("HEAD", "/data/present.bin"), 13);

    // The same object with the right secret is served.
    let resp = get(&s.sg.url("/o/s3/present.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), &b"here"[..]);
}

#[derive(Debug, serde::Deserialize)]
struct Page {
    objects: Vec<Listed>,
    next_page_token: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Listed {
    key: String,
    url: String,
    size: Option<u64>,
}

/// ListObjectsV2 through the plugin: a prefix, pages of at most `max`, each
/// continued with the token of the one before, sizes as stored.
#[tokio::test]
async fn list_objects_pages_through_a_prefix() {
    let s = setup();
    for i in 0..5 {
        s.s3.put("data", &format!("models/m{i}.bin"), &vec![b'x'; 100 + i]);
    }
    s.s3.put("data", "other/o.bin", b"no");

    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = s.sg.url("/api/v1/origins/s3/objects?prefix=models/&max=2");
        if let Some(t) = &token {
            url.push_str(&format!("&page_token={}", urlencode(t)));
        }
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        let page: Page = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert!(page.objects.len() <= 2, "{page:?}");
        pages += 1;
        for o in page.objects {
            let i: usize = o.key["models/m".len()..o.key.len() - 4].parse().unwrap();
            assert_eq!(o.size, Some(100 + i as u64), "{o:?}");
            assert_eq!(o.url, format!("s3://data/{}", o.key));
            keys.push(o.key);
        }
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        keys,
        (0..5)
            .map(|i| format!("models/m{i}.bin"))
            .collect::<Vec<_>>()
    );

    // A listed key reads back through the gateway.
    let resp = get(&s.sg.url(&format!("/o/s3/{}", keys[4]))).await;
    assert_eq!(resp.bytes().await.unwrap().len(), 104);

    // The wrong secret is refused for listings too.
    let resp = get(&s.sg.url("/api/v1/origins/wrong/objects?prefix=models/")).await;
    assert_eq!(resp.status(), 403);
    // An unknown origin is named.
    let resp = get(&s.sg.url("/api/v1/origins/nope/objects")).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("unknown origin 'nope'"));
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn md5_of(bytes: &[u8]) -> md5::Digest {
    md5::compute(bytes)
}
