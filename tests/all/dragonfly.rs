//! seedgate as a Dragonfly v2 seed peer, driven the way Dragonfly drives
//! one: a peer built from `dragonfly-api`'s generated client triggers
//! `DownloadTask`, follows `SyncPieces` and fetches every piece over the
//! TCP piece protocol (vortex), checking each crc32 and the whole sha256;
//! a scheduler built from `dragonfly-api`'s server traits records what the
//! announcer sends. The origin is nginx.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dragonfly_api::common::v2::{Download, TaskType};
use dragonfly_api::dfdaemon::v2::dfdaemon_upload_client::DfdaemonUploadClient;
use dragonfly_api::dfdaemon::v2::download_task_response::Response as DlResponse;
use dragonfly_api::dfdaemon::v2::*;
use dragonfly_api::scheduler::v2::announce_peer_request::Request as PeerRequest;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use vortex_protocol::tlv::error::Code;

use crate::support::*;
use crate::test_scheduler::{Seen, TestScheduler};

/// Ports of a seed peer.
pub struct Ports {
    pub upload: u16,
    pub piece: u16,
}

/// A config with one http origin and the seed peer on.
pub fn seed_config(base_url: &str, schedulers: &[String], extra: &str) -> (String, Ports) {
    let ports = Ports {
        upload: free_port(),
        piece: free_port(),
    };
    let list: Vec<String> = schedulers.iter().map(|s| format!("\"{s}\"")).collect();
    let config = format!(
        r#"{}
[seed_peer]
upload_listen = "127.0.0.1:{}"
piece_listen = "127.0.0.1:{}"
hostname = "sg-test"
schedulers = [{}]
{extra}
"#,
        http_origin_config(base_url),
        ports.upload,
        ports.piece,
        list.join(", ")
    );
    (config, ports)
}

