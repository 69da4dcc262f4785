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
    pub(super) tasks: HashMap<String, Usage>,
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
    /// pieces change (and with the task).
    pub(super) hot: Option<Arc<Hot>>,
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
        let mut index = self.index.lock();
        let u = index.tasks.entry(id.to_string()).or_default();
        u.leases += 1;
        u.accessed_ms = now_ms();
        Lease {
            index: self.index.clone(),
            id: id.to_string(),
        }
    }
}
