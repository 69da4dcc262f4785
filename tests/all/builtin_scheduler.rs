//! seedgate's built-in scheduler (`[scheduler]`) with real Dragonfly peers
//! (`dfdaemon`/`dfget` 1.5.10): no Go scheduler, no test scheduler, only
//! seedgate and the daemons, each with its own directories and ports and a
//! local dynconfig naming seedgate's scheduler port.

use std::time::Duration;

use dragonfly_api::scheduler::v2::scheduler_client::SchedulerClient;
use dragonfly_api::scheduler::v2::*;
use futures_util::StreamExt;
use serde_json::Value;

use crate::dfdaemon::Dfdaemon;
use crate::dragonfly::seed_config;
use crate::support::*;

const MIB: usize = 1 << 20;

struct Cluster {
    _dir: tempfile::TempDir,
    nginx: Nginx,
    sg: Seedgate,
    scheduler_port: u16,
    data: Vec<u8>,
    url: String,
    path: String,
}

/// nginx with one object of `len` bytes and seedgate as seed peer and
/// scheduler; `extra` goes into `[seed_peer]`.
async fn cluster(name: &str, len: usize, seed: u64, seed_peer_extra: &str) -> Cluster {
    let (dir, nginx) = origin();
    let data = pseudo_random(len, seed);
    let key = format!("sched/{name}.bin");
    nginx.put(&key, &data);
    let scheduler_port = free_port();
    let extra =
        format!("{seed_peer_extra}\n[scheduler]\nlisten = \"127.0.0.1:{scheduler_port}\"\n");
    let (config, _) = seed_config(&nginx.base_url(), &[], &extra);
    let sg = Seedgate::start(dir.path(), &config);
    Cluster {
        url: format!("{}{key}", nginx.base_url()),
        path: format!("/{key}"),
        _dir: dir,
        nginx,
        sg,
        scheduler_port,
        data,
    }
}

impl Cluster {
    async fn api(&self, path: &str) -> Value {
        json(get(&self.sg.url(path)).await).await
    }

    /// The one task the scheduler knows, with its peers.
    async fn task(&self) -> Value {
        let tasks = self.api("/api/v1/cluster/tasks").await;
        let tasks = tasks.as_array().unwrap();
        assert_eq!(tasks.len(), 1, "one task: {tasks:?}");
        let id = tasks[0]["id"].as_str().unwrap().to_string();
        self.api(&format!("/api/v1/cluster/tasks/{id}")).await
    }

    async fn fetch(&self, peer: &Dfdaemon) {
        let out = peer.dir.path().join("out.bin");
        peer.dfget(&self.url, &out).await.unwrap();
        assert_eq!(
            sha256(&std::fs::read(&out).unwrap()),
            sha256(&self.data),
            "{}: the bytes",
            peer.hostname
        );
    }

