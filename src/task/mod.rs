//! Tasks: one origin object kept as pieces on local disk.
//!
//! [`TaskManager::open`] turns a URL into a readable [`Object`]:
//! - a task whose every piece is recorded is served from disk and the origin
//!   is not asked at all;
//! - otherwise one [`Download`] per task runs in the background and every
//!   reader, request and job that wants the task shares it, so each origin
//!   byte is fetched once. With ranges, `piece_concurrency` workers take
//!   pieces from a queue that readers reorder: the piece a reader waits for
//!   is fetched next (a Range read of a cold object gets its pieces first).
//!   Without ranges, one sequential stream is cut into pieces.
//! - readers stream each piece as soon as it is recorded, after checking its
//!   crc32 (`download.verify_on_read`): a piece whose bytes no longer match
//!   is dropped, fetched again and never served.
//!
//! Consistency: a download pins the object's version (ETag, Last-Modified,
//! length). A piece answered for another version fails the download with
//! [`ErrorKind::Changed`]; its readers stop (no mixed bytes), and the task
//! starts over in a new content file, while old readers keep the old file.
//!
//! Durability: readers may read a piece as soon as it is written, but it
//! is recorded only after its bytes are synced, a task
//! is marked succeeded only after all its pieces are, and
//! [`Storage::reconcile`] repairs the rest at startup, so a restart resumes
//! from what is durable. Disk use is bounded by [`gc`].

mod disk;
mod gc;
pub mod peer;

use crate::piece::{TaskIdParams, crc32_digest, piece_count, piece_length, piece_span, task_id};
pub use disk::DiskFull;
pub use gc::GcReport;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use http::HeaderMap;
use tokio::sync::{Notify, OnceCell, watch};
use url::Url;

use crate::config::{DownloadConfig, StorageConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::origin::{Expect, Origin, Plan, Planner};
use crate::resilience::negative;
use crate::resilience::watchdog::Watchdog;
use crate::storage::{PieceRecord, Storage, TaskRecord, TaskState};

/// Bytes a piece writer gathers before one positioned write...
const WRITE_BUFFER: usize = 1024 * 1024;
/// ...or chunks, well under the kernel's IOV_MAX (1024).
const WRITE_CHUNKS: usize = 256;
/// A task whose download keeps seeing a new version gives up after this
/// many fresh starts.
const MAX_RESTARTS: u32 = 3;
/// Landed pieces waiting for their sync and record, at most: bounds what a
/// crash can cost (they are fetched again) and the dirty bytes in flight.
const COMMIT_QUEUE: usize = 16;
/// Memory for pieces read ahead of what readers send, over all readers.
const READ_AHEAD_MIB: usize = 64;
/// A task's last-access time is persisted at most this often.
const ACCESS_PERSIST_MS: u64 = 60_000;

pub use crate::clock::now_ms;

/// Parses `crc32:<decimal>`.
fn parse_digest(digest: &str) -> Option<u32> {
    digest.strip_prefix("crc32:")?.parse().ok()
}

/// Progress of one download, broadcast to its readers.
#[derive(Debug, Clone)]
struct Progress {
    /// `pieces[n]`: set once piece `n` is readable from the content file.
    pieces: Vec<Option<Landed>>,
    /// Set once the download ends.
    outcome: Option<Result<(), Error>>,
}

/// A piece being read (and checked): `None` when its bytes failed their
/// digest. Small pieces are read at once; others on a blocking thread.
enum PieceRead {
    Done(Result<Option<Bytes>>),
    Blocking(tokio::task::JoinHandle<Result<Option<Bytes>>>),
}

impl PieceRead {
    async fn bytes(self) -> io::Result<Result<Option<Bytes>>> {
        match self {
            PieceRead::Done(r) => Ok(r),
            PieceRead::Blocking(h) => h
                .await
                .map_err(|e| io::Error::other(format!("piece reader: {e}"))),
        }
    }
}

/// Pieces up to this long (the tail of a small object) are read on the
/// async worker: a page-cache read of a few KiB costs less than handing it
/// to a blocking thread.
const INLINE_READ: u64 = 64 * 1024;

/// A complete task as its readers need it, kept in memory once read: its
/// record, its piece digests and its open content file, so a hit costs no
/// metadata read and no `open`. Dropped whenever its pieces change or the
/// task goes (closing the file, so eviction frees space at once).
#[derive(Debug)]
struct Hot {
    record: TaskRecord,
    pieces: Arc<Vec<Landed>>,
    file: Arc<File>,
}

/// A piece readers may read.
#[derive(Debug, Clone, Copy)]
struct Landed {
    crc: u32,
    /// Fetch time (ms) and when it landed (Unix ms), as recorded.
    cost_ms: u64,
    created_at_ms: u64,
    /// Written by this download from bytes whose crc it computed, so still
    /// trusted; pieces found on disk are checked before they are served.
    fresh: bool,
}

impl Landed {
    /// A recorded piece (found on disk: checked before it is served).
    fn stored(piece: &PieceRecord) -> Option<Self> {
        Some(Self {
            crc: parse_digest(&piece.digest)?,
            cost_ms: piece.cost_ms,
            created_at_ms: piece.created_at_ms,
            fresh: false,
        })
    }
}

/// Which pieces a download fetches next: those readers wait for first,
/// then the rest in order.
#[derive(Debug, Default)]
struct Queue {
    urgent: VecDeque<u32>,
    pending: BTreeSet<u32>,
}

/// What a download needs to ask its plugin again (plans expire; a changed
/// object restarts the task).
#[derive(Debug)]
struct Request {
    origin: Arc<Origin>,
    url: Url,
    headers: HeaderMap,
    /// The first byte the opener will read: its piece is fetched first.
    first_byte: u64,
    spec: TaskSpec,
}

/// What, besides the URL, makes a task (as in Dragonfly): a tag and an
/// application set apart tasks of the same URL, and a fixed piece length
/// changes the layout (and the id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSpec {
    pub tag: Option<String>,
    pub application: Option<String>,
    pub piece_length: Option<u64>,
    /// Query parameters left out of the id (signatures, expiry), as a
    /// Dragonfly peer asks.
    pub filtered_query_params: Vec<String>,
}

