//! Keeps disk use bounded: evicts least-recently-used tasks that nobody
//! holds when usage crosses the high watermark (down to the low one), and
//! tasks unread for longer than the TTL. Deleting a task unlinks its content
//! file, so its space is free at once.
//!
//! Usage is seedgate's own recorded bytes against `storage.quota`, or, with
//! no quota, the filesystem's usage against its size (as Dragonfly's GC).

use std::sync::Arc;

use super::TaskManager;
use crate::clock::now_ms;
use crate::error::{Error, ErrorKind, Result};

/// What one collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub expired: usize,
    pub evicted: usize,
    pub freed: u64,
}

impl TaskManager {
    /// Runs the collector every `gc_interval`, and at once when a stored
    /// piece crosses the high watermark.
    pub fn spawn_gc(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let interval = self.gc.gc_interval;
        tokio::spawn(async move {
            loop {
                let Some(kick) = me.upgrade() else { return };
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = kick.gc_kick.notified() => {}
                }
                let run = tokio::task::spawn_blocking(move || kick.collect()).await;
                match run {
                    Ok(Ok(r)) if r != GcReport::default() => {
                        tracing::info!(
                            expired = r.expired,
                            evicted = r.evicted,
                            freed = r.freed,
                            "storage collected"
                        )
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "storage collection failed"),
                    Err(e) => tracing::warn!(error = %e, "storage collector panicked"),
                }
            }
        });
    }

    /// (limit, used) in bytes for the watermarks: the quota and the bytes
    /// stored, or the filesystem's size and use.
    pub fn usage(&self) -> Result<(u64, u64)> {
        Ok(match self.gc.quota {
            Some(q) => (q.as_u64(), self.index.lock().stored),
            None => self.storage.filesystem_usage()?,
        })
    }

    /// The high and low watermarks in bytes for a usage limit.
    fn watermarks(&self, limit: u64) -> (u64, u64) {
        (
            (limit as f64 * self.gc.high_watermark) as u64,
            (limit as f64 * self.gc.low_watermark) as u64,
        )
    }

    /// Whether usage is above the high watermark (the collector should run).
    pub(super) fn over_high_watermark(&self) -> bool {
        self.usage()
            .is_ok_and(|(limit, used)| used > self.watermarks(limit).0)
    }

    /// One pass: TTL first, then watermarks. Blocking (deletes files).
    /// A metadata store that failed is reopened first, and a full disk
    /// checked for space again.
    pub fn collect(&self) -> Result<GcReport> {
        self.recover_storage()?;
        let mut report = GcReport::default();
        let now = now_ms();
        let ttl = self.gc.task_ttl.as_millis() as u64;
        // Oldest access first; only tasks nobody holds.
        let mut idle: Vec<(u64, String)> = {
            let mut index = self.index.lock();
            index
                .tasks
                .retain(|_, u| u.leases > 0 || u.stored > 0 || u.accessed_ms + 60_000 > now);
            index
                .tasks
                .iter()
                .filter(|(_, u)| u.leases == 0)
                .map(|(id, u)| (u.accessed_ms, id.clone()))
                .collect()
        };
        idle.sort();
        let mut rest = Vec::with_capacity(idle.len());
        for (accessed, id) in idle {
            if ttl > 0 && accessed + ttl <= now {
                if let Some(freed) = self.evict(&id)? {
                    report.expired += 1;
                    report.freed += freed;
                }
            } else {
                rest.push(id);
            }
        }
        let (limit, mut used) = self.usage()?;
        let (high, low) = self.watermarks(limit);
        if used > high {
            for id in rest {
                if used <= low {
                    break;
                }
                if let Some(freed) = self.evict(&id)? {
                    report.evicted += 1;
                    report.freed += freed;
                    used = self.usage()?.1;
                }
            }
            if used > low {
                tracing::warn!(
                    used,
                    low,
                    "storage above its low watermark; what is left is being read"
                );
            }
        }
        Ok(report)
    }

    /// Deletes a task unless someone holds it; returns the bytes freed.
    /// The index lock is held across the delete so no reader can lease
    /// the task half-way.
    pub(super) fn evict(&self, id: &str) -> Result<Option<u64>> {
        let mut index = self.index.lock();
        match index.tasks.get(id) {
            Some(u) if u.leases > 0 => return Ok(None),
            _ => {}
        }
        // Deleted first: a delete that fails (the metadata store is down)
        // leaves the index as it was, in line with the disk.
        self.storage.delete_task(id)?;
        let stored = index.remove(id);
        drop(index);
        tracing::debug!(task = id, bytes = stored, "task evicted");
        self.tell_removed(id);
        Ok(Some(stored))
    }

    /// Deletes a task on request. A task being read or downloaded is not
    /// deleted (409); an unknown one is a 404.
    pub fn delete(&self, id: &str) -> Result<u64> {
        self.recover_storage()?;
        let known = self.index.lock().tasks.contains_key(id) || self.storage.task(id)?.is_some();
        if !known {
            return Err(Error::new(ErrorKind::NotFound, format!("no task {id}")));
        }
        self.evict(id)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                format!("task {id} is being read or downloaded; try again when it is idle"),
            )
        })
    }
}
