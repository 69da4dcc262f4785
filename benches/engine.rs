//! Side-by-side benchmarks of the piece engine: seedgate against what users
//! would run instead, in one run, on the same files, on the same machine.
//!
//! - cold: the large object through seedgate (empty data dir) against
//!   nginx proxy_cache on a MISS (which also stores it) and against a
//!   direct download from the same nginx origin — on loopback, and again
//!   with a link of `SEEDGATE_BENCH_LINK_MBIT` (default 2000 Mbit/s) shared
//!   by all connections to the origin, as a remote origin would be (as
//!   root: a second nginx in a network namespace behind a `tc tbf`-shaped
//!   veth; otherwise a userspace proxy in this process), and against the
//!   same direct download into a file (what storing costs on this machine
//!   at that moment). Each timed step starts with nothing left dirty by
//!   earlier steps (`settle_disk`) and from the same memory
//!   (`warm_memory`); `SEEDGATE_BENCH_TRACE=1` prints the MiB received at
//!   every 250 ms of each download;
//! - hot: the object from seedgate's disk against nginx proxy_cache
//!   answering HIT;
//! - many readers: 64 concurrent readers of a cold 256 MiB object, through
//!   seedgate and through proxy_cache (cache lock on): time, origin bytes;
//! - peak RSS (VmHWM) of the seedgate process in each.
//!
//! Run with `scripts/bench` (see BENCHMARKS.md). Medians of
//! `SEEDGATE_BENCH_ROUNDS` rounds; the machine is shared, so the ratios are
//! what to read, not the absolute times.

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "support/verdict.rs"]
mod verdict;

#[path = "support/netns.rs"]
mod netns;

use std::time::Duration;

use futures_util::StreamExt;
use netns::Net;
use support::*;
use tokio::time::Instant;
use verdict::{Want, fresh_write_rate, median, rss_mib, settle_disk, verdict, warm_memory};

const MIB: usize = 1024 * 1024;

/// GETs `url`, counting body bytes; returns (bytes, time, a header).
async fn fetch(url: &str, header: &str) -> (u64, Duration, String) {
    let t = Instant::now();
    let resp = client().get(url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let tag = resp
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let mut body = resp.bytes_stream();
    let mut n = 0u64;
    let trace = std::env::var_os("SEEDGATE_BENCH_TRACE").is_some();
    let (mut marks, mut next) = (Vec::new(), Duration::from_millis(250));
    while let Some(chunk) = body.next().await {
        n += chunk.unwrap().len() as u64;
        if trace && t.elapsed() >= next {
            marks.push(n / MIB as u64);
            next += Duration::from_millis(250);
        }
    }
    if trace {
        println!("  {url}: MiB at each 250 ms: {marks:?}");
    }
    (n, t.elapsed(), tag)
}

/// GETs `url` into a new file at `path` as a plain download would (buffered
/// writes, no sync), returns the time; the file is removed.
async fn fetch_to_file(url: &str, path: &std::path::Path) -> Duration {
    use std::io::Write;
    let t = Instant::now();
    let resp = client().get(url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk.unwrap()).unwrap();
    }
    file.flush().unwrap();
    let t = t.elapsed();
    std::fs::remove_file(path).unwrap();
    t
}

async fn sha_of(url: &str) -> String {
    let resp = client().get(url).send().await.unwrap();
    sha256(&resp.bytes().await.unwrap())
}

