//! The seed peer's piece transfer against the HTTP gateway, in one run on
//! the same stored task: one 1 GiB task (256 pieces of 4 MiB, as Dragonfly
//! sizes them) fetched whole by 1 and by 8 concurrent downloaders,
//!
//! - over Dragonfly's TCP piece protocol (vortex): each downloader holds
//!   one connection and asks for every piece in turn, as a peer does from
//!   one parent;
//! - over the HTTP gateway: each downloader GETs the object (one stream).
//!
//! Both are served from the same content file by the same process; every
//! downloader reads every byte. The rounds interleave the two, and the
//! median aggregate throughput of each is printed with their ratio.
//!
//! Run with `scripts/bench peer`. Knobs: `SEEDGATE_BENCH_PEER_MIB` (size,
//! default 1024), `SEEDGATE_BENCH_ROUNDS` (default 3).

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;

use std::time::Duration;

use support::*;
use tokio::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Every piece of the task, `in_flight` pieces at a time, each worker on
/// its own connection asking for the next piece not yet taken (as a
/// Dragonfly peer fetches from a parent), read into one reused buffer per
/// worker (as the HTTP side reads into hyper's buffers: no allocation per
/// piece on either side).
async fn peer_download(port: u16, task_id: &str, pieces: u32, in_flight: usize) -> u64 {
    let next = std::sync::atomic::AtomicU32::new(0);
    let workers = (0..in_flight).map(|_| peer_worker(port, task_id, pieces, &next));
    futures_util::future::join_all(workers).await.iter().sum()
}

async fn peer_worker(
    port: u16,
    task_id: &str,
    pieces: u32,
    next: &std::sync::atomic::AtomicU32,
) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vortex_protocol::Message;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 64 << 20];
    let mut n = 0;
    loop {
        let p = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if p >= pieces {
            break;
        }
        let mut req = bytes::BytesMut::new();
        vortex_protocol::tlv::download_piece::DownloadPiece::new(task_id.into(), p)
            .encode_packet(&mut req);
        conn.write_all(&req).await.unwrap();
        let mut head = [0u8; vortex_protocol::HEADER_SIZE];
        conn.read_exact(&mut head).await.unwrap();
        let header = vortex_protocol::Header::decode(&head).unwrap();
        let value = &mut buf[..header.length() as usize];
        conn.read_exact(value).await.unwrap();
        let meta = vortex_protocol::tlv::piece_content::PieceContent::decode(value)
            .unwrap()
            .metadata;
        conn.read_exact(&mut buf[..meta.length as usize])
            .await
            .unwrap();
        n += meta.length;
    }
    n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib = env_or("SEEDGATE_BENCH_PEER_MIB", 1024);
    let rounds = env_or("SEEDGATE_BENCH_ROUNDS", 3).max(1);
    let size = (mib as u64) << 20;
    println!(
        "seedgate peer benchmark: one {mib} MiB task, 1 and 8 downloaders, {rounds} rounds, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (dir, nginx) = origin();
    let data = pseudo_random(size as usize, 5);
    let digest = sha256(&data);
    nginx.put("peer/big.bin", &data);
    drop(data);
    let (upload, piece) = (free_port(), free_port());
    let config = format!(
        r#"{}
[seed_peer]
upload_listen = "127.0.0.1:{upload}"
piece_listen = "127.0.0.1:{piece}"
"#,
        http_origin_config(&nginx.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    let url = sg.url("/o/www/peer/big.bin");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    drain(&client, &url).await;
    wait_stored(&url).await;
    let head = client.head(&url).send().await.unwrap();
    let task_id = head.headers()["x-seedgate-task"]
        .to_str()
        .unwrap()
        .to_string();
    let piece_length = seedgate::piece::piece_length(size);
    let pieces = seedgate::piece::piece_count(size, piece_length);

    // Correctness first (untimed): every piece's crc32, the whole sha256.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", piece))
        .await
        .unwrap();
    let mut whole = Vec::with_capacity(size as usize);
    for p in 0..pieces {
        let (meta, bytes) = fetch_piece(&mut conn, &task_id, p).await.unwrap();
        assert_eq!(meta.digest, format!("crc32:{}", crc32fast::hash(&bytes)));
        whole.extend_from_slice(&bytes);
    }
    assert_eq!(sha256(&whole), digest, "the peer protocol's bytes");
    drop(whole);
    println!(
        "task {task_id}: {pieces} pieces of {} MiB, checked",
        piece_length >> 20
    );

    println!(
        "\n| downloaders | piece protocol, 1 piece in flight | 4 pieces in flight | HTTP gateway (1 stream) | ratios to HTTP |"
    );
    println!("|---|---|---|---|---|");
    for downloaders in [1usize, 8] {
        let (mut peer, mut peer4, mut http) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            for (in_flight, into) in [(1, &mut peer), (4, &mut peer4)] {
                let t = Instant::now();
                let got = futures_util::future::join_all(
                    (0..downloaders).map(|_| peer_download(piece, &task_id, pieces, in_flight)),
                )
                .await;
                let secs = t.elapsed().as_secs_f64();
                assert!(got.iter().all(|n| *n == size));
                into.push((size * downloaders as u64) as f64 / secs / (1 << 20) as f64);
            }

            let t = Instant::now();
            let got =
                futures_util::future::join_all((0..downloaders).map(|_| drain(&client, &url)))
                    .await;
            let secs = t.elapsed().as_secs_f64();
            assert!(got.iter().all(|n| *n == size));
            http.push((size * downloaders as u64) as f64 / secs / (1 << 20) as f64);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (p, p4, h) = (median(peer), median(peer4), median(http));
        println!(
            "| {downloaders} | {p:.0} MiB/s | {p4:.0} MiB/s | {h:.0} MiB/s | {:.2}× / {:.2}× |",
            p / h,
            p4 / h
        );
    }
    let served = metric(&sg, "seedgate_peer_bytes_served_total").await;
    println!(
        "\nseed peer sent {:.0} MiB over the piece protocol in all",
        served / (1 << 20) as f64
    );
}
