//! Room on disk: admission of downloads, the disk-full state, recovery.
//!
//! - **Admission.** A download's length is known from the origin's `stat`
//!   before any byte is fetched. It starts only if the bytes it still needs
//!   fit — under `storage.quota` when one is set, and in the filesystem's
//!   free space less the metadata reserve's missing room — counting the
//!   bytes already promised to downloads in flight (content files are
//!   sparse, so those are not used yet) and what evicting idle tasks can
//!   free. If it fits only after eviction, idle tasks are evicted first,
//!   least recently used first. Otherwise it is refused at once with 507
//!   and the numbers in the reason, instead of being cut off half-way.
//! - **Disk full.** A write that fails with ENOSPC anyway (another process
//!   filled the disk, the filesystem's own overhead) fails its task with the
//!   reason, sets the disk-full state (`/readyz` 503, `seedgate_disk_full`
//!   1), releases half the metadata reserve and wakes the collector.
//!   Stored objects keep being served: a hit needs no write.
//! - **Recovery**, without a restart: the next download, delete or
//!   collector pass reopens a metadata store that failed, reconciles it
//!   with the content files and rebuilds the index; once the reserve can
//!   be held again in full, the disk-full state clears.

use std::sync::Arc;

use bytesize::ByteSize;

use super::TaskManager;
use super::index::Index;
use crate::clock::now_ms;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::METRICS;

/// Why the disk is full, and since when.
#[derive(Debug, Clone)]
pub struct DiskFull {
    pub reason: String,
    pub since_ms: u64,
}

/// The disk-full state of a task manager.
#[derive(Debug, Default)]
pub(super) struct DiskState {
    full: parking_lot::Mutex<Option<DiskFull>>,
    /// `full.is_some()`, for the piece writers' check on every chunk.
    flag: std::sync::atomic::AtomicBool,
    /// Serializes recoveries and admissions (eviction to make room).
    room: parking_lot::Mutex<()>,
}

/// What admission weighed, for the refusal's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes the download still needs.
    pub need: u64,
    /// Bytes it may use now (quota left or free space less reserve,
    /// whichever is less), before eviction and in-flight promises.
    pub free: u64,
    /// `free` is what the quota leaves (else the filesystem's free space).
    pub by_quota: bool,
    /// Bytes promised to downloads in flight.
    pub promised: u64,
    /// Bytes evicting idle tasks would free.
    pub evictable: u64,
}

impl Room {
    /// Bytes that must be evicted first (0: it fits as it is), or `None`
    /// when even eviction cannot make room.
    ///
    /// What is promised counts in full, even past `free` (promises of
    /// failed downloads are given back only when their last reader goes):
    /// eviction must then free the whole difference, not just `need`.
    pub fn shortfall(&self) -> Option<u64> {
        let demand = self.need.saturating_add(self.promised);
        if demand <= self.free {
            Some(0)
        } else if demand <= self.free.saturating_add(self.evictable) {
            Some(demand - self.free)
        } else {
            None
        }
    }
}

fn size(b: u64) -> String {
    ByteSize::b(b).display().iec().to_string()
}

impl TaskManager {
    /// The disk-full state, if the disk is full.
    pub fn disk_full(&self) -> Option<DiskFull> {
        self.disk.full.lock().clone()
    }

    /// Fails while the disk is full, so downloads in flight stop writing
    /// into the room the metadata reserve just gave back.
    pub(super) fn check_room(&self) -> Result<()> {
        if !self.disk.flag.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let why = self
            .disk_full()
            .map_or_else(|| "the disk is full".to_string(), |f| f.reason);
        Err(Error::new(
            ErrorKind::DiskFull,
            format!("stopped: the disk is full ({why})"),
        ))
    }

    /// Whether the filesystem has room again: the metadata reserve held
    /// whole, and half as much again free beyond it.
    pub(super) fn space_is_back(&self) -> bool {
        let (size, _) = self.storage.reserve();
        self.storage.refill_reserve().is_ok()
            && self
                .storage
                .filesystem_available()
                .is_ok_and(|free| free >= size / 2)
    }

