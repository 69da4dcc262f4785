//! The download lifecycle: one download per task, shared by every opener.
//!
//! A task's download goes through these states, each held in one place:
//!
//! 1. **starting** — a [`Slot`] exists and its download is being made: the
//!    origin's `stat`, admission (disk room, the origin's bulkhead), the
//!    first plan. Openers arriving meanwhile wait on the slot; when
//!    starting fails they all get its error (`Slot::failed`).
//! 2. **fetching** — the [`Download`] runs: pieces land and are broadcast
//!    through its [`Progress`]; readers may read each landed piece.
//! 3. **finishing** — every piece is recorded; the task is written as
//!    succeeded but not yet flushed, so it is not yet offered as stored
//!    (`Index::finishing`).
//! 4. **ended** — its [`Phase`] says succeeded or failed. A download
//!    that saw another version of the object ([`ErrorKind::Changed`])
//!    starts over in a new content file, at most [`MAX_RESTARTS`] times.
//!
//! Every state string an API shows is derived from these by
//! [`State`](super::State).

use std::fs::File;
use std::sync::Arc;

use http::HeaderMap;
use tokio::sync::{OnceCell, watch};
use tracing::Instrument;
use url::Url;

use super::index::Lease;
use super::object::{Hot, Landed, Object};
use super::queue::Queue;
use super::state::{Phase, Progress};
use super::{TaskManager, TaskSpec, disk};
use crate::clock::now_ms;
use crate::error::{Blame, Error, ErrorKind, Result};
use crate::origin::{Origin, Plan, Planner};
use crate::piece::{piece_count, piece_length, piece_span};
use crate::resilience::watchdog::Watchdog;
use crate::storage::{TaskRecord, TaskState};

/// A task whose download keeps seeing a new version gives up after this
/// many fresh starts.
pub const MAX_RESTARTS: u32 = 3;
/// A task's last-access time is persisted at most this often.
const ACCESS_PERSIST_MS: u64 = 60_000;

/// What a download needs to ask its plugin again (plans expire; a changed
/// object restarts the task).
#[derive(Debug)]
pub(super) struct Request {
    pub(super) origin: Arc<Origin>,
    pub(super) url: Url,
    /// The client headers the origin forwards to its plugin, and only
    /// those (`Origin::forwarded`): nothing else of them is ever read.
    pub(super) headers: HeaderMap,
    /// The first byte the opener will read: its piece is fetched first.
    pub(super) first_byte: u64,
    pub(super) spec: TaskSpec,
}

/// A download in flight.
#[derive(Debug)]
pub struct Download {
    pub record: TaskRecord,
    pub(super) file: Arc<File>,
    pub(super) progress: watch::Sender<Progress>,
    pub(super) queue: parking_lot::Mutex<Queue>,
    /// Its plan, renewed before it expires.
    pub(super) planner: Planner,
    pub(super) request: Arc<Request>,
    pub(super) restarts: u32,
    /// Fails the task when it stops making progress.
    pub(super) watchdog: Arc<Watchdog>,
    /// The space admitted for it and not yet written.
    pub(super) promise: Promise,
    /// For a task named by a blob digest: the sha256 of its bytes, hashed
    /// as the landed prefix grows (so hashing overlaps the transfer).
    pub(super) hashing:
        parking_lot::Mutex<Option<tokio::task::JoinHandle<std::io::Result<String>>>>,
    pub(super) _lease: Lease,
}