/// A download in flight.
#[derive(Debug)]
pub struct Download {
    pub record: TaskRecord,
    file: Arc<File>,
    progress: watch::Sender<Progress>,
    queue: parking_lot::Mutex<Queue>,
    /// Its plan, renewed before it expires.
    planner: Planner,
    request: Arc<Request>,
    restarts: u32,
    /// Fails the task when it stops making progress.
    watchdog: Arc<Watchdog>,
    /// The space admitted for it and not yet written.
    promise: Promise,
    _lease: Lease,
}

/// Bytes of disk promised to one download at its admission; given back as
/// its pieces are recorded, and all that is left when it ends.
#[derive(Debug)]
struct Promise {
    tasks: std::sync::Weak<TaskManager>,
    left: std::sync::atomic::AtomicU64,
}

impl Promise {
    /// `bytes` were written and recorded: they are used, not promised.
    fn spend(&self, tasks: &TaskManager, bytes: u64) {
        use std::sync::atomic::Ordering;
        let took = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(l.saturating_sub(bytes))
            })
            .unwrap_or(0)
            .min(bytes);
        tasks.unpromise(took);
    }
}

impl Promise {
    /// The download ended: what it did not write is no longer spoken for
    /// (its readers may keep the download itself for a long while).
    fn settle(&self, tasks: &TaskManager) {
        tasks.unpromise(self.left.swap(0, std::sync::atomic::Ordering::SeqCst));
    }
}

impl Drop for Promise {
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.upgrade() {
            tasks.unpromise(*self.left.get_mut());
        }
    }
}

impl Download {
    fn next_piece(&self) -> Option<u32> {
        let mut q = self.queue.lock();
        while let Some(n) = q.urgent.pop_front() {
            if q.pending.remove(&n) {
                return Some(n);
            }
        }
        q.pending.pop_first()
    }

    /// A reader waits for piece `n`: fetch it next.
    fn want(&self, n: u32) {
        let mut q = self.queue.lock();
        if q.pending.contains(&n) && !q.urgent.contains(&n) {
            q.urgent.push_back(n);
        }
    }

    /// The plan to fetch with, renewed when it is about to expire (or when
    /// `force`d after the origin refused it).
    async fn plan(&self, force: bool) -> Result<Plan> {
        self.planner.get(&self.request.origin, force).await
    }
}

/// A per-task slot that makes concurrent opens share one download.
#[derive(Debug, Default)]
struct Slot {
    download: OnceCell<Arc<Download>>,
    /// Why starting failed: openers already waiting on this slot get the
    /// same answer at once instead of each trying (and waiting) again.
    failed: parking_lot::Mutex<Option<Error>>,
}

/// Where an object's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    /// Every piece is on disk, as recorded.
    Local(Arc<Vec<Landed>>),
    /// Pieces are landing.
    Download(Arc<Download>),
}

/// An object ready to read. While it lives, its task is not evicted.
#[derive(Debug, Clone)]
pub struct Object {
    pub record: TaskRecord,
    source: Source,
    file: Arc<File>,
    request: Arc<Request>,
    _lease: Arc<Lease>,
}

impl Object {
    /// True when every byte was already on disk when the object was opened.
    pub fn cached(&self) -> bool {
        matches!(self.source, Source::Local(_))
    }
}

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
    pub state: &'static str,
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

/// Metadata of an object, for `HEAD`.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub task_id: String,
    pub content_length: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    pub cached: bool,
}

impl From<&TaskRecord> for ObjectInfo {
    fn from(r: &TaskRecord) -> Self {
        Self {
            task_id: r.id.clone(),
            content_length: r.content_length,
            etag: r.etag.clone(),
            last_modified: r.last_modified.clone(),
            content_type: r.content_type.clone(),
            cached: r.state == TaskState::Succeeded,
        }
    }
}

/// In-memory view of what is stored, for eviction: bytes recorded and last
/// access per task, and who holds it.
#[derive(Debug, Default)]
struct Index {
    tasks: HashMap<String, Usage>,
    /// Sum of `stored` over all tasks.
    stored: u64,
    /// Tasks whose completion is written but not yet flushed: not "stored"
    /// until it is, so nobody is told a task survives a crash before it
    /// would.
    finishing: std::collections::HashSet<String>,
    /// Bytes admitted downloads may still write (their content files are
    /// sparse: the space is not used yet, but it is spoken for).
    promised: u64,
}

#[derive(Debug, Default)]
struct Usage {
    stored: u64,
    accessed_ms: u64,
    /// Readers and downloads holding the task; never evicted while > 0.
    leases: usize,
    /// A complete task as readers need it, once read; dropped whenever its
    /// pieces change (and with the task).
    hot: Option<Arc<Hot>>,
}

impl Index {
    fn add(&mut self, id: &str, bytes: u64) {
        let u = self.tasks.entry(id.to_string()).or_default();
        u.stored += bytes;
        u.hot = None;
        self.stored += bytes;
    }

    fn sub(&mut self, id: &str, bytes: u64) {
        if let Some(u) = self.tasks.get_mut(id) {
            let bytes = bytes.min(u.stored);
            u.stored -= bytes;
            u.hot = None;
            self.stored -= bytes;
        }
    }

    fn clear(&mut self, id: &str) {
        self.sub(id, u64::MAX);
    }

    /// Forgets a task; returns the bytes it had stored.
    fn remove(&mut self, id: &str) -> u64 {
        let stored = self.tasks.remove(id).map_or(0, |u| u.stored);
        self.stored -= stored;
        stored
    }
}