    /// Waits (up to 60 s) until the peer of `host_id` passes `done`.
    async fn wait_peer(&self, host_id: &str, what: &str, done: impl Fn(&Value) -> bool) {
        let t = tokio::time::Instant::now();
        loop {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{host_id}: not {what} within 60 s"
            );
            let tasks = self.api("/api/v1/cluster/tasks").await;
            if let Some(id) = tasks[0]["id"].as_str() {
                let t = self.api(&format!("/api/v1/cluster/tasks/{id}")).await;
                let peer = t["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["host_id"] == host_id);
                if peer.is_some_and(&done) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the peer of `host_id` holds `n` pieces of the task.
    async fn wait_pieces(&self, host_id: &str, n: u64) {
        self.wait_peer(host_id, "holding pieces", |p| {
            p["finished_pieces"].as_u64().unwrap_or(0) >= n
        })
        .await
    }

    /// Waits until the peer of `host_id` has been handed its parents.
    async fn wait_parents(&self, host_id: &str) {
        self.wait_peer(host_id, "placed", |p| {
            p["parents"].as_array().is_some_and(|p| !p.is_empty())
        })
        .await
    }

    /// Body bytes the origin sent for the object, over every request.
    fn origin_bytes(&self) -> u64 {
        self.nginx.bytes_sent(&self.path)
    }
}

fn peer_of<'a>(task: &'a Value, host_id: &str) -> &'a Value {
    task["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["host_id"] == host_id)
        .unwrap_or_else(|| panic!("no peer of host {host_id}: {task:#}"))
}

/// One real peer, one 128 MiB object: every piece comes from seedgate's
/// own seed peer, handed out by seedgate's own scheduler, and the origin
/// sends the object once (plus the peer's own one-byte stat).
#[tokio::test]
async fn a_peer_gets_every_piece_from_seedgate_placed_by_seedgate() {
    let c = cluster("one", 128 * MIB, 401, "").await;
    let peer = Dfdaemon::start("bs-one", c.scheduler_port, false).await;
    // dfdaemon's startup AnnounceHost reached the scheduler.
    let hosts = c.api("/api/v1/cluster/hosts").await;
    let ids: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&peer.host_id.as_str()), "{hosts:#}");
    assert!(ids.contains(&"127.0.0.1-sg-test-seed"), "{hosts:#}");
    c.fetch(&peer).await;

    let task = c.task().await;
    let seed_peer = task["seed_peer"].as_str().unwrap().to_string();
    let p = peer_of(&task, &peer.host_id);
    assert_eq!(p["state"], "Succeeded", "{p:#}");
    let pieces = (128 * MIB).div_ceil(4 * MIB) as u64;
    assert_eq!(p["finished_pieces"], pieces, "{p:#}");
    assert_eq!(p["pieces_by_parent"][&seed_peer], pieces, "{p:#}");
    assert_eq!(p["bytes_from_peers"], (128 * MIB) as u64, "{p:#}");
    assert_eq!(p["bytes_from_source"], 0, "{p:#}");
    assert_eq!(p["parents"], serde_json::json!([seed_peer]), "{p:#}");
    assert!(p.get("back_to_source_reason").is_none(), "{p:#}");
    // dfdaemon's own log says the same: one parent, seedgate's seed peer,
    // and every piece through the scheduler, none from the source.
    let log = peer.log();
    assert!(
        log.contains(&format!("normal task response: [\"{seed_peer}\"]")),
        "dfdaemon's log: {}",
        &log[log.len().saturating_sub(4000)..]
    );
    assert!(log.contains("all pieces are downloaded with scheduler"));
    assert!(!log.contains("all pieces are downloaded from source"));
    // The seed host's upload figures, which the policy weighs.
    let hosts = c.api("/api/v1/cluster/hosts").await;
    let seed_host = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "127.0.0.1-sg-test-seed")
        .unwrap();
    assert_eq!(seed_host["uploaded_pieces"], pieces, "{seed_host:#}");
    assert_eq!(seed_host["upload_failed_pieces"], 0, "{seed_host:#}");
    // The origin sent one copy; the peer's stat is a ranged GET of 1 byte.
    let sent = c.origin_bytes();
    assert!(
        (128 * MIB) as u64 <= sent && sent <= (128 * MIB) as u64 + 4096,
        "origin sent {sent} bytes"
    );
    assert!(
        metric(
            &c.sg,
            "seedgate_scheduler_answers_total{kind=\"normal_task\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &c.sg,
            "seedgate_scheduler_policy_calls_total{plugin=\"default\",outcome=\"ok\"}"
        )
        .await
            >= 1.0
    );
}

