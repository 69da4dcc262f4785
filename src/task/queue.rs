//! Which pieces a download fetches next.

use std::collections::{BTreeSet, VecDeque};

/// Which pieces a download fetches next: those readers wait for first,
/// then the rest in order.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) urgent: VecDeque<u32>,
    pub(super) pending: BTreeSet<u32>,
}

impl Queue {
    /// The pieces of `count` not yet `have`, with piece `first` first.
    pub(super) fn new(count: u32, first: u32, have: impl Fn(u32) -> bool) -> Self {
        Self {
            urgent: VecDeque::from([first]),
            pending: (0..count).filter(|n| !have(*n)).collect(),
        }
    }

    /// The piece to fetch next: the oldest one a reader waits for, else
    /// the lowest pending one. Each piece is handed out once.
    pub(super) fn next(&mut self) -> Option<u32> {
        while let Some(n) = self.urgent.pop_front() {
            if self.pending.remove(&n) {
                return Some(n);
            }
        }
        self.pending.pop_first()
    }

    /// A reader waits for piece `n`: fetch it next (unless it is already
    /// being fetched or stored).
    pub(super) fn want(&mut self, n: u32) {
        if self.pending.contains(&n) && !self.urgent.contains(&n) {
            self.urgent.push_back(n);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_reorder_the_queue_and_each_piece_goes_once() {
        // Pieces 1 and 4 are stored; a reader starts at piece 3.
        let mut q = Queue::new(6, 3, |n| n == 1 || n == 4);
        q.want(5);
        q.want(5);
        q.want(1); // stored: not fetched again
        let order: Vec<u32> = std::iter::from_fn(|| q.next()).collect();
        assert_eq!(order, [3, 5, 0, 2]);
        assert!(q.is_empty());
        q.want(0); // already handed out
        assert_eq!(q.next(), None);
    }

    #[test]
    fn a_first_piece_already_stored_is_skipped() {
        let mut q = Queue::new(3, 0, |n| n == 0);
        assert_eq!(q.next(), Some(1));
        let mut none = Queue::new(2, 0, |_| true);
        assert!(none.is_empty());
        assert_eq!(none.next(), None);
    }
}
