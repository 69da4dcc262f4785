//! The plugin platform's costs, each next to what it stands in for, in one
//! run on the same machine:
//!
//! - instantiate: a fresh instance per call (`schemes`, which does nothing
//!   else) — the fixed price of the sandbox;
//! - `stat` through the s3 plugin (a presigned HEAD to s3s-fs) against
//!   aws-sdk-s3's HeadObject, and through the http plugin against a plain
//!   reqwest HEAD to nginx;
//! - `plan-read` of both plugins (pure computation: presigning for s3);
//! - a 1 GiB fetch through the s3 plugin's presigned plans, executed by the
//!   host's own client exactly as the piece engine does (ranged pieces,
//!   `piece_concurrency` at once), against the same ranges fetched with
//!   aws-sdk-s3 GetObject — target: within 5 %. A single whole-object
//!   GetObject is printed for reference.
//!
//! Run with `scripts/bench plugins` (see BENCHMARKS.md).

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/all/s3_server.rs"]
mod s3_server;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use futures_util::StreamExt;
use seedgate::config::Config;
use seedgate::origin::{Expect, Origin, OriginRouter};
use seedgate::plugin::bindings::seedgate::plugin::types as wit;
use seedgate::plugin::{PluginHost, Registry};
use tokio::time::Instant;

use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use support::*;

const MIB: u64 = 1024 * 1024;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Mean of `n` runs of `f`, after a few unmeasured warm-up runs.
async fn mean_of<F, Fut>(n: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..5 {
        f().await;
    }
    let t = Instant::now();
    for _ in 0..n {
        f().await;
    }
    t.elapsed() / n as u32
}

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "bench",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn ctx(url: &str) -> wit::RequestContext {
    wit::RequestContext {
        url: url.into(),
        headers: vec![],
    }
}

/// The piece ranges of an object: (offset, length).
fn pieces(total: u64, piece: u64) -> Vec<(u64, u64)> {
    (0..total.div_ceil(piece))
        .map(|i| (i * piece, piece.min(total - i * piece)))
        .collect()
}

/// Runs `fetch` over `ranges` with `concurrency` at once; total bytes.
async fn fetch_all<F, Fut>(ranges: &[(u64, u64)], concurrency: usize, fetch: F) -> u64
where
    F: Fn(u64, u64) -> Fut,
    Fut: Future<Output = u64>,
{
    futures_util::stream::iter(ranges.iter().map(|&(o, l)| fetch(o, l)))
        .buffer_unordered(concurrency)
        .fold(0u64, |a, n| async move { a + n })
        .await
}

/// The host's way: the plugin's presigned plan, split into ranged pieces,
/// executed with the origin's client and checked like the engine does.
async fn via_plugin(origin: &Origin, url: &str, ranges: &[(u64, u64)], conc: usize) -> u64 {
    let meta = origin.plugin.stat(&origin.env, ctx(url)).await.unwrap();
    let plans = origin
        .plugin
        .plan_read(&origin.env, ctx(url), meta.clone(), None)
        .await
        .unwrap();
    let plan = &plans[0];
    let total = meta.content_length;
    fetch_all(ranges, conc, |offset, length| async move {
        let resp = origin
            .send(
                plan,
                Expect {
                    offset,
                    length,
                    total,
                },
                true,
            )
            .await
            .unwrap();
        let mut body = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(c) = body.next().await {
            n += c.unwrap().len() as u64;
        }
        assert_eq!(n, length);
        n
    })
    .await
}

async fn via_sdk(s3: &aws_sdk_s3::Client, key: &str, ranges: &[(u64, u64)], conc: usize) -> u64 {
    fetch_all(ranges, conc, |offset, length| async move {
        let out = s3
            .get_object()
            .bucket("bench")
            .key(key)
            .range(format!("bytes={offset}-{}", offset + length - 1))
            .send()
            .await
            .unwrap();
        let mut body = out.body;
        let mut n = 0u64;
        while let Some(c) = body.next().await {
            n += c.unwrap().len() as u64;
        }
        assert_eq!(n, length);
        n
    })
    .await
}

