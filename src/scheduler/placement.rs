//! Which parents a peer gets: Dragonfly's filter (`filterCandidateParents`
//! in `scheduler/scheduling/scheduling.go`), then the scheduling-policy
//! plugin's ranking, guarded.
//!
//! **Filter.** Out of at most `filter_parent_limit` peers of the task,
//! picked at random as Dragonfly's `LoadRandomPeers` does, a candidate is
//! dropped when:
//! - it is the peer itself, or on the same host;
//! - the peer blocked it (a `ReschedulePeer` named it, or a piece from it
//!   failed);
//! - its host is gone, or announced `disable_shared`;
//! - its download is not live (pending, empty, failed, left);
//! - it is a normal peer that has neither a finished piece nor a parent
//!   and is not downloading back to source (Dragonfly's "in-degree 0"
//!   rule; seeds are exempt, so a seed that registered qualifies at once).
//!   A peer that was handed parents qualifies before its first piece
//!   lands: its `SyncPieces` stream hands the child each piece as it
//!   lands, which is how peers that start together share pieces;
//! - its host already uploads to `peer_upload_limit` children
//!   (`seed_upload_limit` for a seed).
//!
//! **Rank.** The candidates go to the policy's `rank-parents` with their
//! live figures; its answer, checked by the host, is kept up to
//! `candidate_parent_limit`. When the policy traps, runs out of time or
//! answers nonsense, or its breaker is open, the round is placed by the
//! built-in order instead and counted (`seedgate_scheduler_policy_calls`
//! with outcome `fallback`): seeds first, then the most finished pieces,
//! then the least loaded host, then the peer id. Scheduling never fails
//! because of the policy.

use std::sync::Arc;

use super::cluster::{Cluster, HostEntry, PeerEntry, PeerState};
use crate::config::SchedulerConfig;
use crate::plugin::scheduler::{self as wit, SchedulerPolicy};
use crate::resilience::breaker::Breakers;

/// A candidate that passed the filter, with the figures the policy sees.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub peer: PeerEntry,
    pub host: HostEntry,
    /// Children its host uploads to now.
    pub uploads: u32,
}

fn upload_limit(host: &HostEntry, config: &SchedulerConfig) -> u32 {
    if host.is_seed() {
        config.seed_upload_limit
    } else {
        config.peer_upload_limit
    }
}

/// The candidates for `child` that pass Dragonfly's filter.
pub fn candidates(
    cluster: &Cluster,
    child: &PeerEntry,
    config: &SchedulerConfig,
) -> Vec<Candidate> {
    let Some(task) = cluster.tasks.get(&child.task_id) else {
        return Vec::new();
    };
    let mut ids: Vec<&String> = task.peers.iter().filter(|p| **p != child.id).collect();
    fastrand::shuffle(&mut ids);
    let uploads = cluster.uploads_by_host();
    ids.into_iter()
        .take(config.filter_parent_limit)
        .filter_map(|id| cluster.peers.get(id))
        .filter(|p| p.host_id != child.host_id && !child.blocked.contains(&p.id) && p.is_live())
        .filter_map(|p| {
            let host = cluster.hosts.get(&p.host_id)?;
            if host.host.disable_shared {
                return None;
            }
            if !host.is_seed()
                && p.finished.is_empty()
                && p.parents.is_empty()
                && !matches!(p.state, PeerState::BackToSource | PeerState::Succeeded)
            {
                return None;
            }
            let n = uploads.get(p.host_id.as_str()).copied().unwrap_or(0);
            (n < upload_limit(host, config)).then(|| Candidate {
                peer: p.clone(),
                host: host.clone(),
                uploads: n,
            })
        })
        .collect()
}

fn wit_state(s: PeerState) -> wit::PeerState {
    match s {
        PeerState::Pending => wit::PeerState::Pending,
        PeerState::ReceivedEmpty => wit::PeerState::ReceivedEmpty,
        PeerState::ReceivedNormal => wit::PeerState::ReceivedNormal,
        PeerState::Running => wit::PeerState::Running,
        PeerState::BackToSource => wit::PeerState::BackToSource,
        PeerState::Succeeded => wit::PeerState::Succeeded,
        PeerState::Failed => wit::PeerState::Failed,
        PeerState::Leave => wit::PeerState::Leave,
    }
}

fn wit_host(h: &HostEntry, uploads: u32, config: &SchedulerConfig) -> wit::SchedHost {
    let network = h.host.network.as_ref();
    wit::SchedHost {
        id: h.host.id.clone(),
        host_type: match h.host.r#type {
            0 => wit::HostType::Normal,
            2 => wit::HostType::StrongSeed,
            3 => wit::HostType::WeakSeed,
            _ => wit::HostType::SuperSeed,
        },
        idc: network.and_then(|n| n.idc.clone()).unwrap_or_default(),
        location: network.and_then(|n| n.location.clone()).unwrap_or_default(),
        concurrent_upload_limit: upload_limit(h, config),
        concurrent_upload_count: uploads,
        upload_count: h.uploaded,
        upload_failed_count: h.upload_failed,
        // Dragonfly's figures are bits per second.
        upload_bandwidth: network.map_or(0, |n| n.tx_bandwidth.unwrap_or(n.max_tx_bandwidth) / 8),
    }
}

