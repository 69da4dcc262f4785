//! seedgate's default scheduling policy: Dragonfly's base evaluator
//! (`scheduler/scheduling/evaluator/evaluator_base.go`), so a swarm behaves
//! as it would under a Dragonfly scheduler.
//!
//! A candidate parent is left out when it is bad: its peer has failed, left
//! or not started, or its last piece took far longer than the ones before
//! (more than 20× their mean with fewer than 30 samples, beyond mean + 3σ
//! with 30 or more). The others are scored
//!
//! | feature | weight | score |
//! |---|---|---|
//! | finished pieces | 0.20 | parent's pieces / total (or parent − child while the total is unknown) |
//! | upload success | 0.20 | (uploads − failed) / uploads; 1 for a host that never uploaded |
//! | free upload slots | 0.15 | free slots / limit (load) |
//! | host type | 0.15 | normal 0.5; a seed 1 while running, else 0 |
//! | IDC affinity | 0.15 | 1 when both are in the same IDC |
//! | location affinity | 0.15 | shared leading `|` elements / 5 |
//!
//! and ranked by score. Ties, which Dragonfly leaves to an unstable sort,
//! go to the higher upload bandwidth, then the lower peer id, so the answer
//! is deterministic. Pieces are fetched rarest first, lowest number first
//! among equals.

use seedgate_plugin_sdk::scheduler::{HostType, Peer, PeerState, PieceAvailability, Scheduling};

struct DefaultPolicy;

const FINISHED_PIECE_WEIGHT: f64 = 0.2;
const UPLOAD_SUCCESS_WEIGHT: f64 = 0.2;
const FREE_UPLOAD_WEIGHT: f64 = 0.15;
const HOST_TYPE_WEIGHT: f64 = 0.15;
const IDC_AFFINITY_WEIGHT: f64 = 0.15;
const LOCATION_AFFINITY_WEIGHT: f64 = 0.15;

/// Location elements compared at most.
const MAX_ELEMENT_LEN: usize = 5;
/// Fewer piece costs than this: the cost check is skipped.
const MIN_AVAILABLE_COST_LEN: usize = 2;
/// From this many samples on, costs are taken as normally distributed.
const NORMAL_DISTRIBUTION_LEN: usize = 30;

fn is_bad_parent(peer: &Peer) -> bool {
    use PeerState::*;
    if matches!(
        peer.state,
        Failed | Leave | Pending | ReceivedTiny | ReceivedSmall | ReceivedNormal | ReceivedEmpty
    ) {
        return true;
    }
    let costs = &peer.piece_costs_ms;
    if costs.len() < MIN_AVAILABLE_COST_LEN {
        return false;
    }
    let (last, before) = costs.split_last().expect("at least two costs");
    let last = *last as f64;
    let mean = before.iter().map(|&c| c as f64).sum::<f64>() / before.len() as f64;
    if costs.len() < NORMAL_DISTRIBUTION_LEN {
        return last > mean * 20.0;
    }
    let variance = before
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / before.len() as f64;
    last > mean + 3.0 * variance.sqrt()
}

fn piece_score(parent: &Peer, child: &Peer, total: u32) -> f64 {
    if total > 0 {
        parent.finished_pieces as f64 / total as f64
    } else {
        parent.finished_pieces as f64 - child.finished_pieces as f64
    }
}

fn upload_success_score(parent: &Peer) -> f64 {
    let (count, failed) = (parent.host.upload_count, parent.host.upload_failed_count);
    if count < failed {
        0.0
    } else if count == 0 {
        // Never scheduled: try it first.
        1.0
    } else {
        (count - failed) as f64 / count as f64
    }
}

fn free_upload_score(parent: &Peer) -> f64 {
    let limit = parent.host.concurrent_upload_limit;
    let free = limit.saturating_sub(parent.host.concurrent_upload_count);
    if limit > 0 && free > 0 {
        free as f64 / limit as f64
    } else {
        0.0
    }
}

fn host_type_score(parent: &Peer) -> f64 {
    if parent.host.host_type != HostType::Normal {
        if matches!(parent.state, PeerState::ReceivedNormal | PeerState::Running) {
            1.0
        } else {
            0.0
        }
    } else {
        0.5
    }
}

fn idc_affinity_score(a: &str, b: &str) -> f64 {
    if !a.is_empty() && !b.is_empty() && a.eq_ignore_ascii_case(b) {
        1.0
    } else {
        0.0
    }
}

fn location_affinity_score(a: &str, b: &str) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    if a.eq_ignore_ascii_case(b) {
        return 1.0;
    }
    let shared = a
        .split('|')
        .zip(b.split('|'))
        .take(MAX_ELEMENT_LEN)
        .take_while(|(x, y)| x.eq_ignore_ascii_case(y))
        .count();
    shared as f64 / MAX_ELEMENT_LEN as f64
}

fn score(parent: &Peer, child: &Peer, total: u32) -> f64 {
    FINISHED_PIECE_WEIGHT * piece_score(parent, child, total)
        + UPLOAD_SUCCESS_WEIGHT * upload_success_score(parent)
        + FREE_UPLOAD_WEIGHT * free_upload_score(parent)
        + HOST_TYPE_WEIGHT * host_type_score(parent)
        + IDC_AFFINITY_WEIGHT * idc_affinity_score(&parent.host.idc, &child.host.idc)
        + LOCATION_AFFINITY_WEIGHT
            * location_affinity_score(&parent.host.location, &child.host.location)
}

impl Scheduling for DefaultPolicy {
    fn rank_parents(child: Peer, candidates: Vec<Peer>, total_pieces: u32, limit: u32) -> Vec<u32> {
        let mut ranked: Vec<(f64, &Peer, u32)> = candidates
            .iter()
            .enumerate()
            .filter(|(_, p)| p.id != child.id && p.host.id != child.host.id && !is_bad_parent(p))
            .map(|(i, p)| (score(p, &child, total_pieces), p, i as u32))
            .collect();
        ranked.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(b.1.host.upload_bandwidth.cmp(&a.1.host.upload_bandwidth))
                .then(a.1.id.cmp(&b.1.id))
        });
        ranked
            .into_iter()
            .take(limit as usize)
            .map(|(_, _, i)| i)
            .collect()
    }

    fn order_pieces(missing: Vec<PieceAvailability>) -> Vec<u32> {
        let mut pieces = missing;
        pieces.sort_by_key(|p| p.number);
        pieces.dedup_by_key(|p| p.number);
        pieces.sort_by_key(|p| (p.holders, p.number));
        pieces.into_iter().map(|p| p.number).collect()
    }
}

seedgate_plugin_sdk::export_scheduler!(DefaultPolicy);
