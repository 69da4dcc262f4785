//! The HTTP gateway against what users would run instead, in one run:
//!
//! - requests per second for a small (4 KiB) and a large (64 MiB) stored
//!   object, seedgate against nginx proxy_cache answering HIT, both loaded
//!   by `wrk` (Debian's) with the same threads, connections and duration;
//! - a preheat job of 200 objects (2 GiB in all) against downloading the
//!   same objects directly from the origin, with the same concurrency.
//!
//! Run with `scripts/bench gateway` (see BENCHMARKS.md). Knobs:
//! `SEEDGATE_BENCH_WRK_SECS` (default 10), `SEEDGATE_BENCH_PREHEAT_MIB`
//! (default 2048), `SEEDGATE_BENCH_PREHEAT_OBJECTS` (default 200).

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use support::*;
use tokio::time::Instant;

/// (requests/s, MiB/s) of `wrk` against `url`.
fn wrk(url: &str, secs: usize, connections: usize) -> (f64, f64) {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("wrk is not installed: run scripts/bench (it installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk: {text}");
    assert!(!text.contains("Non-2xx"), "wrk saw errors: {text}");
    let field = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        let v = line.split_whitespace().last().unwrap();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap();
        match unit {
            "GB" => n * 1024.0,
            "MB" => n,
            "KB" => n / 1024.0,
            "B" => n / (1024.0 * 1024.0),
            _ => n,
        }
    };
    (field("Requests/sec:"), field("Transfer/sec:"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_or("SEEDGATE_BENCH_WRK_SECS", 10);
    let preheat_mib = env_or("SEEDGATE_BENCH_PREHEAT_MIB", 2048);
    let objects = env_or("SEEDGATE_BENCH_PREHEAT_OBJECTS", 200).max(1);
    let concurrency = 8;
    let dir = tempfile::tempdir().unwrap();
    println!(
        "seedgate gateway benchmark: wrk {secs} s per target, preheat {objects} objects / {preheat_mib} MiB, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let origin = Nginx::start(&dir.path().join("origin"));
    origin.put("small.bin", &pseudo_random(4096, 1));
    origin.put("large.bin", &pseudo_random(64 << 20, 2));
    let each = (preheat_mib << 20) / objects;
    for i in 0..objects {
        origin.put(
            &format!("pre/{i}.bin"),
            &pseudo_random(each, 100 + i as u64),
        );
    }
    let proxy = Nginx::start_proxy_cache(&dir.path().join("proxy"), origin.port);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&origin.base_url()));
    let client = client();

    // Requests per second on stored objects.
    println!();
    println!("| object | seedgate | nginx proxy_cache HIT | ratio (seedgate / nginx) |");
    println!("|---|---|---|---|");
    for (name, connections) in [("small.bin", 32), ("large.bin", 8)] {
        let sg_url = sg.url(&format!("/o/www/{name}"));
        let nginx_url = format!("http://127.0.0.1:{}/{name}", proxy.port);
        for url in [&sg_url, &nginx_url, &nginx_url] {
            drain(&client, url).await; // stored / cached (nginx: MISS, then HIT)
        }
        let (sg_rps, sg_mib) = wrk(&sg_url, secs, connections);
        let (ng_rps, ng_mib) = wrk(&nginx_url, secs, connections);
        println!(
            "| {name} ({connections} connections) | {sg_rps:.0} req/s, {sg_mib:.0} MiB/s | {ng_rps:.0} req/s, {ng_mib:.0} MiB/s | {:.2}x |",
            sg_rps / ng_rps
        );
    }

    // Preheat against direct downloads of the same objects.
    let t = Instant::now();
    let direct: u64 = futures_util::stream::iter(0..objects)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{}pre/{i}.bin", origin.base_url()));
            async move { drain(&client, &url).await }
        })
        .buffer_unordered(concurrency)
        .fold(0, |a, n| async move { a + n })
        .await;
    let direct_t = t.elapsed();
    let keys: Vec<String> = (0..objects).map(|i| format!("pre/{i}.bin")).collect();
    let t = Instant::now();
    let (status, job) = create_preheat(
        &sg,
        serde_json::json!({"origin": "www", "keys": keys, "concurrency": concurrency}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = loop {
        let j: serde_json::Value = serde_json::from_slice(
            &client
                .get(sg.url(&format!("/api/v1/preheat/{id}")))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        if j["state"] != "running" && j["state"] != "queued" {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let preheat_t = t.elapsed();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["bytes_done"].as_u64().unwrap(), direct);
    println!();
    println!(
        "| preheat {objects} objects, {:.0} MiB, {concurrency} at a time | seedgate {:.2} s | direct download {:.2} s | {:.2}x the direct time |",
        direct as f64 / (1 << 20) as f64,
        preheat_t.as_secs_f64(),
        direct_t.as_secs_f64(),
        preheat_t.as_secs_f64() / direct_t.as_secs_f64()
    );
}
