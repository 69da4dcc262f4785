//! The sandbox around every plugin call: an epoch deadline, a memory cap,
//! trap isolation, and no network but the origin's allowlist — proven with a
//! component that misbehaves on purpose (`plugins/test-hostile`), while a
//! well-behaved origin in the same process keeps being served.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::*;

/// The deadline the tests configure for plugin calls.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

struct Setup {
    _dir: tempfile::TempDir,
    nginx: Nginx,
    sg: Seedgate,
    data: Vec<u8>,
}

fn setup() -> Setup {
    let (dir, nginx) = origin();
    let data = pseudo_random(64 * 1024, 9);
    nginx.put("ok.bin", &data);
    let plugins = install_hostile(dir.path());
    let config = format!(
        r#"
[plugins]
dir = "{plugins}"
call_timeout = "{timeout}ms"
memory_limit = "16 MiB"

[origins.www]
plugin = "http"
base_url = "{base}"

[origins.evil]
plugin = "hostile"
base_url = "{base}"
"#,
        plugins = plugins.display(),
        timeout = CALL_TIMEOUT.as_millis(),
        base = nginx.base_url(),
    );
    let sg = Seedgate::start(dir.path(), &config);
    Setup {
        _dir: dir,
        nginx,
        sg,
        data,
    }
}

/// A plugin that spins forever is stopped at its deadline (plus a tick and
/// scheduling slack) with 504 naming the plugin; while it spins, other
/// requests are served without waiting for it.
#[tokio::test]
async fn infinite_loop_is_stopped_at_the_deadline() {
    let s = setup();
    let want = sha256(&s.data);
    let spinning = {
        let url = s.sg.url("/o/evil/loop");
        tokio::spawn(async move {
            let t = Instant::now();
            let resp = get(&url).await;
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            (status, body, t.elapsed(), Instant::now())
        })
    };
    // Two spinning calls at once on a two-worker runtime: if guests held
    // worker threads, the healthy origin below would stall.
    let spinning2 = {
        let url = s.sg.url("/o/evil/loop");
        tokio::spawn(async move { get(&url).await.status().as_u16() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut healthy = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let resp = get(&s.sg.url("/o/www/ok.bin")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
        healthy.push((t.elapsed(), Instant::now()));
    }
    let (status, body, took, spin_ended) = spinning.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(
        body.contains("plugin 'hostile'") && body.contains("deadline"),
        "{body}"
    );
    assert!(
        took >= CALL_TIMEOUT,
        "stopped before its deadline: {took:?}"
    );
    assert!(
        // The server stops it within a tick of the deadline; the slack is
        // for a debug build on a loaded two-core CI machine.
        took < CALL_TIMEOUT + Duration::from_millis(1000),
        "took {took:?}"
    );
    assert_eq!(spinning2.await.unwrap(), 504);
    assert!(
        healthy.iter().all(|(_, ended)| *ended < spin_ended),
        "healthy requests waited for the spinning plugin: {healthy:?}"
    );
}

/// A plugin that allocates without end traps at its memory cap (502 naming
/// the cap), and the next call to the same plugin works.
#[tokio::test]
async fn memory_bomb_traps_at_the_cap_and_panics_are_contained() {
    let s = setup();
    let resp = get(&s.sg.url("/o/evil/bomb")).await;
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(body.contains("memory cap"), "{body}");

    let resp = get(&s.sg.url("/o/evil/panic")).await;
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("plugin 'hostile'") && body.contains("trapped"),
        "{body}"
    );

    // A fresh instance per call: the plugin answers normally afterwards.
    let resp = get(&s.sg.url("/o/evil/anything")).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("nothing here"));
    let resp = get(&s.sg.url("/o/www/ok.bin")).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&s.data));
}

/// The plugin's http reaches only its origin's allowlist: a cloud metadata
/// address is denied by the host. A plan pointing outside the allowlist is
/// refused before any connection is made.
#[tokio::test]
async fn network_is_limited_to_the_allowlist() {
    let s = setup();
    // The origin's policy refused it: the origin's side is to blame (502).
    let resp = get(&s.sg.url("/o/evil/exfiltrate")).await;
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("denied: host '169.254.169.254' is not on the origin's allowlist"),
        "{body}"
    );

    let resp = get(&s.sg.url("/o/evil/plan-elsewhere")).await;
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("denied: host '10.255.255.1' is not on the origin's allowlist"),
        "{body}"
    );
    let resp = client()
        .head(s.sg.url("/o/evil/plan-elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "stat itself is fine");
    assert!(s.nginx.requests("/secret").is_empty());
}
