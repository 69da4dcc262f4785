//! Latency of seedgate's fast failures against nginx answering a cached 404:
//!
//! - a negative-cache hit: `GET` of an object the origin said is missing,
//!   answered 404 from memory;
//! - a breaker-open refusal: `GET` from an origin whose circuit is open,
//!   answered 503 + Retry-After without any origin or plugin work;
//! - nginx proxy_cache answering a 404 it cached (`proxy_cache_valid 404`),
//!   what users would run instead.
//!
//! Every target is asked `SEEDGATE_BENCH_REQUESTS` times (default 5000) in
//! interleaved rounds over one kept-alive connection each, so machine
//! noise hits them alike. Prints p50 / p99 / max and the ratios to nginx,
//! and the origin requests each side made. Run with `scripts/bench
//! resilience` (see BENCHMARKS.md).

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;

use std::time::Duration;

use support::*;
use tokio::time::Instant;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Target {
    name: &'static str,
    url: String,
    status: u16,
    client: reqwest::Client,
    took: Vec<Duration>,
}

impl Target {
    fn new(name: &'static str, url: String, status: u16) -> Self {
        Self {
            name,
            url,
            status,
            client: client(),
            took: Vec::new(),
        }
    }

    async fn ask(&mut self) -> Duration {
        let t = Instant::now();
        let resp = self.client.get(&self.url).send().await.unwrap();
        let status = resp.status().as_u16();
        resp.bytes().await.unwrap();
        let took = t.elapsed();
        assert_eq!(status, self.status, "{}: {}", self.name, self.url);
        took
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let requests = env_or("SEEDGATE_BENCH_REQUESTS", 5000).max(100);
    let rounds = 10;
    let dir = tempfile::tempdir().unwrap();
    println!(
        "seedgate resilience benchmark: {requests} requests per target in {rounds} interleaved rounds, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let origin = Nginx::start(&dir.path().join("origin"));
    let proxy = Nginx::start_proxy_cache(&dir.path().join("proxy"), origin.port);
    // Nothing listens on `dead`'s port: every attempt is refused.
    let dead = free_port();
    let config = format!(
        r#"
[negative_cache]
ttl = "10m"

[breaker]
consecutive_failures = 3
open_base = "10m"
open_max = "10m"

[retry]
max_attempts = 1

[origins.www]
plugin = "http"
base_url = "{}"

[origins.dead]
plugin = "http"
base_url = "http://127.0.0.1:{dead}/"
"#,
        origin.base_url()
    );
    let sg = Seedgate::start(dir.path(), &config);

    // Warm up each: the first answers come from the origin (or its absence).
    let missing_nginx = format!("http://127.0.0.1:{}/missing/nginx.bin", proxy.port);
    let missing_sg = sg.url("/o/www/missing/seedgate.bin");
    for url in [&missing_nginx, &missing_sg] {
        assert_eq!(get(url).await.status(), 404, "{url}");
    }
    for _ in 0..3 {
        get(&sg.url("/o/dead/x.bin")).await;
    }
    let mut targets = [
        Target::new("nginx proxy_cache, cached 404", missing_nginx, 404),
        Target::new("seedgate negative-cache hit (404)", missing_sg, 404),
        Target::new("seedgate breaker open (503)", sg.url("/o/dead/x.bin"), 503),
    ];
    for t in &mut targets {
        for _ in 0..50 {
            t.ask().await;
        }
    }
    let per_round = requests / rounds;
    for _ in 0..rounds {
        for t in &mut targets {
            for _ in 0..per_round {
                let took = t.ask().await;
                t.took.push(took);
            }
        }
    }

    println!();
    println!("| target | p50 | p99 | max | p50 vs nginx | p99 vs nginx |");
    println!("|---|---|---|---|---|---|");
    let mut stats = Vec::new();
    for t in &mut targets {
        t.took.sort();
        stats.push((
            percentile(&t.took, 0.5),
            percentile(&t.took, 0.99),
            *t.took.last().unwrap(),
        ));
    }
    let (n50, n99, _) = stats[0];
    for (t, (p50, p99, max)) in targets.iter().zip(&stats) {
        println!(
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.2}x | {:.2}x |",
            t.name,
            us(*p50),
            us(*p99),
            us(*max),
            us(*p50) / us(n50),
            us(*p99) / us(n99),
        );
    }
    let asked = |path: &str| origin.requests(path).len();
    println!();
    println!(
        "origin requests for the missing objects: nginx {}, seedgate {} (of {} asks each)",
        asked("/missing/nginx.bin"),
        asked("/missing/seedgate.bin"),
        requests + 51
    );
}
