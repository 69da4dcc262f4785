//! seedgate's built-in scheduler with real Dragonfly peers, against the
//! same hosts downloading directly from the origin, in one run on the same
//! object.
//!
//! Five network namespaces the benchmark makes itself, on one bridge it
//! makes itself (`sgb-br`, 10.201.0.0/24; traffic never leaves them and
//! the root namespace, and everything is removed at the end):
//! - `sgb-origin` (10.201.0.10): nginx serving the object, its link shaped
//!   to `SEEDGATE_BENCH_ORIGIN_MBIT` (default 1000) each way with `tc tbf`:
//!   the origin's uplink, which every host shares when it downloads
//!   directly;
//! - `sgb-h1`..`sgb-h4` (10.201.0.11-14): one real `dfdaemon` 1.5.10 each,
//!   each link shaped to `SEEDGATE_BENCH_HOST_MBIT` (default 1000) each way.
//!
//! seedgate (the release binary, default settings: the seed peer, the
//! scheduler, the default policy) runs in the root namespace on the bridge
//! (10.201.0.1). Its uplink, what it sends onto the bridge, is shaped to
//! `SEEDGATE_BENCH_SEED_MBIT` (default 1000: a NIC like every host's, so
//! that serving four hosts from it alone takes as long as four direct
//! downloads, and only peer-to-peer traffic wins; 0 leaves it unshaped, a
//! seed on a fatter link).
//!
//! - **direct**: the four hosts `curl` the object from the origin at once;
//! - **seedgate**: the four hosts `dfget` it at once through their
//!   dfdaemons, whose scheduler is seedgate; seedgate and the daemons start
//!   cold each time. Twice a round: with Dragonfly's default placement (a
//!   seed takes up to 2000 children, so hosts that start together all get
//!   the seed alone), and with `seed_upload_limit` at half the hosts, so
//!   the rest are placed on the hosts that got the seed.
//!
//! Printed: the wall time of each side (from the first request to the last
//! byte of the last host) and their ratio, the bytes the origin sent on
//! each side (nginx's `$body_bytes_sent`), and the fraction of the bytes
//! the hosts received from other hosts rather than from seedgate (the
//! scheduler's record of every piece's parent). Every dfget output is
//! checked against the object's sha256.
//!
//! Run with `scripts/bench cluster` (as root: it makes namespaces). Knobs:
//! `SEEDGATE_BENCH_CLUSTER_MIB` (object size, default 1024),
//! `SEEDGATE_BENCH_HOST_MBIT`, `SEEDGATE_BENCH_ORIGIN_MBIT`,
//! `SEEDGATE_BENCH_SEED_MBIT`, `SEEDGATE_BENCH_SEED_CHILDREN` (the first
//! variant's `seed_upload_limit`; 0, the default, leaves seedgate's),
//! `SEEDGATE_BENCH_ROUNDS` (default 1).

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/all/dfdaemon.rs"]
mod dfdaemon;

#[path = "support/netns.rs"]
mod netns;

#[allow(dead_code)]
#[path = "support/verdict.rs"]
mod verdict;

use std::time::Duration;

use dfdaemon::{Dfdaemon, Options};
use netns::{Net, Node};
use support::*;
use tokio::time::Instant;
use verdict::median;

const HOSTS: usize = 4;
const BRIDGE_IP: &str = "10.201.0.1";
const ORIGIN_NS: &str = "sgb-origin";
const ORIGIN_IP: &str = "10.201.0.10";
const MIB: u64 = 1 << 20;

fn host_ns(i: usize) -> String {
    format!("sgb-h{}", i + 1)
}

fn host_ip(i: usize) -> String {
    format!("10.201.0.{}", 11 + i)
}

/// The four hosts download the object from the origin at once.
async fn direct(url: &str, len: u64) -> Duration {
    let t = Instant::now();
    let curls = (0..HOSTS).map(|i| {
        tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &host_ns(i),
                "curl",
                "-sS",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{size_download}", url])
            .output()
    });
    for out in futures_util::future::join_all(curls).await {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(got, len, "direct download size");
    }
    t.elapsed()
}

struct P2p {
    took: Duration,
    /// Bytes the hosts got from other hosts, and in all.
    from_hosts: u64,
    received: u64,
}

