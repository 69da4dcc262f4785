//! How seedgate's costs grow with the store: the store is filled through
//! the gateway (each object a real download from an nginx origin) to 1,000,
//! 10,000 and 100,000 small objects, and at each size a fresh process on
//! that data dir is measured:
//!
//! - startup: from spawn to listening (opening sled, reconciling records
//!   with content files, rebuilding the index) and to `/readyz` 200;
//! - RSS after startup and after the hits below;
//! - hit latency p50/p99 over random stored objects (one keep-alive
//!   client, sequential);
//! - `GET /api/v1/tasks` (its default 100 newest) and a `/metrics` scrape;
//! - eviction: a copy of the data dir restarted with a quota just under
//!   what it holds, timed until the collector is down to the low
//!   watermark, per task evicted.
//!
//! Each figure is printed per size with its growth from the smallest size;
//! a figure that grows faster than the log of the task count is flagged.
//!
//! Then the same figures for 100 objects of 1 GiB (`SEEDGATE_BENCH_STORE_LARGE`;
//! 0 skips them) with every piece recorded: 25,600 piece records. They
//! cannot be downloaded here (100 GiB), so seedgate is asked for each
//! object's task id and metadata (HEAD), and the records are written with
//! the store's own API (feature `bench-internals`) over sparse content
//! files at full length; hits read the first 4 KiB (ranged) of a random
//! object, for small and large objects alike.
//!
//! Run with `scripts/bench store`. Knobs: `SEEDGATE_BENCH_STORE_SIZES`
//! (default `1000,10000,100000`), `SEEDGATE_BENCH_STORE_HITS` (2000),
//! `SEEDGATE_BENCH_STORE_LARGE` (100).

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "support/verdict.rs"]
mod verdict;

use std::time::Duration;

use futures_util::StreamExt;
use support::*;
use tokio::time::Instant;
use verdict::{Want, rss_mib, verdict};

const OBJECT: usize = 1024;

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median time of `n` GETs of `url` (body read).
async fn median_get(client: &reqwest::Client, url: &str, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let resp = client.get(url).send().await.unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    percentile(&mut times, 0.5)
}