/// Holds a task against eviction until dropped.
#[derive(Debug)]
struct Lease {
    index: Arc<parking_lot::Mutex<Index>>,
    id: String,
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

/// Owns every task: opens objects, runs downloads, streams bytes, keeps
/// the disk within its quota.
#[derive(Debug)]
pub struct TaskManager {
    storage: Arc<Storage>,
    config: DownloadConfig,
    gc: StorageConfig,
    slots: tokio::sync::Mutex<HashMap<String, Arc<Slot>>>,
    index: Arc<parking_lot::Mutex<Index>>,
    gc_kick: Notify,
    /// MiB that readers may hold in pieces read ahead, over all readers;
    /// with none left, a reader reads its next piece when it gets there.
    read_ahead: Arc<tokio::sync::Semaphore>,
    /// Objects the origin said do not exist, for a while.
    pub negative: negative::NegativeCache,
    /// Told of each download that goes back to the origin (the announcer).
    back_to_source: std::sync::OnceLock<BackToSourceHook>,
    /// Told of each task removed from the store (the announcer tells its
    /// scheduler, so peers are no longer sent here for it).
    removed: std::sync::OnceLock<RemovedHook>,
    /// Whether the disk is full, and the lock admissions take.
    disk: disk::DiskState,
}

/// See [`TaskManager::on_back_to_source`].
struct BackToSourceHook(Box<dyn Fn(peer::PeerTask) + Send + Sync>);

/// See [`TaskManager::on_removed`].
struct RemovedHook(Box<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for RemovedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemovedHook")
    }
}

impl std::fmt::Debug for BackToSourceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackToSourceHook")
    }
}

