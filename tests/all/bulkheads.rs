//! Scenario 6 and the bulkheads: a plugin that keeps trapping or running
//! into its deadline is cut off by its own breaker while other plugins go
//! on at their usual speed; an origin's downloads and connections are
//! bounded, and overflow is refused at once, never queued.

use std::time::Duration;

use tokio::time::Instant;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::*;

async fn json(sg: &Seedgate, path: &str) -> serde_json::Value {
    serde_json::from_slice(&get(&sg.url(path)).await.bytes().await.unwrap()).unwrap()
}

/// Median and worst of the cold GETs of `keys` from origin `www`.
async fn cold_latencies(sg: &Seedgate, keys: impl Iterator<Item = String>) -> (Duration, Duration) {
    let mut took = Vec::new();
    let http = client();
    for key in keys {
        let t = Instant::now();
        let resp = http
            .get(sg.url(&format!("/o/www/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{key}");
        resp.bytes().await.unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    (took[took.len() / 2], *took.last().unwrap())
}

#[tokio::test]
async fn a_plugin_that_keeps_failing_is_cut_off_and_others_do_not_notice() {
    let (dir, nginx) = origin();
    for i in 0..200 {
        nginx.put(&format!("p/{i}.bin"), &pseudo_random(10_000, i));
    }
    let plugins = install_hostile(dir.path());
    let config = format!(
        r#"
[plugins]
dir = "{plugins}"

[plugins.limits.hostile]
call_timeout = "300ms"

[plugins.breaker]
consecutive_failures = 4
open_base = "2s"
open_max = "2s"

[origins.www]
plugin = "http"
base_url = "{base}"

[origins.evil]
plugin = "hostile"
base_url = "{base}"
"#,
        plugins = plugins.display(),
        base = nginx.base_url(),
    );
    let sg = Seedgate::start(dir.path(), &config);
    let (p50_before, worst_before) =
        cold_latencies(&sg, (0..20).map(|i| format!("p/{i}.bin"))).await;

    // Four clients hammer the hostile plugin: traps and deadline kills.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammers: Vec<_> = (0..4)
        .map(|c| {
            let url = sg.url(if c % 2 == 0 {
                "/o/evil/x/loop"
            } else {
                "/o/evil/x/panic"
            });
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = client();
                let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let status = http.get(&url).send().await.unwrap().status().as_u16();
                    *statuses.entry(status).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                statuses
            })
        })
        .collect();
    wait_until_async(&sg).await;
    let (p50_during, worst_during) =
        cold_latencies(&sg, (20..200).map(|i| format!("p/{i}.bin"))).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for h in hammers {
        for (s, n) in h.await.unwrap() {
            *statuses.entry(s).or_default() += n;
        }
    }
    eprintln!(
        "www cold GET p50/worst: {p50_before:?}/{worst_before:?} alone, \
         {p50_during:?}/{worst_during:?} while evil is hammered; evil answers {statuses:?}"
    );
    let plugins = json(&sg, "/api/v1/plugins").await;
    let hostile = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hostile")
        .unwrap();
    eprintln!(
        "hostile: {} calls, {} rejected",
        hostile["calls"], hostile["rejected"]
    );
    // Refused without running: most of the hammering never reached the guest.
    let refused = statuses.get(&503).copied().unwrap_or(0);
    let total: usize = statuses.values().sum();
    assert!(refused * 10 >= total * 8, "{statuses:?}");
    // 4 failures open it, then at most one probe per 2 s interval.
    let calls = hostile["calls"].as_u64().unwrap();
    assert!(
        calls <= 4 + 4 + 6,
        "{calls} calls reached the hostile plugin"
    );
    // The other plugin's latency did not move (within the noise of a shared
    // machine: the median at most doubles, or stays within 25 ms).
    assert!(
        p50_during <= (p50_before * 2).max(p50_before + Duration::from_millis(25)),
        "{p50_before:?} -> {p50_during:?}"
    );
    let breakers = json(&sg, "/api/v1/breakers").await;
    let b = breakers
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["plugin"] == "hostile")
        .expect("the hostile plugin's breaker is listed");
    assert!(b["opens"].as_u64().unwrap() >= 1, "{b}");
    // The same, as metrics.
    let refused = r#"seedgate_refusals_total{scope="plugin",name="hostile",reason="breaker"}"#;
    assert!(metric(&sg, refused).await >= 100.0);
    let opened = r#"seedgate_breaker_transitions_total{scope="plugin",name="hostile",key="hostile",to="open"}"#;
    assert!(metric(&sg, opened).await >= 1.0);
    let traps = r#"seedgate_plugin_calls_total{plugin="hostile",outcome="trap"}"#;
    assert!(metric(&sg, traps).await >= 1.0);
    let ok = r#"seedgate_plugin_calls_total{plugin="http",outcome="ok"}"#;
    assert!(metric(&sg, ok).await >= 400.0, "2 calls per cold GET");
    assert!(
        !breakers
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["plugin"] == "http" && b["state"] != "closed"),
        "{breakers}"
    );
}

