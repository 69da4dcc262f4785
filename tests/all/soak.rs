//! A soak: a mixed load for `SEEDGATE_SOAK_SECS` (default 40 in the suite;
//! RELIABILITY.md records a one-hour run) against one seedgate under a small
//! quota, with nginx as the origin. Eight clients mix hits and misses of
//! objects from 4 KiB to 6 MiB, Range reads, missing objects, preheat jobs
//! and deletes; a sampler records RSS, open descriptors and stored bytes
//! every few seconds.
//!
//! It asserts what must hold however long it runs: every byte served is the
//! origin's (sha256 of every whole body, every range compared), the only
//! errors are the expected ones (404 for missing objects, 409 for deleting
//! a task in use), stored bytes never pass the quota, RSS stays under a
//! ceiling, and, in runs of 20 minutes or more, RSS and descriptors stay
//! flat (the last quarter's peak within bounds of the second quarter's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::support::*;

const QUOTA_MIB: u64 = 48;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    bytes_served: AtomicU64,
    wrong_bytes: AtomicU64,
    by_kind: parking_lot::Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    fn note(&self, kind: impl Into<String>) {
        *self.by_kind.lock().entry(kind.into()).or_default() += 1;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_stays_flat_and_correct() {
    let secs = env_or("SEEDGATE_SOAK_SECS", 40) as u64;
    // Clients, and a pause between each one's requests (a long run need
    // not be a flood).
    let clients = env_or("SEEDGATE_SOAK_CLIENTS", 8) as u64;
    let pause = Duration::from_millis(env_or("SEEDGATE_SOAK_PAUSE_MS", 0) as u64);
    let (dir, nginx) = origin();
    // 48 objects: many small, some large; together well over the quota.
    let sizes = [4 << 10, 64 << 10, 300 << 10, 1 << 20, 3 << 20, 6 << 20];
    let mut objects = Vec::new();
    for i in 0..48 {
        let size = sizes[i % sizes.len()];
        let data = pseudo_random(size, 900 + i as u64);
        let name = format!("s/{i}.bin");
        nginx.put(&name, &data);
        objects.push((name, Arc::new(data)));
    }
    let objects = Arc::new(objects);
    let total: usize = objects.iter().map(|(_, d)| d.len()).sum();
    let sg = Seedgate::start(
        dir.path(),
        &format!(
            "[storage]\nquota = \"{QUOTA_MIB}MiB\"\ngc_interval = \"2s\"\n{}",
            http_origin_config(&nginx.base_url())
        ),
    );
    let pid = sg.pid();
    let base = sg.url("");
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let http = client();

    let mut workers = Vec::new();
    for w in 0..clients {
        let (objects, counts, http, base) =
            (objects.clone(), counts.clone(), http.clone(), base.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((w + 1) * 0x1234_5678));
            while Instant::now() < deadline {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                counts.requests.fetch_add(1, Ordering::Relaxed);
                let roll = rng.below(100);
                // Small objects are asked for more often (hits).
                let i = if rng.below(3) == 0 {
                    rng.below(objects.len() as u64)
                } else {
                    rng.below(12)
                } as usize;
                let (name, data) = &objects[i];
                if roll < 10 {
                    let resp = http
                        .get(format!("{base}/o/www/s/missing-{}.bin", rng.below(50)))
                        .send()
                        .await
                        .unwrap();
                    counts.note(format!("missing {}", resp.status().as_u16()));
                    continue;
                }
                let ranged = roll < 35;
                let (start, end) = if ranged {
                    let a = rng.below(data.len() as u64) as usize;
                    let b = a + rng.below((data.len() - a) as u64) as usize;
                    (a, b)
                } else {
                    (0, data.len() - 1)
                };
                let mut req = http.get(format!("{base}/o/www/{name}"));
                if ranged {
                    req = req.header("range", format!("bytes={start}-{end}"));
                }
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        counts.note(format!("transport: {e}"));
                        continue;
                    }
                };
                let status = resp.status().as_u16();
                if !(status == 200 || status == 206) {
                    counts.note(format!(
                        "object {status}: {}",
                        resp.text().await.unwrap_or_default()
                    ));
                    continue;
                }
                let cache = resp
                    .headers()
                    .get("x-seedgate-cache")
                    .map_or("?", |v| if v == "hit" { "hit" } else { "miss" });
                counts.note(format!(
                    "{} {status} {cache}",
                    if ranged { "range" } else { "whole" }
                ));
                let mut body = resp.bytes_stream();
                let mut got = Vec::new();
                let mut cut = false;
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(c) => got.extend_from_slice(&c),
                        Err(_) => {
                            cut = true;
                            break;
                        }
                    }
                }
                counts
                    .bytes_served
                    .fetch_add(got.len() as u64, Ordering::Relaxed);
                if cut {
                    counts.note("body cut short");
                }
                if got[..] != data[start..start + got.len().min(end + 1 - start)]
                    || (!cut && got.len() != end + 1 - start)
                {
                    counts.wrong_bytes.fetch_add(1, Ordering::Relaxed);
                    counts.note(format!("WRONG BYTES {name} {start}-{end}"));
                }
            }
        }));
    }
    // Preheats and deletes, now and then.
    let admin = {
        let (objects, counts, http, base) =
            (objects.clone(), counts.clone(), http.clone(), base.clone());
        tokio::spawn(async move {
            let mut rng = Rng(77);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                counts.requests.fetch_add(1, Ordering::Relaxed);
                if rng.below(2) == 0 {
                    let keys: Vec<String> = (0..3)
                        .map(|_| objects[rng.below(objects.len() as u64) as usize].0.clone())
                        .collect();
                    let resp = http
                        .post(format!("{base}/api/v1/preheat"))
                        .header("content-type", "application/json")
                        .body(serde_json::json!({ "origin": "www", "keys": keys }).to_string())
                        .send()
                        .await
                        .unwrap();
                    counts.note(format!("preheat {}", resp.status().as_u16()));
                } else {
                    let tasks = json(
                        http.get(format!("{base}/api/v1/tasks"))
                            .send()
                            .await
                            .unwrap(),
                    )
                    .await;
                    let list = tasks.as_array().cloned().unwrap_or_default();
                    if list.is_empty() {
                        continue;
                    }
                    let id = list[rng.below(list.len() as u64) as usize]["task_id"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let resp = http
                        .delete(format!("{base}/api/v1/tasks/{id}"))
                        .send()
                        .await
                        .unwrap();
                    counts.note(format!("delete {}", resp.status().as_u16()));
                }
            }
        })
    };
    // The sampler: (seconds, RSS KiB, fds, stored bytes).
    let mut samples = Vec::new();
    let started = Instant::now();
    let every = Duration::from_secs((secs / 40).clamp(1, 30));
    while Instant::now() < deadline {
        tokio::time::sleep(every).await;
        let stored = metric(&sg, "seedgate_storage_bytes{kind=\"stored\"}").await as u64;
        samples.push((started.elapsed().as_secs(), rss_kib(pid), fds(pid), stored));
    }
    for w in workers {
        w.await.unwrap();
    }
    admin.await.unwrap();

    let origin_sent: u64 = objects
        .iter()
        .map(|(n, _)| nginx.bytes_sent(&format!("/{n}")))
        .sum();
    let served = counts.bytes_served.load(Ordering::Relaxed);
    eprintln!(
        "soak: {secs} s, {} requests",
        counts.requests.load(Ordering::Relaxed)
    );
    eprintln!("soak: outcomes {:#?}", counts.by_kind.lock());
    eprintln!(
        "soak: served {served} B; origin sent {origin_sent} B for objects totalling {total} B ({:.2}x of one copy); quota {QUOTA_MIB} MiB",
        origin_sent as f64 / total as f64
    );
    eprintln!("soak: t(s)  rss(MiB)  fds  stored(MiB)");
    let step = (samples.len() / 20).max(1);
    for s in samples.iter().step_by(step) {
        eprintln!(
            "soak: {:5} {:8.1} {:5} {:9.1}",
            s.0,
            s.1 as f64 / 1024.0,
            s.2,
            s.3 as f64 / 1048576.0
        );
    }

    assert_eq!(
        counts.wrong_bytes.load(Ordering::Relaxed),
        0,
        "{:?}",
        counts.by_kind.lock()
    );
    // An origin stat that took longer than the 2 s plugin deadline on a
    // starved machine (seen 12 times in 407 242 requests of the hour run,
    // while builds loaded both cores) is the origin's timeout, correctly
    // answered 504; more than 1 in 2 000 is not starvation.
    let requests = counts.requests.load(Ordering::Relaxed);
    let timeouts: u64 = counts
        .by_kind
        .lock()
        .iter()
        .filter(|(k, _)| {
            k.contains(" 504") && k.contains("no answer in time") || k.as_str() == "missing 504"
        })
        .map(|(_, n)| n)
        .sum();
    assert!(
        timeouts * 2000 <= requests.max(2000),
        "{timeouts} origin timeouts in {requests} requests"
    );
    for (kind, n) in counts.by_kind.lock().iter() {
        if kind.contains(" 504") && (kind.contains("no answer in time") || kind == "missing 504") {
            continue;
        }
        let expected = kind.starts_with("whole 200")
            || kind.starts_with("range 206")
            || kind == "missing 404"
            || kind == "preheat 201"
            || kind == "delete 200"
            || kind == "delete 409"
            || kind == "delete 404";
        assert!(expected, "unexpected outcome {kind:?} ×{n}");
    }
    let quota = QUOTA_MIB << 20;
    for s in &samples {
        assert!(
            s.3 <= quota,
            "stored {} B past the {quota} B quota at {} s",
            s.3,
            s.0
        );
    }
    // Flat: after the first quarter (warm-up: caches, pools, the plugin
    // runtime), the last quarter's peaks stay near the second quarter's.
    // Warm-up takes about a quarter of an hour (RELIABILITY.md), so a
    // short run (CI's) is held to a ceiling instead.
    let peak_rss = samples.iter().map(|s| s.1).max().unwrap_or(0);
    assert!(peak_rss < 320 * 1024, "RSS reached {peak_rss} KiB");
    let peak_fds = samples.iter().map(|s| s.2).max().unwrap_or(0);
    assert!(peak_fds < 256, "{peak_fds} descriptors open");
    let q = samples.len() / 4;
    if q >= 2 && secs >= 1200 {
        let peak = |r: &[(u64, u64, u64, u64)], f: fn(&(u64, u64, u64, u64)) -> u64| {
            r.iter().map(f).max().unwrap()
        };
        let (early, late) = (&samples[q..2 * q], &samples[3 * q..]);
        let (rss_early, rss_late) = (peak(early, |s| s.1), peak(late, |s| s.1));
        let (fd_early, fd_late) = (peak(early, |s| s.2), peak(late, |s| s.2));
        assert!(
            rss_late <= rss_early + rss_early / 4 + 16 * 1024,
            "RSS grew from {rss_early} KiB to {rss_late} KiB"
        );
        assert!(
            fd_late <= fd_early + 16,
            "descriptors grew from {fd_early} to {fd_late}"
        );
    }
}
