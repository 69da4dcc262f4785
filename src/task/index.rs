//! What is stored, in memory, for eviction and for the API: bytes
//! recorded and last access per task, who holds it (leases), and the
//! complete tasks kept hot for readers.

use std::collections::HashMap;
use std::sync::Arc;

use super::TaskManager;
use super::object::Hot;
use crate::clock::now_ms;

/// In-memory view of what is stored, for eviction: bytes recorded and last
/// access per task, and who holds it.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Keyed by task id with foldhash (per-process random seed): a hit
    /// looks its task up three times, and SipHash over a 64-digit id was
    /// most of the cost.
    pub(super) tasks: HashMap<String, Usage, foldhash::fast::RandomState>,
    /// Hot copies in the order they were made, each with its number: the
    /// oldest is dropped (closing its content file) when more than
    /// `storage.open_files` would be kept. An entry whose task has since
    /// lost or remade its copy is skipped when it comes up.
    hot_order: std::collections::VecDeque<(String, u64)>,
    hot_made: u64,
    /// Sum of `stored` over all tasks.
    pub(super) stored: u64,
    /// Tasks whose completion is written but not yet flushed: not "stored"
    /// until it is, so nobody is told a task survives a crash before it
    /// would.
    pub(super) finishing: std::collections::HashSet<String>,
    /// Bytes admitted downloads may still write (their content files are
    /// sparse: the space is not used yet, but it is spoken for).
    pub(super) promised: u64,
}

#[derive(Debug, Default)]
pub(super) struct Usage {
    pub(super) stored: u64,
    pub(super) accessed_ms: u64,
    /// Readers and downloads holding the task; never evicted while > 0.
    pub(super) leases: usize,
    /// A complete task as readers need it, once read; dropped whenever its
    /// pieces change (and with the task), or when it is the oldest of more
    /// than `storage.open_files`.
    pub(super) hot: Option<Arc<Hot>>,
    /// Which copy `hot` is, for `Index::hot_order`.
    hot_number: u64,
}

impl Index {
    pub(super) fn add(&mut self, id: &str, bytes: u64) {
        let u = self.tasks.entry(id.to_string()).or_default();
        u.stored += bytes;
        u.hot = None;
        self.stored += bytes;
    }

    pub(super) fn sub(&mut self, id: &str, bytes: u64) {
        if let Some(u) = self.tasks.get_mut(id) {
            let bytes = bytes.min(u.stored);
            u.stored -= bytes;
            u.hot = None;
            self.stored -= bytes;
        }
    }

    pub(super) fn clear(&mut self, id: &str) {
        self.sub(id, u64::MAX);
    }

    /// Keeps `hot` as the hot copy of `id`, then drops the oldest copies
    /// until at most `max` are kept (each holds its content file open).
    pub(super) fn keep_hot(&mut self, id: &str, hot: Arc<Hot>, max: usize) {
        let Some(u) = self.tasks.get_mut(id) else {
            return;
        };
        self.hot_made += 1;
        u.hot = Some(hot);
        u.hot_number = self.hot_made;
        self.hot_order.push_back((id.to_string(), self.hot_made));
        while self.hot_order.len() > max.max(1) {
            let Some((old, number)) = self.hot_order.pop_front() else {
                break;
            };
            if let Some(u) = self.tasks.get_mut(&old)
                && u.hot_number == number
            {
                u.hot = None;
            }
        }
    }

    /// Hot copies kept now.
    #[cfg(test)]
    pub(super) fn hot_count(&self) -> usize {
        self.tasks.values().filter(|u| u.hot.is_some()).count()
    }

    /// Forgets a task; returns the bytes it had stored.
    pub(super) fn remove(&mut self, id: &str) -> u64 {
        let stored = self.tasks.remove(id).map_or(0, |u| u.stored);
        self.stored -= stored;
        stored
    }
}

/// Holds a task against eviction until dropped.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) index: Arc<parking_lot::Mutex<Index>>,
    pub(super) id: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut index = self.index.lock();
        if let Some(u) = index.tasks.get_mut(&self.id) {
            u.leases -= 1;
            u.accessed_ms = now_ms();
        }
    }
}

