//! Circuit breakers against an origin that goes away and comes back (a
//! fault proxy in front of nginx that closes every connection while down).

use std::time::Duration;

use tokio::time::Instant;

use crate::fault_proxy::FaultProxy;
use crate::support::*;

/// The origin breakers (plugins have their own, listed too).
async fn breakers(sg: &Seedgate) -> Vec<serde_json::Value> {
    let resp = get(&sg.url("/api/v1/breakers")).await;
    let all: Vec<serde_json::Value> = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    all.into_iter()
        .filter(|b| b.get("origin").is_some())
        .collect()
}

/// seedgate behind a fault proxy that is down, in front of nginx: the
/// breaker opens after 3 failures for `open` (no growth), 2 attempts per
/// request.
async fn behind_a_dead_proxy(
    dir: &tempfile::TempDir,
    nginx: &Nginx,
    open: &str,
) -> (FaultProxy, Seedgate) {
    let proxy = FaultProxy::start(nginx.port).await;
    proxy.set_down(true);
    let config = format!(
        r#"
[breaker]
consecutive_failures = 3
open_base = "{open}"
open_max = "{open}"

[retry]
max_attempts = 2
base_delay = "10ms"

{}"#,
        http_origin_config(&proxy.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    (proxy, sg)
}

/// The origin is down: the breaker opens after 3 failures, later requests
/// fail at once with 503 and Retry-After, and the origin sees at most one
/// probe per open interval. When it is back, a probe closes the breaker and
/// requests succeed.
#[tokio::test]
async fn breaker_opens_on_a_dead_origin_probes_and_closes() {
    let (dir, nginx) = origin();
    let data = pseudo_random(100_000, 81);
    for i in 0..40 {
        nginx.put(&format!("b/{i}.bin"), &data);
    }
    let (proxy, sg) = behind_a_dead_proxy(&dir, &nginx, "1s").await;

    // Until it opens: 502s, each from a real attempt.
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(
            get(&sg.url(&format!("/o/www/b/{i}.bin")))
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    let opened_at = Instant::now();
    let b = breakers(&sg).await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["state"], "open");
    assert_eq!(b[0]["authority"], format!("127.0.0.1:{}", proxy.port));

    // While open: fast 503s with Retry-After, and the origin is spared.
    let before = proxy.connections();
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    // One client: building one per request costs tens of ms on a loaded
    // runner, which is the test's time, not seedgate's.
    let http = client();
    while opened_at.elapsed() < Duration::from_millis(3500) {
        let t = Instant::now();
        let resp = http
            .get(sg.url(&format!("/o/www/b/{}.bin", 4 + n % 10)))
            .send()
            .await
            .unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probes = proxy.connections() - before;
    eprintln!("{n} requests in 3.5 s while open: {probes} probe connections, slowest {slowest:?}");
    // 1 s intervals (+20% jitter) over 3.5 s: at most 3 probes. Each probe
    // is one stat; its HEAD may open a connection (no retry while probing).
    assert!(probes <= 3, "{probes} probes");
    // Many requests in the open interval, each answered at once.
    assert!(n >= 30, "{n}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");

    // The origin comes back: the next probe succeeds and closes the breaker.
    proxy.set_down(false);
    let t = Instant::now();
    loop {
        let resp = get(&sg.url("/o/www/b/30.bin")).await;
        if resp.status() == 200 {
            assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "closed within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(breakers(&sg).await[0]["state"], "closed");
    for i in 31..36 {
        let resp = get(&sg.url(&format!("/o/www/b/{i}.bin"))).await;
        assert_eq!(resp.status(), 200);
    }
}

/// A HEAD goes through the same guards as a GET: against an origin that
/// is down, HEADs alone are retried and open its breaker, and later HEADs
/// and GETs get the fast 503.
#[tokio::test]
async fn heads_against_a_dead_origin_open_its_breaker_like_gets() {
    let (dir, nginx) = origin();
    nginx.put("h/a.bin", b"head");
    let (proxy, sg) = behind_a_dead_proxy(&dir, &nginx, "30s").await;
    let http = client();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = http
            .head(sg.url(&format!("/o/www/h/{i}.bin")))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    // Two HEADs, two attempts each: the breaker opens on the fourth failure
    // at the latest, and the third HEAD is refused at once.
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    let b = breakers(&sg).await;
    assert_eq!(b[0]["state"], "open", "{b:?}");
    let attempts = proxy.connections();
    assert!(
        (3..=4).contains(&attempts),
        "{attempts} connections: HEADs are retried"
    );
    let resp = get(&sg.url("/o/www/h/a.bin")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        proxy.connections(),
        attempts,
        "the open breaker spares the origin"
    );
}
