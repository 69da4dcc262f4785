//! Conformance with Dragonfly's own seed peer: one object downloaded once
//! with seedgate as the seed and once with a real `dfdaemon` 1.5.10
//! configured as a seed peer (`seedPeer.enable: true`), each triggered
//! through `DownloadTask` as the Go scheduler triggers a seed, each against
//! its own recording scheduler. The `AnnounceHost` and `AnnouncePeer`
//! messages are compared field by field; every difference must be in
//! [`DELIBERATE`] (with its reason) or in [`LIVE`] (values that differ
//! between any two hosts or runs, compared by presence only).

use std::collections::BTreeMap;
use std::time::Duration;

use dragonfly_api::dfdaemon::v2::DownloadTaskRequest;
use dragonfly_api::scheduler::v2::announce_peer_request::Request as PeerRequest;
use futures_util::StreamExt;
use serde_json::Value;

use crate::dfdaemon::Dfdaemon;
use crate::dragonfly::{download, seed_config, upload_client};
use crate::support::*;
use crate::test_scheduler::{Seen, TestScheduler};

/// Differences kept on purpose: (field path prefix, why).
const DELIBERATE: &[(&str, &str)] = &[
    (
        "host.build",
        "seedgate's own version, not dfdaemon's git/rust build",
    ),
    ("host.name", "seedgate names its host seedgate-<hostname>"),
    (
        "host.download_port",
        "seedgate serves no DfdaemonDownload socket; it names the upload port",
    ),
    (
        "host.proxy_port",
        "seedgate runs no HTTP proxy for peers (its gateway is on its own listener)",
    ),
    (
        "host.network.tcp_connection_count",
        "seedgate counts its piece connections; dfdaemon leaves them 0",
    ),
    (
        "host.network.upload_tcp_connection_count",
        "seedgate counts its piece connections; dfdaemon leaves them 0",
    ),
    (
        "host.network.max_rx_bandwidth",
        "seedgate does not announce its receive side (peers weight parents by tx only)",
    ),
    (
        "host.network.rx_bandwidth",
        "seedgate does not announce its receive side (peers weight parents by tx only)",
    ),
    (
        "host.disk.read_bandwidth",
        "dfdaemon's own disk counters; seedgate does not sample them",
    ),
    (
        "host.disk.write_bandwidth",
        "dfdaemon's own disk counters; seedgate does not sample them",
    ),
    (
        "host.cpu.times",
        "CPU times: dfdaemon sends them, no scheduler rule reads them",
    ),
    (
        "host.cpu.cgroup",
        "cgroup figures: dfdaemon sends them, no scheduler rule reads them",
    ),
    (
        "host.memory.cgroup",
        "cgroup figures: dfdaemon sends them, no scheduler rule reads them",
    ),
    (
        "host.disk.cgroup",
        "cgroup figures: dfdaemon sends them, no scheduler rule reads them",
    ),
    (
        "host.scheduler_cluster_id",
        "each seed's configured cluster: seedgate's seed_peer.scheduler_cluster_id defaults to 1 (the manager's default cluster), dfdaemon without a manager sends 0",
    ),
    (
        "host.disk.inodes",
        "seedgate reports the data directory's inodes; dfdaemon 1.5.10 sends 0",
    ),
    ("interval", "each announces its own configured interval"),
    (
        "register.download.concurrent_piece_count",
        "each seed's own piece concurrency (seedgate: download.piece_concurrency)",
    ),
];

/// Values that differ between any two hosts or runs: compared by presence.
const LIVE: &[&str] = &[
    "host.id",
    "host.hostname",
    "host.port",
    "host.ip",
    "host.cpu",
    "host.memory",
    "host.disk",
    "host.network.tx_bandwidth",
    "host.kernel_version",
    "host.platform_version",
    "host.os",
    "host.platform",
    "host.platform_family",
    "piece.cost",
    "piece.created_at",
];

/// A message as `path → value` leaves.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::Bool(b)) => !b,
    }
}

