//! Image preheat against what a pipeline would do without seedgate, in one
//! run on the same image: a preheat job of a 2 GiB, 8-layer image from a
//! real registry (Debian's docker-registry, basic auth) against pulling the
//! same blobs (config and layers) straight from the registry to files with
//! the same concurrency, over a link of `SEEDGATE_BENCH_LINK_MBIT` (default
//! 2000) shared by every connection to the registry, and on loopback. As
//! root, the link is a veth into a network namespace shaped by `tc tbf`
//! (a second registry there serves the same storage); otherwise the
//! userspace `Link` of the tests.
//!
//! seedgate records a piece only once its bytes are synced, so a preheat is
//! bound by the disk's synced write rate. The pulls it is held against are
//! synced too, each blob once whole, as containerd's content store commits
//! a pulled blob; pulls left in the page cache (as `curl -o` leaves them)
//! are printed beside.
//!
//! Run with `scripts/bench image` (see BENCHMARKS.md). Knobs:
//! `SEEDGATE_BENCH_IMAGE_MIB` (default 2048), `SEEDGATE_BENCH_IMAGE_LAYERS`
//! (default 8), `SEEDGATE_BENCH_ROUNDS` (default 3; medians).

#[allow(dead_code)]
#[path = "support/netns.rs"]
mod netns;
#[allow(dead_code)]
#[path = "../tests/all/registry.rs"]
mod registry;
#[allow(dead_code)]
#[path = "../tests/all/s3_server.rs"]
mod s3_server;
#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "support/verdict.rs"]
mod verdict;

use std::time::Duration;

use netns::Net;
use registry::*;
use support::*;
use tokio::time::Instant;
use verdict::{Want, fresh_write_rate, median, printed, synced_write_rate, verdict, warm_memory};

/// Pulls `digests` of `name` from the registry at `base` (`http://host/`)
/// to files under `dir`, `concurrency` at a time, with basic credentials,
/// as a pipeline of `curl -u` would; returns the bytes written.
async fn pull_to_files(
    base: &str,
    name: &str,
    digests: &[String],
    dir: &std::path::Path,
    concurrency: usize,
    durable: bool,
) -> u64 {
    let client = client();
    let requests = digests
        .iter()
        .map(|d| {
            client
                .get(format!("{base}v2/{name}/blobs/{d}"))
                .header("authorization", basic(USER, PASSWORD))
        })
        .collect();
    download_to_files(requests, dir, concurrency, durable).await
}

/// Preheats `image` through `origin` as one job; its time and bytes.
async fn preheat_image(
    sg: &Seedgate,
    origin: &str,
    image: &str,
    concurrency: usize,
) -> (Duration, u64) {
    timed_preheat(
        sg,
        serde_json::json!({"image": image, "origin": origin, "concurrency": concurrency}),
    )
    .await
}