fn wit_peer(p: &PeerEntry, host: wit::SchedHost, finished: u32) -> wit::Peer {
    wit::Peer {
        id: p.id.clone(),
        state: wit_state(p.state),
        host,
        finished_pieces: finished,
        piece_costs_ms: p.costs.iter().copied().collect(),
    }
}

/// The built-in order: seeds, then most pieces, then least load, then id.
pub fn fallback_order(candidates: &[Candidate], limit: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        b.host
            .is_seed()
            .cmp(&a.host.is_seed())
            .then(b.peer.finished.len().cmp(&a.peer.finished.len()))
            .then(a.uploads.cmp(&b.uploads))
            .then(a.peer.id.cmp(&b.peer.id))
    });
    order.truncate(limit);
    order
}

/// How a round was ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranked {
    Policy,
    /// The policy failed (or its breaker is open): the built-in order.
    Fallback,
}

/// The guarded policy.
pub struct Policy {
    pub plugin: SchedulerPolicy,
    pub breaker: Breakers,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("plugin", &self.plugin.name)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Indexes into `candidates`, best first, at most `limit`; never fails.
    /// `finished` gives the finished pieces of a candidate as the policy
    /// should see them (a seed's are its stored pieces).
    pub async fn rank(
        self: &Arc<Self>,
        child: &PeerEntry,
        child_host: &HostEntry,
        candidates: &[Candidate],
        total_pieces: u32,
        config: &SchedulerConfig,
        finished: impl Fn(&Candidate) -> u32,
    ) -> (Vec<usize>, Ranked) {
        let limit = config.candidate_parent_limit;
        let name = self.plugin.name.clone();
        let ticket = match self.breaker.admit(&name) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "scheduling policy breaker open: built-in order");
                crate::metrics::METRICS.policy_call(&name, "breaker_open");
                return (fallback_order(candidates, limit as usize), Ranked::Fallback);
            }
        };
        let me = wit_peer(
            child,
            wit_host(child_host, 0, config),
            child.finished.len() as u32,
        );
        let peers: Vec<wit::Peer> = candidates
            .iter()
            .map(|c| wit_peer(&c.peer, wit_host(&c.host, c.uploads, config), finished(c)))
            .collect();
        let started = tokio::time::Instant::now();
        let outcome = self
            .plugin
            .rank_parents(&me, &peers, total_pieces, limit)
            .await;
        self.breaker.record(ticket, &outcome);
        let took = started.elapsed();
        match outcome {
            Ok(order) => {
                crate::metrics::METRICS.policy_call(&name, "ok");
                crate::metrics::METRICS.plugin_call(&name, "ok", took);
                (order, Ranked::Policy)
            }
            Err(e) => {
                tracing::warn!(policy = %name, error = %e, "scheduling policy failed: this round is placed in the built-in order");
                crate::metrics::METRICS.policy_call(&name, "fallback");
                crate::metrics::METRICS.plugin_call(&name, "error", took);
                (fallback_order(candidates, limit as usize), Ranked::Fallback)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use dragonfly_api::common::v2 as common;

    use super::*;
    use crate::scheduler::cluster::TaskEntry;

    fn config() -> SchedulerConfig {
        let c: crate::config::Config =
            toml::from_str("[seed_peer]\n[scheduler]\npeer_upload_limit = 1\n").unwrap();
        c.scheduler.unwrap()
    }

    fn host(cluster: &mut Cluster, id: &str, seed: bool) {
        let host = common::Host {
            id: id.into(),
            r#type: u32::from(seed),
            ip: "127.0.0.1".into(),
            ..Default::default()
        };
        cluster
            .announce(host, std::time::Duration::from_secs(60), false, &config())
            .unwrap();
    }

    fn peer(cluster: &mut Cluster, id: &str, host: &str, state: PeerState, pieces: u32) {
        let mut p = PeerEntry::new(id, host, "t");
        p.state = state;
        p.finished = (0..pieces).collect();
        cluster.add_peer(p, &config()).unwrap();
    }

    fn swarm() -> Cluster {
        let mut c = Cluster::default();
        c.tasks.insert(
            "t".into(),
            TaskEntry {
                id: "t".into(),
                url: "http://o/x".into(),
                content_length: 40 << 20,
                piece_length: 4 << 20,
                piece_count: 10,
                peers: Default::default(),
                seed_peer: Some("seed".into()),
                seed_host: Some("hs".into()),
                created_at_ms: 0,
            },
        );
        for (h, seed) in [
            ("hs", true),
            ("h1", false),
            ("h2", false),
            ("h3", false),
            ("h4", false),
        ] {
            host(&mut c, h, seed);
        }
        peer(&mut c, "seed", "hs", PeerState::Running, 0);
        peer(&mut c, "child", "h1", PeerState::ReceivedNormal, 0);
        peer(&mut c, "with-pieces", "h2", PeerState::Running, 4);
        peer(&mut c, "no-pieces", "h3", PeerState::Running, 0);
        peer(&mut c, "failed", "h4", PeerState::Failed, 9);
        c
    }

    fn ids(c: &[Candidate]) -> Vec<&str> {
        let mut v: Vec<&str> = c.iter().map(|c| c.peer.id.as_str()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_filter_keeps_seeds_and_peers_with_pieces() {
        let c = swarm();
        let child = c.peers["child"].clone();
        // Not itself, not a normal peer without pieces, not a failed one;
        // a seed qualifies with none.
        assert_eq!(
            ids(&candidates(&c, &child, &config())),
            ["seed", "with-pieces"]
        );
        let mut blocked = child.clone();
        blocked.blocked.insert("seed".into());
        assert_eq!(ids(&candidates(&c, &blocked, &config())), ["with-pieces"]);
        // A peer on the child's own host is never its parent.
        let mut same_host = child.clone();
        same_host.host_id = "h2".into();
        assert_eq!(ids(&candidates(&c, &same_host, &config())), ["seed"]);
    }

    /// Dragonfly's in-degree rule: a normal peer with no piece yet is a
    /// parent once it has parents of its own (its pieces reach the child
    /// as they land), or while it downloads back to source.
    #[test]
    fn a_peer_without_pieces_qualifies_once_it_has_parents_or_goes_to_source() {
        let mut c = swarm();
        let child = c.peers["child"].clone();
        c.peers.get_mut("no-pieces").unwrap().parents = vec!["seed".into()];
        assert_eq!(
            ids(&candidates(&c, &child, &config())),
            ["no-pieces", "seed", "with-pieces"]
        );
        let p = c.peers.get_mut("no-pieces").unwrap();
        p.parents.clear();
        p.state = PeerState::BackToSource;
        assert_eq!(
            ids(&candidates(&c, &child, &config())),
            ["no-pieces", "seed", "with-pieces"]
        );
    }

    #[test]
    fn a_host_at_its_upload_limit_is_left_out() {
        let mut c = swarm();
        // Another child already downloads from `with-pieces` (limit 1).
        host(&mut c, "h5", false);
        peer(&mut c, "other", "h5", PeerState::Running, 0);
        c.peers.get_mut("other").unwrap().parents = vec!["with-pieces".into()];
        let child = c.peers["child"].clone();
        // `other` has a parent, so it is a candidate itself.
        assert_eq!(ids(&candidates(&c, &child, &config())), ["other", "seed"]);
    }

    #[test]
    fn a_disable_shared_host_is_left_out() {
        let mut c = swarm();
        c.hosts.get_mut("h2").unwrap().host.disable_shared = true;
        let child = c.peers["child"].clone();
        assert_eq!(ids(&candidates(&c, &child, &config())), ["seed"]);
    }

    #[test]
    fn the_built_in_order_puts_seeds_first_then_pieces_then_load() {
        let mut c = swarm();
        peer(&mut c, "more-pieces", "h3", PeerState::Running, 8);
        let child = c.peers["child"].clone();
        let mut cands = candidates(&c, &child, &config());
        cands.sort_by(|a, b| a.peer.id.cmp(&b.peer.id));
        let order: Vec<&str> = fallback_order(&cands, 3)
            .into_iter()
            .map(|i| cands[i].peer.id.as_str())
            .collect();
        assert_eq!(order, ["seed", "more-pieces", "with-pieces"]);
        assert_eq!(fallback_order(&cands, 1).len(), 1);
    }

    #[test]
    fn a_silent_host_expires_with_its_peers_and_the_local_one_never() {
        let mut c = swarm();
        c.hosts.get_mut("hs").unwrap().local = true;
        let later = tokio::time::Instant::now() + std::time::Duration::from_secs(61);
        let gone: Vec<String> = c.expire(later).into_iter().map(|h| h.host.id).collect();
        assert_eq!(gone.len(), 4, "{gone:?}");
        assert!(c.hosts.contains_key("hs"));
        assert_eq!(c.peers.keys().collect::<Vec<_>>(), ["seed"]);
        assert_eq!(c.tasks["t"].peers.len(), 1);
        // A task keeps while one peer does; the sweep drops it after.
        c.drop_idle_tasks();
        assert!(c.tasks.contains_key("t"));
        c.remove_peer("seed");
        assert_eq!(c.tasks["t"].seed_peer, None);
        c.drop_idle_tasks();
        assert!(c.tasks.is_empty());
    }
}