impl TaskManager {
    pub(super) fn lease(&self, id: &str) -> Lease {
        self.lease_hot(id).0
    }

    /// Leases `id` and, under the same lock, takes its hot copy if it has
    /// one and is not finishing: a hit takes the index lock once here.
    pub(super) fn lease_hot(&self, id: &str) -> (Lease, Option<Arc<Hot>>) {
        let mut index = self.index.lock();
        let finishing = !index.finishing.is_empty() && index.finishing.contains(id);
        // Looked up before inserting: a stored task's key is not copied.
        if !index.tasks.contains_key(id) {
            index.tasks.insert(id.to_string(), Usage::default());
        }
        let u = index.tasks.get_mut(id).expect("inserted above");
        u.leases += 1;
        u.accessed_ms = now_ms();
        let hot = if finishing { None } else { u.hot.clone() };
        drop(index);
        let lease = Lease {
            index: self.index.clone(),
            id: id.to_string(),
        };
        (lease, hot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete one-byte task's hot copy.
    fn hot(id: &str) -> Arc<Hot> {
        Arc::new(Hot {
            record: Arc::new(crate::storage::TaskRecord {
                id: id.into(),
                url: format!("http://o/{id}"),
                content_length: 1,
                piece_length: 4 << 20,
                etag: None,
                last_modified: None,
                content_type: None,
                state: crate::storage::TaskState::Succeeded,
                created_at_ms: 0,
                accessed_at_ms: 0,
            }),
            pieces: Arc::new(Vec::new()),
            file: Arc::new(tempfile::tempfile().unwrap()),
            checked: Arc::new(crate::task::object::Checked::new(0)),
            headers: Default::default(),
        })
    }

    #[test]
    fn stored_bytes_add_up_and_never_go_negative() {
        let mut index = Index::default();
        index.add("a", 10);
        index.add("a", 5);
        index.add("b", 7);
        assert_eq!(index.stored, 22);
        index.sub("a", 100); // more than it has: clamps to what it has
        assert_eq!((index.stored, index.tasks["a"].stored), (7, 0));
        index.sub("nobody", 3);
        assert_eq!(index.stored, 7);
        index.add("a", 4);
        index.clear("a");
        assert_eq!(index.stored, 7);
        assert_eq!(index.remove("b"), 7);
        assert_eq!(index.remove("b"), 0);
        assert_eq!(index.stored, 0);
    }

    #[test]
    fn no_more_hot_copies_than_allowed_are_kept_and_the_oldest_go() {
        let mut index = Index::default();
        for i in 0..10 {
            let id = format!("t{i}");
            index.add(&id, 1);
            index.keep_hot(&id, hot(&id), 4);
        }
        assert_eq!(index.hot_count(), 4);
        assert!((6..10).all(|i| index.tasks[&format!("t{i}")].hot.is_some()));
        // A copy dropped and made again counts once; its old entry is
        // skipped when it comes up.
        index.sub("t6", 0);
        index.keep_hot("t6", hot("t6"), 4);
        index.keep_hot("t0", hot("t0"), 4);
        assert_eq!(index.hot_count(), 4);
        assert!(index.tasks["t7"].hot.is_none(), "the oldest live copy went");
        assert!(index.tasks["t6"].hot.is_some() && index.tasks["t0"].hot.is_some());
        assert!(index.hot_order.len() <= 4);
    }

    #[test]
    fn a_change_of_pieces_drops_the_hot_copy() {
        let mut index = Index::default();
        index.add("a", 1);
        let hot = hot("a");
        index.tasks.get_mut("a").unwrap().hot = Some(hot);
        index.sub("a", 0);
        assert!(index.tasks["a"].hot.is_none());
    }

    #[test]
    fn a_lease_holds_its_task_until_dropped() {
        let index = Arc::new(parking_lot::Mutex::new(Index::default()));
        index.lock().tasks.entry("a".into()).or_default().leases = 2;
        let lease = Lease {
            index: index.clone(),
            id: "a".into(),
        };
        drop(lease);
        assert_eq!(index.lock().tasks["a"].leases, 1);
        assert!(index.lock().tasks["a"].accessed_ms > 0);
    }
}
