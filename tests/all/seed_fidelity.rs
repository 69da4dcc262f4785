//! seedgate as the seed of real Dragonfly peers (`dfdaemon`/`dfget`
//! 1.5.10), placed by the suite's scheduler, which applies the Go
//! scheduler's rules (`test_scheduler.rs`). In each of three ordinary
//! situations the peer must get its pieces from seedgate, not the origin:
//! after a preheat, after the scheduler forgot the task, and after
//! seedgate deleted the task (the scheduler must have been told).

use std::time::Duration;

use serde_json::json;

use crate::dfdaemon::Dfdaemon;
use crate::dragonfly::seed_config;
use crate::support::*;
use crate::test_scheduler::{Seen, TestScheduler};

const MIB: usize = 1 << 20;
/// Dragonfly's `TrafficType::RemotePeer`.
const REMOTE_PEER: i32 = 1;
const SEEDGATE_HOST: &str = "127.0.0.1-sg-test-seed";

struct Cluster {
    _dir: tempfile::TempDir,
    nginx: Nginx,
    scheduler: TestScheduler,
    sg: Seedgate,
    data: Vec<u8>,
    url: String,
    path: String,
}

/// nginx with one object of `len` bytes, the test scheduler, and seedgate
/// as its seed peer (announced).
async fn cluster(name: &str, len: usize, seed: u64) -> Cluster {
    let (dir, nginx) = origin();
    let data = pseudo_random(len, seed);
    let key = format!("fid/{name}.bin");
    nginx.put(&key, &data);
    let scheduler = TestScheduler::start().await;
    let (config, _) = seed_config(&nginx.base_url(), &[scheduler.address()], "");
    let sg = Seedgate::start(dir.path(), &config);
    wait_until("seedgate is announced", Duration::from_secs(10), || {
        scheduler.state.host_announces() > 0
    })
    .await;
    Cluster {
        url: format!("{}{key}", nginx.base_url()),
        path: format!("/{key}"),
        _dir: dir,
        nginx,
        scheduler,
        sg,
        data,
    }
}

impl Cluster {
    /// A real peer fetches the object with dfget; its bytes are checked.
    /// Returns the peer's host id.
    async fn peer_fetches(&self, hostname: &str) -> Dfdaemon {
        let peer = Dfdaemon::start(hostname, self.scheduler.port, false).await;
        let out = peer.dir.path().join("out.bin");
        peer.dfget(&self.url, &out).await.unwrap();
        assert_eq!(
            sha256(&std::fs::read(&out).unwrap()),
            sha256(&self.data),
            "{hostname}: the bytes"
        );
        peer
    }

    /// Asserts every piece `peer` reported came from seedgate's peer
    /// `parent` as REMOTE_PEER traffic, and returns how many.
    fn pieces_from(&self, peer: &Dfdaemon, parent: &str) -> usize {
        let records = self.scheduler.state.peers_of_host(&peer.host_id);
        assert_eq!(records.len(), 1, "{}: one peer: {records:?}", peer.hostname);
        let p = &records[0];
        let count = self.data.len().div_ceil(4 * MIB);
        assert_eq!(
            p.pieces.len(),
            count,
            "{}: every piece reported: {:?}; answers {:?}\n{}",
            peer.hostname,
            p.pieces,
            p.answers,
            peer.log()
        );
        for (n, from, traffic) in &p.pieces {
            assert_eq!(
                (from.as_deref(), *traffic),
                (Some(parent), REMOTE_PEER),
                "{}: piece {n} came from seedgate; answers {:?}",
                peer.hostname,
                p.answers
            );
        }
        assert_eq!(p.answers[0].kind, "NormalTaskResponse", "{:?}", p.answers);
        count
    }

    /// seedgate's peer for the task on the scheduler (the last registered).
    fn seedgate_peer(&self) -> String {
        let peers = self.scheduler.state.peers_of_host(SEEDGATE_HOST);
        assert_eq!(peers.len(), 1, "seedgate has one peer: {peers:?}");
        peers[0].id.clone()
    }

    /// Piece fetches the origin answered (a peer's stat, a one-byte ranged
    /// GET, is not one).
    fn origin_gets(&self) -> usize {
        self.nginx.piece_gets(&self.path)
    }
}