/// Waits until the hostile plugin's breaker has opened once.
async fn wait_until_async(sg: &Seedgate) {
    let t = Instant::now();
    loop {
        let breakers = json(sg, "/api/v1/breakers").await;
        if breakers
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["plugin"] == "hostile" && b["opens"].as_u64().unwrap_or(0) >= 1)
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the breaker opens: {breakers}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `max_downloads` refuses a third download at once with 503 and
/// Retry-After while stored objects are still served; `max_connections`
/// keeps piece requests to the origin at one at a time.
#[tokio::test]
async fn an_origin_bulkhead_refuses_overflow_and_bounds_connections() {
    let (dir, nginx) = origin();
    let data = pseudo_random(8 << 20, 61);
    for i in 0..4 {
        nginx.put(&format!("k/{i}.bin"), &data);
    }
    let proxy = FaultProxy::start(nginx.port).await;
    let config = format!(
        r#"
[download]
piece_length = "4 MiB"
piece_concurrency = 4

[origins.www]
plugin = "http"
base_url = "{}"
max_downloads = 2
max_connections = 1
"#,
        proxy.base_url()
    );
    let sg = Seedgate::start(dir.path(), &config);
    let resp = get(&sg.url("/o/www/k/3.bin")).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    wait_stored(&sg.url("/o/www/k/3.bin")).await;

    // Every piece answer takes 400 ms: two downloads of 2 pieces each.
    proxy.inject(
        Fault::Delay(Duration::from_millis(400)),
        Some(http::Method::GET),
        usize::MAX,
    );
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let url = sg.url(&format!("/o/www/k/{i}.bin"));
            tokio::spawn(async move {
                let resp = get(&url).await;
                (resp.status().as_u16(), sha256(&resp.bytes().await.unwrap()))
            })
        })
        .collect();
    let downloads = || async {
        json(&sg, "/api/v1/downloads")
            .await
            .as_array()
            .unwrap()
            .len()
    };
    let t = Instant::now();
    while downloads().await < 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "two downloads start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http = client();
    let t = Instant::now();
    let resp = http.get(sg.url("/o/www/k/2.bin")).send().await.unwrap();
    let refused_in = t.elapsed();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let text = resp.text().await.unwrap();
    assert!(text.contains("max_downloads"), "{text}");
    assert!(refused_in < Duration::from_millis(200), "{refused_in:?}");
    let running = r#"seedgate_downloads_running{origin="www"}"#;
    assert_eq!(metric(&sg, running).await, 2.0);
    let refused = r#"seedgate_refusals_total{scope="origin",name="www",reason="bulkhead"}"#;
    assert_eq!(metric(&sg, refused).await, 1.0);
    // A stored object is served meanwhile.
    let resp = get(&sg.url("/o/www/k/3.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");

    for h in slow {
        assert_eq!(h.await.unwrap(), (200, sha256(&data)));
    }
    assert_eq!(proxy.max_in_flight(), 1, "one piece request at a time");
    // Room again: the refused object downloads.
    let resp = get(&sg.url("/o/www/k/2.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
}
