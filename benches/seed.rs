//! seedgate's seed peer against Dragonfly's own (a real `dfdaemon` 1.5.10
//! with `seedPeer.enable`), in one run on the same object, both placed by
//! seedgate's scheduler and both serving real dfdaemon children:
//!
//! - **back to source**: one child `dfget`s a cold object; the scheduler
//!   starts the task on the seed, which fetches it from the origin over a
//!   shaped link while the child takes its pieces. The child's time, from
//!   the request to its last byte.
//! - **piece protocol**: that child leaves (SIGTERM: `DeleteHost`), and 8
//!   more `dfget` the object at once from the seed, which holds it. Their
//!   aggregate throughput, from the first request to the last byte.
//!
//! The sides differ in the seed host only:
//! - **seedgate**: `seedgate serve` is the scheduler and the seed;
//! - **dfdaemon**: `seedgate serve` with `scheduler.local_seed = false` is
//!   the scheduler, and a dfdaemon seed peer is the one seed host; the
//!   scheduler starts it with `DfdaemonUpload.DownloadTask`, as Dragonfly's
//!   scheduler does.
//!
//! The origin (nginx) runs in network namespace `sgs-origin` (10.203.0.10)
//! on bridge `sgs-br`, its link shaped to `SEEDGATE_BENCH_LINK_MBIT`
//! (default 2000) each way; the seeds and the children run in the root
//! namespace on the bridge's address (10.203.0.1). The seeds store on the
//! same filesystem (the system's temporary directory). The children store
//! on a tmpfs the benchmark mounts: 9 GiB of writes per side would
//! otherwise run at the disk's writeback rate on both sides and hide the
//! seeds. Every side starts cold each round (new directories, new
//! processes), and the sides alternate.
//!
//! Checked on both sides: every output's sha256, the origin sent at most
//! 1.05 copies, the children got every piece from a peer (none from the
//! origin), and no child's log reports a piece without a digest to check
//! (dfdaemon checks each piece's crc32 against its parent's digest when
//! there is one, and warns when there is none) or a digest mismatch.
//!
//! Run with `scripts/bench seed` (as root: it makes a namespace and mounts
//! a tmpfs). Knobs: `SEEDGATE_BENCH_SEED_MIB` (object size, default 1024),
//! `SEEDGATE_BENCH_LINK_MBIT`, `SEEDGATE_BENCH_ROUNDS` (default 3).

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

use std::path::Path;
use std::time::Duration;

use dfdaemon::{Dfdaemon, Options};
use netns::{Net, run};
use support::*;
use tokio::time::Instant;
use verdict::{Want, median, verdict};

const CHILDREN: usize = 8;
const BRIDGE_IP: &str = "10.203.0.1";
const ORIGIN_NS: &str = "sgs-origin";
const ORIGIN_IP: &str = "10.203.0.10";
const MIB: u64 = 1 << 20;

/// A tmpfs mounted for the children, unmounted at the end.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            dir.path().to_str().unwrap(),
        ]);
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Seedgate,
    Dfdaemon,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Seedgate => "seedgate",
            Side::Dfdaemon => "dfdaemon seed peer",
        }
    }
}

struct Round {
    back_to_source: Duration,
    pieces: Duration,
    /// Of the 8 children's bytes, the share their seed sent.
    from_seed: f64,
    origin_copies: f64,
}

fn child(i: usize, scheduler: &str, dir_in: &Path) -> Options {
    Options {
        hostname: format!("sgs-child-{i}"),
        schedulers: vec![scheduler.into()],
        ip: BRIDGE_IP.parse().unwrap(),
        dir_in: Some(dir_in.into()),
        ..Options::new("", 0)
    }
}

/// `dfget` of `url` by `peer`.
async fn fetch(peer: &Dfdaemon, url: &str) {
    let out = peer.dir.path().join("out.bin");
    peer.dfget_within(url, &out, "30m").await.unwrap();
}