/// seedgate preheats the object (its own preheat API): the register it
/// sends carries the task's size, so the scheduler does not take the task
/// for empty, and a real peer then gets every piece from seedgate.
#[tokio::test]
async fn a_peer_after_a_preheat_gets_every_piece_from_seedgate() {
    let c = cluster("preheat", 24 * MIB, 301).await;
    let (status, job) = create_preheat(&c.sg, json!({"urls": [c.url]}), None).await;
    assert_eq!(status, 201, "{job}");
    wait_until("the preheat ends", Duration::from_secs(30), || {
        c.scheduler
            .state
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::AnnouncePeerEnd(_)))
    })
    .await;
    let task = c.scheduler.state.peers_of_host(SEEDGATE_HOST)[0]
        .task_id
        .clone();
    let t = c.scheduler.state.task(&task).unwrap();
    assert_eq!(
        (t.content_length, t.piece_count),
        (c.data.len() as u64, 6),
        "the task as the scheduler built it from seedgate's register"
    );
    let gets = c.origin_gets();
    let peer = c.peer_fetches("peer-preheat").await;
    let seedgate = c.seedgate_peer();
    assert_eq!(c.pieces_from(&peer, &seedgate), 6);
    assert_eq!(c.origin_gets(), gets, "the peer did not go to the origin");
}

/// The scheduler forgets the task (restarted); a peer's register makes it
/// trigger seedgate, which has the task stored: seedgate registers it
/// `metadata_only` (as Dragonfly's own seed does), and the peer gets every
/// piece from seedgate instead of being sent back to the origin.
#[tokio::test]
async fn a_peer_after_the_scheduler_forgot_the_task_gets_it_from_seedgate() {
    let c = cluster("forgot", 20 * MIB, 302).await;
    let resp = get(&c.sg.url("/o/www/fid/forgot.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&c.data));
    c.scheduler.state.forget_tasks();
    let gets = c.origin_gets();
    let peer = c.peer_fetches("peer-forgot").await;
    assert_eq!(
        c.scheduler
            .state
            .seed_triggers
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let seedgate = c.seedgate_peer();
    let registers: Vec<_> = c
        .scheduler
        .state
        .seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::AnnouncePeer(_, m) if m.peer_id == seedgate => match m.request {
                Some(dragonfly_api::scheduler::v2::announce_peer_request::Request::RegisterPeerRequest(r)) => r.download,
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(registers.len(), 1);
    assert!(registers[0].metadata_only, "{:?}", registers[0]);
    assert_eq!(
        registers[0].actual_content_length,
        Some(c.data.len() as u64)
    );
    assert_eq!(c.pieces_from(&peer, &seedgate), 5);
    assert_eq!(c.origin_gets(), gets, "nobody went to the origin");
}

/// seedgate deletes the task (the admin API; GC eviction and the gRPC
/// `DeleteTask` take the same path): the scheduler hears `DeleteTask`, and
/// the next peer is never offered seedgate's old peer; the scheduler
/// triggers seedgate again, and the peer gets the pieces from it.
#[tokio::test]
async fn after_a_delete_the_scheduler_is_told_and_the_next_peer_is_not_sent_to_the_old_seed() {
    let c = cluster("deleted", 20 * MIB, 303).await;
    let first = c.peer_fetches("peer-one").await;
    let old = c.seedgate_peer();
    c.pieces_from(&first, &old);
    let task = c.scheduler.state.peers_of_host(SEEDGATE_HOST)[0]
        .task_id
        .clone();
    let resp = client()
        .delete(c.sg.url(&format!("/api/v1/tasks/{task}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    wait_until(
        "the scheduler hears DeleteTask",
        Duration::from_secs(10),
        || {
            c.scheduler
                .state
                .seen()
                .iter()
                .any(|s| matches!(s, Seen::DeleteTask(h, t) if h == SEEDGATE_HOST && *t == task))
        },
    )
    .await;
    assert!(c.scheduler.state.peers_of_host(SEEDGATE_HOST).is_empty());
    let deletes = format!(
        r#"seedgate_scheduler_task_deletes_total{{scheduler="{}",outcome="ok"}}"#,
        c.scheduler.address()
    );
    assert_eq!(metric(&c.sg, &deletes).await, 1.0);
    // The first peer is gone too, so nobody but the origin has the task.
    drop(first);
    c.scheduler
        .state
        .resources
        .lock()
        .peers
        .retain(|_, p| p.host_id != "127.0.0.1-peer-one");
    let gets = c.origin_gets();
    let second = c.peer_fetches("peer-two").await;
    let new = c.seedgate_peer();
    assert_ne!(new, old);
    let records = c.scheduler.state.peers_of_host(&second.host_id);
    assert!(
        records[0].answers.iter().all(|a| !a.parents.contains(&old)),
        "{:?}",
        records[0].answers
    );
    assert_eq!(c.pieces_from(&second, &new), 5);
    assert_eq!(
        c.origin_gets() - gets,
        5,
        "seedgate fetched the object again, the peer did not"
    );
}