/// A cold seedgate and four cold dfdaemons; the hosts `dfget` at once.
async fn p2p(origin: &Nginx, key: &str, sum: &str, seed_children: usize) -> P2p {
    let seed_children = if seed_children > 0 {
        format!("seed_upload_limit = {seed_children}\n")
    } else {
        String::new()
    };
    let dir = tempfile::tempdir().unwrap();
    let scheduler = format!("{BRIDGE_IP}:{}", free_port());
    let config = format!(
        "{}\n[seed_peer]\nadvertise_ip = \"{BRIDGE_IP}\"\nhostname = \"sg-bench\"\n\
         upload_listen = \"{BRIDGE_IP}:{}\"\npiece_listen = \"{BRIDGE_IP}:{}\"\n\
         [scheduler]\nlisten = \"{scheduler}\"\n{seed_children}",
        http_origin_config(&origin.base_url()),
        free_port(),
        free_port(),
    );
    let sg = Seedgate::start(dir.path(), &config);
    let peers = futures_util::future::join_all((0..HOSTS).map(|i| {
        Dfdaemon::start_opts(Options {
            hostname: format!("bench-{i}"),
            schedulers: vec![scheduler.clone()],
            ip: host_ip(i).parse().unwrap(),
            netns: Some(host_ns(i)),
            ..Options::new("", 0)
        })
    }))
    .await;
    let url = format!("{}{key}", origin.base_url());
    let t = Instant::now();
    let gets = peers.iter().map(|p| {
        let out = p.dir.path().join("out.bin");
        let url = url.clone();
        async move {
            p.dfget_within(&url, &out, "30m").await.unwrap();
            out
        }
    });
    let outs = futures_util::future::join_all(gets).await;
    let took = t.elapsed();
    for out in outs {
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(sha256(&bytes), sum, "{}", out.display());
    }
    // Every piece's parent, as the scheduler recorded it.
    let tasks = json(get(&sg.url("/api/v1/cluster/tasks")).await).await;
    let id = tasks[0]["id"].as_str().unwrap().to_string();
    let task = json(get(&sg.url(&format!("/api/v1/cluster/tasks/{id}"))).await).await;
    let seed_peer = task["seed_peer"].as_str().unwrap_or_default().to_string();
    let piece_length =
        task["content_length"].as_u64().unwrap() / task["piece_count"].as_u64().unwrap().max(1);
    let (mut from_hosts, mut received) = (0, 0);
    for p in task["peers"].as_array().unwrap() {
        if p["id"] == seed_peer.as_str() {
            continue;
        }
        if std::env::var_os("SEEDGATE_BENCH_VERBOSE").is_some() {
            println!(
                "  {}: parents {}, pieces by parent {}",
                p["host_id"], p["parents"], p["pieces_by_parent"]
            );
        }
        received +=
            p["bytes_from_peers"].as_u64().unwrap() + p["bytes_from_source"].as_u64().unwrap();
        from_hosts += p["pieces_by_parent"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(parent, _)| **parent != seed_peer)
            .map(|(_, n)| n.as_u64().unwrap() * piece_length)
            .sum::<u64>();
    }
    P2p {
        took,
        from_hosts,
        received,
    }
}

#[tokio::main]
async fn main() {
    let mib = env_or("SEEDGATE_BENCH_CLUSTER_MIB", 1024) as u64;
    let host_mbit = env_or("SEEDGATE_BENCH_HOST_MBIT", 1000) as u64;
    let origin_mbit = env_or("SEEDGATE_BENCH_ORIGIN_MBIT", 1000) as u64;
    let seed_mbit = env_or("SEEDGATE_BENCH_SEED_MBIT", 1000) as u64;
    let seed_children = env_or("SEEDGATE_BENCH_SEED_CHILDREN", 0);
    let rounds = env_or("SEEDGATE_BENCH_ROUNDS", 1);
    let len = mib * MIB;
    let nodes: Vec<Node> = std::iter::once(Node {
        ns: ORIGIN_NS.into(),
        ip: ORIGIN_IP.into(),
        mbit: origin_mbit,
    })
    .chain((0..HOSTS).map(|i| Node {
        ns: host_ns(i),
        ip: host_ip(i),
        mbit: host_mbit,
    }))
    .collect();
    let _net = Net::up("sgb-", BRIDGE_IP, seed_mbit, &nodes);
    let dir = tempfile::tempdir().unwrap();
    let origin = Nginx::start_in(dir.path(), ORIGIN_NS, ORIGIN_IP);
    let key = "cluster.bin";
    let data = pseudo_random(len as usize, 1701);
    let sum = sha256(&data);
    origin.put(key, &data);
    drop(data);
    let path = format!("/{key}");
    println!(
        "cluster: {HOSTS} hosts, one cold {mib} MiB object; host links {host_mbit} Mbit/s, \
         origin link {origin_mbit} Mbit/s, seedgate's uplink {}; {rounds} round(s)",
        if seed_mbit > 0 {
            format!("{seed_mbit} Mbit/s")
        } else {
            "unshaped".into()
        }
    );
    // Two placements of the same peers: Dragonfly's defaults (a seed takes
    // up to 2000 children), and a seed that takes half the hosts, so the
    // others must be placed on the peers that got it.
    let variants = [
        ("default placement".to_string(), seed_children),
        (
            format!("seed_upload_limit = {}", HOSTS / 2),
            seed_children.max(HOSTS / 2),
        ),
    ];
    let mut results = vec![(Vec::new(), Vec::new()); variants.len()];
    for round in 1..=rounds {
        let before = origin.bytes_sent(&path);
        let d = direct(&format!("{}{key}", origin.base_url()), len).await;
        let direct_bytes = origin.bytes_sent(&path) - before;
        println!(
            "round {round}: direct {:.2} s, the origin sent {:.3} copies",
            d.as_secs_f64(),
            direct_bytes as f64 / len as f64,
        );
        for ((label, children), (ratios, fractions)) in variants.iter().zip(&mut results) {
            let before = origin.bytes_sent(&path);
            let p = p2p(&origin, key, &sum, *children).await;
            let sg_bytes = origin.bytes_sent(&path) - before;
            let ratio = p.took.as_secs_f64() / d.as_secs_f64();
            let fraction = p.from_hosts as f64 / p.received.max(1) as f64;
            ratios.push(ratio);
            fractions.push(fraction);
            println!(
                "round {round}: seedgate + dfdaemon, {label}: {:.2} s ({ratio:.2}x direct), \
                 the origin sent {:.3} copies, {:.0}% of the hosts' bytes from other hosts",
                p.took.as_secs_f64(),
                sg_bytes as f64 / len as f64,
                fraction * 100.0,
            );
            assert!(
                sg_bytes as f64 <= 1.05 * len as f64,
                "the origin sent {sg_bytes} bytes through seedgate: more than 1.05 copies"
            );
        }
    }
    for ((label, _), (ratios, fractions)) in variants.iter().zip(results) {
        let ratio = median(ratios);
        println!(
            "cluster, {label}: time {ratio:.2}x direct (target <= 0.60x: {}), \
             peer-to-peer {:.0}% of the bytes (medians)",
            if ratio <= 0.6 { "PASS" } else { "MISS" },
            median(fractions) * 100.0
        );
    }
}
