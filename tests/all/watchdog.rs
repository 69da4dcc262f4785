//! Watchdogs against an origin that accepts and then sends nothing, or
//! stops in the middle of a body (a fault proxy in front of nginx).

use std::time::Duration;

use tokio::time::Instant;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::*;

const WATCHDOG: Duration = Duration::from_secs(2);
/// What "one tick" of slack may cost on a loaded 2-core runner.
const TICK: Duration = Duration::from_secs(1);

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

async fn downloads(sg: &Seedgate) -> Vec<serde_json::Value> {
    serde_json::from_slice(
        &get(&sg.url("/api/v1/downloads"))
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap()
}

/// Generous per-request and plugin deadlines, so the task watchdog is the
/// layer that fires.
fn config(base_url: &str) -> String {
    format!(
        r#"
[download]
watchdog_timeout = "{}ms"
first_byte_timeout = "30s"
idle_timeout = "30s"

[plugins]
call_timeout = "30s"
http_timeout = "30s"

{}"#,
        WATCHDOG.as_millis(),
        http_origin_config(base_url)
    )
}

/// `clients` concurrent GETs of `path`; each answer's status, reason and
/// when it ended.
async fn storm(sg: &Seedgate, path: &str, clients: usize) -> Vec<(u16, String, Instant)> {
    // One client built up front: building one per request is tens of ms
    // of the test's own CPU each on a loaded runner.
    let http = client();
    let asks = (0..clients).map(|_| async {
        let resp = http.get(sg.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, text, Instant::now())
    });
    futures_util::future::join_all(asks).await
}

/// Scenario 2: the origin accepts and then sends nothing, first to the
/// stat (HEAD), then only to piece requests (GET). Both times every one of
/// 20 waiting clients gets 504 naming the watchdog within its timeout plus
/// a tick, and afterwards no download, connection or file descriptor is
/// left behind.
#[tokio::test]
async fn a_silent_origin_gets_504_within_the_watchdog_and_leaks_nothing() {
    let (dir, nginx) = origin();
    let data = pseudo_random(3 << 20, 21);
    nginx.put("w/a.bin", &data);
    nginx.put("w/b.bin", &data);
    let proxy = FaultProxy::start(nginx.port).await;
    let sg = Seedgate::start(dir.path(), &config(&proxy.base_url()));
    // A first request warms up whatever the process opens once (pools,
    // plugin instances), so the count after can be compared with it.
    assert_eq!(get(&sg.url("/o/www/w/b.bin")).await.status(), 200);
    let baseline = fds(sg.pid());

    for (what, method) in [("stat", None), ("piece", Some(http::Method::GET))] {
        proxy.heal();
        proxy.inject(Fault::Silent, method, usize::MAX);
        let answers = storm(&sg, "/o/www/w/a.bin", 20).await;
        // Measured from the first request the origin left unanswered: the
        // stat before a silent piece GET is progress, and on a loaded
        // runner it alone can take a second.
        let silent_since = proxy.first_fault_at().expect("a request was faulted");
        let slowest = answers.iter().map(|a| a.2 - silent_since).max().unwrap();
        let fastest = answers.iter().map(|a| a.2 - silent_since).min().unwrap();
        eprintln!("{what}: 20 answers between {fastest:?} and {slowest:?}");
        for (status, text, _) in &answers {
            assert_eq!(*status, 504, "{what}: {text}");
            assert!(text.contains("watchdog_timeout"), "{what}: {text}");
        }
        assert!(slowest <= WATCHDOG + TICK, "{what}: slowest {slowest:?}");
        // Released at once: all within a tick of each other.
        assert!(
            slowest - fastest <= TICK,
            "{what}: {fastest:?}..{slowest:?}"
        );
        assert!(
            downloads(&sg).await.is_empty(),
            "{what}: a download is left"
        );
    }

    // One watchdog stopped each task (its waiters shared the answer).
    let fired = r#"seedgate_watchdog_fired_total{origin="www",layer="task"}"#;
    assert_eq!(metric(&sg, fired).await, 2.0);

    // The stuck requests were dropped: their connections close and the
    // process holds no more descriptors than before.
    proxy.heal();
    wait_until(
        "the origin connections close",
        Duration::from_secs(5),
        || proxy.open_connections() <= 1,
    )
    .await;
    let pid = sg.pid();
    wait_until(
        "the descriptors return to the baseline",
        Duration::from_secs(5),
        || fds(pid) <= baseline,
    )
    .await;

    // The origin answers again: the same object downloads in full.
    let resp = get(&sg.url("/o/www/w/a.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
}

/// The per-request watchdogs: a response whose headers never come is cut
/// at `first_byte_timeout`, a body that stops at `idle_timeout`; both are
/// retried, and the object arrives whole with the origin's bytes.
#[tokio::test]
async fn first_byte_and_idle_timeouts_cut_one_request_and_the_retry_succeeds() {
    let (dir, nginx) = origin();
    let data = pseudo_random(8 << 20, 22);
    nginx.put("w/c.bin", &data);
    let proxy = FaultProxy::start(nginx.port).await;
    let config = format!(
        r#"
[download]
piece_length = "4 MiB"
first_byte_timeout = "500ms"
idle_timeout = "500ms"
watchdog_timeout = "10s"

[retry]
base_delay = "10ms"

{}"#,
        http_origin_config(&proxy.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    proxy.inject(Fault::Silent, Some(http::Method::GET), 1);
    proxy.inject(Fault::StallAfter(100_000), Some(http::Method::GET), 1);
    let t = Instant::now();
    let resp = get(&sg.url("/o/www/w/c.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    let took = t.elapsed();
    eprintln!("8 MiB with a silent and a stalled piece request: {took:?}");
    assert_eq!(proxy.faulted(), 2);
    // 1 HEAD + 2 pieces + 2 retried pieces.
    assert_eq!(proxy.requests(), 5);
    assert!(took < Duration::from_secs(5), "{took:?}");
    for layer in ["first_byte", "idle"] {
        let sample = format!(r#"seedgate_watchdog_fired_total{{origin="www",layer="{layer}"}}"#);
        assert_eq!(metric(&sg, &sample).await, 1.0, "{layer}");
    }
}