    /// Records that a write ran out of space.
    pub(super) fn note_disk_full(&self, e: &Error) {
        METRICS.disk_full_events.inc();
        self.storage.disk_full();
        let mut full = self.disk.full.lock();
        if full.is_none() {
            tracing::error!(error = %e, "the disk is full: new downloads are refused until space is back; stored objects are still served");
            METRICS.disk_full.set(1);
            self.disk
                .flag
                .store(true, std::sync::atomic::Ordering::Relaxed);
            *full = Some(DiskFull {
                reason: e.message.clone(),
                since_ms: now_ms(),
            });
        }
        drop(full);
        self.gc_kick.notify_one();
    }

    /// Reopens a failed metadata store (rebuilding the index from it), and
    /// clears the disk-full state once the reserve can be held again.
    /// Blocking.
    pub fn recover_storage(&self) -> Result<()> {
        let _one = self.disk.room.lock();
        self.recover_locked()
    }

    fn recover_locked(&self) -> Result<()> {
        if self.storage.poisoned().is_some() {
            self.storage.reopen()?;
            METRICS.metadata_reopens.inc();
            let fixed = self.storage.reconcile()?;
            tracing::warn!(
                tasks_without_bytes = fixed.tasks_without_bytes,
                pieces_dropped = fixed.pieces_dropped,
                files_deleted = fixed.files_deleted,
                "storage reconciled after the metadata store was reopened"
            );
            self.rebuild_index()?;
        }
        if self.disk.full.lock().is_some() && self.space_is_back() {
            let mut full = self.disk.full.lock();
            self.disk
                .flag
                .store(false, std::sync::atomic::Ordering::Relaxed);
            if let Some(f) = full.take() {
                tracing::info!(
                    full_for_s = now_ms().saturating_sub(f.since_ms) / 1000,
                    "disk space is back: downloads are admitted again"
                );
            }
            METRICS.disk_full.set(0);
        }
        Ok(())
    }

    /// Sets every task's stored bytes from the metadata store, keeping
    /// leases and access times; forgets the hot copies.
    fn rebuild_index(&self) -> Result<()> {
        let mut stored = std::collections::HashMap::new();
        for task in self.storage.tasks()? {
            let bytes: u64 = self
                .storage
                .pieces(&task.id)?
                .iter()
                .map(|p| p.length)
                .sum();
            stored.insert(task.id, bytes);
        }
        let mut index = self.index.lock();
        let Index { tasks, .. } = &mut *index;
        for (id, u) in tasks.iter_mut() {
            u.stored = stored.remove(id).unwrap_or(0);
            u.hot = None;
        }
        for (id, bytes) in stored {
            tasks.entry(id).or_default().stored = bytes;
        }
        index.stored = index.tasks.values().map(|u| u.stored).sum();
        Ok(())
    }

    /// What the download of `need` more bytes for task `id` would weigh.
    fn room(&self, id: &str, need: u64) -> Result<Room> {
        let (promised, evictable, stored) = {
            let index = self.index.lock();
            let evictable = index
                .tasks
                .iter()
                .filter(|(t, u)| u.leases == 0 && t.as_str() != id)
                .map(|(_, u)| u.stored)
                .sum();
            (index.promised, evictable, index.stored)
        };
        // The filesystem always counts (a quota does not make the disk
        // bigger); the quota too when there is one.
        let (size, held) = self.storage.reserve();
        let fs_free = self
            .storage
            .filesystem_available()?
            .saturating_sub(size.saturating_sub(held));
        let quota_free = self.gc.quota.map(|q| q.as_u64().saturating_sub(stored));
        let (free, by_quota) = match quota_free {
            Some(q) if q < fs_free => (q, true),
            _ => (fs_free, false),
        };
        Ok(Room {
            need,
            free,
            by_quota,
            promised,
            evictable,
        })
    }