impl std::ops::Deref for BackToSourceHook {
    type Target = dyn Fn(peer::PeerTask) + Send + Sync;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl TaskManager {
    /// Reconciles storage and builds the in-memory index of what it holds.
    pub fn new(
        storage: Arc<Storage>,
        config: DownloadConfig,
        gc: StorageConfig,
        negative: crate::config::NegativeCacheConfig,
    ) -> Result<Arc<Self>> {
        let fixed = storage.reconcile()?;
        if fixed != Default::default() {
            tracing::warn!(
                tasks_without_bytes = fixed.tasks_without_bytes,
                pieces_dropped = fixed.pieces_dropped,
                files_deleted = fixed.files_deleted,
                "storage reconciled"
            );
        }
        let mut index = Index::default();
        let tasks = storage.tasks()?;
        for task in &tasks {
            let stored = storage.pieces(&task.id)?.iter().map(|p| p.length).sum();
            index.add(&task.id, stored);
            index.tasks.get_mut(&task.id).expect("added").accessed_ms =
                task.accessed_at_ms.max(task.created_at_ms);
        }
        tracing::info!(tasks = tasks.len(), bytes = index.stored, "storage opened");
        let me = Arc::new(Self {
            storage,
            config,
            gc,
            slots: tokio::sync::Mutex::new(HashMap::new()),
            index: Arc::new(parking_lot::Mutex::new(index)),
            gc_kick: Notify::new(),
            read_ahead: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_MIB)),
            negative: negative::NegativeCache::new(negative),
            back_to_source: std::sync::OnceLock::new(),
            removed: std::sync::OnceLock::new(),
            disk: Default::default(),
        });
        if !me.space_is_back() {
            let (reserve, _) = me.storage.reserve();
            me.note_disk_full(&Error::new(
                ErrorKind::DiskFull,
                format!(
                    "the disk holding {} has no room for the {reserve} B metadata reserve and half as much again",
                    me.gc.data_dir.display()
                ),
            ));
        }
        Ok(me)
    }

    /// The Dragonfly task id of a URL under this configuration.
    pub fn task_id(&self, url: &Url) -> Result<String> {
        self.task_id_of(url, &TaskSpec::default())
    }

    /// The piece length `spec` fixes, or the configured one.
    fn fixed_piece_length(&self, spec: &TaskSpec) -> Option<u64> {
        spec.piece_length
            .or(self.config.piece_length.map(|b| b.as_u64()))
    }

    /// The Dragonfly task id of a URL with a tag, application or piece length.
    pub fn task_id_of(&self, url: &Url, spec: &TaskSpec) -> Result<String> {
        task_id(&TaskIdParams {
            url: url.as_str(),
            piece_length: self.fixed_piece_length(spec),
            tag: spec.tag.as_deref(),
            application: spec.application.as_deref(),
            filtered_query_params: &spec.filtered_query_params,
        })
        .map_err(|e| Error::new(ErrorKind::Invalid, format!("'{url}' is not a URL: {e}")))
    }

    fn lease(&self, id: &str) -> Lease {
        let mut index = self.index.lock();
        let u = index.tasks.entry(id.to_string()).or_default();
        u.leases += 1;
        u.accessed_ms = now_ms();
        Lease {
            index: self.index.clone(),
            id: id.to_string(),
        }
    }

    /// Downloads in flight now (read live from their progress).
    pub async fn downloads(&self) -> Vec<DownloadView> {
        let slots: Vec<Arc<Slot>> = self.slots.lock().await.values().cloned().collect();
        let mut views: Vec<DownloadView> = slots
            .iter()
            .filter_map(|slot| slot.download.get())
            .filter(|dl| dl.progress.borrow().outcome.is_none())
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
        let mut order: Vec<(u64, String)> = self
            .index
            .lock()
            .tasks
            .iter()
            .map(|(id, u)| (u.accessed_ms, id.clone()))
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
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

    /// Whether content can be written now (for `/readyz`).
    pub async fn probe_storage(&self) -> Result<()> {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.probe_writable())
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(Error::from)
    }

    /// Bytes of content recorded, over all tasks.
    pub fn stored_bytes(&self) -> u64 {
        self.index.lock().stored
    }

    /// The stored task of `id` with its piece digests, if complete. The
    /// digests are read from sled once and then kept in the index (a read
    /// of a hot object does not scan its piece records).
    fn complete(&self, id: &str) -> Result<Option<Arc<Hot>>> {
        {
            let index = self.index.lock();
            if index.finishing.contains(id) {
                return Ok(None);
            }
            if let Some(hot) = index.tasks.get(id).and_then(|u| u.hot.clone()) {
                return Ok(Some(hot));
            }
        }
        let Some(record) = self.storage.task(id)? else {
            return Ok(None);
        };
        if record.state != TaskState::Succeeded || self.index.lock().finishing.contains(id) {
            return Ok(None);
        }
        let count = piece_count(record.content_length, record.piece_length) as usize;
        let mut pieces = vec![None; count];
        for p in self.storage.pieces(id)? {
            if let Some(slot) = pieces.get_mut(p.number as usize) {
                *slot = Landed::stored(&p);
            }
        }
        let Some(pieces) = pieces.into_iter().collect::<Option<Vec<Landed>>>() else {
            return Ok(None);
        };
        let hot = Arc::new(Hot {
            pieces: Arc::new(pieces),
            file: Arc::new(self.storage.open_content(id)?),
            record,
        });
        // Kept only while the index agrees the task is whole (a repair or
        // eviction in between has changed it).
        if let Some(u) = self.index.lock().tasks.get_mut(id)
            && u.stored == hot.record.content_length
        {
            u.hot = Some(hot.clone());
        }
        Ok(Some(hot))
    }

    /// Metadata without starting a download: from disk, from a running
    /// download, or from the origin's `stat`.
    pub async fn head(
        &self,
        origin: &Origin,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<ObjectInfo> {
        let id = self.task_id(url)?;
        let finishing = self.index.lock().finishing.contains(&id);
        if let Some(record) = self
            .storage
            .task(&id)?
            .filter(|r| r.state == TaskState::Succeeded && !finishing)
        {
            return Ok(ObjectInfo::from(&record));
        }
        let slot = self.slots.lock().await.get(&id).cloned();
        if let Some(download) = slot.as_ref().and_then(|s| s.download.get()) {
            return Ok(ObjectInfo::from(&download.record));
        }
        if let Some(e) = self.negative.get(&id) {
            return Err(e);
        }
        // The same guards as a download's stat: retried within the budget,
        // counted by the authority's breaker.
        let meta = origin
            .stat(url, headers)
            .await
            .inspect_err(|e| self.negative.record(&id, &origin.name, url.as_str(), e))?;
        Ok(ObjectInfo {
            task_id: id,
            content_length: meta.content_length,
            etag: meta.etag,
            last_modified: meta.last_modified,
            content_type: meta.content_type,
            cached: false,
        })
    }

    /// Opens an object for reading, starting (or joining) its download. A
    /// new download fetches the piece holding `first_byte` first.
    pub async fn open(
        self: &Arc<Self>,
        origin: &Arc<Origin>,
        url: &Url,
        headers: &HeaderMap,
        first_byte: u64,
    ) -> Result<Object> {
        self.open_with(origin, url, headers, first_byte, TaskSpec::default())
            .await
    }

    /// [`TaskManager::open`] of the task `spec` sets apart.
    pub async fn open_with(
        self: &Arc<Self>,
        origin: &Arc<Origin>,
        url: &Url,
        headers: &HeaderMap,
        first_byte: u64,
        spec: TaskSpec,
    ) -> Result<Object> {
        let request = Arc::new(Request {
            origin: origin.clone(),
            url: url.clone(),
            headers: headers.clone(),
            first_byte,
            spec,
        });
        self.open_request(request, 0).await
    }

    /// Boxed: a restarted download opens its task again from inside the
    /// download, which would otherwise be an infinitely sized future.
    fn open_request(
        self: &Arc<Self>,
        request: Arc<Request>,
        restarts: u32,
    ) -> futures_util::future::BoxFuture<'static, Result<Object>> {
        let me = self.clone();
        Box::pin(async move { me.open_request_inner(request, restarts).await })
    }

    async fn open_request_inner(
        self: &Arc<Self>,
        request: Arc<Request>,
        restarts: u32,
    ) -> Result<Object> {
        let id = self.task_id_of(&request.url, &request.spec)?;
        // Leased before looking, so the collector cannot delete what we find.
        let lease = Arc::new(self.lease(&id));
        if let Some(hot) = self.complete(&id)? {
            let mut record = hot.record.clone();
            let now = now_ms();
            if now.saturating_sub(record.accessed_at_ms) > ACCESS_PERSIST_MS {
                record.accessed_at_ms = now;
                // Only for eviction order: a hit is served even when the
                // metadata store cannot take the write (a full disk).
                if let Err(e) = self.storage.put_task(&record) {
                    tracing::debug!(task = %id, error = %e, "access time not persisted");
                }
                let fresh = Arc::new(Hot {
                    record: record.clone(),
                    pieces: hot.pieces.clone(),
                    file: hot.file.clone(),
                });
                if let Some(u) = self.index.lock().tasks.get_mut(&id)
                    && u.hot.as_ref().is_some_and(|h| Arc::ptr_eq(h, &hot))
                {
                    u.hot = Some(fresh);
                }
            }
            return Ok(Object {
                record,
                source: Source::Local(hot.pieces.clone()),
                file: hot.file.clone(),
                request,
                _lease: lease,
            });
        }
        if let Some(e) = self.negative.get(&id) {
            return Err(e);
        }
        let slot = self
            .slots
            .lock()
            .await
            .entry(id.clone())
            .or_default()
            .clone();
        // Concurrent openers of a missing object wait for the first one's
        // answer; the ones after it find it in the negative cache instead of
        // asking the origin again (a failed init lets the next waiter try).
        let started = slot
            .download
            .get_or_try_init(|| async {
                if let Some(e) = slot.failed.lock().clone() {
                    return Err(e);
                }
                if let Some(e) = self.negative.get(&id) {
                    return Err(e);
                }
                let watchdog = Arc::new(Watchdog::new(self.config.watchdog_timeout));
                let r = tokio::select! {
                    r = self.clone().start(request.clone(), id.clone(), restarts, watchdog.clone()) => r,
                    () = watchdog.expired() => Err(stalled(&request, &watchdog, "no answer from the origin")),
                };
                if let Err(e) = &r {
                    self.negative
                        .record(&id, &request.origin.name, request.url.as_str(), e);
                    *slot.failed.lock() = Some(e.clone());
                }
                r
            })
            .await;
        match started {
            Ok(download) => Ok(Object {
                record: download.record.clone(),
                source: Source::Download(download.clone()),
                file: download.file.clone(),
                request,
                _lease: lease,
            }),
            Err(e) => {
                self.release(&id, &slot).await;
                Err(e)
            }
        }
    }

    /// Forgets a slot, unless a newer one already replaced it.
    async fn release(&self, id: &str, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock().await;
        if slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(id);
        }
    }

    /// Asks the origin for the object, reconciles with what is stored, and
    /// spawns the download of the missing pieces.
    async fn start(
        self: Arc<Self>,
        request: Arc<Request>,
        id: String,
        restarts: u32,
        watchdog: Arc<Watchdog>,
    ) -> Result<Arc<Download>> {
        let origin = &request.origin;
        let downloading = origin.admit_download()?;
        let meta = origin.stat(&request.url, &request.headers).await?;
        watchdog.touch();
        let piece_length = self
            .fixed_piece_length(&request.spec)
            .unwrap_or_else(|| piece_length(meta.content_length));
        let now = now_ms();
        let record = TaskRecord {
            id: id.clone(),
            url: request.url.to_string(),
            content_length: meta.content_length,
            piece_length,
            etag: meta.etag.clone(),
            last_modified: meta.last_modified.clone(),
            content_type: meta.content_type.clone(),
            state: TaskState::Running,
            created_at_ms: now,
            accessed_at_ms: now,
        };
        let count = piece_count(record.content_length, piece_length) as usize;
        let mut pieces = vec![None; count];
        // Keep recorded pieces only if they belong to this very version.
        let previous = self.storage.task(&id)?;
        let same_version = previous.as_ref().is_some_and(|p| same_version(p, &record));
        let file = if same_version {
            for piece in self.storage.pieces(&id)? {
                let (offset, length) =
                    piece_span(piece.number, record.content_length, piece_length);
                if (piece.number as usize) < count
                    && piece.offset == offset
                    && piece.length == length
                {
                    pieces[piece.number as usize] = Landed::stored(&piece);
                }
            }
            self.storage.prepare_content(&id, record.content_length)?
        } else {
            if previous.is_some() {
                tracing::info!(task = %id, "origin object changed since it was stored; starting over");
                self.storage.clear_pieces(&id)?;
                self.index.lock().clear(&id);
                // Durable before the file is replaced: records must never
                // outlive the bytes they describe.
                self.storage.flush().await?;
            }
            // A new file: readers of an older version keep theirs.
            self.storage.replace_content(&id, record.content_length)?
        };
        let kept = pieces.iter().filter(|d| d.is_some()).count();
        if kept > 0 && kept < count {
            tracing::info!(task = %id, kept, of = count, "resuming download from recorded pieces");
        }
        // The bytes still to fetch must fit before any is fetched.
        let need: u64 = (0..count as u32)
            .filter(|n| pieces[*n as usize].is_none())
            .map(|n| piece_span(n, record.content_length, piece_length).1)
            .sum();
        {
            let (id, url) = (id.clone(), record.url.clone());
            disk::blocking(&self, move |me| me.admit(&id, &url, need)).await?;
        }
        let promise = Promise {
            tasks: Arc::downgrade(&self),
            left: std::sync::atomic::AtomicU64::new(need),
        };
        self.storage.put_task(&record)?;
        // Durable now, so a crash early in the download finds a record for
        // the content file and resumes rather than deleting it.
        self.storage.flush().await?;

        let first = (request.first_byte / piece_length) as u32;
        let queue = Queue {
            urgent: VecDeque::from([first]),
            pending: (0..count as u32)
                .filter(|n| pieces[*n as usize].is_none())
                .collect(),
        };
        let download = Arc::new(Download {
            record,
            file: Arc::new(file),
            progress: watch::channel(Progress {
                pieces,
                outcome: None,
            })
            .0,
            queue: parking_lot::Mutex::new(queue),
            planner: origin.planner(
                &request.url,
                &request.headers,
                &meta,
                self.config.plan_refresh_margin,
                Some(watchdog.clone()),
            ),
            request: request.clone(),
            restarts,
            watchdog,
            promise,
            _lease: self.lease(&id),
        });
        // Plan before answering, so a refused or malformed plan is a clean
        // error for the client rather than a body cut short.
        let work = !download.queue.lock().pending.is_empty();
        if work {
            download.plan(false).await?;
        }
        if work {
            self.announce_start(&download);
        }
        let me = self.clone();
        let dl = download.clone();
        tokio::spawn(async move {
            let outcome = if work {
                tokio::select! {
                    r = me.run(&dl) => r,
                    () = dl.watchdog.expired() => Err(stalled(&dl.request, &dl.watchdog, "no progress")),
                }
            } else {
                Ok(())
            };
            // The origin's bulkhead counts running downloads only.
            drop(downloading);
            dl.promise.settle(&me);
            let outcome = match outcome {
                Ok(()) => me.finish(&dl).await,
                Err(e) => Err(e),
            };
            let restart = match &outcome {
                Ok(()) => {
                    tracing::info!(task = %dl.record.id, url = %dl.record.url, bytes = dl.record.content_length, "task succeeded");
                    false
                }
                Err(e) if e.kind == ErrorKind::Changed && dl.restarts < MAX_RESTARTS => {
                    tracing::warn!(task = %dl.record.id, url = %dl.record.url, error = %e, "object changed at the origin; restarting the task");
                    true
                }
                Err(e) => {
                    tracing::warn!(task = %dl.record.id, url = %dl.record.url, error = %e, "task failed");
                    if e.kind == ErrorKind::DiskFull {
                        me.note_disk_full(e);
                    }
                    false
                }
            };
            dl.progress.send_modify(|p| p.outcome = Some(outcome));
            let slot = me.slots.lock().await.get(&dl.record.id).cloned();
            if let Some(slot) = slot
                && slot.download.get().is_some_and(|d| Arc::ptr_eq(d, &dl))
            {
                me.release(&dl.record.id, &slot).await;
            }
            if restart {
                // The pieces of the old version go; the new one starts in a
                // new file (readers of the old one were told it changed).
                if let Err(e) = me.storage.clear_pieces(&dl.record.id) {
                    tracing::warn!(task = %dl.record.id, error = %e, "dropping old pieces");
                }
                me.index.lock().clear(&dl.record.id);
                if let Err(e) = me.open_request(dl.request.clone(), dl.restarts + 1).await {
                    tracing::warn!(task = %dl.record.id, error = %e, "restarting the task");
                }
            }
        });
        Ok(download)
    }

    /// Marks a task whose pieces are all recorded as succeeded, durably.
    async fn finish(&self, dl: &Download) -> Result<()> {
        let mut record = dl.record.clone();
        record.state = TaskState::Succeeded;
        record.accessed_at_ms = now_ms();
        self.index.lock().finishing.insert(record.id.clone());
        let durable = async {
            self.storage.put_task(&record)?;
            self.storage.flush().await
        }
        .await;
        self.index.lock().finishing.remove(&record.id);
        durable?;
        // The next reader reads the record and digests once, then keeps them.
        if let Some(u) = self.index.lock().tasks.get_mut(&record.id) {
            u.hot = None;
        }
        Ok(())
    }

    /// Fetches every piece not yet recorded, as the plan allows.
    ///
    /// Fetching never waits for the disk: landed pieces go to a committer
    /// that syncs the file once for every batch and then records the batch
    /// (group commit). When fetching fails, what landed is still committed.
    async fn run(&self, dl: &Download) -> Result<()> {
        let plan = dl.plan(false).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<PieceRecord>(COMMIT_QUEUE);
        let fetch = async move {
            if plan.ranged() {
                let workers = (0..self.config.piece_concurrency.max(1)).map(|_| {
                    let tx = tx.clone();
                    async move {
                        while let Some(n) = dl.next_piece() {
                            let origin = &dl.request.origin;
                            let piece = origin
                                .guarded(&dl.request.url, "piece", || self.fetch_piece(dl, n))
                                .await?;
                            tx.send(piece)
                                .await
                                .map_err(|_| Error::internal("the piece committer stopped"))?;
                        }
                        Ok::<_, Error>(())
                    }
                });
                futures_util::future::try_join_all(workers).await?;
                Ok(())
            } else {
                let origin = &dl.request.origin;
                origin
                    .guarded(&dl.request.url, "object", || {
                        self.fetch_sequential(dl, &plan, &tx)
                    })
                    .await
            }
        };
        let (fetched, committed) = tokio::join!(fetch, self.commit(dl, rx));
        committed.and(fetched)
    }

    /// Syncs and records landed pieces, in batches.
    async fn commit(
        &self,
        dl: &Download,
        mut rx: tokio::sync::mpsc::Receiver<PieceRecord>,
    ) -> Result<()> {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(piece) = rx.try_recv() {
                batch.push(piece);
            }
            sync(&dl.file).await?;
            for piece in batch {
                self.record_piece(dl, piece)?;
            }
            // Durable at once rather than at sled's next periodic flush, so
            // a crash costs only the pieces being fetched (at most
            // `download.piece_concurrency`), not also the ones recorded in
            // the last half second.
            self.storage.flush().await?;
        }
        Ok(())
    }

    /// One ranged request for piece `n`, written at its offset. A plan the
    /// origin refuses after it expired is renewed once.
    async fn fetch_piece(&self, dl: &Download, n: u32) -> Result<PieceRecord> {
        let origin = &dl.request.origin;
        let r = &dl.record;
        let (offset, length) = piece_span(n, r.content_length, r.piece_length);
        let expect = Expect {
            offset,
            length,
            total: r.content_length,
        };
        let plan = dl.plan(false).await?;
        let mut body = match origin.fetch(&plan, expect, true).await {
            Err(e) if e.kind == ErrorKind::Forbidden && plan.expires_at_ms().is_some() => {
                let plan = dl.plan(true).await?;
                origin.fetch(&plan, expect, true).await?
            }
            other => other?,
        };
        dl.watchdog.touch();
        let received = origin.received_counter();
        let mut writer = PieceWriter::new(dl.file.clone(), n, offset, length);
        while let Some(chunk) = body.next_chunk(offset + writer.received()).await? {
            self.check_room()?;
            dl.watchdog.touch();
            received.inc_by(chunk.len() as u64);
            writer.write(chunk).await?;
        }
        let piece = writer.finish().await?;
        self.land(dl, &piece);
        Ok(piece)
    }

    /// One request for the whole object, cut into pieces as it arrives.
    /// Pieces already recorded are read past, not rewritten.
    async fn fetch_sequential(
        &self,
        dl: &Download,
        plan: &Plan,
        commit: &tokio::sync::mpsc::Sender<PieceRecord>,
    ) -> Result<()> {
        let origin = &dl.request.origin;
        let r = &dl.record;
        let expect = Expect {
            offset: 0,
            length: r.content_length,
            total: r.content_length,
        };
        let received = origin.received_counter();
        let mut body = origin.fetch(plan, expect, false).await?;
        dl.watchdog.touch();
        let count = piece_count(r.content_length, r.piece_length);
        let mut pending = Bytes::new();
        for n in 0..count {
            let (offset, length) = piece_span(n, r.content_length, r.piece_length);
            let keep = dl.progress.borrow().pieces[n as usize].is_none();
            let mut writer = keep.then(|| PieceWriter::new(dl.file.clone(), n, offset, length));
            let mut remaining = length;
            while remaining > 0 {
                if pending.is_empty() {
                    let at = offset + length - remaining;
                    pending = match body.next_chunk(at).await? {
                        Some(chunk) => {
                            dl.watchdog.touch();
                            received.inc_by(chunk.len() as u64);
                            chunk
                        }
                        None => {
                            return Err(Error::new(
                                ErrorKind::Transient,
                                format!(
                                    "origin '{}': {}: body ended at byte {} of {}",
                                    origin.name,
                                    plan.url(),
                                    offset + length - remaining,
                                    r.content_length
                                ),
                            ));
                        }
                    };
                }
                self.check_room()?;
                let take = (remaining as usize).min(pending.len());
                let part = pending.split_to(take);
                if let Some(w) = writer.as_mut() {
                    w.write(part).await?;
                }
                remaining -= take as u64;
            }
            if let Some(w) = writer {
                let piece = w.finish().await?;
                self.land(dl, &piece);
                commit
                    .send(piece)
                    .await
                    .map_err(|_| Error::internal("the piece committer stopped"))?;
            }
        }
        if !pending.is_empty() || body.next_chunk(r.content_length).await?.is_some() {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "origin '{}': {}: body is longer than {} bytes",
                    origin.name,
                    plan.url(),
                    r.content_length
                ),
            ));
        }
        Ok(())
    }

    /// Lets readers read a piece written in full (not yet synced: readers
    /// need the bytes, only the record needs them durable).
    fn land(&self, dl: &Download, piece: &PieceRecord) {
        if let Some(landed) = Landed::stored(piece) {
            dl.progress.send_modify(|p| {
                p.pieces[piece.number as usize] = Some(Landed {
                    fresh: true,
                    ..landed
                })
            });
        }
    }

    /// Records a durable piece.
    fn record_piece(&self, dl: &Download, piece: PieceRecord) -> Result<()> {
        self.storage.put_piece(&dl.record.id, &piece)?;
        self.index.lock().add(&dl.record.id, piece.length);
        dl.promise.spend(self, piece.length);
        if self.over_high_watermark() {
            self.gc_kick.notify_one();
        }
        Ok(())
    }

    /// Waits until piece `n` of `object` can be read; returns its crc32
    /// and whether it is fresh from this download.
    async fn wait_piece(object: &Object, n: u32) -> Result<Landed> {
        let dl = match &object.source {
            Source::Local(pieces) => return Ok(pieces[n as usize]),
            Source::Download(dl) => dl,
        };
        dl.want(n);
        let mut rx = dl.progress.subscribe();
        let p = rx
            .wait_for(|p| p.pieces[n as usize].is_some() || p.outcome.is_some())
            .await
            .map_err(|_| Error::internal("download vanished"))?;
        if let Some(landed) = p.pieces[n as usize] {
            return Ok(landed);
        }
        Err(match &p.outcome {
            Some(Err(e)) => e.clone(),
            _ => Error::internal(format!("download ended without piece {n}")),
        })
    }

    /// Waits until `object` is stored whole (its download ended), telling
    /// `progress` the bytes landed so far each time more land.
    pub async fn wait_stored(&self, object: &Object, mut progress: impl FnMut(u64)) -> Result<()> {
        let dl = match &object.source {
            Source::Local(_) => {
                progress(object.record.content_length);
                return Ok(());
            }
            Source::Download(dl) => dl,
        };
        let r = &dl.record;
        let mut rx = dl.progress.subscribe();
        loop {
            let (bytes, outcome) = {
                let p = rx.borrow_and_update();
                let bytes: u64 = p
                    .pieces
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.is_some())
                    .map(|(n, _)| piece_span(n as u32, r.content_length, r.piece_length).1)
                    .sum();
                (bytes, p.outcome.clone())
            };
            progress(bytes);
            if let Some(outcome) = outcome {
                return outcome;
            }
            rx.changed()
                .await
                .map_err(|_| Error::internal("download vanished"))?;
        }
    }

    /// Waits until the piece holding byte `at` of a downloading object has
    /// landed, so an answer can start with a status that holds: a download
    /// that fails (its watchdog, an origin error) before that is told to
    /// the client as an error status instead of a body cut short.
    pub async fn ready(&self, object: &Object, at: u64) -> Result<()> {
        if at < object.record.content_length {
            Self::wait_piece(object, (at / object.record.piece_length) as u32).await?;
        }
        Ok(())
    }

    /// Drops piece `n` whose bytes failed their digest and has it fetched
    /// again; `object` then reads from the repairing download.
    async fn repair(self: &Arc<Self>, object: &mut Object, n: u32) -> Result<()> {
        let id = object.record.id.clone();
        let (_, length) = piece_span(n, object.record.content_length, object.record.piece_length);
        self.storage.remove_piece(&id, n)?;
        if let Some(mut record) = self.storage.task(&id)? {
            record.state = TaskState::Running;
            self.storage.put_task(&record)?;
        }
        self.index.lock().sub(&id, length);
        let fresh = self.open_request(object.request.clone(), 0).await?;
        if !same_version(&fresh.record, &object.record) {
            return Err(Error::new(
                ErrorKind::Changed,
                format!(
                    "{}: the object changed at the origin while it was read",
                    object.record.url
                ),
            ));
        }
        object.source = fresh.source;
        object.file = fresh.file;
        Ok(())
    }

    /// Reads piece `n` whole, checking its crc32 when configured (and the
    /// piece is not fresh from this process's download).
    fn start_read(&self, object: &Object, n: u32, landed: Landed) -> PieceRead {
        let r = &object.record;
        let (offset, length) = piece_span(n, r.content_length, r.piece_length);
        let file = object.file.clone();
        let verify = self.config.verify_on_read && !landed.fresh;
        let id = r.id.clone();
        let read = move || {
            let buf = read_at(&file, offset, length as usize)
                .map_err(|e| Error::internal(format!("reading piece {n} of task {id}: {e}")))?;
            if verify && crc32fast::hash(&buf) != landed.crc {
                tracing::error!(task = %id, piece = n, "piece bytes do not match their digest; fetching it again");
                return Ok(None);
            }
            Ok(Some(Bytes::from(buf)))
        };
        if length <= INLINE_READ {
            PieceRead::Done(read())
        } else {
            PieceRead::Blocking(tokio::task::spawn_blocking(read))
        }
    }

    /// Piece `n` if it can be read without waiting (stored, or landed).
    fn landed_now(object: &Object, n: u32) -> Option<Landed> {
        match &object.source {
            Source::Local(pieces) => pieces.get(n as usize).copied(),
            Source::Download(dl) => dl
                .progress
                .borrow()
                .pieces
                .get(n as usize)
                .copied()
                .flatten(),
        }
    }

    /// Streams bytes `start..end` of an object, each piece as soon as it is
    /// readable and checked. While one piece is sent, the next one (if
    /// already readable, and the shared read-ahead budget allows) is read
    /// and checked on a blocking thread. A failed
    /// download ends the stream with its error; a corrupt piece is fetched
    /// again before it is sent.
    pub fn read(
        self: &Arc<Self>,
        object: &Object,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let mut object = object.clone();
        let me = self.clone();
        async_stream::try_stream! {
            let piece_length = object.record.piece_length;
            let mut pos = start;
            let mut ahead: Option<(u32, PieceRead, tokio::sync::OwnedSemaphorePermit)> = None;
            while pos < end {
                let n = (pos / piece_length) as u32;
                let mut attempts = 0;
                let bytes = loop {
                    let landed = Self::wait_piece(&object, n).await.map_err(io::Error::other)?;
                    let read = match ahead.take() {
                        Some((m, read, _budget)) if m == n => read,
                        _ => me.start_read(&object, n, landed),
                    };
                    let read = read.bytes().await?;
                    if let Some(bytes) = read.map_err(io::Error::other)? {
                        break bytes;
                    }
                    attempts += 1;
                    if attempts > 2 {
                        Err(io::Error::other(format!("piece {n} of task {} stays corrupt after refetching", object.record.id)))?;
                    }
                    me.repair(&mut object, n).await.map_err(io::Error::other)?;
                };
                let offset = n as u64 * piece_length;
                let part = bytes.slice((pos - offset) as usize..((end - offset) as usize).min(bytes.len()));
                pos += part.len() as u64;
                if pos < end
                    && let Some(landed) = Self::landed_now(&object, n + 1)
                    && let Ok(budget) = me.read_ahead.clone().try_acquire_many_owned(
                        piece_length.div_ceil(1 << 20) as u32,
                    )
                {
                    ahead = Some((n + 1, me.start_read(&object, n + 1, landed), budget));
                }
                yield part;
            }
        }
    }
}