/// Hashes a download's bytes in order as its landed prefix grows, from
/// the content file (the pages just written); ends with the hex sha256
/// once every byte is hashed, or with an error if the download ends (or
/// goes) first. Holds no handle on the download itself.
async fn hash_as_landed(
    mut rx: watch::Receiver<Progress>,
    file: Arc<File>,
    length: u64,
    piece_length: u64,
) -> std::io::Result<String> {
    use sha2::Digest;
    // One read buffer for the whole blob, moved to each blocking call.
    let mut state = (sha2::Sha256::new(), vec![0u8; HASH_READ]);
    let mut at = 0;
    loop {
        let (prefix, ended) = {
            let p = rx.borrow_and_update();
            let whole = p.pieces.iter().take_while(|l| l.is_some()).count() as u64;
            ((whole * piece_length).min(length), !p.phase.fetching())
        };
        if prefix > at {
            let file = file.clone();
            state = tokio::task::spawn_blocking(move || {
                let (mut hasher, mut buf) = state;
                hash_range(&file, at, prefix, &mut hasher, &mut buf).map(|()| (hasher, buf))
            })
            .await
            .map_err(std::io::Error::other)??;
            at = prefix;
            continue;
        }
        if at >= length {
            return Ok(hex::encode(state.0.finalize()));
        }
        if ended {
            return Err(std::io::Error::other(
                "the download ended before the blob was whole",
            ));
        }
        if rx.changed().await.is_err() {
            return Err(std::io::Error::other("the download went"));
        }
    }
}

/// Bytes of disk promised to one download at its admission; given back as
/// its pieces are recorded, and all that is left when it ends.
#[derive(Debug)]
pub(super) struct Promise {
    pub(super) tasks: std::sync::Weak<TaskManager>,
    pub(super) left: std::sync::atomic::AtomicU64,
}