/// Deletes the blob tasks so the next round starts cold.
async fn forget(sg: &Seedgate, digests: &[String]) {
    for d in digests {
        let url = sg.url(&format!("/api/v1/tasks/{}", &d[7..]));
        for _ in 0..100 {
            let s = client()
                .delete(&url)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if s == 200 || s == 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const BRIDGE_IP: &str = "10.204.0.1";
const REGISTRY_NS: &str = "sgi-registry";
const REGISTRY_IP: &str = "10.204.0.10";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total_mib = env_or("SEEDGATE_BENCH_IMAGE_MIB", 2048);
    let layers = env_or("SEEDGATE_BENCH_IMAGE_LAYERS", 8).max(1);
    let rounds = env_or("SEEDGATE_BENCH_ROUNDS", 3).max(1);
    let link_mbit = env_or("SEEDGATE_BENCH_LINK_MBIT", 2000);
    let concurrency = 8;
    let dir = tempfile::tempdir().unwrap();
    println!(
        "seedgate image benchmark: {total_mib} MiB in {layers} layers, {rounds} rounds, link {link_mbit} Mbit/s, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "writing into fresh page cache on this machine: {:.0} MiB/s (see benches/support/verdict.rs)",
        fresh_write_rate(dir.path(), 256 << 20)
    );
    println!(
        "writing 256 MiB and syncing it: {:.0} MiB/s (what a store that keeps its promise is bound by)",
        synced_write_rate(dir.path(), 256 << 20)
    );
    let registry = Registry::start(&dir.path().join("registry"), Auth::Basic);
    let each = (total_mib << 20) / layers;
    let image = Image::new(
        "linux",
        "amd64",
        (0..layers)
            .map(|i| Blob::new(LAYER_TYPE, pseudo_random(each, 1000 + 2 * i as u64)))
            .collect(),
    );
    Pusher::new(&registry).image("bench/img", "1", &image).await;
    let digests: Vec<String> = image.blobs().iter().map(|b| b.digest()).collect();
    let bytes: u64 = image.blobs().iter().map(|b| b.bytes.len() as u64).sum();
    drop(image);
    // The shaped link: as root, the same storage served by a second
    // registry in a network namespace whose veth `tc tbf` shapes (the
    // kernel shapes, nothing competes for the two cores); otherwise the
    // userspace `Link` in this process.
    let (_net, _far, _link, far) = if rustix::process::geteuid().is_root() {
        let net = Net::far(
            "sgi-",
            BRIDGE_IP,
            REGISTRY_NS,
            REGISTRY_IP,
            link_mbit as u64,
        );
        let far = Registry::start_in(
            &dir.path().join("far"),
            Auth::Basic,
            REGISTRY_NS,
            REGISTRY_IP,
            &registry,
        );
        let host = far.host();
        println!("link: tc tbf {link_mbit} Mbit/s on a veth to network namespace {REGISTRY_NS}");
        (Some(net), Some(far), None, host)
    } else {
        let link = Link::start(registry.port, link_mbit as u64 * 1_000_000 / 8).await;
        let host = format!("127.0.0.1:{}", link.port);
        println!("link: a userspace proxy in this process (not root: no network namespace)");
        (None, None, Some(link), host)
    };
    let config = format!(
        "[origins.reg]\nplugin = \"oci\"\nbase_url = \"http://{}/v2/\"\n[origins.reg.config]\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n\
         [origins.reglink]\nplugin = \"oci\"\nbase_url = \"http://{far}/v2/\"\nallowed_hosts = [\"10.0.0.0/8\"]\n[origins.reglink.config]\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
        registry.host(),
    );
    // SEEDGATE_BENCH_IMAGE_DIGEST_IDS=0: name blobs by URL and skip the
    // digest check (to see what the check costs; one round only, as the
    // tasks are then not forgotten between rounds).
    let config = if std::env::var("SEEDGATE_BENCH_IMAGE_DIGEST_IDS").as_deref() == Ok("0") {
        config.replace(
            "plugin = \"oci\"\n",
            "plugin = \"oci\"\nblob_digest_task_ids = false\n",
        )
    } else {
        config
    };
    // SEEDGATE_BENCH_PIECES: ranged requests in flight per blob
    // (`download.piece_concurrency`; the default config's 4 when unset).
    let config = match std::env::var("SEEDGATE_BENCH_PIECES") {
        Ok(n) => format!("[download]\npiece_concurrency = {n}\n{config}"),
        Err(_) => config,
    };
    let sg = Seedgate::start(dir.path(), &config);
    let image_ref = format!("{}/bench/img:1", registry.host());

    // Per round and side: preheat, pulls synced as containerd commits
    // blobs, pulls left in the page cache.
    // Each step starts with as much backed memory as it writes, and some.
    let warm = (bytes as usize) + (512 << 20);
    let sides = [
        ("link", format!("http://{far}/"), "reglink"),
        ("loopback", format!("http://{}/", registry.host()), "reg"),
    ];
    let mut times = [
        [Vec::new(), Vec::new(), Vec::new()],
        [Vec::new(), Vec::new(), Vec::new()],
    ];
    for round in 0..rounds {
        let files = dir.path().join(format!("files-{round}"));
        let mut line = format!("round {}:", round + 1);
        for (side, (name, base, origin)) in sides.iter().enumerate() {
            for (k, durable) in [(1, true), (2, false)] {
                warm_memory(warm);
                let t = Instant::now();
                let got = pull_to_files(
                    base,
                    "bench/img",
                    &digests,
                    &files.join(format!("{name}-{k}")),
                    concurrency,
                    durable,
                )
                .await;
                assert_eq!(got, bytes);
                times[side][k].push(t.elapsed().as_secs_f64());
                std::fs::remove_dir_all(files.join(format!("{name}-{k}"))).unwrap();
            }
            warm_memory(warm);
            let (t, b) = preheat_image(&sg, origin, &image_ref, concurrency).await;
            assert_eq!(b, bytes);
            times[side][0].push(t.as_secs_f64());
            forget(&sg, &digests).await;
            line += &format!(
                " {name}: preheat {:.2} s, synced pulls {:.2} s ({:.2}x), pulls {:.2} s ({:.2}x);",
                times[side][0][round],
                times[side][1][round],
                times[side][0][round] / times[side][1][round],
                times[side][2][round],
                times[side][0][round] / times[side][2][round],
            );
        }
        println!("{line}");
    }
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    for (side, (name, _, _)) in sides.iter().enumerate() {
        let [pre, synced, plain] = &times[side];
        let where_ = if *name == "link" {
            format!("{link_mbit} Mbit/s link")
        } else {
            "loopback".to_owned()
        };
        let r = ratio(pre, synced);
        let shown = format!(
            "{r:.2}x ({:.2} s / {:.2} s, medians of {rounds}); against unsynced pulls {:.2}x ({:.2} s)",
            median(pre.clone()),
            median(synced.clone()),
            ratio(pre, plain),
            median(plain.clone())
        );
        let figure = format!(
            "image preheat {total_mib} MiB / {layers} layers vs pulling its blobs (synced), {where_}"
        );
        if *name == "link" {
            verdict(&figure, r, Want::AtMost, 1.1, &shown);
        } else {
            printed(&figure, &shown);
        }
    }
}