    /// Admits a download of `need` more bytes for task `id`, evicting idle
    /// tasks first if that makes it fit, or refuses it (507). On success
    /// the bytes are promised to it until [`TaskManager::unpromise`].
    /// Blocking.
    pub(super) fn admit(&self, id: &str, url: &str, need: u64) -> Result<()> {
        let _one = self.disk.room.lock();
        if let Err(e) = self.recover_locked() {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("the metadata store failed and cannot be reopened: {e}"),
            ));
        }
        let room = self.room(id, need)?;
        match room.shortfall() {
            Some(0) => {}
            Some(mut short) => {
                // Pieces of other downloads land meanwhile, so evict until
                // it fits or nothing more can go.
                let mut freed = 0;
                loop {
                    let f = self.make_room(id, short)?;
                    freed += f;
                    let again = self.room(id, need)?;
                    match again.shortfall() {
                        Some(0) => break,
                        Some(s) if f > 0 => short = s,
                        _ => {
                            return Err(self
                                .refusal(url, again)
                                .context(format!("after evicting {} of idle tasks", size(freed))));
                        }
                    }
                }
                tracing::info!(task = id, freed, need, "evicted idle tasks to make room");
            }
            None => return Err(self.refusal(url, room)),
        }
        // Eviction may have brought the space back.
        if self.disk.full.lock().is_some() {
            self.recover_locked()?;
        }
        if let Some(full) = self.disk_full() {
            METRICS.storage_refused.inc();
            return Err(Error::new(
                ErrorKind::DiskFull,
                format!(
                    "{url}: not started: the disk is full ({}); stored objects are still served",
                    full.reason
                ),
            ));
        }
        self.index.lock().promised += need;
        Ok(())
    }

    /// Gives back bytes promised to a download that did not use them.
    pub(super) fn unpromise(&self, bytes: u64) {
        let mut index = self.index.lock();
        index.promised = index.promised.saturating_sub(bytes);
    }

    fn refusal(&self, url: &str, room: Room) -> Error {
        METRICS.storage_refused.inc();
        let limit = match self.gc.quota {
            Some(q) if room.by_quota => format!("left under storage.quota ({})", size(q.as_u64())),
            _ => {
                let (reserve, _) = self.storage.reserve();
                format!(
                    "free on the filesystem of storage.data_dir beyond the {} metadata reserve",
                    size(reserve)
                )
            }
        };
        Error::new(
            ErrorKind::DiskFull,
            format!(
                "{url}: {} does not fit: {} {limit}, {} promised to downloads in flight, {} evictable",
                size(room.need),
                size(room.free),
                size(room.promised),
                size(room.evictable)
            ),
        )
    }

    /// Evicts idle tasks, least recently used first, until `bytes` are
    /// freed or none is left; returns the bytes freed.
    fn make_room(&self, keep: &str, bytes: u64) -> Result<u64> {
        let mut idle: Vec<(u64, String)> = {
            let index = self.index.lock();
            index
                .tasks
                .iter()
                .filter(|(id, u)| u.leases == 0 && u.stored > 0 && id.as_str() != keep)
                .map(|(id, u)| (u.accessed_ms, id.clone()))
                .collect()
        };
        idle.sort();
        let mut freed = 0;
        for (_, id) in idle {
            if freed >= bytes {
                break;
            }
            if let Some(f) = self.evict(&id)? {
                freed += f;
            }
        }
        Ok(freed)
    }
}

/// Runs a blocking disk step of the task manager off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    me: &Arc<TaskManager>,
    f: impl FnOnce(&TaskManager) -> Result<T> + Send + 'static,
) -> Result<T> {
    let me = me.clone();
    tokio::task::spawn_blocking(move || f(&me))
        .await
        .map_err(|e| Error::internal(format!("disk step: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::Room;

    #[test]
    fn shortfall() {
        let r = |need, free, promised, evictable| Room {
            need,
            free,
            by_quota: false,
            promised,
            evictable,
        };
        assert_eq!(r(10, 100, 0, 0).shortfall(), Some(0));
        assert_eq!(r(10, 100, 95, 0).shortfall(), None);
        assert_eq!(r(10, 100, 95, 20).shortfall(), Some(5));
        assert_eq!(r(300, 200, 0, 50).shortfall(), None);
        // More promised than free: eviction covers all of it.
        assert_eq!(r(1, 13, 16, 26).shortfall(), Some(4));
        assert_eq!(r(0, 10, 10, 0).shortfall(), Some(0));
    }
}