/// A task record as the API shows it, with what the index knows of it.
fn task_view(index: &Index, r: TaskRecord, download: Option<DownloadView>) -> TaskView {
    let usage = index.tasks.get(&r.id);
    let state = if download.is_some() {
        "running"
    } else if r.state == TaskState::Succeeded && !index.finishing.contains(&r.id) {
        "succeeded"
    } else {
        "partial"
    };
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

/// Reads `len` bytes at `offset` into a new buffer (no zero-fill first: on
/// the hot path that is a whole extra pass over the bytes).
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let at = offset + done as u64;
        let spare = &mut buf.spare_capacity_mut()[..len - done];
        let (read, _) = rustix::io::pread(file, spare, at)?;
        if read.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = read.len();
        // SAFETY: pread initialised the first `n` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok(buf)
}

/// Writes `chunks` contiguously at `offset` with as few `pwritev` calls as
/// the kernel allows.
fn write_all_at(file: &File, chunks: &[Bytes], mut offset: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = rustix::io::pwritev(file, bufs, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        io::IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Makes a task's written bytes durable (fdatasync: the file's new blocks
/// included) before a piece is recorded.
async fn sync(file: &Arc<File>) -> Result<()> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || file.sync_data())
        .await
        .map_err(|e| Error::internal(format!("piece committer: {e}")))?
        .map_err(|e| Error::io("syncing pieces to disk", &e))
}