/// Compares two messages; returns the unexplained differences and notes
/// the deliberate ones.
fn compare(
    ours: &Value,
    theirs: &Value,
    prefix: &str,
    deliberate: &mut BTreeMap<String, String>,
) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves(prefix, ours, &mut a);
    leaves(prefix, theirs, &mut b);
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut wrong = Vec::new();
    for path in paths {
        let (x, y) = (a.get(path), b.get(path));
        if x == y || (empty(x) && empty(y)) {
            continue;
        }
        if let Some((_, why)) = DELIBERATE.iter().find(|(p, _)| path.starts_with(p)) {
            deliberate.insert(path.clone(), why.to_string());
            continue;
        }
        if LIVE.iter().any(|p| path.starts_with(p)) {
            let absent = |v: Option<&Value>| matches!(v, None | Some(Value::Null));
            if absent(x) != absent(y) {
                wrong.push(format!(
                    "{path}: seedgate {x:?}, dfdaemon {y:?} (one is missing)"
                ));
            }
            continue;
        }
        wrong.push(format!("{path}: seedgate {x:?}, dfdaemon {y:?}"));
    }
    wrong
}

/// The kind of an `AnnouncePeer` message.
fn kind(r: &Option<PeerRequest>) -> &'static str {
    match r {
        Some(PeerRequest::RegisterPeerRequest(_)) => "register",
        Some(PeerRequest::DownloadPeerStartedRequest(_)) => "started",
        Some(PeerRequest::DownloadPeerBackToSourceStartedRequest(_)) => "back_to_source_started",
        Some(PeerRequest::DownloadPieceBackToSourceFinishedRequest(_)) => "back_to_source_piece",
        Some(PeerRequest::DownloadPieceFinishedRequest(_)) => "piece",
        Some(PeerRequest::DownloadPeerBackToSourceFinishedRequest(_)) => "back_to_source_finished",
        Some(PeerRequest::DownloadPeerFinishedRequest(_)) => "finished",
        Some(PeerRequest::DownloadPeerBackToSourceFailedRequest(_)) => "back_to_source_failed",
        Some(PeerRequest::DownloadPeerFailedRequest(_)) => "failed",
        _ => "other",
    }
}

/// Triggers `DownloadTask` on a seed's upload port and reads it to the end.
async fn trigger(port: u16, url: &str) {
    let mut client = upload_client(port).await;
    // As the Go scheduler triggers a seed (`downloadTaskBySeedPeer`): the
    // peer's download, with need_back_to_source; priority and timeout as a
    // pipeline would set them.
    let d = dragonfly_api::common::v2::Download {
        need_back_to_source: true,
        priority: 3,
        timeout: Some(prost_wkt_types::Duration {
            seconds: 90,
            nanos: 0,
        }),
        ..download(url)
    };
    let mut s = client
        .download_task(DownloadTaskRequest { download: Some(d) })
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = s.next().await {
        m.unwrap();
    }
}

/// The scheduler's record: the first `AnnounceHost` and the messages of
/// the first `AnnouncePeer` stream.
async fn record(
    s: &TestScheduler,
) -> (
    Value,
    Vec<dragonfly_api::scheduler::v2::AnnouncePeerRequest>,
) {
    wait_until("the report ends", Duration::from_secs(60), || {
        s.state
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::AnnouncePeerEnd(_)))
    })
    .await;
    let seen = s.state.seen();
    let host = seen
        .iter()
        .find_map(|s| match s {
            Seen::AnnounceHost(h) => Some(serde_json::to_value(h.as_ref()).unwrap()),
            _ => None,
        })
        .unwrap();
    let stream = seen
        .iter()
        .find_map(|s| match s {
            Seen::AnnouncePeer(n, _) => Some(*n),
            _ => None,
        })
        .unwrap();
    let messages = seen
        .into_iter()
        .filter_map(|s| match s {
            Seen::AnnouncePeer(n, m) if n == stream => Some(*m),
            _ => None,
        })
        .collect();
    (host, messages)
}

