//! Tasks: one origin object kept as pieces on local disk.
//!
//! [`TaskManager::open`] turns a URL into a readable [`Object`]:
//! - a task whose every piece is recorded is served from disk and the origin
//!   is not asked at all;
//! - otherwise one download per task runs in the background (concurrent
//!   readers share it), fetching the pieces not yet recorded — in parallel
//!   with one ranged request each when the plan allows ranges, else as one
//!   sequential stream cut into pieces;
//! - readers stream each piece as soon as it is recorded.
//!
//! A piece is recorded only after its bytes are synced, and a task is
//! marked succeeded only after all its pieces are, so a restart resumes from
//! what is durable.

mod id;

pub use id::*;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{Mutex, OnceCell, watch};
use url::Url;

use crate::config::DownloadConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::origin::{Expect, Origin};
use crate::plugin::bindings::seedgate::plugin::types as wit;
use crate::storage::{PieceRecord, Storage, TaskRecord, TaskState};

/// Size of the chunks a reader sends.
const READ_CHUNK: usize = 256 * 1024;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Progress of one download, broadcast to its readers.
#[derive(Debug, Clone)]
struct Progress {
    /// `done[n]`: piece `n` is durable and recorded.
    done: Vec<bool>,
    /// Set once the download ends.
    outcome: Option<Result<(), Error>>,
}

/// A download in flight.
#[derive(Debug)]
pub struct Download {
    pub record: TaskRecord,
    progress: watch::Sender<Progress>,
}

/// A per-task slot that makes concurrent opens share one download.
#[derive(Debug, Default)]
struct Slot {
    download: OnceCell<Arc<Download>>,
}

/// Where an object's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    /// Every piece is on disk.
    Local,
    /// Pieces are landing.
    Download(Arc<Download>),
}

/// An object ready to read.
#[derive(Debug, Clone)]
pub struct Object {
    pub record: TaskRecord,
    source: Source,
    path: PathBuf,
}