/// Whether two records describe the same version of an object.
fn same_version(a: &TaskRecord, b: &TaskRecord) -> bool {
    a.content_length == b.content_length
        && a.piece_length == b.piece_length
        && a.etag == b.etag
        && a.last_modified == b.last_modified
}

/// The error of a task its watchdog stopped.
fn stalled(request: &Request, watchdog: &Watchdog, what: &str) -> Error {
    crate::metrics::METRICS.watchdog(&request.origin.name, "task");
    Error::new(
        ErrorKind::Timeout,
        format!(
            "origin '{}': {}: {what} for {} (download.watchdog_timeout); the task was stopped",
            request.origin.name,
            request.url,
            humantime::format_duration(watchdog.timeout())
        ),
    )
}

/// Writes one piece at its offset in buffered positioned writes, checking
/// its length and computing its digest. The caller lands the piece for
/// readers, then syncs the file, and only then records it.
struct PieceWriter {
    file: Arc<File>,
    number: u32,
    offset: u64,
    length: u64,
    written: u64,
    /// Received chunks not yet written, kept as they came (no copy): one
    /// `pwritev` writes them.
    pending: Vec<Bytes>,
    pending_len: usize,
    crc: crc32fast::Hasher,
    started: tokio::time::Instant,
}

impl PieceWriter {
    fn new(file: Arc<File>, number: u32, offset: u64, length: u64) -> Self {
        Self {
            file,
            number,
            offset,
            length,
            written: 0,
            pending: Vec::new(),
            pending_len: 0,
            crc: crc32fast::Hasher::new(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Bytes received so far.
    fn received(&self) -> u64 {
        self.written + self.pending_len as u64
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.written + (self.pending_len + chunk.len()) as u64 > self.length {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "origin sent more than the {} bytes of piece {}",
                    self.length, self.number
                ),
            ));
        }
        self.crc.update(&chunk);
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= WRITE_BUFFER || self.pending.len() >= WRITE_CHUNKS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.pending);
        let len = std::mem::take(&mut self.pending_len) as u64;
        let file = self.file.clone();
        let at = self.offset + self.written;
        let n = self.number;
        tokio::task::spawn_blocking(move || write_all_at(&file, &chunks, at))
            .await
            .map_err(|e| Error::internal(format!("piece writer: {e}")))?
            .map_err(|e| Error::io(format!("writing piece {n} to disk"), &e))?;
        self.written += len;
        Ok(())
    }

    async fn finish(mut self) -> Result<PieceRecord> {
        self.flush().await?;
        if self.written != self.length {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "piece {} ended after {} of {} bytes",
                    self.number, self.written, self.length
                ),
            ));
        }
        Ok(PieceRecord {
            number: self.number,
            offset: self.offset,
            length: self.length,
            digest: crc32_digest(self.crc.finalize()),
            cost_ms: self.started.elapsed().as_millis() as u64,
            created_at_ms: now_ms(),
        })
    }
}
