//! The plugin host around the sandbox: reloading a plugin while it is being
//! called, per-plugin limits from the config, the compiled-artifact cache,
//! and hostile plugins that flood logs, reach for private addresses or lie
//! about sizes.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::*;

fn http_wasm() -> &'static [u8] {
    seedgate::plugin::BUILTINS
        .iter()
        .find(|(n, _)| *n == "http")
        .unwrap()
        .1
}

fn hostile_wasm() -> Vec<u8> {
    std::fs::read(seedgate::plugin::test_components::HOSTILE).unwrap()
}

/// Replaces a plugin file the way a deploy does: write aside, rename over.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn plugins(sg: &Seedgate) -> Vec<serde_json::Value> {
    let resp = get(&sg.url("/api/v1/plugins")).await;
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

async fn plugin(sg: &Seedgate, name: &str) -> serde_json::Value {
    plugins(sg)
        .await
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("plugin {name} not listed"))
}

/// Replacing a plugin's file swaps the new version in while a call on the
/// old one is in flight; that call finishes on the old version. A broken
/// file is refused with its reason and the working version keeps serving;
/// the reload API does the same on demand.
#[tokio::test]
async fn reload_swaps_versions_without_failing_calls_in_flight() {
    let (dir, nginx) = origin();
    let data = pseudo_random(200_000, 61);
    nginx.put("c.bin", &data);
    let plugins_dir = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins_dir).unwrap();
    let file = plugins_dir.join("swap.wasm");
    std::fs::write(&file, hostile_wasm()).unwrap();
    let config = format!(
        r#"
[plugins]
dir = "{}"
reload_interval = "100ms"

[origins.o]
plugin = "swap"
base_url = "{}"
[origins.o.config]
slow-ms = "1500"
"#,
        plugins_dir.display(),
        nginx.base_url()
    );
    let sg = Seedgate::start(dir.path(), &config);
    let old_digest = plugin(&sg, "swap").await["digest"].clone();

    let in_flight = tokio::spawn(get(sg.url("/o/o/slow").leak()));
    let t = Instant::now();
    while plugin(&sg, "swap").await["in_flight"] != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the slow call started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replace(&file, http_wasm());
    let new_digest = sha256(http_wasm());
    let t = Instant::now();
    loop {
        if plugin(&sg, "swap").await["digest"] == new_digest.as_str() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no reload within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New calls run the new version (the http plugin) at once...
    let resp = get(&sg.url("/o/o/c.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    // ...and the listing shows its version (its `version` section) and
    // call-time percentiles.
    let p = plugin(&sg, "swap").await;
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"), "{p}");
    let (p50, p99) = (
        p["p50_call_us"].as_u64().unwrap(),
        p["p99_call_us"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p99 >= p50, "{p}");
    // ...while the call that started on the old one finishes there.
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("slow call finished"));

    // A broken file is refused; the http version keeps serving.
    replace(&file, b"\0asm\x0d\0\x01\0garbage");
    let t = Instant::now();
    let refused = loop {
        let p = plugin(&sg, "swap").await;
        if let Some(e) = p["last_reload_error"].as_str() {
            break e.to_string();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no refusal within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.contains("new version refused"), "{refused}");
    assert_eq!(plugin(&sg, "swap").await["digest"], new_digest.as_str());
    let resp = get(&sg.url("/o/o/c.bin")).await;
    assert_eq!(resp.status(), 200);

    let resp = client()
        .post(sg.url("/api/v1/plugins/swap/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body = resp.text().await.unwrap();
    assert!(body.contains("plugin 'swap'"), "{body}");

    // The API swaps the old version back once the file is good again.
    std::fs::write(&file, hostile_wasm()).unwrap();
    let resp = client()
        .post(sg.url("/api/v1/plugins/swap/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let outcome: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    // (The watcher may have swapped it already; either way it is back.)
    assert_eq!(outcome["digest"], old_digest);
    assert_eq!(plugin(&sg, "swap").await["digest"], old_digest);
    let resp = get(&sg.url("/o/o/anything")).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("hostile plugin"));
    let resp = client()
        .post(sg.url("/api/v1/plugins/nope/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// `[plugins.limits.NAME]` overrides the defaults for one plugin: its own
/// deadline and memory cap, a bulkhead that refuses at once with 503, and
/// an allowlist that narrows every origin using it.
#[tokio::test]
async fn per_plugin_limits_apply_to_that_plugin_only() {
    let (dir, nginx) = origin();
    nginx.put("ok.bin", b"fine");
    let plugins_dir = install_hostile(dir.path());
    std::fs::write(plugins_dir.join("fenced.wasm"), http_wasm()).unwrap();
    std::fs::write(plugins_dir.join("crowded.wasm"), hostile_wasm()).unwrap();
    let config = format!(
        r#"
[plugins]
dir = "{dir}"
call_timeout = "5s"
memory_limit = "64 MiB"

[plugins.limits.hostile]
call_timeout = "300ms"
memory_limit = "8 MiB"

[plugins.limits.crowded]
call_timeout = "3s"
max_concurrent_calls = 2

[plugins.limits.fenced]
allowed_hosts = ["192.0.2.0/24"]

[origins.evil]
plugin = "hostile"
base_url = "{base}"

[origins.crowd]
plugin = "crowded"
base_url = "{base}"

[origins.fenced]
plugin = "fenced"
base_url = "{base}"

[origins.www]
plugin = "http"
base_url = "{base}"
"#,
        dir = plugins_dir.display(),
        base = nginx.base_url()
    );
    let sg = Seedgate::start(dir.path(), &config);

    let t = Instant::now();
    let resp = get(&sg.url("/o/evil/loop")).await;
    assert_eq!(resp.status(), 504);
    assert!(resp.text().await.unwrap().contains("300ms"));
    assert!(
        t.elapsed() < Duration::from_millis(1300),
        "{:?}",
        t.elapsed()
    );

    let resp = get(&sg.url("/o/evil/bomb")).await;
    let body = resp.text().await.unwrap();
    assert!(body.contains("8388608 B memory cap"), "{body}");

    // Two calls spin on "crowded" (a copy of the hostile plugin allowed two
    // calls at once; two objects, since one object's readers share a call);
    // the third is refused at once, not queued behind their 3 s deadline.
    let spinning: Vec<_> = ["a", "b"]
        .iter()
        .map(|k| tokio::spawn(get(sg.url(&format!("/o/crowd/{k}/loop")).leak())))
        .collect();
    let t = Instant::now();
    while plugin(&sg, "crowded").await["in_flight"] != 2 {
        assert!(t.elapsed() < Duration::from_secs(3), "two calls in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let resp = get(&sg.url("/o/crowd/anything")).await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = resp.text().await.unwrap();
    assert!(body.contains("limit of 2 calls"), "{body}");
    for s in spinning {
        assert_eq!(s.await.unwrap().status(), 504);
    }
    assert_eq!(plugin(&sg, "crowded").await["rejected"], 1);

    // The fenced copy of the http plugin may not reach its own origin.
    // The plugin's fence, not the client's request: 502.
    let resp = get(&sg.url("/o/fenced/ok.bin")).await;
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(body.contains("plugin's allowlist"), "{body}");
    // The same bytes under the built-in name, without the limit, can.
    let resp = get(&sg.url("/o/www/ok.bin")).await;
    assert_eq!(resp.bytes().await.unwrap(), &b"fine"[..]);
    assert_eq!(plugin(&sg, "http").await["call_timeout_ms"], 5000);
    assert_eq!(plugin(&sg, "hostile").await["memory_limit"], 8 << 20);
}

/// Compiled plugins land in the cache directory; a second server loads
/// them from there; an artifact that does not load is dropped and rebuilt.
#[tokio::test]
async fn compiled_plugins_are_cached_on_disk() {
    let (dir, nginx) = origin();
    nginx.put("x.bin", b"cached");
    let cache = dir.path().join("cache");
    let config = format!(
        "[plugins]\ncache_dir = \"{}\"\n{}",
        cache.display(),
        http_origin_config(&nginx.base_url())
    );
    // The harness points every server at a shared cache; this test wants
    // its own, so it starts seedgate itself with the config's cache_dir.
    let start = || {
        let path = dir.path().join("seedgate.toml");
        std::fs::write(&path, &config).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_seedgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("SEEDGATE_PLUGIN_CACHE_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.starts_with("seedgate listening"), "{line}");
        let _ = child.kill();
        let _ = child.wait();
    };
    let t = Instant::now();
    start();
    let cold = t.elapsed();
    let artifacts = || {
        let mut v: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        v.sort();
        v
    };
    let built = artifacts();
    assert_eq!(
        built.len(),
        seedgate::plugin::BUILTINS.len(),
        "one artifact per built-in: {built:?}"
    );
    let http = built
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&sha256(http_wasm()))
        })
        .expect("the http plugin's artifact is named by its digest")
        .clone();
    let modified = std::fs::metadata(&http).unwrap().modified().unwrap();

    let t = Instant::now();
    start();
    let warm = t.elapsed();
    assert_eq!(artifacts(), built);
    assert_eq!(
        std::fs::metadata(&http).unwrap().modified().unwrap(),
        modified,
        "a warm start reads the artifact, it does not rewrite it"
    );
    eprintln!("startup with cold cache {cold:?}, warm {warm:?}");
    assert!(warm < cold, "warm {warm:?} vs cold {cold:?}");

    // A damaged artifact is dropped and compiled again.
    std::fs::write(&http, b"not an artifact").unwrap();
    start();
    assert!(std::fs::read(&http).unwrap().len() > 1000);
}

/// More hostile plugins: a log flood is cut at the budget and counted; a
/// name on the allowlist that resolves to an unlisted private address is
/// denied; an http answer over the body cap is refused; a plugin that lies about an object's size is caught by the host
/// and nothing it planned is stored or served.
#[tokio::test]
async fn log_floods_private_addresses_and_lies_are_contained() {
    let (dir, nginx) = origin();
    let data = pseudo_random(100_000, 62);
    nginx.put("real.bin", &data);
    let plugins_dir = install_hostile(dir.path());
    let base = nginx.base_url();
    let by_name = base.replace("127.0.0.1", "localhost");
    let config = format!(
        r#"
[plugins]
dir = "{dir}"
log_lines_per_second = 20
http_body_limit = "64 KiB"

# The liars fail every attempt; keep the breaker out of what is checked.
[breaker]
consecutive_failures = 0

[origins.evil]
plugin = "hostile"
base_url = "{by_name}"
[origins.evil.config]
private-url = "{by_name}real.bin"

[origins.greedy]
plugin = "hostile"
base_url = "{base}"
[origins.greedy.config]
big-url = "{base}real.bin"

[origins.longer]
plugin = "hostile"
base_url = "{base}"
[origins.longer.config]
liar-url = "{base}real.bin"
liar-length = "150000"

[origins.shorter]
plugin = "hostile"
base_url = "{base}"
[origins.shorter.config]
liar-url = "{base}real.bin"
liar-length = "60000"
"#,
        dir = plugins_dir.display(),
    );
    let sg = Seedgate::start(dir.path(), &config);

    let resp = get(&sg.url("/o/evil/flood")).await;
    assert_eq!(resp.status(), 404);
    let dropped = plugin(&sg, "hostile").await["log_lines_dropped"]
        .as_u64()
        .unwrap();
    assert!(dropped >= 10_000 - 40, "dropped {dropped}");

    let resp = get(&sg.url("/o/evil/private")).await;
    let body = resp.text().await.unwrap();
    assert!(body.contains("denied"), "{body}");
    assert!(body.contains("outside the allowlist"), "{body}");
    assert_eq!(nginx.gets("/real.bin"), 0, "nothing reached the origin");

    // A control answer bigger than the plugin's cap is cut off, not kept.
    let resp = get(&sg.url("/o/greedy/hoard")).await;
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("too large") && body.contains("65536 B body cap"),
        "{body}"
    );

    // The lie shows in the origin's first answer (a Content-Range that is
    // not the one asked for), so the piece is refused: the reader gets an
    // error — a 502, or a body cut short of the Content-Length the lie
    // announced — and never a byte that is not the origin's. Nothing is
    // stored, so asking again fails the same way.
    for (origin, lie) in [("longer", 150_000), ("shorter", 60_000)] {
        for _ in 0..2 {
            let mut resp = get(&sg.url(&format!("/o/{origin}/liar"))).await;
            let status = resp.status().as_u16();
            let mut got = Vec::new();
            let mut cut = false;
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => got.extend_from_slice(&c),
                    Ok(None) => break,
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
            match status {
                502 => assert!(String::from_utf8_lossy(&got).contains("Content-Range")),
                200 => {
                    assert!(cut && got.len() < lie, "{origin}: {} bytes", got.len());
                    assert_eq!(&got[..], &data[..got.len()], "{origin}");
                }
                other => panic!("{origin}: status {other}"),
            }
        }
    }
}