impl Object {
    /// True when every byte was already on disk when the object was opened.
    pub fn cached(&self) -> bool {
        matches!(self.source, Source::Local)
    }
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

/// Owns every task: opens objects, runs downloads, streams bytes.
#[derive(Debug)]
pub struct TaskManager {
    storage: Arc<Storage>,
    config: DownloadConfig,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl TaskManager {
    pub fn new(storage: Arc<Storage>, config: DownloadConfig) -> Arc<Self> {
        Arc::new(Self {
            storage,
            config,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The Dragonfly task id of a URL under this configuration.
    pub fn task_id(&self, url: &Url) -> Result<String> {
        task_id(&TaskIdParams {
            url: url.as_str(),
            piece_length: self.config.piece_length.map(|b| b.as_u64()),
            ..Default::default()
        })
        .map_err(|e| Error::new(ErrorKind::Invalid, format!("'{url}' is not a URL: {e}")))
    }

    /// The stored task of `id`, if complete and its content file is there.
    fn complete(&self, id: &str) -> Result<Option<TaskRecord>> {
        Ok(self
            .storage
            .task(id)?
            .filter(|r| r.state == TaskState::Succeeded && self.storage.content_path(id).exists()))
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
        if let Some(record) = self.complete(&id)? {
            return Ok(ObjectInfo::from(&record));
        }
        let slot = self.slots.lock().await.get(&id).cloned();
        if let Some(download) = slot.as_ref().and_then(|s| s.download.get()) {
            return Ok(ObjectInfo::from(&download.record));
        }
        let meta = origin
            .plugin
            .stat(&origin.env, origin.context(url, headers))
            .await?;
        Ok(ObjectInfo {
            task_id: id,
            content_length: meta.content_length,
            etag: meta.etag,
            last_modified: meta.last_modified,
            content_type: meta.content_type,
            cached: false,
        })
    }

    /// Opens an object for reading, starting (or joining) its download.
    pub async fn open(
        self: &Arc<Self>,
        origin: &Arc<Origin>,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Object> {
        let id = self.task_id(url)?;
        let path = self.storage.content_path(&id);
        if let Some(record) = self.complete(&id)? {
            return Ok(Object {
                record,
                source: Source::Local,
                path,
            });
        }
        let slot = self
            .slots
            .lock()
            .await
            .entry(id.clone())
            .or_default()
            .clone();
        let started = slot
            .download
            .get_or_try_init(|| {
                self.clone()
                    .start(origin.clone(), id.clone(), url.clone(), headers.clone())
            })
            .await;
        match started {
            Ok(download) => {
                let download = download.clone();
                Ok(Object {
                    record: download.record.clone(),
                    source: Source::Download(download),
                    path,
                })
            }
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
        origin: Arc<Origin>,
        id: String,
        url: Url,
        headers: HeaderMap,
    ) -> Result<Arc<Download>> {
        let ctx = origin.context(&url, &headers);
        let meta = origin.plugin.stat(&origin.env, ctx.clone()).await?;
        let piece_length = self
            .config
            .piece_length
            .map(|b| b.as_u64())
            .unwrap_or_else(|| piece_length(meta.content_length));
        let record = TaskRecord {
            id: id.clone(),
            url: url.to_string(),
            content_length: meta.content_length,
            piece_length,
            etag: meta.etag.clone(),
            last_modified: meta.last_modified.clone(),
            content_type: meta.content_type.clone(),
            state: TaskState::Running,
            created_at_ms: now_ms(),
        };
        let count = piece_count(record.content_length, piece_length) as usize;
        let mut done = vec![false; count];
        // Keep recorded pieces only if they belong to this very version.
        let previous = self.storage.task(&id)?;
        let same_version = previous.as_ref().is_some_and(|p| {
            p.content_length == record.content_length
                && p.piece_length == record.piece_length
                && p.etag == record.etag
                && p.last_modified == record.last_modified
        });
        if same_version {
            for piece in self.storage.pieces(&id)? {
                let (offset, length) =
                    piece_span(piece.number, record.content_length, piece_length);
                if (piece.number as usize) < count
                    && piece.offset == offset
                    && piece.length == length
                {
                    done[piece.number as usize] = true;
                }
            }
        } else if previous.is_some() {
            self.storage.clear_pieces(&id)?;
        }
        let kept = done.iter().filter(|d| **d).count();
        if kept > 0 {
            tracing::info!(task = %id, kept, of = count, "resuming download from recorded pieces");
        }
        self.storage.put_task(&record)?;
        self.storage.prepare_content(&id, record.content_length)?;

        // Plan before answering, so a refused or malformed plan is a clean
        // error for the client rather than a body cut short.
        let plan = if done.iter().all(|d| *d) {
            None
        } else {
            let plans = origin
                .plugin
                .plan_read(&origin.env, ctx, meta, None)
                .await?;
            let plan =
                whole_object_plan(&plans, &origin.plugin.info.name, record.content_length)?.clone();
            origin.check_plan(&plan)?;
            Some(plan)
        };
        let (progress, _) = watch::channel(Progress {
            done,
            outcome: None,
        });
        let download = Arc::new(Download { record, progress });
        let me = self.clone();
        let dl = download.clone();
        tokio::spawn(async move {
            let outcome = match &plan {
                Some(plan) => me.run(&origin, &dl, plan).await,
                None => Ok(()),
            };
            let outcome = match outcome {
                Ok(()) => me.finish(&dl).await,
                Err(e) => Err(e),
            };
            match &outcome {
                Ok(()) => {
                    tracing::info!(task = %dl.record.id, url = %dl.record.url, bytes = dl.record.content_length, "task succeeded")
                }
                Err(e) => {
                    tracing::warn!(task = %dl.record.id, url = %dl.record.url, error = %e, "task failed")
                }
            }
            dl.progress.send_modify(|p| p.outcome = Some(outcome));
            let slot = me.slots.lock().await.get(&dl.record.id).cloned();
            if let Some(slot) = slot
                && slot.download.get().is_some_and(|d| Arc::ptr_eq(d, &dl))
            {
                me.release(&dl.record.id, &slot).await;
            }
        });
        Ok(download)
    }

    /// Marks a task whose pieces are all recorded as succeeded, durably.
    async fn finish(&self, dl: &Download) -> Result<()> {
        let mut record = dl.record.clone();
        record.state = TaskState::Succeeded;
        self.storage.put_task(&record)?;
        self.storage.flush().await?;
        Ok(())
    }

    /// Fetches every piece not yet recorded, as `plan` allows.
    async fn run(&self, origin: &Origin, dl: &Download, plan: &wit::RequestPlan) -> Result<()> {
        let missing: Vec<u32> = dl
            .progress
            .borrow()
            .done
            .iter()
            .enumerate()
            .filter(|(_, d)| !**d)
            .map(|(n, _)| n as u32)
            .collect();
        if plan.host_may_set_range {
            futures_util::stream::iter(missing)
                .map(|n| self.fetch_piece(origin, dl, plan, n))
                .buffer_unordered(self.config.piece_concurrency)
                .try_collect::<()>()
                .await
        } else {
            self.fetch_sequential(origin, dl, plan).await
        }
    }

    /// One ranged request for piece `n`, streamed into the content file.
    async fn fetch_piece(
        &self,
        origin: &Origin,
        dl: &Download,
        plan: &wit::RequestPlan,
        n: u32,
    ) -> Result<()> {
        let r = &dl.record;
        let (offset, length) = piece_span(n, r.content_length, r.piece_length);
        let expect = Expect {
            offset,
            length,
            total: r.content_length,
        };
        let resp = origin.send(plan, expect, true).await?;
        let mut body = resp.bytes_stream();
        let mut writer =
            PieceWriter::open(&self.storage.content_path(&r.id), n, offset, length).await?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| body_error(origin, plan, e))?;
            writer.write(&chunk).await?;
        }
        let piece = writer.finish().await?;
        self.record_piece(dl, piece)
    }

    /// One request for the whole object, cut into pieces as it arrives.
    /// Pieces already recorded are read past, not rewritten.
    async fn fetch_sequential(
        &self,
        origin: &Origin,
        dl: &Download,
        plan: &wit::RequestPlan,
    ) -> Result<()> {
        let r = &dl.record;
        let expect = Expect {
            offset: 0,
            length: r.content_length,
            total: r.content_length,
        };
        let resp = origin.send(plan, expect, false).await?;
        let path = self.storage.content_path(&r.id);
        let count = piece_count(r.content_length, r.piece_length);
        let mut body = resp.bytes_stream();
        let mut pending = Bytes::new();
        for n in 0..count {
            let (offset, length) = piece_span(n, r.content_length, r.piece_length);
            let keep = !dl.progress.borrow().done[n as usize];
            let mut writer = if keep {
                Some(PieceWriter::open(&path, n, offset, length).await?)
            } else {
                None
            };
            let mut remaining = length;
            while remaining > 0 {
                if pending.is_empty() {
                    pending = match body.next().await {
                        Some(chunk) => chunk.map_err(|e| body_error(origin, plan, e))?,
                        None => {
                            return Err(Error::new(
                                ErrorKind::Transient,
                                format!(
                                    "origin '{}': {}: body ended at byte {} of {}",
                                    origin.name,
                                    plan.url,
                                    offset + length - remaining,
                                    r.content_length
                                ),
                            ));
                        }
                    };
                }
                let take = (remaining as usize).min(pending.len());
                let part = pending.split_to(take);
                if let Some(w) = writer.as_mut() {
                    w.write(&part).await?;
                }
                remaining -= take as u64;
            }
            if let Some(w) = writer {
                let piece = w.finish().await?;
                self.record_piece(dl, piece)?;
            }
        }
        if !pending.is_empty() || body.next().await.is_some() {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "origin '{}': {}: body is longer than {} bytes",
                    origin.name, plan.url, r.content_length
                ),
            ));
        }
        Ok(())
    }

    /// Records a durable piece and tells the readers.
    fn record_piece(&self, dl: &Download, piece: PieceRecord) -> Result<()> {
        self.storage.put_piece(&dl.record.id, &piece)?;
        dl.progress
            .send_modify(|p| p.done[piece.number as usize] = true);
        Ok(())
    }

    /// Streams bytes `start..end` of an object, waiting for pieces that are
    /// still landing. A failed download ends the stream with its error.
    pub fn read(
        &self,
        object: &Object,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let object = object.clone();
        async_stream::try_stream! {
            let mut progress = match &object.source {
                Source::Download(dl) => Some(dl.progress.subscribe()),
                Source::Local => None,
            };
            let piece_length = object.record.piece_length;
            let mut file = tokio::fs::File::open(&object.path).await?;
            file.seek(io::SeekFrom::Start(start)).await?;
            let mut pos = start;
            while pos < end {
                let piece = (pos / piece_length) as usize;
                if let Some(rx) = progress.as_mut() {
                    let failure = match rx.wait_for(|p| p.done[piece] || p.outcome.is_some()).await {
                        Ok(p) if p.done[piece] => None,
                        Ok(p) => Some(match &p.outcome {
                            Some(Err(e)) => e.to_string(),
                            _ => "download ended without this piece".to_string(),
                        }),
                        Err(_) => Some("download vanished".to_string()),
                    };
                    if let Some(reason) = failure {
                        Err(io::Error::other(reason))?;
                    }
                }
                let piece_end = ((piece as u64 + 1) * piece_length).min(end);
                while pos < piece_end {
                    let n = ((piece_end - pos) as usize).min(READ_CHUNK);
                    let mut buf = BytesMut::zeroed(n);
                    file.read_exact(&mut buf).await?;
                    pos += n as u64;
                    yield buf.freeze();
                }
            }
        }
    }
}

/// The plan that yields the whole object. Plans covering parts of it are a
/// later extension of the contract; refuse them clearly until then.
fn whole_object_plan<'a>(
    plans: &'a [wit::RequestPlan],
    plugin: &str,
    length: u64,
) -> Result<&'a wit::RequestPlan> {
    match plans {
        [plan]
            if plan.range.is_none()
                || plan
                    .range
                    .is_some_and(|r| r.start == 0 && r.length == length) =>
        {
            Ok(plan)
        }
        [] => Err(Error::new(
            ErrorKind::PluginFailed,
            format!("plugin '{plugin}' returned no request plan"),
        )),
        _ => Err(Error::new(
            ErrorKind::PluginFailed,
            format!(
                "plugin '{plugin}' returned {} partial plans; this host executes one whole-object plan",
                plans.len()
            ),
        )),
    }
}