#[tokio::test]
async fn seedgate_tells_a_scheduler_what_dragonflys_own_seed_tells_it() {
    let (dir, nginx) = origin();
    let data = pseudo_random(20 << 20, 401);
    nginx.put("conf/object.bin", &data);
    let url = format!("{}conf/object.bin", nginx.base_url());

    let ours = TestScheduler::start().await;
    // dfdaemon's default upload limit (50 GB/s), so both announce the same
    // ceiling on loopback, which has no link speed.
    let (config, ports) = seed_config(
        &nginx.base_url(),
        &[ours.address()],
        "upload_rate_limit = \"50 GB\"",
    );
    let _sg = Seedgate::start(dir.path(), &config);
    let theirs = TestScheduler::start().await;
    let seed = Dfdaemon::start("df-seed", theirs.port, true).await;
    wait_until("both seeds are announced", Duration::from_secs(30), || {
        ours.state.host_announces() > 0 && theirs.state.host_announces() > 0
    })
    .await;
    tokio::join!(trigger(ports.upload, &url), trigger(seed.upload_port, &url));
    let (our_host, our_msgs) = record(&ours).await;
    let (their_host, their_msgs) = record(&theirs).await;

    let mut deliberate = BTreeMap::new();
    let mut wrong = compare(&our_host, &their_host, "", &mut deliberate);

    // The same messages in the same order (pieces in any order).
    let kinds = |m: &[dragonfly_api::scheduler::v2::AnnouncePeerRequest]| -> Vec<&'static str> {
        m.iter().map(|m| kind(&m.request)).collect()
    };
    assert_eq!(
        kinds(&our_msgs),
        kinds(&their_msgs),
        "the AnnouncePeer sequence"
    );
    let by_kind = |m: &dragonfly_api::scheduler::v2::AnnouncePeerRequest| -> (String, Value) {
        let v = serde_json::to_value(&m.request).unwrap();
        // {"RegisterPeerRequest": {...}} → ("register", {...})
        let inner = v
            .as_object()
            .and_then(|o| o.values().next().cloned())
            .unwrap_or(Value::Null);
        (kind(&m.request).to_string(), inner)
    };
    let piece_number = |v: &Value| v["piece"]["number"].as_u64();
    let mut theirs_sorted: Vec<(String, Value)> = their_msgs.iter().map(by_kind).collect();
    let mut ours_sorted: Vec<(String, Value)> = our_msgs.iter().map(by_kind).collect();
    for list in [&mut theirs_sorted, &mut ours_sorted] {
        list.sort_by_key(|(k, v)| (k != "register", k.clone(), piece_number(v)));
    }
    for ((k, a), (_, b)) in ours_sorted.iter().zip(&theirs_sorted) {
        let prefix = if k.ends_with("piece") { "" } else { k.as_str() };
        wrong.extend(compare(a, b, prefix, &mut deliberate));
    }
    for (m, n) in our_msgs.iter().zip(&their_msgs) {
        assert_eq!(m.task_id, n.task_id, "the same task id");
    }
    // Peer ids of one shape: {ip}-{hostname}-{uuid v4}-seed.
    for (id, hostname) in [
        (&our_msgs[0].peer_id, "sg-test"),
        (&their_msgs[0].peer_id, "df-seed"),
    ] {
        let uuid = id
            .strip_prefix(&format!("127.0.0.1-{hostname}-"))
            .and_then(|rest| rest.strip_suffix("-seed"))
            .unwrap_or_else(|| panic!("peer id {id}"));
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "peer id {id}");
    }

    // A piece on the TCP piece port: the same metadata.
    let task_id = &our_msgs[0].task_id;
    let mut metas = Vec::new();
    for port in [ports.piece, seed.piece_port] {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (meta, bytes) = fetch_piece(&mut conn, task_id, 1).await.unwrap();
        assert_eq!(bytes, data[4 << 20..8 << 20]);
        metas.push(meta);
    }
    let (a, b) = (&metas[0], &metas[1]);
    assert_eq!(
        (
            a.number,
            a.offset,
            a.length,
            &a.digest,
            &a.parent_id,
            a.traffic_type
        ),
        (
            b.number,
            b.offset,
            b.length,
            &b.digest,
            &b.parent_id,
            b.traffic_type
        ),
        "piece metadata on the TCP port"
    );
    assert!(a.cost <= Duration::from_secs(5) && b.cost <= Duration::from_secs(5));
    assert!(a.created_at.and_utc().timestamp() > 0 && b.created_at.and_utc().timestamp() > 0);
    eprintln!(
        "deliberate differences from dfdaemon {}:",
        crate::dfdaemon::VERSION
    );
    for (path, why) in &deliberate {
        eprintln!("  {path}: {why}");
    }
    assert!(
        wrong.is_empty(),
        "unexplained differences:\n{}",
        wrong.join("\n")
    );
    let _ = data;
}