pub async fn upload_client(port: u16) -> DfdaemonUploadClient<Channel> {
    let t = tokio::time::Instant::now();
    loop {
        match DfdaemonUploadClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return c,
            Err(e) if t.elapsed() > Duration::from_secs(10) => panic!("upload service: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub fn download(url: &str) -> Download {
    Download {
        url: url.into(),
        r#type: TaskType::Standard as i32,
        ..Default::default()
    }
}

fn crc_digest(bytes: &[u8]) -> String {
    format!("crc32:{}", crc32fast::hash(bytes))
}

#[tokio::test]
async fn a_dragonfly_peer_downloads_through_the_seed_peer_and_the_scheduler_hears_of_it() {
    let (dir, nginx) = origin();
    let data = pseudo_random(20 << 20, 71);
    nginx.put("df/layer.bin", &data);
    let url = format!("{}df/layer.bin", nginx.base_url());
    // Two schedulers: the host registers with both; each download is
    // reported to one of them.
    let (s1, s2) = (TestScheduler::start().await, TestScheduler::start().await);
    let (config, ports) = seed_config(
        &nginx.base_url(),
        &[s1.address(), s2.address()],
        "announce_interval = \"1s\"\nupload_rate_limit = \"100 MiB\"",
    );
    let sg = Seedgate::start(dir.path(), &config);

    // Registered as a super seed, and /readyz says so.
    wait_until("the host is announced", Duration::from_secs(10), || {
        s1.state.host_announces() > 0 && s2.state.host_announces() > 0
    })
    .await;
    let Seen::AnnounceHost(first) = &s1.state.seen()[0] else {
        panic!("the first message is AnnounceHost");
    };
    let host = first.host.as_ref().unwrap();
    assert_eq!(host.id, "127.0.0.1-sg-test-seed");
    assert_eq!(host.r#type, 1, "super seed");
    assert_eq!(host.ip, "127.0.0.1");
    assert_eq!(host.port, ports.upload as i32);
    assert!(host.memory.as_ref().unwrap().total > 0);
    // Peers weight parents by idle upload bandwidth (bits per second):
    // loopback has no link speed, so the rate limit is the ceiling.
    let network = host.network.as_ref().unwrap();
    assert_eq!(network.max_tx_bandwidth, 100 * 1024 * 1024 * 8);
    assert!(network.tx_bandwidth.is_some());
    assert!(host.disk.as_ref().unwrap().total > 0);
    let ready: serde_json::Value =
        serde_json::from_slice(&get(&sg.url("/readyz")).await.bytes().await.unwrap()).unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["schedulers"][0]["state"], "registered", "{ready}");
    assert_eq!(ready["schedulers"][1]["state"], "registered", "{ready}");
    for s in [&s1, &s2] {
        let sample = format!(
            "seedgate_scheduler_registered{{scheduler=\"{}\"}}",
            s.address()
        );
        assert_eq!(metric(&sg, &sample).await, 1.0, "{sample}");
    }

    // grpc.health.v1 says SERVING, for the server and for the service.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", ports.upload))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "dfdaemon.v2.DfdaemonUpload"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service:?} is SERVING");
    }

    // DownloadTask: started, then every piece as it lands.
    let mut client = upload_client(ports.upload).await;
    // What a scheduler's trigger asks beyond the URL goes into the
    // register, as from Dragonfly's own seed.
    let trigger = Download {
        priority: 3,
        timeout: Some(prost_wkt_types::Duration {
            seconds: 90,
            nanos: 0,
        }),
        need_back_to_source: true,
        ..download(&url)
    };
    let mut stream = client
        .download_task(DownloadTaskRequest {
            download: Some(trigger.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let task_id = first.task_id.clone();
    let peer_id = first.peer_id.clone();
    assert_eq!(first.host_id, "127.0.0.1-sg-test-seed");
    let Some(DlResponse::DownloadTaskStartedResponse(started)) = first.response else {
        panic!("first answer is DownloadTaskStarted");
    };
    assert_eq!(started.content_length, data.len() as u64);
    assert!(!started.is_finished);

    // A peer follows SyncPieces while the download runs and fetches each
    // piece from the piece port on one connection.
    let mut sync = client
        .sync_pieces(SyncPiecesRequest {
            host_id: "10.0.0.9-peer".into(),
            task_id: task_id.clone(),
            interested_piece_numbers: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let mut conn = TcpStream::connect(("127.0.0.1", ports.piece))
        .await
        .unwrap();
    let mut assembled = vec![0u8; data.len()];
    let mut synced = Vec::new();
    while let Some(p) = sync.next().await {
        let p = p.unwrap();
        assert_eq!(p.ip, "127.0.0.1");
        assert_eq!(p.tcp_port, Some(ports.piece as i32));
        let (meta, bytes) = fetch_piece(&mut conn, &task_id, p.number).await.unwrap();
        // As Dragonfly's TCP server: the piece reaches the asker from a
        // remote peer; its cost is whole seconds on the wire.
        assert_eq!(
            meta.traffic_type,
            dragonfly_api::common::v2::TrafficType::RemotePeer as u8
        );
        assert!(meta.cost < Duration::from_secs(30));
        assert_eq!(
            (meta.number, meta.offset, meta.length),
            (p.number, p.offset, p.length)
        );
        assert_eq!(bytes.len() as u64, p.length);
        assert_eq!(meta.digest, crc_digest(&bytes), "piece {} crc32", p.number);
        assembled[p.offset as usize..(p.offset + p.length) as usize].copy_from_slice(&bytes);
        synced.push(p.number);
    }
    synced.sort();
    assert_eq!(synced, vec![0, 1, 2, 3, 4], "20 MiB in 4 MiB pieces");
    assert_eq!(sha256(&assembled), sha256(&data));

    let mut finished = Vec::new();
    while let Some(m) = stream.next().await {
        let Some(DlResponse::DownloadPieceFinishedResponse(f)) = m.unwrap().response else {
            panic!("then only DownloadPieceFinished");
        };
        let piece = f.piece.unwrap();
        let span = &data[piece.offset as usize..(piece.offset + piece.length) as usize];
        assert_eq!(piece.digest, crc_digest(span));
        finished.push(piece.number);
    }
    finished.sort();
    assert_eq!(finished, vec![0, 1, 2, 3, 4]);
    assert_eq!(
        nginx.bytes_sent("/df/layer.bin"),
        data.len() as u64,
        "the origin sent each byte once"
    );

    // The HTTP gateway serves the same task: stored once, no origin request.
    let before = nginx.requests("/df/layer.bin").len();
    let resp = get(&sg.url("/o/www/df/layer.bin")).await;
    assert_eq!(resp.headers()["x-seedgate-task"], task_id.as_str());
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    assert_eq!(nginx.requests("/df/layer.bin").len(), before);
    // And a second DownloadTask finds it finished.
    let again = client
        .download_task(DownloadTaskRequest {
            download: Some(download(&url)),
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    let Some(DlResponse::DownloadTaskStartedResponse(s)) = &again[0].as_ref().unwrap().response
    else {
        panic!()
    };
    assert!(s.is_finished);
    assert_eq!(again.len(), 6);
    let stored_peer = again[0].as_ref().unwrap().peer_id.clone();
    assert_ne!(stored_peer, peer_id, "a new peer for a new download");

    // Stat calls.
    let task = client
        .stat_task(StatTaskRequest {
            task_id: task_id.clone(),
            remote_ip: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (task.url.as_str(), task.content_length, task.piece_count),
        (url.as_str(), data.len() as u64, 5)
    );
    assert_eq!(task.state, "Succeeded");
    assert_eq!(task.pieces.len(), 5);
    let local = client
        .stat_local_task(StatLocalTaskRequest {
            task_id: task_id.clone(),
            remote_ip: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local.piece_length, Some(4 << 20));
    assert!(local.finished_at.is_some());

    // SyncHost streams live figures.
    let mut hosts = client
        .sync_host(SyncHostRequest {
            host_id: "x".into(),
            peer_id: "y".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let h = hosts.next().await.unwrap().unwrap();
    assert_eq!(h.id, "127.0.0.1-sg-test-seed");
    assert!(h.cpu.unwrap().logical_count > 0);
    drop(hosts);

    // One scheduler heard the back-to-source download, in order, under the
    // peer id DownloadTask named; the other heard nothing of it.
    let ended = |s: &TestScheduler| {
        s.state
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::AnnouncePeerEnd(_)))
    };
    wait_until("the report ends", Duration::from_secs(10), || {
        ended(&s1) || ended(&s2)
    })
    .await;
    let (scheduler, other) = if ended(&s1) { (&s1, &s2) } else { (&s2, &s1) };
    assert!(
        !other
            .state
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::AnnouncePeer(..))),
        "reported to one scheduler only"
    );
    let seen = scheduler.state.seen();
    let streams: std::collections::BTreeSet<usize> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::AnnouncePeer(n, _) | Seen::AnnouncePeerEnd(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(
        streams.len(),
        2,
        "one AnnouncePeer stream per download: the download back to source, then the stored task"
    );
    let (first_stream, second_stream) = (
        *streams.iter().next().unwrap(),
        *streams.iter().nth(1).unwrap(),
    );
    let stream_of = |n: usize| -> Vec<_> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::AnnouncePeer(k, m) if *k == n => Some(m.clone()),
                _ => None,
            })
            .collect()
    };
    // The stored task: metadata only, then started and finished, under the
    // peer id the second DownloadTask named.
    let stored = stream_of(second_stream);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(stored.iter().all(|m| m.peer_id == stored_peer));
    let Some(PeerRequest::RegisterPeerRequest(r)) = &stored[0].request else {
        panic!("register first: {:?}", stored[0]);
    };
    let d = r.download.as_ref().unwrap();
    assert!(d.metadata_only && !d.need_back_to_source, "{d:?}");
    assert_eq!(d.actual_content_length, Some(data.len() as u64));
    assert!(matches!(
        stored[1].request,
        Some(PeerRequest::DownloadPeerStartedRequest(_))
    ));
    assert!(matches!(
        stored[2].request,
        Some(PeerRequest::DownloadPeerFinishedRequest(_))
    ));
    let reports = stream_of(first_stream);
    assert_eq!(reports.len(), 8, "register, started, 5 pieces, finished");
    for m in &reports {
        assert_eq!(m.task_id, task_id);
        assert_eq!(m.host_id, "127.0.0.1-sg-test-seed");
        assert_eq!(m.peer_id, peer_id);
    }
    assert!(peer_id.starts_with("127.0.0.1-sg-test-") && peer_id.ends_with("-seed"));
    let Some(PeerRequest::RegisterPeerRequest(r)) = &reports[0].request else {
        panic!("register first: {:?}", reports[0]);
    };
    // The task's size, which the scheduler builds its task from, and what
    // the trigger asked; piece concurrency is this seed's own.
    let d = r.download.as_ref().unwrap();
    assert_eq!(d.url, url);
    assert_eq!(
        (
            d.actual_content_length,
            d.actual_piece_length,
            d.actual_piece_count
        ),
        (Some(data.len() as u64), Some(4 << 20), Some(5))
    );
    assert_eq!(d.priority, 3);
    assert_eq!(d.timeout, trigger.timeout);
    assert!(d.need_back_to_source && !d.metadata_only);
    assert_eq!(
        d.concurrent_piece_count,
        Some(4),
        "download.piece_concurrency"
    );
    // A Dragonfly seed peer id: {ip}-{hostname}-{uuid}-seed.
    let uuid = peer_id
        .strip_prefix("127.0.0.1-sg-test-")
        .and_then(|rest| rest.strip_suffix("-seed"))
        .unwrap();
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{peer_id}");
    assert!(matches!(
        reports[1].request,
        Some(PeerRequest::DownloadPeerBackToSourceStartedRequest(_))
    ));
    let mut reported = Vec::new();
    for m in &reports[2..7] {
        let Some(PeerRequest::DownloadPieceBackToSourceFinishedRequest(p)) = &m.request else {
            panic!("pieces next: {m:?}");
        };
        let p = p.piece.as_ref().unwrap();
        let span = &data[p.offset as usize..(p.offset + p.length) as usize];
        assert_eq!(p.digest, crc_digest(span));
        reported.push(p.number);
    }
    reported.sort();
    assert_eq!(reported, vec![0, 1, 2, 3, 4]);
    assert!(matches!(
        reports[7].request,
        Some(PeerRequest::DownloadPeerBackToSourceFinishedRequest(_))
    ));

    // Bad input: clear errors, and the process keeps serving.
    let status = |r: Result<tonic::Response<_>, tonic::Status>| {
        r.map(|_: tonic::Response<dragonfly_api::common::v2::Task>| ())
            .unwrap_err()
    };
    let e = status(
        client
            .stat_task(StatTaskRequest {
                task_id: "nope".into(),
                remote_ip: None,
            })
            .await,
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = status(
        client
            .stat_task(StatTaskRequest {
                task_id: "0".repeat(64),
                remote_ip: None,
            })
            .await,
    );
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = client
        .download_task(DownloadTaskRequest {
            download: Some(download("http://169.254.169.254/latest/meta-data")),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not under the base_url"), "{e:?}");
    let e = client
        .download_task(DownloadTaskRequest {
            download: Some(download(&format!("{}df/missing.bin", nginx.base_url()))),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // A key that climbs out with an encoded slash is refused as a client's is.
    let e = client
        .download_task(DownloadTaskRequest {
            download: Some(download(&format!(
                "{}df/..%2f..%2fsecret.txt",
                nginx.base_url()
            ))),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("percent-encoded '/'"), "{e:?}");
    let e = client
        .download_persistent_task(DownloadPersistentTaskRequest::default())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    let e = client
        .stat_persistent_cache_task(StatPersistentCacheTaskRequest::default())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    // Piece protocol: unknown task, no such piece, then a hostile header.
    let (code, why) = fetch_piece(&mut conn, &"a".repeat(64), 0)
        .await
        .unwrap_err();
    assert_eq!(code, Code::NotFound, "{why}");
    let (code, why) = fetch_piece(&mut conn, &task_id, 99).await.unwrap_err();
    assert_eq!(code, Code::InvalidArgument, "{why}");
    assert!(why.contains("has 5 pieces"), "{why}");
    // The same connection still serves a good request after errors.
    let (meta, bytes) = fetch_piece(&mut conn, &task_id, 4).await.unwrap();
    assert_eq!(meta.digest, crc_digest(&bytes));
    let mut hostile = TcpStream::connect(("127.0.0.1", ports.piece))
        .await
        .unwrap();
    hostile
        .write_all(&[7, 0, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let (code, why) = read_answer(&mut hostile).await.unwrap_err();
    assert_eq!(code, Code::InvalidArgument, "{why}");
    let mut rest = Vec::new();
    hostile.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty(),
        "the connection is closed after a hostile header"
    );
    assert!(get(&sg.url("/healthz")).await.status().is_success());
    assert_eq!(metric(&sg, "seedgate_peer_pieces_served_total").await, 6.0);

    // DeleteTask evicts it.
    client
        .delete_task(DeleteTaskRequest {
            task_id: task_id.clone(),
            remote_ip: None,
        })
        .await
        .unwrap();
    let e = status(
        client
            .stat_task(StatTaskRequest {
                task_id: task_id.clone(),
                remote_ip: None,
            })
            .await,
    );
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Re-announced on its interval (1 s here) all along.
    wait_until("a second AnnounceHost", Duration::from_secs(5), || {
        s1.state.host_announces() >= 2 && s2.state.host_announces() >= 2
    })
    .await;

    // SIGTERM: the host is deleted from every scheduler before exit.
    Command::new("kill")
        .args(["-TERM", &sg.pid().to_string()])
        .status()
        .unwrap();
    for s in [&s1, &s2] {
        wait_until("DeleteHost", Duration::from_secs(10), || {
            s.state
                .seen()
                .iter()
                .any(|s| matches!(s, Seen::DeleteHost(id) if id == "127.0.0.1-sg-test-seed"))
        })
        .await;
    }
}

#[tokio::test]
async fn a_sick_scheduler_gets_one_channel_and_paced_announces() {
    let (dir, nginx) = origin();
    let scheduler = TestScheduler::start().await;
    scheduler.state.refuse_hosts.store(true, Ordering::SeqCst);
    let (config, _ports) = seed_config(
        &nginx.base_url(),
        &[scheduler.address()],
        r#"announce_interval = "1s"
reconnect_backoff_min = "200ms"
reconnect_backoff_max = "800ms""#,
    );
    let sg = Seedgate::start(dir.path(), &config);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let attempts = scheduler.state.host_announces();
    // 200, 400, 800, 800, ... ms, each jittered to 50-100 %: 5-12 in 4 s
    // (a storm would be hundreds).
    assert!((4..=12).contains(&attempts), "{attempts} announces in 4 s");
    assert_eq!(
        scheduler.state.connections.load(Ordering::SeqCst),
        1,
        "one long-lived channel, no churn"
    );
    let resp = get(&sg.url("/readyz")).await;
    assert_eq!(resp.status(), 503);
    let ready: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(ready["schedulers"][0]["state"], "unreachable", "{ready}");
    assert!(
        ready["schedulers"][0]["error"]
            .as_str()
            .unwrap()
            .contains("refuses hosts"),
        "{ready}"
    );
    // A download meanwhile is served, and not reported (counted skipped).
    nginx.put("sick/a.bin", &pseudo_random(100_000, 3));
    let resp = get(&sg.url("/o/www/sick/a.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 100_000);
    let skipped = format!(
        "seedgate_peer_announces_total{{scheduler=\"{}\",outcome=\"skipped\"}}",
        scheduler.address()
    );
    assert_eq!(metric(&sg, &skipped).await, 1.0);

    // The scheduler recovers: registered within one backoff step.
    scheduler.state.refuse_hosts.store(false, Ordering::SeqCst);
    let t = tokio::time::Instant::now();
    loop {
        if get(&sg.url("/readyz")).await.status() == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "ready after recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(scheduler.state.connections.load(Ordering::SeqCst), 1);

    // A scheduler that accepts and drops every connection: reconnects are
    // paced by the backoff too.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(c);
        }
    });
    let dir2 = tempfile::tempdir().unwrap();
    let (config, _ports) = seed_config(
        &nginx.base_url(),
        &[format!("http://127.0.0.1:{port}")],
        r#"reconnect_backoff_min = "200ms"
reconnect_backoff_max = "800ms""#,
    );
    let _sg2 = Seedgate::start(dir2.path(), &config);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let n = accepted.load(Ordering::SeqCst);
    assert!((3..=14).contains(&n), "{n} connections in 4 s");
}

/// `upload_rate_limit` paces piece uploads over all connections: 24 MiB at
/// 40 MiB/s (a 4 MiB burst) takes at least half a second, from two peers
/// at once; every piece still arrives whole and checked.
#[tokio::test]
async fn the_piece_port_keeps_to_its_upload_rate_limit() {
    let (dir, nginx) = origin();
    let data = pseudo_random(24 << 20, 73);
    nginx.put("rl/a.bin", &data);
    let (config, ports) = seed_config(&nginx.base_url(), &[], "upload_rate_limit = \"40 MiB\"");
    let sg = Seedgate::start(dir.path(), &config);
    let url = sg.url("/o/www/rl/a.bin");
    let resp = get(&url).await;
    let task_id = task_of(&resp);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    wait_stored(&url).await;

    let t = tokio::time::Instant::now();
    let peers = (0..2u32).map(|k| {
        let task_id = task_id.clone();
        async move {
            let mut conn = TcpStream::connect(("127.0.0.1", ports.piece))
                .await
                .unwrap();
            let mut sizes = 0;
            for n in (k..6).step_by(2) {
                let (meta, bytes) = fetch_piece(&mut conn, &task_id, n).await.unwrap();
                assert_eq!(meta.digest, crc_digest(&bytes));
                sizes += bytes.len();
            }
            sizes
        }
    });
    let sent: usize = futures_util::future::join_all(peers).await.iter().sum();
    let took = t.elapsed();
    assert_eq!(sent, data.len());
    assert!(
        took >= Duration::from_millis(450),
        "24 MiB at 40 MiB/s took {took:?}"
    );
    assert_eq!(
        metric(&sg, "seedgate_peer_bytes_served_total").await,
        data.len() as f64
    );
}

/// A peer that asks for a piece and never reads it is dropped after
/// `piece_write_timeout`: its connection slot is freed (and its task no
/// longer pinned), while other peers are served meanwhile.
#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped() {
    let (dir, nginx) = origin();
    let data = pseudo_random(16 << 20, 79);
    nginx.put("st/a.bin", &data);
    let (config, ports) = seed_config(&nginx.base_url(), &[], "piece_write_timeout = \"1s\"");
    let sg = Seedgate::start(dir.path(), &config);
    let url = sg.url("/o/www/st/a.bin");
    let resp = get(&url).await;
    let task_id = task_of(&resp);
    assert_eq!(resp.bytes().await.unwrap().len(), data.len());
    wait_stored(&url).await;

    // Ask for every piece, read nothing: the socket buffers fill.
    let mut stalled = TcpStream::connect(("127.0.0.1", ports.piece))
        .await
        .unwrap();
    for n in 0..4u32 {
        let mut req = bytes::BytesMut::new();
        vortex_protocol::Message::encode_packet(
            &vortex_protocol::tlv::download_piece::DownloadPiece::new(task_id.clone(), n),
            &mut req,
        );
        stalled.write_all(&req).await.unwrap();
    }
    wait_until(
        "the stalled peer is connected",
        Duration::from_secs(5),
        || true,
    )
    .await;
    assert_eq!(metric(&sg, "seedgate_peer_connections").await, 1.0);
    // Another peer is served meanwhile.
    let mut other = TcpStream::connect(("127.0.0.1", ports.piece))
        .await
        .unwrap();
    let (meta, bytes) = fetch_piece(&mut other, &task_id, 3).await.unwrap();
    assert_eq!(meta.digest, crc_digest(&bytes));
    drop(other);
    let t = tokio::time::Instant::now();
    loop {
        if metric(&sg, "seedgate_peer_connections").await == 0.0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the stalled peer still holds its connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The task is not pinned: it can be deleted.
    let resp = client()
        .delete(sg.url(&format!("/api/v1/tasks/{task_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// The piece protocol sends stored pieces unread (sendfile), so each is
/// checked against its digest once before it is first sent: the sound
/// pieces are sent; a byte flipped in a stored piece gets the peer an error
/// naming the failed check, never the bytes; the next gateway read fetches
/// exactly that piece again, and the piece protocol then sends it right.
#[tokio::test]
async fn a_piece_that_rotted_on_disk_is_never_sent_to_a_peer() {
    let (dir, nginx) = origin();
    let data = pseudo_random(16 << 20, 83);
    nginx.put("rot/a.bin", &data);
    let (config, ports) = seed_config(&nginx.base_url(), &[], "");
    let sg = Seedgate::start(dir.path(), &config);
    let url = sg.url("/o/www/rot/a.bin");
    let resp = get(&url).await;
    let task_id = task_of(&resp);
    assert_eq!(resp.bytes().await.unwrap().len(), data.len());
    wait_stored(&url).await;
    // A restart, so nothing is trusted from its landing; then one byte of
    // piece 2 flips in place.
    let (config_path, data_dir) = sg.kill();
    let sg = Seedgate::start_with(&config_path, &data_dir);
    let url = sg.url("/o/www/rot/a.bin");
    let file = sg.content_file(&task_id);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[2 * (4 << 20) + 777] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let before = nginx.gets("/rot/a.bin");

    let mut conn = TcpStream::connect(("127.0.0.1", ports.piece))
        .await
        .unwrap();
    let (meta, piece) = fetch_piece(&mut conn, &task_id, 1).await.unwrap();
    assert_eq!(meta.digest, crc_digest(&piece));
    assert_eq!(piece, &data[4 << 20..8 << 20]);
    let (code, why) = fetch_piece(&mut conn, &task_id, 2).await.unwrap_err();
    assert_eq!(code, Code::NotFound, "{why}");
    assert!(why.contains("failed its digest check"), "{why}");

    let resp = get(&url).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    assert_eq!(
        nginx.gets("/rot/a.bin"),
        before + 1,
        "exactly piece 2 fetched again"
    );
    wait_stored(&url).await;
    let (meta, piece) = fetch_piece(&mut conn, &task_id, 2).await.unwrap();
    assert_eq!(meta.digest, crc_digest(&piece));
    assert_eq!(piece, &data[8 << 20..12 << 20]);
}
