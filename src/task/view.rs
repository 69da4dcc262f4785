//! What the API shows of tasks and downloads.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::TaskManager;
use super::index::Index;
use super::lifecycle::Slot;
use super::state::State;
use crate::error::Result;
use crate::piece::piece_span;
use crate::storage::{TaskRecord, TaskState};

/// A download in flight, as the API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DownloadView {
    pub task_id: String,
    pub origin: String,
    pub url: String,
    pub content_length: u64,
    pub piece_length: u64,
    pub pieces: u32,
    pub pieces_landed: u32,
    pub bytes_landed: u64,
    pub restarts: u32,
}

/// A task as the API lists it: what is stored, and live progress while it
/// downloads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub url: String,
    /// `succeeded` (stored whole), `running` (downloading now) or `partial`
    /// (some pieces stored, no download running).
    pub state: State,
    pub content_length: u64,
    pub piece_length: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub bytes_stored: u64,
    /// While downloading: bytes landed so far (readable, maybe not yet
    /// recorded) and the origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadView>,
    /// Readers and downloads holding it now (it is not evicted meanwhile).
    pub holders: usize,
    pub created_at_ms: u64,
    pub accessed_at_ms: u64,
}

/// Metadata of an object, for `HEAD` and an answer's headers; borrowed
/// from the task's record on a read (a hit copies no string), owned when
/// it came from the origin's `stat`.
#[derive(Debug, Clone)]
pub struct ObjectInfo<'a> {
    pub task_id: Cow<'a, str>,
    pub content_length: u64,
    pub etag: Option<Cow<'a, str>>,
    pub last_modified: Option<Cow<'a, str>>,
    pub content_type: Option<Cow<'a, str>>,
    pub cached: bool,
}

impl<'a> From<&'a TaskRecord> for ObjectInfo<'a> {
    fn from(r: &'a TaskRecord) -> Self {
        Self {
            task_id: Cow::Borrowed(&r.id),
            content_length: r.content_length,
            etag: r.etag.as_deref().map(Cow::Borrowed),
            last_modified: r.last_modified.as_deref().map(Cow::Borrowed),
            content_type: r.content_type.as_deref().map(Cow::Borrowed),
            cached: r.state == TaskState::Succeeded,
        }
    }
}

impl ObjectInfo<'_> {
    /// The same metadata, owning its strings.
    pub fn into_owned(self) -> ObjectInfo<'static> {
        ObjectInfo {
            task_id: Cow::Owned(self.task_id.into_owned()),
            content_length: self.content_length,
            etag: self.etag.map(|v| Cow::Owned(v.into_owned())),
            last_modified: self.last_modified.map(|v| Cow::Owned(v.into_owned())),
            content_type: self.content_type.map(|v| Cow::Owned(v.into_owned())),
            cached: self.cached,
        }
    }
}

/// A task record as the API shows it, with what the index knows of it.
pub(super) fn task_view(index: &Index, r: TaskRecord, download: Option<DownloadView>) -> TaskView {
    let usage = index.tasks.get(&r.id);
    let state = State::of_record(download.is_some(), r.state, index.finishing.contains(&r.id));
    TaskView {
        state,
        bytes_stored: usage.map_or(0, |u| u.stored),
        holders: usage.map_or(0, |u| u.leases),
        accessed_at_ms: usage.map_or(r.accessed_at_ms, |u| u.accessed_ms.max(r.accessed_at_ms)),
        download,
        task_id: r.id,
        url: r.url,
        content_length: r.content_length,
        piece_length: r.piece_length,
        etag: r.etag,
        created_at_ms: r.created_at_ms,
    }
}

impl TaskManager {
    /// Downloads in flight now (read live from their progress).
    pub async fn downloads(&self) -> Vec<DownloadView> {
        let slots: Vec<Arc<Slot>> = self.slots.lock().await.values().cloned().collect();
        let mut views: Vec<DownloadView> = slots
            .iter()
            .filter_map(|slot| slot.download.get())
            .filter(|dl| dl.progress.borrow().phase.fetching())
            .map(|dl| {
                let r = &dl.record;
                let progress = dl.progress.borrow();
                let landed = progress
                    .pieces
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.is_some());
                let (mut pieces_landed, mut bytes_landed) = (0, 0);
                for (n, _) in landed {
                    pieces_landed += 1;
                    bytes_landed += piece_span(n as u32, r.content_length, r.piece_length).1;
                }
                DownloadView {
                    task_id: r.id.clone(),
                    origin: dl.request.origin.name.clone(),
                    url: r.url.clone(),
                    content_length: r.content_length,
                    piece_length: r.piece_length,
                    pieces: progress.pieces.len() as u32,
                    pieces_landed,
                    bytes_landed,
                    restarts: dl.restarts,
                }
            })
            .collect();
        views.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        views
    }

    /// Stored and downloading tasks, most recently read first, at most
    /// `limit` of them. Ordered from the in-memory index: only the records
    /// listed are read from sled, not every record.
    pub async fn tasks(&self, limit: usize) -> Result<Vec<TaskView>> {
        let mut downloads: HashMap<String, DownloadView> = self
            .downloads()
            .await
            .into_iter()
            .map(|d| (d.task_id.clone(), d))
            .collect();
        // The newest `limit` (and as many more as may lack a record),
        // picked in one pass under the lock with a bounded heap: at 100,000
        // tasks, cloning and sorting every id held the index (and so every
        // hit) for tens of milliseconds.
        let order: Vec<(u64, String)> = {
            let index = self.index.lock();
            let keep = limit.saturating_mul(2).max(limit + 16);
            let mut heap = std::collections::BinaryHeap::with_capacity(keep + 1);
            for (id, u) in &index.tasks {
                heap.push(std::cmp::Reverse((u.accessed_ms, id.as_str())));
                if heap.len() > keep {
                    heap.pop();
                }
            }
            let mut order: Vec<(u64, String)> = heap
                .into_iter()
                .map(|std::cmp::Reverse((at, id))| (at, id.to_string()))
                .collect();
            order.sort_unstable_by(|a, b| b.cmp(a));
            order
        };
        let mut views = Vec::new();
        for (_, id) in order {
            if views.len() == limit {
                break;
            }
            // Index entries of tasks never recorded (a start that failed)
            // have no record: skipped.
            if let Some(record) = self.storage.task(&id)? {
                let download = downloads.remove(&id);
                views.push(task_view(&self.index.lock(), record, download));
            }
        }
        Ok(views)
    }

    /// One task, if stored or downloading.
    pub async fn task(&self, id: &str) -> Result<Option<TaskView>> {
        let download = self.downloads().await.into_iter().find(|d| d.task_id == id);
        let Some(record) = self.storage.task(id)? else {
            return Ok(None);
        };
        Ok(Some(task_view(&self.index.lock(), record, download)))
    }
}