const BRIDGE_IP: &str = "10.205.0.1";
const FAR_NS: &str = "sge-origin";
const FAR_IP: &str = "10.205.0.10";

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// 64 concurrent readers; returns (time, all got `len` bytes).
async fn many(url: &str, readers: usize, len: usize) -> Duration {
    let t = Instant::now();
    let tasks = (0..readers).map(|_| {
        let url = url.to_string();
        tokio::spawn(async move { fetch(&url, "x").await.0 })
    });
    for got in futures_util::future::join_all(tasks).await {
        assert_eq!(got.unwrap(), len as u64);
    }
    t.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let size = env_or("SEEDGATE_BENCH_MIB", 1024) * MIB;
    let rounds = env_or("SEEDGATE_BENCH_ROUNDS", 3).max(1);
    let readers = 64;
    let many_len = 256 * MIB;
    let dir = tempfile::tempdir().unwrap();
    println!(
        "seedgate engine benchmark: {} MiB object, {rounds} rounds (median), {} cores",
        size / MIB,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    println!(
        "writing into fresh page cache on this machine: {:.0} MiB/s (see benches/support/verdict.rs)",
        fresh_write_rate(dir.path(), size)
    );
    let origin = Nginx::start(&dir.path().join("origin"));
    let data = pseudo_random(size, 7);
    let want = sha256(&data);
    origin.put("big.bin", &data);
    drop(data);
    let small = pseudo_random(many_len, 8);
    let want_small = sha256(&small);
    origin.put("many-sg.bin", &small);
    origin.put("many-nginx.bin", &small);
    drop(small);
    let proxy = Nginx::start_proxy_cache(&dir.path().join("proxy"), origin.port);
    let link_mbit = env_or("SEEDGATE_BENCH_LINK_MBIT", 2000);
    // The shaped link: as root, a second nginx with the same object in a
    // network namespace behind a veth that `tc tbf` shapes (the kernel
    // shapes; nothing in this process competes for the two cores with the
    // store); otherwise the userspace `Link` in this process.
    let (_net, _far, _link, link_url) = if rustix::process::geteuid().is_root() {
        let net = Net::far("sge-", BRIDGE_IP, FAR_NS, FAR_IP, link_mbit as u64);
        let far = Nginx::start_in(&dir.path().join("far"), FAR_NS, FAR_IP);
        far.put("big.bin", &pseudo_random(size, 7));
        let url = far.base_url();
        println!("link: tc tbf {link_mbit} Mbit/s on a veth to network namespace {FAR_NS}");
        (Some(net), Some(far), None, url)
    } else {
        let link = Link::start(origin.port, link_mbit as u64 * 1_000_000 / 8).await;
        let url = link.base_url();
        println!("link: a userspace proxy in this process (not root: no network namespace)");
        (None, None, Some(link), url)
    };
    let config = format!(
        "{}\n[origins.link]\nplugin = \"http\"\nbase_url = \"{link_url}\"\nallowed_hosts = [\"10.0.0.0/8\"]\n",
        http_origin_config(&origin.base_url()),
    );
    // SEEDGATE_BENCH_PIECES: ranged requests in flight per download
    // (`download.piece_concurrency`; the default config's 4 when unset).
    let config = match std::env::var("SEEDGATE_BENCH_PIECES") {
        Ok(n) => format!("[download]\npiece_concurrency = {n}\n{config}"),
        Err(_) => config,
    };

    // Cold: direct vs seedgate with an empty data dir, alternating.
    let (mut direct, mut cold, mut cold_rss) = (Vec::new(), Vec::new(), 0f64);
    let mut miss = Vec::new();
    let (mut link_direct, mut link_cold) = (Vec::new(), Vec::new());
    let mut link_file = Vec::new();
    let mut last = None;
    // Before every timed step: what earlier steps left dirty is written
    // back, and the memory the next one stores into is warmed (see
    // `settle_disk` and `warm_memory`).
    let prepare = |what: &str| {
        let dirty = settle_disk();
        warm_memory(size + (512 << 20));
        if dirty >= 64.0 {
            println!("  before {what}: {dirty:.0} MiB dirty page cache written back");
        }
    };
    for round in 0..rounds {
        prepare("direct");
        let (n, t, _) = fetch(&format!("{}big.bin", origin.base_url()), "x").await;
        assert_eq!(n as usize, size);
        direct.push(t);
        // A new cache key each round (the key holds the query; the origin
        // ignores it): proxy_cache fetches and stores the whole object.
        let url = format!("{}big.bin?round={round}", proxy.base_url());
        prepare("proxy_cache MISS");
        let (n, t, status) = fetch(&url, "x-cache-status").await;
        assert_eq!((n as usize, status.as_str()), (size, "MISS"));
        miss.push(t);
        let sg_dir = dir.path().join(format!("sg-cold-{round}"));
        std::fs::create_dir_all(&sg_dir).unwrap();
        if let Some(prev) = last.take() {
            let (_, data_dir): (_, std::path::PathBuf) = Seedgate::kill(prev);
            std::fs::remove_dir_all(data_dir).ok();
        }
        let sg = Seedgate::start(&sg_dir, &config);
        prepare("seedgate cold");
        let (n, t, cache) = fetch(&sg.url("/o/www/big.bin"), "x-seedgate-cache").await;
        assert_eq!((n as usize, cache.as_str()), (size, "miss"));
        cold.push(t);
        prepare("direct over the link");
        let (n, t, _) = fetch(&format!("{link_url}big.bin"), "x").await;
        assert_eq!(n as usize, size);
        link_direct.push(t);
        // What storing costs on this machine now: the same download into a
        // file (buffered, unsynced), as `curl -o` would store it.
        prepare("direct over the link, to a file");
        link_file.push(
            fetch_to_file(
                &format!("{link_url}big.bin"),
                &dir.path().join("direct.bin"),
            )
            .await,
        );
        prepare("seedgate over the link");
        let (n, t, cache) = fetch(&sg.url("/o/link/big.bin"), "x-seedgate-cache").await;
        assert_eq!((n as usize, cache.as_str()), (size, "miss"));
        link_cold.push(t);
        println!(
            "round {}: loopback seedgate {:.2} s, MISS {:.2} s, direct {:.2} s; link seedgate {:.2} s, direct {:.2} s, direct to a file {:.2} s",
            round + 1,
            cold[round].as_secs_f64(),
            miss[round].as_secs_f64(),
            direct[round].as_secs_f64(),
            link_cold[round].as_secs_f64(),
            link_direct[round].as_secs_f64(),
            link_file[round].as_secs_f64()
        );
        cold_rss = cold_rss.max(rss_mib("VmHWM:", sg.pid()));
        last = Some(sg);
    }
    let (direct, cold, miss) = (median(direct), median(cold), median(miss));
    let (link_direct, link_cold) = (median(link_direct), median(link_cold));
    let link_file = median(link_file);

    // Hot: a fresh process on the stored data (its own peak RSS) against
    // proxy_cache on HIT.
    let sg = last.take().unwrap();
    let (config_path, data_dir) = sg.kill();
    let sg = Seedgate::start_with(&config_path, &data_dir);
    settle_disk();
    let proxy_url = format!("{}big.bin", proxy.base_url());
    let (_, _, status) = fetch(&proxy_url, "x-cache-status").await;
    assert_eq!(status, "MISS");
    let (mut nginx_hot, mut sg_hot) = (Vec::new(), Vec::new());
    // Alternating which goes first, as the cold rounds do: a slow spell of
    // the shared machine falls on both.
    for round in 0..rounds {
        let nginx_first = round % 2 == 0;
        for nginx in [nginx_first, !nginx_first] {
            if nginx {
                let (n, t, status) = fetch(&proxy_url, "x-cache-status").await;
                assert_eq!((n as usize, status.as_str()), (size, "HIT"));
                nginx_hot.push(t);
            } else {
                let (n, t, cache) = fetch(&sg.url("/o/www/big.bin"), "x-seedgate-cache").await;
                assert_eq!((n as usize, cache.as_str()), (size, "hit"));
                sg_hot.push(t);
            }
        }
        println!(
            "hot round {}: seedgate {:.0} MiB/s, nginx proxy_cache HIT {:.0} MiB/s",
            round + 1,
            mbps(size, sg_hot[round]),
            mbps(size, nginx_hot[round])
        );
    }
    let hot_rss = rss_mib("VmHWM:", sg.pid());
    assert_eq!(
        sha_of(&sg.url("/o/www/big.bin")).await,
        want,
        "seedgate's bytes"
    );
    let (nginx_hot, sg_hot) = (median(nginx_hot), median(sg_hot));
    drop(sg);

    // Many readers of one cold object.
    settle_disk();
    let sg_dir = dir.path().join("sg-many");
    std::fs::create_dir_all(&sg_dir).unwrap();
    let sg = Seedgate::start(&sg_dir, &config);
    let sg_many = many(&sg.url("/o/www/many-sg.bin"), readers, many_len).await;
    let many_rss = rss_mib("VmHWM:", sg.pid());
    let sg_origin_bytes = origin.bytes_sent("/many-sg.bin");
    assert_eq!(sha_of(&sg.url("/o/www/many-sg.bin")).await, want_small);
    let nginx_many = many(
        &format!("{}many-nginx.bin", proxy.base_url()),
        readers,
        many_len,
    )
    .await;
    let nginx_origin_bytes = origin.bytes_sent("/many-nginx.bin");

    let mb = |b: u64| b as f64 / MIB as f64;
    let gib = format!("{} MiB", size / MIB);
    println!();
    println!(
        "cold {gib}: seedgate {:.2} s ({:.0} MiB/s), proxy_cache MISS {:.2} s, direct from nginx {:.2} s ({:.0} MiB/s)",
        cold.as_secs_f64(),
        mbps(size, cold),
        miss.as_secs_f64(),
        direct.as_secs_f64(),
        mbps(size, direct),
    );
    println!(
        "cold {gib} over a {link_mbit} Mbit/s link: seedgate {:.2} s, direct {:.2} s, direct to a file {:.2} s",
        link_cold.as_secs_f64(),
        link_direct.as_secs_f64(),
        link_file.as_secs_f64()
    );
    println!(
        "hot {gib}: seedgate {:.0} MiB/s, nginx proxy_cache HIT {:.0} MiB/s",
        mbps(size, sg_hot),
        mbps(size, nginx_hot)
    );
    println!(
        "{readers} readers of a cold {} MiB object: seedgate {:.2} s (origin sent {:.0} MiB), proxy_cache {:.2} s (origin sent {:.0} MiB)",
        many_len / MIB,
        sg_many.as_secs_f64(),
        mb(sg_origin_bytes),
        nginx_many.as_secs_f64(),
        mb(nginx_origin_bytes),
    );
    println!(
        "peak RSS of seedgate: cold {cold_rss:.0} MiB, hot {hot_rss:.0} MiB, {readers} readers {many_rss:.0} MiB"
    );
    println!();
    let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    verdict(
        &format!("hot {gib}, throughput vs nginx proxy_cache HIT"),
        r(nginx_hot, sg_hot),
        Want::AtLeast,
        1.1,
        &format!("{:.2}x", r(nginx_hot, sg_hot)),
    );
    verdict(
        &format!("cold {gib} vs proxy_cache MISS (loopback), time"),
        r(cold, miss),
        Want::AtMost,
        0.9,
        &format!(
            "{:.2}x ({:.2} s / {:.2} s; direct {:.2} s, {:.2}x)",
            r(cold, miss),
            cold.as_secs_f64(),
            miss.as_secs_f64(),
            direct.as_secs_f64(),
            r(cold, direct)
        ),
    );
    verdict(
        &format!("cold {gib} over a {link_mbit} Mbit/s link vs direct over it, time"),
        r(link_cold, link_direct),
        Want::AtMost,
        1.02,
        &format!(
            "{:.3}x (vs direct to a file {:.3}x)",
            r(link_cold, link_direct),
            r(link_cold, link_file)
        ),
    );
    verdict(
        &format!(
            "{readers} readers of a cold {} MiB object, time vs proxy_cache",
            many_len / MIB
        ),
        r(sg_many, nginx_many),
        Want::AtMost,
        1.0,
        &format!(
            "{:.2}x; origin sent {:.0} MiB (nginx {:.0})",
            r(sg_many, nginx_many),
            mb(sg_origin_bytes),
            mb(nginx_origin_bytes)
        ),
    );
    verdict(
        &format!(
            "{readers} readers of a cold {} MiB object, peak RSS (MiB)",
            many_len / MIB
        ),
        many_rss,
        Want::AtMost,
        150.0,
        &format!("{many_rss:.0} MiB"),
    );
    if size >= 1024 * MIB && cold_rss.max(hot_rss) >= 150.0 {
        println!(
            "OVER BUDGET: peak RSS {:.0} MiB >= 150 MiB for one object",
            cold_rss.max(hot_rss)
        );
        std::process::exit(1);
    }
}