impl Promise {
    /// `bytes` were written and recorded: they are used, not promised.
    pub(super) fn spend(&self, tasks: &TaskManager, bytes: u64) {
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
    pub(super) fn settle(&self, tasks: &TaskManager) {
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
    pub(super) fn next_piece(&self) -> Option<u32> {
        self.queue.lock().next()
    }

    /// A reader waits for piece `n`: fetch it next.
    pub(super) fn want(&self, n: u32) {
        self.queue.lock().want(n);
    }

    /// The plan to fetch with, renewed when it is about to expire (or when
    /// `force`d after the origin refused it).
    pub(super) async fn plan(&self, force: bool) -> Result<Plan> {
        self.planner.get(&self.request.origin, force).await
    }
}

/// A per-task slot that makes concurrent opens share one download.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) download: OnceCell<Arc<Download>>,
    /// Why starting failed: openers already waiting on this slot get the
    /// same answer at once instead of each trying (and waiting) again.
    pub(super) failed: parking_lot::Mutex<Option<Error>>,
}

/// Whether two records describe the same version of an object.
pub(super) fn same_version(a: &TaskRecord, b: &TaskRecord) -> bool {
    a.content_length == b.content_length
        && a.piece_length == b.piece_length
        && a.etag == b.etag
        && a.last_modified == b.last_modified
}

/// The error of a task its watchdog stopped.
pub(super) fn stalled(request: &Request, watchdog: &Watchdog, what: &str) -> Error {
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

impl TaskManager {
    /// Boxed: a restarted download opens its task again from inside the
    /// download, which would otherwise be an infinitely sized future.
    pub(super) fn open_request(
        self: &Arc<Self>,
        request: Arc<Request>,
        restarts: u32,
    ) -> futures_util::future::BoxFuture<'static, Result<Object>> {
        let me = self.clone();
        Box::pin(async move { me.open_request_inner(request, restarts).await })
    }

    /// A handle on `url` if it is stored whole and its hot copy is in the
    /// index, for an origin that forwards no client header; `None` sends
    /// the caller the whole way ([`TaskManager::open_request`]).
    ///
    /// The `Request` a repair would use (an `Arc`, the URL and the
    /// request's headers copied) is then not made for every hit: with no
    /// header to forward, a repair makes it from the origin, the record's
    /// URL and the spec.
    pub(super) fn open_hit(
        self: &Arc<Self>,
        origin: &Arc<Origin>,
        url: &Url,
        spec: &TaskSpec,
    ) -> Result<Option<Object>> {
        if origin.forwards_headers() {
            return Ok(None);
        }
        let id = self.task_id_of(url, spec)?;
        let (lease, hot) = self.lease_hot(&id);
        let Some(hot) = hot else {
            return Ok(None);
        };
        let origin = Some(origin.clone());
        let lease = Arc::new(lease);
        Ok(Some(self.open_stored(
            &id,
            &hot,
            spec.clone(),
            None,
            origin,
            lease,
        )))
    }

    /// A handle on a stored object from its hot copy; records the access
    /// (for eviction order) at most once per `ACCESS_PERSIST_MS`.
    fn open_stored(
        &self,
        id: &str,
        hot: &Arc<Hot>,
        spec: TaskSpec,
        request: Option<Arc<Request>>,
        origin: Option<Arc<Origin>>,
        lease: Arc<Lease>,
    ) -> Object {
        let mut record = hot.record.clone();
        let now = now_ms();
        if now.saturating_sub(record.accessed_at_ms) > ACCESS_PERSIST_MS {
            Arc::make_mut(&mut record).accessed_at_ms = now;
            // Only for eviction order: a hit is served even when the
            // metadata store cannot take the write (a full disk).
            if let Err(e) = self.storage.put_task(&record) {
                tracing::debug!(task = %id, error = %e, "access time not persisted");
            }
            let fresh = Arc::new(Hot {
                record: record.clone(),
                pieces: hot.pieces.clone(),
                file: hot.file.clone(),
                checked: hot.checked.clone(),
                headers: hot.headers.clone(),
            });
            if let Some(u) = self.index.lock().tasks.get_mut(id)
                && u.hot.as_ref().is_some_and(|h| Arc::ptr_eq(h, hot))
            {
                u.hot = Some(fresh);
            }
        }
        Object::stored(record, hot, spec, request, origin, lease)
    }

    pub(super) async fn open_request_inner(
        self: &Arc<Self>,
        request: Arc<Request>,
        restarts: u32,
    ) -> Result<Object> {
        let id = self.task_id_of(&request.url, &request.spec)?;
        // Leased before looking, so the collector cannot delete what we find.
        let (lease, hot) = self.lease_hot(&id);
        let lease = Arc::new(lease);
        let hot = match hot {
            Some(hot) => Some(hot),
            None => self.complete(&id)?,
        };
        if let Some(hot) = hot {
            let spec = request.spec.clone();
            return Ok(self.open_stored(&id, &hot, spec, Some(request), None, lease));
        }
        if let Some(e) = self.negative.get(&id) {
            return Err(e);
        }
        if self.draining() && !self.slots.lock().await.contains_key(&id) {
            let mut e = Error::new(
                ErrorKind::Overloaded,
                "this seed peer is draining for maintenance (seedgate drain): it starts no new task; objects it stores whole are still served",
            );
            e.retry_after = Some(std::time::Duration::from_secs(30));
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
                let span = tracing::info_span!(
                    "task",
                    task_id = %id,
                    origin = %request.origin.name,
                    url = %request.url,
                );
                let start = self
                    .clone()
                    .start(request.clone(), id.clone(), restarts, watchdog.clone())
                    .instrument(span);
                let r = tokio::select! {
                    r = start => r,
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
            Ok(download) => Ok(Object::downloading(download, lease)),
            Err(e) => {
                self.release(&id, &slot).await;
                Err(e)
            }
        }
    }

    /// Forgets a slot, unless a newer one already replaced it.
    pub(super) async fn release(&self, id: &str, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock().await;
        if slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(id);
        }
    }

    /// Asks the origin for the object, reconciles with what is stored, and
    /// spawns the download of the missing pieces.
    pub(super) async fn start(
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
        let queue = Queue::new(count as u32, first, |n| pieces[n as usize].is_some());
        let download = Arc::new(Download {
            record,
            file: Arc::new(file),
            progress: watch::channel(Progress {
                pieces,
                phase: Phase::Fetching,
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
            hashing: parking_lot::Mutex::new(None),
            _lease: self.lease(&id),
        });
        if request.spec.content_digest(&request.url).is_some() {
            *download.hashing.lock() = Some(self.spawn(hash_as_landed(
                download.progress.subscribe(),
                download.file.clone(),
                download.record.content_length,
                download.record.piece_length,
            )));
        }
        // Plan before answering, so a refused or malformed plan is a clean
        // error for the client rather than a body cut short.
        let work = !download.queue.lock().is_empty();
        if work {
            download.plan(false).await?;
        }
        if work {
            self.announce_start(&download);
        }
        let me = self.clone();
        let dl = download.clone();
        // The download outlives the request that started it; its lines
        // keep the task's span (and so the request that caused it).
        self.spawn(tracing::Instrument::in_current_span(async move {
            // The origin's bulkhead counts downloads while they fetch
            // (`run` gives the slot back when fetching ends).
            let outcome = if work {
                tokio::select! {
                    r = me.run(&dl, downloading) => r,
                    () = dl.watchdog.expired() => Err(stalled(&dl.request, &dl.watchdog, "no progress")),
                }
            } else {
                drop(downloading);
                Ok(())
            };
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
            dl.progress.send_modify(|p| p.phase = Phase::ended(outcome));
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
        }));
        Ok(download)
    }

    /// Marks a task whose pieces are all recorded as succeeded, durably.
    /// A task named by a blob digest is first hashed whole: bytes that do
    /// not match fail it, and its pieces are dropped.
    pub(super) async fn finish(&self, dl: &Download) -> Result<()> {
        if let Some(want) = dl.request.spec.content_digest(&dl.request.url) {
            let hashing = dl.hashing.lock().take();
            let got = match hashing {
                Some(h) => h
                    .await
                    .map_err(|e| Error::internal(format!("hashing the blob: {e}")))?,
                None => {
                    let (file, length) = (dl.file.clone(), dl.record.content_length);
                    tokio::task::spawn_blocking(move || {
                        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                        let mut buf = vec![0u8; HASH_READ];
                        hash_range(&file, 0, length, &mut hasher, &mut buf)
                            .map(|()| hex::encode(sha2::Digest::finalize(hasher)))
                    })
                    .await
                    .map_err(|e| Error::internal(format!("hashing the blob: {e}")))?
                }
            }
            .map_err(|e| Error::internal(format!("reading the blob to hash it: {e}")))?;
            if got != want {
                self.storage.clear_pieces(&dl.record.id)?;
                self.index.lock().clear(&dl.record.id);
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!(
                        "origin '{}': {}: the blob's bytes hash to sha256:{got}, not the digest that names it; nothing was kept",
                        dl.request.origin.name, dl.request.url
                    ),
                )
                .blamed(Blame::Origin));
            }
        }
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
}

/// Bytes a blob's hash reads from its content file at once.
const HASH_READ: usize = 1 << 20;

/// Feeds bytes `from..to` of `file` to `hasher`, read through `buf`.
fn hash_range(
    file: &std::fs::File,
    from: u64,
    to: u64,
    hasher: &mut sha2::Sha256,
    buf: &mut [u8],
) -> std::io::Result<()> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let mut at = from;
    while at < to {
        let want = buf.len().min((to - at) as usize);
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the content file ends at byte {at} of {to}"),
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_length_layout_and_validators() {
        let a = TaskRecord {
            id: "t".into(),
            url: "http://o/x".into(),
            content_length: 10,
            piece_length: 4,
            etag: Some("\"1\"".into()),
            last_modified: None,
            content_type: None,
            state: TaskState::Running,
            created_at_ms: 0,
            accessed_at_ms: 0,
        };
        let mut b = a.clone();
        b.state = TaskState::Succeeded;
        b.content_type = Some("text/plain".into());
        assert!(
            same_version(&a, &b),
            "state and media type are not the version"
        );
        b.etag = Some("\"2\"".into());
        assert!(!same_version(&a, &b));
        let mut c = a.clone();
        c.piece_length = 8;
        assert!(!same_version(&a, &c));
    }
}
