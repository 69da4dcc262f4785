//! The built-in scheduling policy (Dragonfly's base evaluator), called
//! through the host exactly as the seed peer will call it.

use seedgate::config::PluginsConfig;
use seedgate::plugin::PluginHost;
use seedgate::plugin::scheduler::{
    HostType, Peer, PeerState, PieceAvailability, SchedHost, SchedulerPolicy,
};

fn policy() -> SchedulerPolicy {
    let host = PluginHost::new(PluginsConfig::default(), None).unwrap();
    host.builtin_scheduler("default").unwrap()
}

/// A running normal peer on an idle host that never uploaded, holding 5 of
/// 10 pieces: every feature but the one a test varies is equal.
fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        state: PeerState::Running,
        host: SchedHost {
            id: format!("host-{id}"),
            host_type: HostType::Normal,
            idc: String::new(),
            location: String::new(),
            concurrent_upload_limit: 10,
            concurrent_upload_count: 0,
            upload_count: 0,
            upload_failed_count: 0,
            upload_bandwidth: 0,
        },
        finished_pieces: 5,
        piece_costs_ms: vec![],
    }
}

fn ids(candidates: &[Peer], ranked: &[usize]) -> Vec<String> {
    ranked.iter().map(|&i| candidates[i].id.clone()).collect()
}

/// IDC and location affinity: same IDC and location (0.15 + 0.15) beats
/// same IDC only (0.15) beats two shared location elements (0.06) beats
/// nothing known.
#[tokio::test]
async fn affinity_ranks_as_dragonfly_weights_it() {
    let p = policy();
    let mut child = peer("child");
    child.host.idc = "dc1".into();
    child.host.location = "cn|hz|r1".into();
    let mut a = peer("a");
    a.host.idc = "DC1".into();
    a.host.location = "cn|hz|r1".into();
    let mut b = peer("b");
    b.host.idc = "dc2".into();
    b.host.location = "cn|hz|r2".into();
    let mut c = peer("c");
    c.host.idc = "dc1".into();
    c.host.location = "us|sf".into();
    let d = peer("d");
    let candidates = vec![d, b, c, a];
    let ranked = p.rank_parents(&child, &candidates, 10, 4).await.unwrap();
    assert_eq!(ids(&candidates, &ranked), ["a", "c", "b", "d"]);
}

/// Load, upload history, finished pieces and host type, one at a time.
#[tokio::test]
async fn load_history_pieces_and_host_type() {
    let p = policy();
    let child = peer("child");

    let mut busy = peer("busy");
    busy.host.concurrent_upload_count = 10; // no free slot: -0.15
    let mut flaky = peer("flaky");
    flaky.host.upload_count = 10;
    flaky.host.upload_failed_count = 5; // success 0.5: -0.10
    let mut behind = peer("behind");
    behind.finished_pieces = 1; // 1/10 instead of 5/10: -0.08
    let mut seed = peer("seed");
    seed.host.host_type = HostType::SuperSeed; // running seed: +0.075
    let plain = peer("plain");
    let candidates = vec![busy, flaky, behind, plain, seed];
    let ranked = p.rank_parents(&child, &candidates, 10, 10).await.unwrap();
    assert_eq!(
        ids(&candidates, &ranked),
        ["seed", "plain", "behind", "flaky", "busy"]
    );

    // A seed that has finished scores 0 for its type (Dragonfly prefers
    // seeds only while they are still running the task).
    let mut done_seed = peer("done-seed");
    done_seed.host.host_type = HostType::SuperSeed;
    done_seed.state = PeerState::Succeeded;
    let candidates = vec![done_seed, peer("plain")];
    let ranked = p.rank_parents(&child, &candidates, 10, 10).await.unwrap();
    assert_eq!(ids(&candidates, &ranked), ["plain", "done-seed"]);
}

/// Failed, departed and not-yet-started peers are never parents, nor is a
/// peer whose last piece took over 20× its mean; the child itself is not
/// its own parent; the limit caps the answer.
#[tokio::test]
async fn bad_parents_are_left_out() {
    let p = policy();
    let child = peer("child");
    let mut failed = peer("failed");
    failed.state = PeerState::Failed;
    let mut left = peer("left");
    left.state = PeerState::Leave;
    let mut pending = peer("pending");
    pending.state = PeerState::Pending;
    let mut stalled = peer("stalled");
    stalled.piece_costs_ms = vec![10, 10, 10, 500];
    let mut steady = peer("steady");
    steady.piece_costs_ms = vec![10, 10, 10, 150];
    let mut outlier = peer("outlier");
    // 30 samples: mean + 3σ decides. 29 costs of 100 ± 10 then 200.
    outlier.piece_costs_ms = (0..29).map(|i| 90 + (i % 3) * 10).chain([200]).collect();
    let candidates = vec![
        failed,
        left,
        pending,
        stalled,
        steady,
        outlier,
        peer("child"),
        peer("ok"),
    ];
    let ranked = p.rank_parents(&child, &candidates, 10, 10).await.unwrap();
    let mut got = ids(&candidates, &ranked);
    got.sort();
    assert_eq!(got, ["ok", "steady"]);
    let ranked = p.rank_parents(&child, &candidates, 10, 1).await.unwrap();
    assert_eq!(ranked.len(), 1);
}

/// Same question, same answer; ties go to the higher upload bandwidth,
/// then the lower peer id.
#[tokio::test]
async fn answers_are_deterministic_and_ties_are_broken() {
    let p = policy();
    let child = peer("child");
    let mut fast = peer("z-fast");
    fast.host.upload_bandwidth = 1 << 30;
    let candidates = vec![peer("m"), peer("b"), fast, peer("k")];
    let first = p.rank_parents(&child, &candidates, 10, 10).await.unwrap();
    assert_eq!(ids(&candidates, &first), ["z-fast", "b", "k", "m"]);
    for _ in 0..5 {
        assert_eq!(
            p.rank_parents(&child, &candidates, 10, 10).await.unwrap(),
            first
        );
    }
    // With the total unknown, the piece score is the lead over the child.
    let mut ahead = peer("ahead");
    ahead.finished_pieces = 9;
    let candidates = vec![peer("even"), ahead];
    let ranked = p.rank_parents(&child, &candidates, 0, 10).await.unwrap();
    assert_eq!(ids(&candidates, &ranked), ["ahead", "even"]);
}

/// Pieces are fetched rarest first, lowest number among equals, each once.
#[tokio::test]
async fn pieces_are_ordered_rarest_first() {
    let p = policy();
    let missing: Vec<PieceAvailability> = [(4, 3), (1, 1), (7, 0), (2, 1), (9, 5)]
        .into_iter()
        .map(|(number, holders)| PieceAvailability { number, holders })
        .collect();
    assert_eq!(p.order_pieces(&missing).await.unwrap(), [7, 1, 2, 4, 9]);
    assert_eq!(p.order_pieces(&[]).await.unwrap(), Vec::<u32>::new());
}
