//! A scheduling policy that misbehaves, chosen by how many candidates it
//! is given, so a test that adds one peer at a time meets each:
//!
//! - 1 candidate: answers garbage (an index out of range, twice);
//! - 2 candidates: traps (a panic aborts the component);
//! - 3 or more: loops until the host's deadline kills it.
//!
//! `order-pieces` answers nothing, which is not every missing piece.

use seedgate_plugin_sdk::scheduler::{Peer, PieceAvailability, Scheduling};

struct Hostile;

impl Scheduling for Hostile {
    fn rank_parents(_child: Peer, candidates: Vec<Peer>, _total: u32, _limit: u32) -> Vec<u32> {
        match candidates.len() {
            0 | 1 => vec![99, 99],
            2 => panic!("this policy traps with two candidates"),
            _ => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
        }
    }

    fn order_pieces(_missing: Vec<PieceAvailability>) -> Vec<u32> {
        Vec::new()
    }
}

seedgate_plugin_sdk::export_scheduler!(Hostile);