/// Five real peers fetch one cold 256 MiB object together, each starting
/// as soon as the one before has its parents (well under a second), while
/// seedgate's uploads are held to 16 MiB/s: every copy is right, the origin
/// sends one copy (plus each peer's one-byte stat), the policy ranks every
/// peer's parents, the cluster API shows all five peers and their parents
/// while they download, and the later peers fetch pieces from the earlier
/// ones as well as from seedgate. A peer that has parents is a parent
/// itself before its first piece lands (Dragonfly's in-degree rule), which
/// is what lets peers that start together share.
#[tokio::test]
async fn peers_fetch_from_each_other_as_well_as_from_seedgate() {
    const PEERS: usize = 5;
    let len = 256 * MIB;
    let c = cluster("swarm", len, 402, "upload_rate_limit = \"16 MiB\"").await;
    let names: Vec<String> = (0..PEERS).map(|i| format!("bs-{i}")).collect();
    let peers = futures_util::future::join_all(
        names
            .iter()
            .map(|h| Dfdaemon::start(h, c.scheduler_port, false)),
    )
    .await;
    let mut fetches = Vec::new();
    for peer in &peers {
        let mut fetch = Box::pin(c.fetch(peer));
        tokio::select! {
            () = c.wait_parents(&peer.host_id) => {}
            () = &mut fetch => panic!("{} finished before it was seen placed", peer.hostname),
        }
        fetches.push(fetch);
    }
    // While they run: five peers, each with its parents.
    let during = c.task().await;
    let normal: Vec<&Value> = during["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["host_id"].as_str().unwrap().starts_with("127.0.0.1-bs-"))
        .collect();
    assert_eq!(normal.len(), PEERS, "{during:#}");
    assert!(
        normal
            .iter()
            .all(|p| !p["parents"].as_array().unwrap().is_empty()),
        "{during:#}"
    );
    assert!(
        normal.iter().any(|p| p["state"] != "Succeeded"),
        "all done before the snapshot: {during:#}"
    );
    let started = tokio::time::Instant::now();
    futures_util::future::join_all(fetches).await;

    let task = c.task().await;
    let seed_peer = task["seed_peer"].as_str().unwrap().to_string();
    let pieces = len.div_ceil(4 * MIB) as u64;
    let mut from_peers = 0;
    for peer in &peers {
        let p = peer_of(&task, &peer.host_id);
        assert_eq!(p["state"], "Succeeded", "{p:#}");
        assert_eq!(p["finished_pieces"], pieces, "{p:#}");
        assert_eq!(p["bytes_from_source"], 0, "{p:#}");
        from_peers += p["pieces_by_parent"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(parent, _)| **parent != seed_peer)
            .map(|(_, n)| n.as_u64().unwrap())
            .sum::<u64>();
    }
    assert!(from_peers > 0, "no piece went peer to peer: {task:#}");
    let sent = c.origin_bytes();
    assert!(
        sent <= (len + PEERS * 4096) as u64,
        "origin sent {sent} bytes for a {len}-byte object"
    );
    assert!(
        metric(
            &c.sg,
            "seedgate_scheduler_policy_calls_total{plugin=\"default\",outcome=\"ok\"}"
        )
        .await
            >= PEERS as f64
    );
    eprintln!(
        "pieces fetched peer to peer (not from seedgate): {from_peers} of {}; the last peer ended {:?} after the snapshot",
        PEERS as u64 * pieces,
        started.elapsed()
    );
}

async fn scheduler(port: u16) -> SchedulerClient<tonic::transport::Channel> {
    SchedulerClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// Bad input gets a clear status, and the scheduler keeps serving: a
/// register for a host that never announced, a malformed task id, a URL
/// under no origin, a message before the register, a stream dropped
/// halfway (its peer is left, never handed out); persistent RPCs are
/// unimplemented; a real peer still downloads after all of it.
#[tokio::test]
async fn bad_announces_get_clear_statuses_and_the_scheduler_keeps_serving() {
    use announce_peer_request::Request as R;
    let c = cluster("bad", 8 * MIB, 403, "").await;
    let mut s = scheduler(c.scheduler_port).await;
    let register = |host: &str, task: &str, url: &str| AnnouncePeerRequest {
        host_id: host.into(),
        task_id: task.into(),
        peer_id: format!("{host}-peer"),
        request: Some(R::RegisterPeerRequest(RegisterPeerRequest {
            download: Some(crate::dragonfly::download(url)),
        })),
    };
    let channel = s.clone();
    let first = |m: AnnouncePeerRequest| {
        let mut s = channel.clone();
        async move {
            let mut answers = s
                .announce_peer(futures_util::stream::iter([m]))
                .await
                .unwrap()
                .into_inner();
            answers.message().await
        }
    };
    let task = "a".repeat(64);
    let e = first(register("nobody", &task, &c.url)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("AnnounceHost"), "{e:?}");

    let host = dragonfly_api::common::v2::Host {
        id: "127.0.0.1-bad".into(),
        ip: "127.0.0.1".into(),
        hostname: "bad".into(),
        port: 1,
        ..Default::default()
    };
    s.announce_host(AnnounceHostRequest {
        host: Some(host.clone()),
        interval: None,
    })
    .await
    .unwrap();
    let e = first(register("127.0.0.1-bad", "not-a-task", &c.url))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("64 hex"), "{e:?}");

    // Under no origin: this seedgate cannot seed it, so the peer is sent
    // back to source, with the reason recorded.
    let a = first(register("127.0.0.1-bad", &task, "http://203.0.113.9/x.bin"))
        .await
        .unwrap()
        .unwrap();
    match a.response {
        Some(announce_peer_response::Response::NeedBackToSourceResponse(r)) => {
            assert!(r.description.unwrap().contains("any configured origin"));
        }
        other => panic!("{other:?}"),
    }

    let out_of_order = AnnouncePeerRequest {
        host_id: "127.0.0.1-bad".into(),
        task_id: "b".repeat(64),
        peer_id: "stranger".into(),
        request: Some(R::DownloadPeerStartedRequest(DownloadPeerStartedRequest {})),
    };
    let e = first(out_of_order).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    let e = s
        .stat_persistent_task(StatPersistentTaskRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    let e = s
        .announce_host(AnnounceHostRequest {
            host: Some(dragonfly_api::common::v2::Host {
                ip: "not-an-ip".into(),
                ..host.clone()
            }),
            interval: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // A stream dropped halfway: registered, placed and started, then gone
    // without a terminal message. Its peer is left (state Leave), and
    // never handed out, though it has a parent.
    let head = client()
        .head(c.sg.url("/o/www/sched/bad.bin"))
        .send()
        .await
        .unwrap();
    let real_task = task_of(&head);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let on_stream = |request| AnnouncePeerRequest {
        host_id: "127.0.0.1-bad".into(),
        task_id: real_task.clone(),
        peer_id: "dropped-peer".into(),
        request: Some(request),
    };
    tx.send(on_stream(R::RegisterPeerRequest(RegisterPeerRequest {
        download: Some(crate::dragonfly::download(&c.url)),
    })))
    .await
    .unwrap();
    let mut answers = s
        .announce_peer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let a = answers.message().await.unwrap().unwrap();
    assert!(
        matches!(
            a.response,
            Some(announce_peer_response::Response::NormalTaskResponse(_))
        ),
        "{a:?}"
    );
    tx.send(on_stream(R::DownloadPeerStartedRequest(
        DownloadPeerStartedRequest {},
    )))
    .await
    .unwrap();
    drop((tx, answers));
    let task_path = format!("/api/v1/cluster/tasks/{real_task}");
    let t = tokio::time::Instant::now();
    loop {
        let task = c.api(&task_path).await;
        if peer_of(&task, "127.0.0.1-bad")["state"] == "Leave" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{task:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Still serving: a real peer downloads through it, never from the
    // peer whose stream dropped.
    let peer = Dfdaemon::start("bs-after", c.scheduler_port, false).await;
    c.fetch(&peer).await;
    let task = c.api(&task_path).await;
    let after = peer_of(&task, &peer.host_id);
    assert_eq!(after["state"], "Succeeded", "{after:#}");
    assert!(
        !after.to_string().contains("dropped-peer"),
        "handed the dropped peer: {after:#}"
    );
    let hosts = s
        .list_hosts(ListHostsRequest { r#type: Some(1) })
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(
        hosts.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["127.0.0.1-sg-test-seed"]
    );
    s.delete_host(DeleteHostRequest {
        host_id: "127.0.0.1-bad".into(),
    })
    .await
    .unwrap();
    let hosts = c.api("/api/v1/cluster/hosts").await;
    assert!(!hosts.to_string().contains("127.0.0.1-bad"), "{hosts:#}");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A hostile scheduling policy (`plugins/test-hostile-policy`: garbage for
/// one candidate, a trap for two, an endless loop for three) places
/// nobody wrong: four real peers fetch one after another and all get the
/// right bytes from parents chosen in the built-in order; each failure is
/// counted as a fallback, and after three in a row the policy's breaker
/// opens and the fourth peer is placed without calling it.
#[tokio::test]
async fn a_hostile_policy_never_stops_a_download() {
    let (dir, nginx) = origin();
    let data = pseudo_random(8 * MIB, 404);
    nginx.put("sched/hostile.bin", &data);
    let plugins = dir.path().join("policies");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        seedgate::plugin::test_components::HOSTILE_POLICY,
        plugins.join("hostile-policy.wasm"),
    )
    .unwrap();
    let scheduler_port = free_port();
    let extra = format!(
        "\n[scheduler]\nlisten = \"127.0.0.1:{scheduler_port}\"\npolicy = \"hostile-policy\"\n\
         round_interval = \"100ms\"\n"
    );
    let (config, _) = seed_config(&nginx.base_url(), &[], &extra);
    let config = config.replacen(
        "[seed_peer]",
        &format!(
            "[plugins]\ndir = \"{}\"\n[plugins.breaker]\nconsecutive_failures = 3\nopen_base = \"5m\"\n\
             [plugins.limits.hostile-policy]\ncall_timeout = \"500ms\"\n\n[seed_peer]",
            plugins.display()
        ),
        1,
    );
    let sg = Seedgate::start(dir.path(), &config);
    let c = Cluster {
        url: format!("{}sched/hostile.bin", nginx.base_url()),
        path: "/sched/hostile.bin".into(),
        _dir: dir,
        nginx,
        sg,
        scheduler_port,
        data,
    };
    let mut peers = Vec::new();
    for name in ["bh-1", "bh-2", "bh-3", "bh-4"] {
        let peer = Dfdaemon::start(name, c.scheduler_port, false).await;
        c.fetch(&peer).await;
        peers.push(peer);
    }
    let task = c.task().await;
    for peer in &peers {
        let p = peer_of(&task, &peer.host_id);
        assert_eq!(p["state"], "Succeeded", "{p:#}");
        assert_eq!(
            p["bytes_from_source"], 0,
            "placed, not sent to the origin: {p:#}"
        );
    }
    let calls = |outcome: &'static str| {
        let sg = &c.sg;
        async move {
            metric(
                sg,
                &format!(
                    "seedgate_scheduler_policy_calls_total{{plugin=\"hostile-policy\",outcome=\"{outcome}\"}}"
                ),
            )
            .await
        }
    };
    assert_eq!(calls("ok").await, 0.0);
    assert_eq!(calls("fallback").await, 3.0);
    assert!(calls("breaker_open").await >= 1.0);
    // The policy's breaker is listed with the others.
    let breakers = json(get(&c.sg.url("/api/v1/breakers")).await).await;
    let policy = breakers
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["plugin"] == "hostile-policy")
        .unwrap_or_else(|| panic!("no breaker of the policy: {breakers:#}"));
    assert_eq!(policy["state"], "open", "{policy:#}");
    // The seed first, as the built-in order puts it.
    assert_eq!(
        peer_of(&task, &peers[3].host_id)["parents"][0],
        task["seed_peer"]
    );
    assert!(c.origin_bytes() <= (8 * MIB + 4 * 4096) as u64);
}

/// A dfdaemon killed mid-download (SIGKILL: no DeleteHost) leaves the
/// cluster within twice its announce interval (2 s here), with its peer;
/// a peer that registers afterwards is never handed the dead one, and gets
/// the object whole.
#[tokio::test]
async fn a_killed_peer_leaves_within_twice_its_announce_interval() {
    let len = 64 * MIB;
    let c = cluster("killed", len, 405, "upload_rate_limit = \"8 MiB\"").await;
    let mut doomed = Dfdaemon::start_announcing("bk-doomed", c.scheduler_port, false, "2s").await;
    let mut fetch = Box::pin(c.fetch(&doomed));
    tokio::select! {
        () = c.wait_pieces(&doomed.host_id, 2) => {}
        () = &mut fetch => panic!("finished before it could be killed"),
    }
    drop(fetch);
    let dead_peer = peer_of(&c.task().await, &doomed.host_id)["id"]
        .as_str()
        .unwrap()
        .to_string();
    doomed.kill();
    let killed = tokio::time::Instant::now();
    let host_id = doomed.host_id.clone();
    loop {
        let hosts = c.api("/api/v1/cluster/hosts").await;
        if !hosts.to_string().contains(&host_id) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(8),
            "{host_id} still listed {:?} after the kill: {hosts:#}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone_after = killed.elapsed();
    // 2 × 2 s, plus up to one announce interval since its last announce
    // and the 1 s sweep.
    assert!(gone_after <= Duration::from_secs(7), "{gone_after:?}");
    let task = c.task().await;
    assert!(!task.to_string().contains(&dead_peer), "{task:#}");
    assert!(
        metric(
            &c.sg,
            "seedgate_cluster_host_events_total{event=\"expired\"}"
        )
        .await
            >= 1.0
    );

    let next = Dfdaemon::start("bk-next", c.scheduler_port, false).await;
    c.fetch(&next).await;
    let p = peer_of(&c.task().await, &next.host_id).clone();
    assert!(
        !p.to_string().contains(&dead_peer),
        "handed the dead peer: {p:#}"
    );
    eprintln!("the killed host left the cluster {gone_after:?} after the kill");
}

/// Two seedgates, each a scheduler and a seed peer, list both schedulers
/// in `[seed_peer] schedulers`, and two real dfdaemons list both in their
/// dynconfig. Twenty objects, each fetched by both dfdaemons at once: every
/// copy is right, each object's bytes leave the origin once in total
/// (whichever scheduler a dfdaemon's ring sent it to, both schedulers pick
/// the same seed host), both seedgates seed some of them and none is seeded
/// twice, and no dfdaemon went to the origin.
#[tokio::test]
async fn two_seedgates_share_the_seeding_and_each_object_leaves_the_origin_once() {
    const OBJECTS: usize = 20;
    let len = 6 * MIB;
    let (dir, nginx) = origin();
    let objects: Vec<(String, Vec<u8>)> = (0..OBJECTS)
        .map(|i| {
            let data = pseudo_random(len, 600 + i as u64);
            let key = format!("sched/two-{i:02}.bin");
            nginx.put(&key, &data);
            (key, data)
        })
        .collect();
    let ports = [free_port(), free_port()];
    let schedulers: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut seedgates = Vec::new();
    for (name, port) in ["sg-a", "sg-b"].into_iter().zip(ports) {
        let extra = format!(
            "announce_interval = \"1s\"\nreconnect_backoff_min = \"200ms\"\n\
             reconnect_backoff_max = \"1s\"\n[scheduler]\nlisten = \"127.0.0.1:{port}\"\n"
        );
        let (config, _) = seed_config(&nginx.base_url(), &schedulers, &extra);
        let config = config.replace("hostname = \"sg-test\"", &format!("hostname = \"{name}\""));
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        seedgates.push((name, Seedgate::start(&home, &config)));
    }
    // Every scheduler knows every seed host before a peer asks anything.
    let seed_hosts = ["127.0.0.1-sg-a-seed", "127.0.0.1-sg-b-seed"];
    for (name, sg) in &seedgates {
        let t = tokio::time::Instant::now();
        loop {
            let hosts = json(get(&sg.url("/api/v1/cluster/hosts")).await)
                .await
                .to_string();
            if seed_hosts.iter().all(|h| hosts.contains(h)) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{name}'s scheduler does not list both seed hosts: {hosts}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let peers =
        futures_util::future::join_all(["b2-x", "b2-y"].map(|h| Dfdaemon::start_with(h, &ports)))
            .await;
    let base = nginx.base_url();
    let fetches = objects.iter().enumerate().map(|(i, (key, data))| {
        let (peers, base) = (&peers, &base);
        async move {
            let url = format!("{base}{key}");
            futures_util::future::join_all(peers.iter().map(|peer| {
                let url = url.clone();
                async move {
                    let out = peer.dir.path().join(format!("out-{i}.bin"));
                    peer.dfget(&url, &out).await.unwrap();
                    assert_eq!(
                        sha256(&std::fs::read(&out).unwrap()),
                        sha256(data),
                        "{}: the bytes of {key}",
                        peer.hostname
                    );
                }
            }))
            .await;
        }
    });
    futures_util::stream::iter(fetches)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;

    for (key, _) in &objects {
        let sent = nginx.bytes_sent(&format!("/{key}"));
        assert!(
            len as u64 <= sent && sent <= len as u64 + 2 * 4096,
            "the origin sent {sent} bytes of {key} ({len} bytes): more than one copy"
        );
    }
    // What each seedgate's engine fetched, and what each scheduler placed.
    let mut seeded = Vec::new();
    let mut placed = Vec::new();
    let mut records = Vec::new();
    for (name, sg) in &seedgates {
        let tasks = json(get(&sg.url("/api/v1/tasks")).await).await;
        let ids: Vec<String> = tasks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["task_id"].as_str().unwrap().to_string())
            .collect();
        seeded.push((name, ids));
        let cluster = json(get(&sg.url("/api/v1/cluster/tasks")).await).await;
        let mut asked = 0;
        for t in cluster.as_array().unwrap() {
            let id = t["id"].as_str().unwrap();
            let task = json(get(&sg.url(&format!("/api/v1/cluster/tasks/{id}"))).await).await;
            let normal: Vec<Value> = task["peers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| !p["host_id"].as_str().unwrap().ends_with("-seed"))
                .cloned()
                .collect();
            asked += normal.len();
            records.extend(normal);
        }
        placed.push((name, asked));
    }
    let (a, b) = (&seeded[0].1, &seeded[1].1);
    assert!(
        !a.is_empty() && !b.is_empty(),
        "one seedgate did all the work: {seeded:?}"
    );
    assert_eq!(a.len() + b.len(), OBJECTS, "seeded: {seeded:?}");
    assert!(
        a.iter().all(|id| !b.contains(id)),
        "seeded twice: {seeded:?}"
    );
    assert_eq!(records.len(), 2 * OBJECTS, "peers placed: {records:#?}");
    for p in &records {
        assert_eq!(p["state"], "Succeeded", "{p:#}");
        assert_eq!(p["bytes_from_source"], 0, "went to the origin: {p:#}");
    }
    eprintln!(
        "seeded by sg-a: {}, by sg-b: {}; peers placed by sg-a's scheduler: {}, by sg-b's: {}",
        a.len(),
        b.len(),
        placed[0].1,
        placed[1].1
    );
}

/// seedgate as the scheduler only (`local_seed = false`) of a cluster
/// whose seed peer is a real dfdaemon: a peer's task is started on the
/// dfdaemon seed (`DfdaemonUpload.DownloadTask`), every piece the peers get
/// comes from it or from each other, seedgate's own store stays empty, and
/// the origin sends one copy.
#[tokio::test]
async fn a_scheduler_only_seedgate_places_peers_on_a_dfdaemon_seed_peer() {
    let len = 48 * MIB;
    let (dir, nginx) = origin();
    let data = pseudo_random(len, 4242);
    let key = "sched/dfseed.bin";
    nginx.put(key, &data);
    let port = free_port();
    let (config, _) = seed_config(
        &nginx.base_url(),
        &[],
        &format!("[scheduler]\nlisten = \"127.0.0.1:{port}\"\nlocal_seed = false\n"),
    );
    let sg = Seedgate::start(dir.path(), &config);
    let seed = Dfdaemon::start("bs-dfseed", port, true).await;
    let hosts = json(get(&sg.url("/api/v1/cluster/hosts")).await).await;
    let ids: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [seed.host_id.as_str()], "only the dfdaemon seed host");

    let url = format!("{}{key}", nginx.base_url());
    let mut peers = [
        Dfdaemon::start("bs-dfchild-a", port, false).await,
        Dfdaemon::start("bs-dfchild-b", port, false).await,
    ];
    for peer in &peers {
        let out = peer.dir.path().join("out.bin");
        peer.dfget(&url, &out).await.unwrap();
        assert_eq!(
            sha256(&std::fs::read(&out).unwrap()),
            sha256(&data),
            "{}: the bytes",
            peer.hostname
        );
    }
    let tasks = json(get(&sg.url("/api/v1/cluster/tasks")).await).await;
    let id = tasks[0]["id"].as_str().unwrap().to_string();
    let task = json(get(&sg.url(&format!("/api/v1/cluster/tasks/{id}"))).await).await;
    assert_eq!(task["seed_host"], seed.host_id.as_str(), "{task:#}");
    let seed_peer = peer_of(&task, &seed.host_id);
    assert_eq!(
        seed_peer["back_to_source_reason"], "a seed peer downloads back to source",
        "{task:#}"
    );
    let seed_peer = seed_peer["id"].as_str().unwrap().to_string();
    let pieces = len.div_ceil(4 * MIB) as u64;
    for peer in &peers {
        let p = peer_of(&task, &peer.host_id);
        assert_eq!(p["state"], "Succeeded", "{p:#}");
        assert_eq!(p["bytes_from_source"], 0, "went to the origin: {p:#}");
        assert_eq!(p["finished_pieces"], pieces, "{p:#}");
    }
    assert_eq!(
        peer_of(&task, &peers[0].host_id)["pieces_by_parent"][&seed_peer],
        pieces,
        "the first peer got every piece from the seed: {task:#}"
    );
    let stored = json(get(&sg.url("/api/v1/tasks")).await).await;
    assert_eq!(stored, serde_json::json!([]), "seedgate stored nothing");
    let sent = nginx.bytes_sent(&format!("/{key}"));
    assert!(
        len as u64 <= sent && sent <= len as u64 + 4 * 4096,
        "the origin sent {sent} bytes of a {len}-byte object"
    );
    // A peer stopped as operators stop it (SIGTERM) leaves the scheduler
    // at once (DeleteHost), and its peer with it.
    peers[0].stop().await;
    let gone = &peers[0].host_id;
    let hosts = json(get(&sg.url("/api/v1/cluster/hosts")).await).await;
    assert!(!hosts.to_string().contains(gone.as_str()), "{hosts:#}");
    let task = json(get(&sg.url(&format!("/api/v1/cluster/tasks/{id}"))).await).await;
    assert!(
        task["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["host_id"] != gone.as_str()),
        "{task:#}"
    );
}