async fn sdk_whole(s3: &aws_sdk_s3::Client, key: &str) -> u64 {
    let out = s3
        .get_object()
        .bucket("bench")
        .key(key)
        .send()
        .await
        .unwrap();
    let mut body = out.body;
    let mut n = 0u64;
    while let Some(c) = body.next().await {
        n += c.unwrap().len() as u64;
    }
    n
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let mib = env_or("SEEDGATE_BENCH_MIB", 1024) as u64;
    let rounds = env_or("SEEDGATE_BENCH_ROUNDS", 3).max(1);
    let calls = env_or("SEEDGATE_BENCH_CALLS", 300);
    let conc = 4;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3"));
    let nginx = Nginx::start(&dir.path().join("nginx"));
    nginx.put("small.bin", b"sixteen bytes...");
    println!("preparing a {mib} MiB object in s3s-fs");
    {
        let path = dir.path().join("s3/bench/big.bin");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut md5 = md5::Context::new();
        for i in 0..mib {
            let chunk = pseudo_random(MIB as usize, i + 1);
            md5.consume(&chunk);
            std::io::Write::write_all(&mut f, &chunk).unwrap();
        }
        s3.record_etag("bench", "big.bin", &format!("{:x}", md5.finalize()));
    }
    s3.put("bench", "small.bin", b"sixteen bytes...");

    let text = format!(
        "[plugins]\ncall_timeout = \"5s\"\n{}{}",
        s3.origin_config("s3", "bench", SECRET_KEY),
        http_origin_config(&nginx.base_url())
    );
    let config = Config::parse(&text, Path::new("bench.toml")).unwrap();
    let host = PluginHost::new(config.plugins.clone(), None).unwrap();
    let registry = Registry::load(Arc::new(host), None).unwrap();
    let router = OriginRouter::new(&config, &registry).unwrap();
    let s3o = router.get("s3").unwrap();
    let www = router.get("www").unwrap();
    let sdk = s3_client(&s3.endpoint());
    let http = client();

    println!("\n== per-call costs (mean of {calls} calls) ==");
    let inst = mean_of(calls, || async {
        s3o.plugin.schemes(&s3o.env).await.unwrap();
    })
    .await;
    println!(
        "instantiate + call `schemes` (s3 plugin):   {:>8.1} µs",
        us(inst)
    );

    let small = "s3://bench/small.bin";
    let s3_stat = mean_of(calls, || async {
        s3o.plugin.stat(&s3o.env, ctx(small)).await.unwrap();
    })
    .await;
    let sdk_head = mean_of(calls, || async {
        sdk.head_object()
            .bucket("bench")
            .key("small.bin")
            .send()
            .await
            .unwrap();
    })
    .await;
    println!(
        "s3 plugin stat (presigned HEAD):            {:>8.1} µs   aws-sdk-s3 HeadObject {:>8.1} µs   ratio {:.2}",
        us(s3_stat),
        us(sdk_head),
        s3_stat.as_secs_f64() / sdk_head.as_secs_f64()
    );
    let meta = s3o.plugin.stat(&s3o.env, ctx(small)).await.unwrap();
    let s3_plan = mean_of(calls, || async {
        s3o.plugin
            .plan_read(&s3o.env, ctx(small), meta.clone(), None)
            .await
            .unwrap();
    })
    .await;
    println!(
        "s3 plugin plan-read (presign GET):          {:>8.1} µs",
        us(s3_plan)
    );

    let www_url = format!("{}small.bin", nginx.base_url());
    let http_stat = mean_of(calls, || async {
        www.plugin.stat(&www.env, ctx(&www_url)).await.unwrap();
    })
    .await;
    let direct_head = mean_of(calls, || async {
        http.head(&www_url).send().await.unwrap();
    })
    .await;
    println!(
        "http plugin stat (HEAD):                    {:>8.1} µs   reqwest HEAD          {:>8.1} µs   ratio {:.2}",
        us(http_stat),
        us(direct_head),
        http_stat.as_secs_f64() / direct_head.as_secs_f64()
    );
    let wmeta = www.plugin.stat(&www.env, ctx(&www_url)).await.unwrap();
    let http_plan = mean_of(calls, || async {
        www.plugin
            .plan_read(&www.env, ctx(&www_url), wmeta.clone(), None)
            .await
            .unwrap();
    })
    .await;
    println!(
        "http plugin plan-read:                      {:>8.1} µs",
        us(http_plan)
    );

    let total = mib * MIB;
    let piece = seedgate::piece::piece_length(total);
    let ranges = pieces(total, piece);
    println!(
        "\n== {mib} MiB from s3s-fs: {} pieces of {} MiB, {conc} at once (median of {rounds}) ==",
        ranges.len(),
        piece / MIB
    );
    let big = "s3://bench/big.bin";
    let (mut plugin_t, mut sdk_t, mut whole_t) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate the order so neither side always runs on a warmer cache.
        let sides: [u8; 3] = if round % 2 == 0 { [0, 1, 2] } else { [1, 0, 2] };
        for side in sides {
            let t = Instant::now();
            let n = match side {
                0 => via_plugin(&s3o, big, &ranges, conc).await,
                1 => via_sdk(&sdk, "big.bin", &ranges, conc).await,
                _ => sdk_whole(&sdk, "big.bin").await,
            };
            assert_eq!(n, total);
            let e = t.elapsed();
            [&mut plugin_t, &mut sdk_t, &mut whole_t][side as usize].push(e);
        }
    }
    let (p, s, w) = (median(plugin_t), median(sdk_t), median(whole_t));
    let rate = |d: Duration| total as f64 / MIB as f64 / d.as_secs_f64();
    println!(
        "s3 plugin plans, host client:   {:>7.2} s  {:>7.0} MiB/s",
        p.as_secs_f64(),
        rate(p)
    );
    println!(
        "aws-sdk-s3, same ranges:        {:>7.2} s  {:>7.0} MiB/s",
        s.as_secs_f64(),
        rate(s)
    );
    println!(
        "aws-sdk-s3, one GetObject:      {:>7.2} s  {:>7.0} MiB/s",
        w.as_secs_f64(),
        rate(w)
    );
    println!(
        "ratio plugin path / aws-sdk-s3 (same ranges): {:.3} (target ≤ 1.05)",
        p.as_secs_f64() / s.as_secs_f64()
    );
}
