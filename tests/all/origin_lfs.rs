//! The built-in gitlab-lfs plugin against giftless, a real Git LFS server:
//! the batch API's href, headers and expiry executed by the host, missing
//! objects and wrong sizes, and JWT-protected repositories.

use crate::giftless::Giftless;
use crate::support::*;

const MIB: usize = 1024 * 1024;

fn lfs_origin(name: &str, endpoint: &str, auth: &str) -> String {
    format!(
        r#"
[origins.{name}]
plugin = "gitlab-lfs"
base_url = "{endpoint}"
[origins.{name}.config]
{auth}
"#
    )
}

/// An object pushed as an LFS client pushes it reads back with its sha256:
/// the batch API is asked once per plugin call (stat, plan-read), and the
/// bytes come from one GET of the download href (giftless ignores Range, so
/// the plugin does not let the host split it). A second read is local.
#[tokio::test]
async fn anonymous_repository_object_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let lfs = Giftless::start(&dir.path().join("lfs"));
    let data = pseudo_random(9 * MIB + 5, 41);
    let key = lfs.upload("team/models", &data, None).await;
    lfs.settle().await;
    let batches_before = lfs.count("POST", "/objects/batch");
    let sg = Seedgate::start(
        dir.path(),
        &lfs_origin("lfs", &lfs.endpoint("team/models"), ""),
    );

    let resp = get(&sg.url(&format!("/o/lfs/{key}"))).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    assert_eq!(
        resp.headers()["etag"],
        format!("\"{}\"", sha256(&data)).as_str(),
        "the oid is the version"
    );
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    let oid = &key[..64];
    lfs.settle().await;
    assert_eq!(
        lfs.count("POST", "/objects/batch") - batches_before,
        2,
        "{:?}",
        lfs.requests()
    );
    assert_eq!(lfs.count("GET", oid), 1, "{:?}", lfs.requests());

    wait_stored(&sg.url(&format!("/o/lfs/{key}"))).await;
    let before = lfs.requests().len();
    let resp = get(&sg.url(&format!("/o/lfs/{key}"))).await;
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    lfs.settle().await;
    assert_eq!(
        lfs.requests().len(),
        before,
        "a hit must not reach the LFS server"
    );
}

/// A missing oid is 404 (giftless answers the whole batch with 404), a
/// wrong size 400 (422 from the server), a malformed key 400 before any
/// request; each costs the server at most one batch request.
#[tokio::test]
async fn missing_objects_and_wrong_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let lfs = Giftless::start(&dir.path().join("lfs"));
    let data = pseudo_random(1000, 42);
    let key = lfs.upload("team/models", &data, None).await;
    let sg = Seedgate::start(
        dir.path(),
        &lfs_origin("lfs", &lfs.endpoint("team/models"), ""),
    );
    lfs.settle().await;
    let batches = || lfs.count("POST", "/objects/batch");

    let before = batches();
    let missing = format!("{}/1000", "0".repeat(64));
    let resp = get(&sg.url(&format!("/o/lfs/{missing}"))).await;
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap();
    assert!(body.contains("LFS batch") && body.contains("404"), "{body}");
    lfs.settle().await;
    assert_eq!(batches() - before, 1);

    let before = batches();
    let wrong = format!("{}/999", &key[..64]);
    let resp = get(&sg.url(&format!("/o/lfs/{wrong}"))).await;
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("422"), "{body}");
    lfs.settle().await;
    assert_eq!(batches() - before, 1);

    let before = batches();
    let resp = get(&sg.url("/o/lfs/not-an-oid/12")).await;
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("64 hex digits"), "{body}");
    lfs.settle().await;
    assert_eq!(batches(), before);
}

/// A JWT-protected repository: no credentials → 403 from the server's
/// 401; a bearer token, and the same token as basic auth (`auth = "token"`,
/// giftless's `_jwt` user), read the object. The token comes from a
/// `file:` secret.
#[tokio::test]
async fn jwt_protected_repository() {
    let dir = tempfile::tempdir().unwrap();
    let lfs = Giftless::start_jwt(&dir.path().join("lfs"), "jwt-test-key");
    let token = lfs.token(&["obj:team/secret/*"]);
    let data = pseudo_random(2 * MIB, 43);
    let key = lfs.upload("team/secret", &data, Some(&token)).await;
    let token_file = dir.path().join("lfs-token");
    std::fs::write(&token_file, &token).unwrap();
    let endpoint = lfs.endpoint("team/secret");
    let config = [
        lfs_origin("anon", &endpoint, ""),
        lfs_origin(
            "bearer",
            &endpoint,
            &format!(
                "auth = \"bearer\"\ntoken = \"file:{}\"",
                token_file.display()
            ),
        ),
        lfs_origin(
            "basic",
            &endpoint,
            &format!("auth = \"token\"\nusername = \"_jwt\"\ntoken = \"{token}\""),
        ),
    ]
    .concat();
    let sg = Seedgate::start(dir.path(), &config);

    let resp = get(&sg.url(&format!("/o/anon/{key}"))).await;
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(body.contains("401"), "{body}");

    let resp = get(&sg.url(&format!("/o/bearer/{key}"))).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));

    // Same object, other origin name: a different task id, fetched again
    // with basic auth.
    let resp = get(&sg.url(&format!("/o/basic/{key}"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
}