/// A fresh seedgate on `data`: (server, time to listening, time to ready).
async fn start(config: &std::path::Path, data: &std::path::Path) -> (Seedgate, Duration, Duration) {
    let t = Instant::now();
    let sg = Seedgate::start_with(config, data);
    let listening = t.elapsed();
    let client = client();
    loop {
        if let Ok(r) = client.get(sg.url("/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (sg, listening, t.elapsed())
}

struct Row {
    tasks: usize,
    listening: Duration,
    ready: Duration,
    rss: f64,
    hit_p50: Duration,
    hit_p99: Duration,
    tasks_api: Duration,
    metrics: Duration,
    evicted: usize,
    evict_time: Duration,
}

/// Measures a fresh process on `data` holding `size` objects of `object`
/// bytes at `path(i)`: startup, hits, the API, /metrics, RSS, and
/// eviction on a copy of `data`.
#[allow(clippy::too_many_arguments)]
async fn measure(
    config: &std::path::Path,
    data: &std::path::Path,
    size: usize,
    object: u64,
    hits: usize,
    origin_config: &str,
    dir: &std::path::Path,
    path: impl Fn(u64) -> String,
) -> (Seedgate, Row) {
    let client = client();
    let (server, listening, ready) = start(config, data).await;
    let pid = server.pid();
    let mut times = Vec::with_capacity(hits);
    let mut x = 0x9e3779b97f4a7c15u64;
    for _ in 0..hits {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let url = server.url(&path(x % size as u64));
        let t = Instant::now();
        // The first 4 KiB: a hit costs the same whatever the object's size.
        let resp = client
            .get(&url)
            .header("range", "bytes=0-4095")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-seedgate-cache"], "hit", "{url}");
        assert_eq!(resp.bytes().await.unwrap().len() as u64, object.min(4096));
        times.push(t.elapsed());
    }
    let hit_p50 = percentile(&mut times, 0.5);
    let hit_p99 = percentile(&mut times, 0.99);
    let tasks_api = median_get(&client, &server.url("/api/v1/tasks"), 20).await;
    let metrics = median_get(&client, &server.url("/metrics"), 20).await;
    let rss = rss_mib("VmRSS:", pid);
    let stored: f64 = metric(&server, r#"seedgate_storage_bytes{kind="stored"}"#).await;

    // Eviction, on a copy: a quota the store is 5 % over the high
    // watermark of; timed from ready until it is down to the low one
    // (the collector runs every 100 ms).
    let copy = dir.join("evict");
    let _ = std::fs::remove_dir_all(&copy);
    let status = std::process::Command::new("cp")
        .args(["-a"])
        .arg(data)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let quota = (stored / 0.85) as u64;
    let evict_config = dir.join("evict.toml");
    std::fs::write(
        &evict_config,
        format!(
            "[storage]\ntask_ttl = \"0s\"\nquota = {quota}\ngc_interval = \"100ms\"\n{origin_config}"
        ),
    )
    .unwrap();
    let (evictor, _, _) = start(&evict_config, &copy).await;
    let t = Instant::now();
    let low = quota as f64 * 0.6;
    loop {
        let now = metric(&evictor, r#"seedgate_storage_bytes{kind="stored"}"#).await;
        if now <= low {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "eviction never reached the low watermark"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let evict_time = t.elapsed();
    let left = metric(&evictor, r#"seedgate_storage_bytes{kind="stored"}"#).await;
    let evicted = ((stored - left) / object as f64).round() as usize;
    drop(evictor);
    let _ = std::fs::remove_dir_all(&copy);

    (
        server,
        Row {
            tasks: size,
            listening,
            ready,
            rss,
            hit_p50,
            hit_p99,
            tasks_api,
            metrics,
            evicted,
            evict_time,
        },
    )
}

/// An XFS filesystem in a loop-mounted image file (reflinks), unmounted
/// and removed at the end.
struct Xfs {
    mount: std::path::PathBuf,
    image: std::path::PathBuf,
}

impl Xfs {
    fn make(image: std::path::PathBuf, mount: std::path::PathBuf, bytes: u64) -> Self {
        std::fs::File::create(&image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        for args in [
            vec!["mkfs.xfs", "-q", "-m", "reflink=1", image.to_str().unwrap()],
            vec![
                "mount",
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount.to_str().unwrap(),
            ],
        ] {
            let out = std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {} (the large-object phase needs root and xfsprogs; SEEDGATE_BENCH_STORE_LARGE=0 skips it)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Xfs { mount, image }
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// `count` objects of 1 GiB at `big/{i}.bin` (sparse files at the origin),
/// stored with every piece recorded, in `data`: seedgate is asked for each
/// object's task id and metadata (HEAD, which downloads nothing), then the
/// records are written with the store's own API, and each content file is
/// a reflink copy of one 1 GiB file of zeros written for real (the store
/// drops pieces over holes, so sparse files would not do; `data` must be
/// on a filesystem with reflinks). 25,600 piece records for 100 objects;
/// the bytes match their digests, so reads check them as usual.
async fn fill_large(
    origin: &Nginx,
    config: &std::path::Path,
    data: &std::path::Path,
    count: usize,
) {
    use seedgate::storage::{PieceRecord, Storage, TaskRecord, TaskState};
    const LEN: u64 = 1 << 30;
    const PIECE: u64 = 4 << 20;
    for i in 0..count {
        let path = origin.root.join(format!("www/big/{i}.bin"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path).unwrap().set_len(LEN).unwrap();
    }
    let sg = Seedgate::start_with(config, data);
    let client = client();
    let mut heads = Vec::new();
    for i in 0..count {
        let resp = client
            .head(sg.url(&format!("/o/www/big/{i}.bin")))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "HEAD big/{i}.bin: {}",
            resp.status()
        );
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        heads.push((
            h("x-seedgate-task").expect("x-seedgate-task"),
            h("etag"),
            h("last-modified"),
            h("content-type"),
        ));
    }
    drop(sg.kill());
    let storage = Storage::open(data, 64 << 20, 0).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let zeros = vec![0u8; PIECE as usize];
    let digest = format!("crc32:{}", crc32fast::hash(&zeros));
    let template = data.join("zeros.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&template).unwrap();
        for _ in 0..LEN / PIECE {
            f.write_all(&zeros).unwrap();
        }
        f.sync_all().unwrap();
    }
    for (i, (id, etag, last_modified, content_type)) in heads.into_iter().enumerate() {
        let file = storage.content_path(&id);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let out = std::process::Command::new("cp")
            .arg("--reflink=always")
            .arg(&template)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cp --reflink: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for n in 0..(LEN / PIECE) as u32 {
            storage
                .put_piece(
                    &id,
                    &PieceRecord {
                        number: n,
                        offset: n as u64 * PIECE,
                        length: PIECE,
                        digest: digest.clone(),
                        cost_ms: 0,
                        created_at_ms: now,
                    },
                )
                .unwrap();
        }
        storage
            .put_task(&TaskRecord {
                id,
                url: format!("{}big/{i}.bin", origin.base_url()),
                content_length: LEN,
                piece_length: PIECE,
                etag,
                last_modified,
                content_type,
                state: TaskState::Succeeded,
                created_at_ms: now,
                accessed_at_ms: now,
            })
            .unwrap();
    }
    storage.flush().await.unwrap();
    std::fs::remove_file(&template).unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("SEEDGATE_BENCH_STORE_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SEEDGATE_BENCH_STORE_SIZES: numbers")
        })
        .collect();
    let hits = env_or("SEEDGATE_BENCH_STORE_HITS", 2000).max(10);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "seedgate store-growth benchmark: {sizes:?} objects of {OBJECT} B, {hits} hits per size"
    );
    let origin = Nginx::start(&dir.path().join("origin"));
    let max = *sizes.iter().max().unwrap();
    for i in 0..max {
        origin.put(&format!("o/{i}.bin"), &pseudo_random(OBJECT, i as u64));
    }
    let sg_dir = dir.path().join("sg");
    std::fs::create_dir_all(&sg_dir).unwrap();
    let origin_config = http_origin_config(&origin.base_url());
    let config_text = format!("[storage]\ntask_ttl = \"0s\"\n{origin_config}");
    let mut sg = Some(Seedgate::start(&sg_dir, &config_text));
    let (config, data) = (
        sg.as_ref().unwrap().config.clone(),
        sg.as_ref().unwrap().data_dir.clone(),
    );
    let client = client();
    let mut filled = 0;
    let mut rows = Vec::new();
    for &size in &sizes {
        // Fill through the gateway, 32 downloads at a time.
        let server = sg.take().unwrap();
        let t = Instant::now();
        futures_util::stream::iter(filled..size)
            .map(|i| {
                let (client, url) = (client.clone(), server.url(&format!("/o/www/o/{i}.bin")));
                async move {
                    // A 503 (a bulkhead or breaker refusing) is retried
                    // after its Retry-After, as a pipeline would; printed.
                    loop {
                        let resp = client.get(&url).send().await.unwrap();
                        let status = resp.status();
                        let body = resp.bytes().await.unwrap();
                        if status == 503 {
                            println!(
                                "fill: {url}: 503, retried: {}",
                                String::from_utf8_lossy(&body).trim()
                            );
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                        assert!(
                            status.is_success(),
                            "{url}: {status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                        break body.len() as u64;
                    }
                }
            })
            .buffer_unordered(32)
            .for_each(|n| async move { assert_eq!(n as usize, OBJECT) })
            .await;
        println!(
            "filled {} → {size} objects in {:.1} s",
            filled,
            t.elapsed().as_secs_f64()
        );
        filled = size;
        // Stored whole (the last records are durable) before the restart.
        wait_stored(&server.url(&format!("/o/www/o/{}.bin", size - 1))).await;
        drop(server.kill());

        let (server, row) = measure(
            &config,
            &data,
            size,
            OBJECT as u64,
            hits,
            &origin_config,
            dir.path(),
            |i| format!("/o/www/o/{i}.bin"),
        )
        .await;
        rows.push(row);
        sg = Some(server);
    }
    drop(sg);

    // Large objects, many piece records.
    let large = env_or("SEEDGATE_BENCH_STORE_LARGE", 100);
    let large_row = if large > 0 {
        let xfs = Xfs::make(
            dir.path().join("large.img"),
            dir.path().join("large"),
            16 << 30,
        );
        let large_dir = xfs.mount.clone();
        let large_config = large_dir.join("seedgate.toml");
        std::fs::write(&large_config, &config_text).unwrap();
        let large_data = large_dir.join("data");
        let t = Instant::now();
        fill_large(&origin, &large_config, &large_data, large).await;
        println!(
            "filled {large} objects of 1 GiB ({} piece records) in {:.1} s",
            large * 256,
            t.elapsed().as_secs_f64()
        );
        let (server, row) = measure(
            &large_config,
            &large_data,
            large,
            1 << 30,
            hits,
            &origin_config,
            &large_dir,
            |i| format!("/o/www/big/{i}.bin"),
        )
        .await;
        drop(server);
        drop(xfs);
        Some(row)
    } else {
        None
    };

    println!();
    println!(
        "| tasks | startup to listening | to ready | RSS | hit p50 | hit p99 | GET /api/v1/tasks | /metrics | eviction |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let print = |label: String, r: &Row| {
        println!(
            "| {label} | {:.2} s | {:.2} s | {:.0} MiB | {:.3} ms | {:.3} ms | {:.2} ms | {:.2} ms | {} tasks in {:.2} s ({:.0} µs each) |",
            r.listening.as_secs_f64(),
            r.ready.as_secs_f64(),
            r.rss,
            ms(r.hit_p50),
            ms(r.hit_p99),
            ms(r.tasks_api),
            ms(r.metrics),
            r.evicted,
            r.evict_time.as_secs_f64(),
            r.evict_time.as_secs_f64() * 1e6 / r.evicted.max(1) as f64,
        );
    };
    for r in &rows {
        print(r.tasks.to_string(), r);
    }
    if let Some(r) = &large_row {
        print(
            format!("{} of 1 GiB ({} piece records)", r.tasks, r.tasks * 256),
            r,
        );
    }
    // Growth from the smallest size to the largest, against the log of
    // the growth in tasks (what "flat or logarithmic" allows).
    let (first, last) = (rows.first().unwrap(), rows.last().unwrap());
    let log_growth = (last.tasks as f64).ln() / (first.tasks as f64).ln();
    println!();
    println!(
        "growth from {} to {} tasks (x{}); logarithmic growth allows x{log_growth:.2}:",
        first.tasks,
        last.tasks,
        last.tasks / first.tasks
    );
    let figures: [(&str, f64, f64); 6] = [
        ("hit p50", ms(first.hit_p50), ms(last.hit_p50)),
        ("hit p99", ms(first.hit_p99), ms(last.hit_p99)),
        ("GET /api/v1/tasks", ms(first.tasks_api), ms(last.tasks_api)),
        ("/metrics scrape", ms(first.metrics), ms(last.metrics)),
        (
            "eviction per task",
            first.evict_time.as_secs_f64() / first.evicted.max(1) as f64,
            last.evict_time.as_secs_f64() / last.evicted.max(1) as f64,
        ),
        ("RSS", first.rss, last.rss),
    ];
    for (name, a, b) in figures {
        let g = b / a;
        println!(
            "  {name}: x{g:.2}{}",
            if g > log_growth.max(1.5) {
                " — grows faster than log"
            } else {
                ""
            }
        );
    }
    println!(
        "  startup: {:.2} s → {:.2} s to ready",
        first.ready.as_secs_f64(),
        last.ready.as_secs_f64()
    );
    println!();
    verdict(
        &format!("startup (to ready) with {} tasks, s", last.tasks),
        last.ready.as_secs_f64(),
        Want::AtMost,
        10.0,
        &format!("{:.2} s", last.ready.as_secs_f64()),
    );
    verdict(
        &format!("hit p99 with {} tasks vs {} tasks", last.tasks, first.tasks),
        ms(last.hit_p99) / ms(first.hit_p99),
        Want::AtMost,
        log_growth.max(1.5),
        &format!(
            "x{:.2} ({:.3} → {:.3} ms)",
            ms(last.hit_p99) / ms(first.hit_p99),
            ms(first.hit_p99),
            ms(last.hit_p99)
        ),
    );
}