/// The output of [`fetch`] is checked against `sum` (after the clock
/// stopped) and removed; the cache keeps the child's copy, which it serves.
fn check_output(peer: &Dfdaemon, sum: &str) {
    let out = peer.dir.path().join("out.bin");
    assert_eq!(sha256_file(&out), sum, "{}: the bytes", peer.hostname);
    std::fs::remove_file(&out).unwrap();
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Every child fetched every piece from a peer and checked each one.
fn check_child(peer: &Dfdaemon) {
    let log = peer.log();
    for bad in [
        "expected digest is empty",
        "DigestMismatch",
        "digest mismatch",
    ] {
        assert!(
            !log.contains(bad),
            "{}: its log says '{bad}'",
            peer.hostname
        );
    }
    assert!(
        !log.contains("all pieces are downloaded from source"),
        "{} went to the origin",
        peer.hostname
    );
}

async fn round(side: Side, origin: &Nginx, url: &str, path: &str, sum: &str, len: u64) -> Round {
    let dir = tempfile::tempdir().unwrap();
    let kids = Tmpfs::mount(&format!("{}m", (CHILDREN as u64 + 2) * (len / MIB + 64)));
    let scheduler = format!("{BRIDGE_IP}:{}", free_port());
    let local_seed = side == Side::Seedgate;
    let config = format!(
        "{}\n[seed_peer]\nadvertise_ip = \"{BRIDGE_IP}\"\nhostname = \"sgs-seedgate\"\n\
         upload_listen = \"{BRIDGE_IP}:{}\"\npiece_listen = \"{BRIDGE_IP}:{}\"\n\
         [scheduler]\nlisten = \"{scheduler}\"\nlocal_seed = {local_seed}\n",
        http_origin_config(&origin.base_url()),
        free_port(),
        free_port(),
    );
    let sg = Seedgate::start(dir.path(), &config);
    let _seed = match side {
        Side::Seedgate => None,
        Side::Dfdaemon => Some(
            Dfdaemon::start_opts(Options {
                hostname: "sgs-dfseed".into(),
                schedulers: vec![scheduler.clone()],
                seed: true,
                ip: BRIDGE_IP.parse().unwrap(),
                dir_in: Some(dir.path().into()),
                ..Options::new("", 0)
            })
            .await,
        ),
    };
    let mut first = Dfdaemon::start_opts(child(CHILDREN, &scheduler, kids.path())).await;
    let children = futures_util::future::join_all(
        (0..CHILDREN).map(|i| Dfdaemon::start_opts(child(i, &scheduler, kids.path()))),
    )
    .await;
    let before = origin.bytes_sent(path);

    let t = Instant::now();
    fetch(&first, url).await;
    let back_to_source = t.elapsed();
    check_output(&first, sum);
    check_child(&first);
    first.stop().await;

    let t = Instant::now();
    futures_util::future::join_all(children.iter().map(|c| fetch(c, url))).await;
    let pieces = t.elapsed();
    for c in &children {
        check_output(c, sum);
        check_child(c);
    }
    let origin_copies = (origin.bytes_sent(path) - before) as f64 / len as f64;

    // The share of the children's pieces their seed sent, as the
    // scheduler recorded every piece's parent.
    let tasks = json(get(&sg.url("/api/v1/cluster/tasks")).await).await;
    let id = tasks[0]["id"].as_str().unwrap().to_string();
    let task = json(get(&sg.url(&format!("/api/v1/cluster/tasks/{id}"))).await).await;
    let seed_host = task["seed_host"].as_str().unwrap_or_default();
    let peers = task["peers"].as_array().unwrap();
    let seed_peer = peers
        .iter()
        .find(|p| p["host_id"] == seed_host)
        .and_then(|p| p["id"].as_str())
        .unwrap_or_default();
    let (mut from_seed, mut all) = (0, 0);
    for p in peers.iter().filter(|p| p["host_id"] != seed_host) {
        assert_eq!(
            p["bytes_from_source"], 0,
            "a child went to the origin: {p:#}"
        );
        for (parent, n) in p["pieces_by_parent"].as_object().unwrap() {
            let n = n.as_u64().unwrap();
            all += n;
            if parent == seed_peer {
                from_seed += n;
            }
        }
    }
    Round {
        back_to_source,
        pieces,
        from_seed: from_seed as f64 / all.max(1) as f64,
        origin_copies,
    }
}

#[tokio::main]
async fn main() {
    let mib = env_or("SEEDGATE_BENCH_SEED_MIB", 1024) as u64;
    let link = env_or("SEEDGATE_BENCH_LINK_MBIT", 2000) as u64;
    let rounds = env_or("SEEDGATE_BENCH_ROUNDS", 3);
    let len = mib * MIB;
    let _net = Net::far("sgs-", BRIDGE_IP, ORIGIN_NS, ORIGIN_IP, link);
    let dir = tempfile::tempdir().unwrap();
    let origin = Nginx::start_in(dir.path(), ORIGIN_NS, ORIGIN_IP);
    let key = "seed.bin";
    let data = pseudo_random(len as usize, 1702);
    let sum = sha256(&data);
    origin.put(key, &data);
    drop(data);
    let (url, path) = (format!("{}{key}", origin.base_url()), format!("/{key}"));
    println!(
        "seed: a cold {mib} MiB object, the origin's link {link} Mbit/s; one dfdaemon child \
         back to source, then {CHILDREN} at once; seedgate against a dfdaemon {} seed peer, \
         both placed by seedgate's scheduler; {rounds} round(s)",
        dfdaemon::VERSION
    );
    let sides = [Side::Seedgate, Side::Dfdaemon];
    let mut results: Vec<Vec<Round>> = vec![Vec::new(), Vec::new()];
    for r in 1..=rounds {
        // Alternate which side goes first.
        let order: Vec<usize> = if r % 2 == 1 { vec![0, 1] } else { vec![1, 0] };
        for i in order {
            let side = sides[i];
            let got = round(side, &origin, &url, &path, &sum, len).await;
            println!(
                "round {r}, {}: back to source {:.2} s; {CHILDREN} children {:.2} s \
                 ({:.0} MiB/s), {:.0}% of their pieces from the seed; the origin sent \
                 {:.3} copies",
                side.name(),
                got.back_to_source.as_secs_f64(),
                got.pieces.as_secs_f64(),
                (CHILDREN as u64 * mib) as f64 / got.pieces.as_secs_f64(),
                got.from_seed * 100.0,
                got.origin_copies,
            );
            assert!(
                got.origin_copies <= 1.05,
                "{}: the origin sent {:.3} copies",
                side.name(),
                got.origin_copies
            );
            results[i].push(got);
        }
    }
    let med = |i: usize, f: fn(&Round) -> f64| median(results[i].iter().map(f).collect());
    let bts = (
        med(0, |r| r.back_to_source.as_secs_f64()),
        med(1, |r| r.back_to_source.as_secs_f64()),
    );
    let pieces = (
        med(0, |r| r.pieces.as_secs_f64()),
        med(1, |r| r.pieces.as_secs_f64()),
    );
    let throughput = |secs: f64| (CHILDREN as u64 * mib) as f64 / secs;
    let ratio = throughput(pieces.0) / throughput(pieces.1);
    verdict(
        &format!(
            "piece protocol: {CHILDREN} dfdaemon children, {mib} MiB, vs a dfdaemon seed peer"
        ),
        ratio,
        Want::AtLeast,
        1.0,
        &format!(
            "{ratio:.2}x ({:.0} vs {:.0} MiB/s; {:.0}% / {:.0}% from the seed)",
            throughput(pieces.0),
            throughput(pieces.1),
            med(0, |r| r.from_seed) * 100.0,
            med(1, |r| r.from_seed) * 100.0,
        ),
    );
    let ratio = bts.0 / bts.1;
    verdict(
        &format!("back to source vs a dfdaemon seed peer, {mib} MiB, {link} Mbit/s link"),
        ratio,
        Want::AtMost,
        1.0,
        &format!("{ratio:.2}x ({:.2} vs {:.2} s)", bts.0, bts.1),
    );
}
