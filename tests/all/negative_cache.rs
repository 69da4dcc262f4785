//! The negative cache against real origins: a missing S3 object asked for
//! by many clients costs S3 one request per TTL; entries are listed and
//! purged through the API; an origin's Retry-After sets an entry's life.

use std::time::Duration;

use tokio::time::Instant;

use crate::s3_server::{S3Server, SECRET_KEY};
use crate::support::*;

async fn entries(sg: &Seedgate) -> Vec<serde_json::Value> {
    let resp = get(&sg.url("/api/v1/negative-cache")).await;
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

/// 20 clients ask for a missing S3 object again and again (time
/// compressed: a 2 s TTL, a request every 100-300 ms each). The first
/// answer costs S3 one HEAD; the answers after it come from memory; S3
/// sees one request per TTL.
#[tokio::test]
async fn missing_s3_object_costs_one_request_per_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("data");
    let config = format!(
        "[negative_cache]\nttl = \"2s\"\n{}",
        s3.origin_config("s3", "data", SECRET_KEY)
    );
    let sg = Seedgate::start(dir.path(), &config);
    let url = sg.url("/o/s3/missing/layer.tar");
    let heads = || s3.count("HEAD", "/data/missing/layer.tar");

    // The first burst: 20 at once, one origin call.
    let burst: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get(url.clone().leak())))
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap().status(), 404);
    }
    assert_eq!(heads(), 1, "concurrent misses share one origin call");

    // Then every client keeps asking for 5 s.
    let started = Instant::now();
    let clients: Vec<_> = (0..20u64)
        .map(|c| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while started.elapsed() < Duration::from_secs(5) {
                    let resp = get(&url).await;
                    assert_eq!(resp.status(), 404);
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(100 + (c * 37 + n * 53) % 200)).await;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    let seen = heads();
    eprintln!("{total} requests in 5 s cost S3 {seen} HEADs");
    assert!(total >= 60, "every client kept asking: {total}");
    // 1 + one per 2 s TTL over 5 s: at most 4 (3 expiries and the first).
    assert!(
        (2..=4).contains(&seen),
        "S3 saw {seen} HEADs for {total} requests"
    );

    let listed = entries(&sg).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["origin"], "s3");
    assert_eq!(listed[0]["url"], "s3://data/missing/layer.tar");
    // Its own hits: an entry refreshed at the instant it is listed may
    // have none yet, so only the total below is bounded.
    assert!(listed[0]["hits"].as_u64().is_some(), "{listed:?}");
    assert!(listed[0]["expires_in_ms"].as_u64().unwrap() <= 2000);
    assert_eq!(metric(&sg, "seedgate_negative_cache_entries").await, 1.0);
    let hits = metric(&sg, "seedgate_negative_cache_hits_total").await;
    // At most 20 misses in each of the 4 TTL windows; on a loaded machine
    // `total` can be under 80, so the bound saturates.
    assert!(
        hits as u64 >= total.saturating_sub(4 * 20),
        "{hits} hits of {total}"
    );

    // The object appears; a purge makes it visible before the TTL ends.
    s3.put("data", "missing/layer.tar", b"here now");
    let resp = get(&url).await;
    assert_eq!(resp.status(), 404, "still remembered as missing");
    let resp = client()
        .delete(sg.url("/api/v1/negative-cache"))
        .send()
        .await
        .unwrap();
    let purged: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(purged["purged"], 1);
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), &b"here now"[..]);
}

/// An origin's Retry-After on a 404 sets how long it is remembered; one
/// entry is purged by task id; HEAD answers from the cache too.
#[tokio::test]
async fn retry_after_sets_the_entry_life_and_entries_purge_one_by_one() {
    let (dir, nginx) = origin();
    let config = format!(
        "[negative_cache]\nttl = \"1s\"\n{}",
        http_origin_config(&nginx.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    let resp = get(&sg.url("/o/www/status/404-retry")).await;
    assert_eq!(resp.status(), 404);
    let resp = get(&sg.url("/o/www/plain-missing")).await;
    assert_eq!(resp.status(), 404);
    let listed = entries(&sg).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let hinted = listed
        .iter()
        .find(|e| e["url"].as_str().unwrap().ends_with("404-retry"))
        .unwrap();
    let left = hinted["expires_in_ms"].as_u64().unwrap();
    assert!((5000..=7000).contains(&left), "Retry-After: 7 → {left} ms");

    // HEAD is answered from the cache, with the time left as Retry-After.
    let head = client()
        .head(sg.url("/o/www/status/404-retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert!(head.headers().contains_key("retry-after"));
    assert_eq!(nginx.requests("/status/404-retry").len(), 1);

    let id = hinted["task_id"].as_str().unwrap();
    let del = |id: String| {
        let url = sg.url(&format!("/api/v1/negative-cache/{id}"));
        async move { client().delete(url).send().await.unwrap().status() }
    };
    assert_eq!(del(id.to_string()).await, 200);
    assert_eq!(del(id.to_string()).await, 404);
    assert_eq!(entries(&sg).await.len(), 1);
    let resp = get(&sg.url("/o/www/status/404-retry")).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        nginx.requests_at_least("/status/404-retry", 2).await.len(),
        2,
        "asked again after the purge"
    );
}