fn body_error(origin: &Origin, plan: &wit::RequestPlan, e: reqwest::Error) -> Error {
    let url = Url::parse(&plan.url).unwrap_or_else(|_| origin.base_url.clone());
    crate::origin::fetch_error(&origin.name, &url, e)
}

/// Writes one piece at its offset, checking its length and computing its
/// digest; [`PieceWriter::finish`] syncs the bytes before the caller may
/// record the piece.
struct PieceWriter {
    file: tokio::fs::File,
    number: u32,
    offset: u64,
    length: u64,
    written: u64,
    crc: crc32fast::Hasher,
}

impl PieceWriter {
    async fn open(path: &PathBuf, number: u32, offset: u64, length: u64) -> Result<Self> {
        let io = |e: io::Error| Error::internal(format!("content file {}: {e}", path.display()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .map_err(io)?;
        file.seek(io::SeekFrom::Start(offset)).await.map_err(io)?;
        Ok(Self {
            file,
            number,
            offset,
            length,
            written: 0,
            crc: crc32fast::Hasher::new(),
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if self.written + chunk.len() as u64 > self.length {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "origin sent more than the {} bytes of piece {}",
                    self.length, self.number
                ),
            ));
        }
        self.crc.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| Error::internal(format!("writing piece {}: {e}", self.number)))?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    async fn finish(mut self) -> Result<PieceRecord> {
        if self.written != self.length {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "piece {} ended after {} of {} bytes",
                    self.number, self.written, self.length
                ),
            ));
        }
        let sync = async {
            self.file.flush().await?;
            self.file.sync_data().await
        };
        sync.await
            .map_err(|e| Error::internal(format!("syncing piece {}: {e}", self.number)))?;
        Ok(PieceRecord {
            number: self.number,
            offset: self.offset,
            length: self.length,
            digest: crc32_digest(self.crc.finalize()),
        })
    }
}
