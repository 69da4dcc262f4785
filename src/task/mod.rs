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
mod index;
mod lifecycle;
mod object;
mod queue;
mod read;
mod scrub;
mod state;
mod transfer;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use tokio::sync::Notify;
use url::Url;

use crate::config::{DownloadConfig, StorageConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::origin::Origin;
use crate::piece::TaskIdParams;
use crate::resilience::negative;
use crate::storage::{Storage, TaskState};
use index::Index;
use lifecycle::{Request, Slot};

pub use lifecycle::MAX_RESTARTS;
pub use state::State;

pub use object::{Object, PieceInfo};
pub use view::{DownloadView, ObjectInfo, TaskView};

/// Memory for pieces read ahead of what readers send, over all readers.
const READ_AHEAD_MIB: usize = 64;

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
    /// An OCI blob URL's task is named by its digest alone, as Dragonfly's
    /// registry mirror names it (`enable_task_id_based_blob_digest`); its
    /// bytes are then checked against that digest before it is complete.
    /// Set by a content-addressed origin (`oci`) or by the peer asking.
    pub blob_digest: bool,
}

impl TaskSpec {
    /// This spec for a task of `origin`: a content-addressed origin names
    /// its blobs by digest.
    pub fn of(mut self, origin: &Origin) -> Self {
        self.blob_digest |= origin.content_addressed;
        self
    }

    /// The sha256 (hex) that the task of `url` must hash to: the blob
    /// digest that names it, when it is named so.
    pub fn content_digest<'a>(&self, url: &'a Url) -> Option<&'a str> {
        if !self.blob_digest {
            return None;
        }
        crate::piece::blob_digest(url.as_str()).map(|(_, hex)| hex)
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
    /// Stored tasks kept open for hits (`storage.open_files`, bounded by
    /// the process's descriptor limit).
    open_files: usize,
    /// The runtime this was made on (the server's main one), where work
    /// that outlives a request runs (see [`TaskManager::spawn`]).
    main: Option<tokio::runtime::Handle>,
    /// Set by `seedgate drain`: no new task starts; stored ones are served.
    draining: std::sync::atomic::AtomicBool,
}

/// See [`TaskManager::on_back_to_source`].
struct BackToSourceHook(Box<dyn Fn(Object) + Send + Sync>);

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
    type Target = dyn Fn(Object) + Send + Sync;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// `storage.open_files`, or half the process's descriptor limit if that is
/// less: the rest is for connections, downloads and sled.
fn open_files_allowed(configured: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let allowed = configured.min((limit / 2).max(16) as usize);
    if allowed < configured {
        tracing::warn!(
            configured,
            allowed,
            descriptor_limit = limit,
            "storage.open_files is more than half the descriptor limit allows; using less"
        );
    }
    allowed
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
            slots: tokio::sync::Mutex::new(HashMap::new()),
            index: Arc::new(parking_lot::Mutex::new(index)),
            gc_kick: Notify::new(),
            read_ahead: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_MIB)),
            negative: negative::NegativeCache::new(negative),
            back_to_source: std::sync::OnceLock::new(),
            removed: std::sync::OnceLock::new(),
            disk: Default::default(),
            open_files: open_files_allowed(gc.open_files),
            gc,
            main: tokio::runtime::Handle::try_current().ok(),
            draining: Default::default(),
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

    /// Stops taking new tasks (`seedgate drain`): an object not stored
    /// whole is refused with 503 and the reason; stored ones, downloads
    /// already running and uploads go on. Only a restart undoes it.
    pub fn drain(&self) {
        if !self
            .draining
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!("draining: no new tasks are taken; stored objects are still served");
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs `work` on the main runtime: downloads and jobs outlive the
    /// request that started them, and the gateway's accept threads
    /// ([`crate::Server::run`]) are kept for answering.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.main {
            Some(rt) => rt.spawn(work),
            None => tokio::spawn(work),
        }
    }

    /// The Dragonfly task id of a URL of `origin` under this configuration.
    pub fn task_id(&self, origin: &Origin, url: &Url) -> Result<String> {
        self.task_id_of(url, &TaskSpec::default().of(origin))
    }

    /// The piece length `spec` fixes, or the configured one.
    fn fixed_piece_length(&self, spec: &TaskSpec) -> Option<u64> {
        spec.piece_length
            .or(self.config.piece_length.map(|b| b.as_u64()))
    }

    /// The Dragonfly task id of a URL with a tag, application or piece
    /// length, or the digest of a blob named by it.
    pub fn task_id_of(&self, url: &Url, spec: &TaskSpec) -> Result<String> {
        if let Some(hex) = spec.content_digest(url) {
            return Ok(hex.to_owned());
        }
        crate::piece::task_id_of_url(
            url,
            &TaskIdParams {
                url: url.as_str(),
                piece_length: self.fixed_piece_length(spec),
                tag: spec.tag.as_deref(),
                application: spec.application.as_deref(),
                filtered_query_params: &spec.filtered_query_params,
            },
        )
        .map_err(|e| Error::new(ErrorKind::Invalid, format!("'{url}' is not a URL: {e}")))
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

    /// Metadata without starting a download: from disk, from a running
    /// download, or from the origin's `stat`.
    pub async fn head(
        &self,
        origin: &Origin,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<ObjectInfo<'static>> {
        let id = self.task_id(origin, url)?;
        let finishing = self.index.lock().finishing.contains(&id);
        if let Some(record) = self
            .storage
            .task(&id)?
            .filter(|r| r.state == TaskState::Succeeded && !finishing)
        {
            return Ok(ObjectInfo::from(&record).into_owned());
        }
        let slot = self.slots.lock().await.get(&id).cloned();
        if let Some(download) = slot.as_ref().and_then(|s| s.download.get()) {
            return Ok(ObjectInfo::from(&download.record).into_owned());
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
            task_id: id.into(),
            content_length: meta.content_length,
            etag: meta.etag.map(Into::into),
            last_modified: meta.last_modified.map(Into::into),
            content_type: meta.content_type.map(Into::into),
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
        let spec = spec.of(origin);
        if let Some(object) = self.open_hit(origin, url, &spec)? {
            return Ok(object);
        }
        let request = Arc::new(Request {
            origin: origin.clone(),
            url: url.clone(),
            headers: origin.forwarded(headers),
            first_byte,
            spec,
        });
        self.open_request(request, 0).await
    }

    /// Calls `hook` with every download that goes back to the origin, as
    /// it starts (before its first piece is fetched). Set once.
    pub fn on_back_to_source(&self, hook: impl Fn(Object) + Send + Sync + 'static) {
        if self
            .back_to_source
            .set(BackToSourceHook(Box::new(hook)))
            .is_err()
        {
            tracing::warn!("a back-to-source hook is already set; ignoring another");
        }
    }

    /// Calls `hook` with the id of every task removed from the store
    /// (evicted by the collector or by admission, or deleted on request),
    /// after it is gone. The hook must not block: it runs under the
    /// engine's calls. Set once.
    pub fn on_removed(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        if self.removed.set(RemovedHook(Box::new(hook))).is_err() {
            tracing::warn!("a removal hook is already set; ignoring another");
        }
    }

    pub(super) fn tell_removed(&self, id: &str) {
        if let Some(hook) = self.removed.get() {
            (hook.0)(id);
        }
    }

    /// How many pieces one download fetches at once (`download.piece_concurrency`).
    pub fn piece_concurrency(&self) -> usize {
        self.config.piece_concurrency
    }

    /// A peer's view of a download just started.
    pub(super) fn announce_start(&self, dl: &Arc<lifecycle::Download>) {
        if let Some(hook) = self.back_to_source.get() {
            hook(Object::downloading(dl, Arc::new(self.lease(&dl.record.id))));
        }
    }
}
