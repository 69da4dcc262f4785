//! Local storage: piece bytes in content files, records in sled.
//!
//! Measured (DESIGN.md §2): sled is slow and bloated for multi-MiB values, so
//! it only holds small records — tasks and pieces — while the bytes live in
//! one sparse content file per task, written at each piece's offset. A piece
//! record is inserted only after its bytes are synced to disk, so a record
//! never points at bytes that a crash could lose; bytes without a record are
//! simply fetched again.
//!
//! Layout under `data_dir`:
//! - `metadata/`: the sled database (`tasks`, `pieces` trees, and the
//!   preheat jobs' trees of [`jobs`]);
//! - `metadata.reserve`: space held for the metadata store (below);
//! - `content/<first 3 hex of id>/<task id>`: the object's bytes.
//!
//! **A full disk.** sled 0.34 does not survive ENOSPC: the first failed log
//! write sets a global error and every later call, reads included, fails
//! until the database is opened again; and it needs free blocks to open.
//! So the store isolates it:
//! - `metadata.reserve` is a preallocated file of
//!   `storage.metadata_reserve` bytes. Content never uses that room: when
//!   a write fails with ENOSPC, half of it is released at once, so sled's
//!   next log writes and the records of the deletes that free space have
//!   somewhere to go; at startup all of it is released before sled opens,
//!   so a restart on a full disk comes up. It is grown back once the
//!   filesystem has room for it again.
//! - a sled failure marks the store *poisoned*; [`Storage::reopen`] drops
//!   every handle and opens the database again, from what was durable.
//!   Handles are only ever borrowed for one call, so nothing keeps the old
//!   database open.
//! - what a reopen can lose is records written since the last flush, never
//!   bytes: [`Storage::reconcile`] also drops a piece record whose range of
//!   the content file is a hole (a record that outlived its bytes).

pub mod jobs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("metadata store: {}", sled_reason(.0))]
    Db(#[from] sled::Error),
    #[error("metadata store: being reopened after a failure ({0}); try again shortly")]
    Reopening(String),
    #[error("content file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

/// sled's error in one line: its I/O errors as the OS says them ("No space
/// left on device (os error 28)"), not as a debug dump.
fn sled_reason(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) => match io.get_ref() {
            // sled wraps the OS error's debug text in a custom error.
            Some(inner) if io.raw_os_error().is_none() => {
                let text = inner.to_string();
                match (text.find("message: \""), text.rfind('"')) {
                    (Some(a), Some(b)) if b > a + 10 => {
                        format!("{} ({:?})", &text[a + 10..b], io.kind())
                    }
                    _ => text,
                }
            }
            _ => io.to_string(),
        },
        other => other.to_string(),
    }
}

impl StorageError {
    /// Whether it failed for want of space (ENOSPC, EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Db(sled::Error::Io(e)) | StorageError::Io { source: e, .. } => {
                crate::error::is_disk_full(e)
            }
            _ => false,
        }
    }
}

/// The open database's handles. Cloned for each call and dropped after
/// it, so that a reopen finds nobody holding the old database.
#[derive(Debug, Clone)]
struct Handles {
    db: sled::Db,
    tasks: sled::Tree,
    pieces: sled::Tree,
}

impl Handles {
    fn open(path: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()?;
        let tasks = db.open_tree("tasks")?;
        let pieces = db.open_tree("pieces")?;
        Ok(Self { db, tasks, pieces })
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Pieces are being fetched; some may be stored.
    Running,
    /// Every piece is stored and recorded.
    Succeeded,
}

/// One object as stored: its identity, origin metadata and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub url: String,
    pub content_length: u64,
    pub piece_length: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    pub state: TaskState,
    /// Unix ms when the task was created.
    pub created_at_ms: u64,
    /// Unix ms of the last read, persisted at most once a minute; LRU
    /// eviction and the TTL go by it.
    #[serde(default)]
    pub accessed_at_ms: u64,
}

/// One stored piece. Present only once its bytes are durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRecord {
    pub number: u32,
    pub offset: u64,
    pub length: u64,
    /// `crc32:<decimal>`, CRC-32/IEEE of the bytes.
    pub digest: String,
    /// How long fetching it took (ms), and when it landed (Unix ms): what
    /// Dragonfly's scheduler weighs parents by. 0 in records written before
    /// they were kept.
    #[serde(default)]
    pub cost_ms: u64,
    #[serde(default)]
    pub created_at_ms: u64,
}

/// What [`Storage::reconcile`] repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub tasks_without_bytes: usize,
    pub pieces_dropped: usize,
    pub files_deleted: usize,
}

/// The store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Storage {
    /// `None` while the database is being reopened.
    handles: parking_lot::RwLock<Option<Handles>>,
    metadata_dir: PathBuf,
    cache_bytes: u64,
    /// A sled call failed: the database must be reopened before it can be
    /// trusted again (sled keeps failing after its first I/O error).
    poisoned: parking_lot::Mutex<Option<String>>,
    /// Serializes flushes (see [`Storage::flush`]).
    flushing: tokio::sync::Mutex<()>,
    /// Flush requests registered, and how many of them a finished flush
    /// covered.
    flush_requests: std::sync::atomic::AtomicU64,
    flushed: std::sync::atomic::AtomicU64,
    content_dir: PathBuf,
    reserve: Reserve,
}

/// The file that holds space for the metadata store (see the module docs).
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
}

impl Reserve {
    /// Bytes the reserve file holds now.
    pub fn held(&self) -> u64 {
        std::fs::metadata(&self.path)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0)
            .min(self.size)
    }

    /// Releases all (startup) or half (a full disk at runtime, keeping
    /// the rest for a restart) of the reserve.
    fn release(&self, all: bool) {
        let keep = if all { 0 } else { self.size / 2 };
        let held = self.held();
        if held <= keep {
            return;
        }
        let r = if keep == 0 {
            std::fs::remove_file(&self.path)
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_len(keep))
        };
        match r {
            Ok(()) => tracing::warn!(
                released = held - keep,
                path = %self.path.display(),
                "released metadata reserve space"
            ),
            Err(e) => tracing::warn!(error = %e, "releasing the metadata reserve"),
        }
    }

    /// Allocates the reserve in full; fails (ENOSPC) when the filesystem
    /// has no room for it.
    fn fill(&self) -> std::io::Result<()> {
        if self.size == 0 || self.held() >= self.size {
            return Ok(());
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)?;
        let r = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, self.size)
            .map_err(std::io::Error::from);
        if let Err(e) = r {
            // Not half-allocated: what it held before stays, the rest goes.
            let _ = f.set_len(self.held().min(self.size / 2));
            return Err(e);
        }
        f.sync_all()
    }
}

use std::os::unix::fs::MetadataExt;

fn piece_key(task_id: &str, number: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(task_id.len() + 5);
    key.extend_from_slice(task_id.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// Unlinks a content file; one that is already gone is fine.
fn remove_content(path: PathBuf) -> Result<(), StorageError> {
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io { path, source }),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(value).map_err(|source| StorageError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

impl Storage {
    /// Opens (creating) the store under `data_dir`, holding
    /// `metadata_reserve` bytes for the metadata store.
    pub fn open(
        data_dir: &Path,
        cache_bytes: u64,
        metadata_reserve: u64,
    ) -> Result<Self, StorageError> {
        let content_dir = data_dir.join("content");
        std::fs::create_dir_all(&content_dir).map_err(|source| StorageError::Io {
            path: content_dir.clone(),
            source,
        })?;
        let reserve = Reserve {
            path: data_dir.join("metadata.reserve"),
            size: metadata_reserve,
        };
        // sled needs room to open (it writes as it recovers): on a full
        // disk, the reserve is that room.
        reserve.release(true);
        let metadata_dir = data_dir.join("metadata");
        let handles = Handles::open(&metadata_dir, cache_bytes)?;
        let storage = Self {
            handles: parking_lot::RwLock::new(Some(handles)),
            metadata_dir,
            cache_bytes,
            poisoned: parking_lot::Mutex::new(None),
            flushing: tokio::sync::Mutex::new(()),
            flush_requests: Default::default(),
            flushed: Default::default(),
            content_dir,
            reserve,
        };
        if let Err(e) = storage.reserve.fill() {
            tracing::warn!(error = %e, bytes = metadata_reserve, "the metadata reserve cannot be held: the disk is full");
        }
        Ok(storage)
    }

    /// The database's handles for one call; fails while it is reopened.
    fn h(&self) -> Result<Handles, StorageError> {
        self.handles.read().clone().ok_or_else(|| {
            StorageError::Reopening(self.poisoned.lock().clone().unwrap_or_default())
        })
    }

    /// Converts a sled error, marking the store poisoned when sled failed
    /// at I/O (it fails every call after that until reopened).
    pub fn sled(&self, e: sled::Error) -> StorageError {
        if matches!(e, sled::Error::Io(_) | sled::Error::ReportableBug(_)) {
            let mut p = self.poisoned.lock();
            if p.is_none() {
                tracing::error!(error = %e, "metadata store failed; it will be reopened");
                *p = Some(e.to_string());
            }
        }
        if let sled::Error::Io(io) = &e
            && crate::error::is_disk_full(io)
        {
            self.disk_full();
        }
        StorageError::Db(e)
    }

    /// Runs one sled call on the current handles.
    fn with<T>(&self, f: impl FnOnce(&Handles) -> sled::Result<T>) -> Result<T, StorageError> {
        let h = self.h()?;
        f(&h).map_err(|e| self.sled(e))
    }

    /// The reason the database must be reopened, if it must.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    /// Drops the failed database and opens it again from what was durable
    /// (releasing reserve space first, if the disk is full). Calls made
    /// meanwhile fail with [`StorageError::Reopening`]. The caller
    /// reconciles and rebuilds what it keeps in memory afterwards.
    pub fn reopen(&self) -> Result<(), StorageError> {
        let why = self.poisoned().unwrap_or_else(|| "asked to".into());
        let mut slot = self.handles.write();
        drop(slot.take());
        // A call that cloned the handles just before may still hold them
        // for a moment; sled refuses to open while its file lock is held.
        let mut last = None;
        for _ in 0..100 {
            match Handles::open(&self.metadata_dir, self.cache_bytes) {
                Ok(h) => {
                    *slot = Some(h);
                    *self.poisoned.lock() = None;
                    tracing::warn!(after = %why, "metadata store reopened");
                    return Ok(());
                }
                Err(e) => {
                    if e.is_disk_full() {
                        self.reserve.release(true);
                    }
                    last = Some(e);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
        let e = last.expect("tried");
        tracing::error!(error = %e, "metadata store could not be reopened");
        Err(e)
    }

    /// Called when a write failed for want of space: releases half the
    /// reserve so the metadata store can go on recording (the deletes
    /// that free space included).
    pub fn disk_full(&self) {
        self.reserve.release(false);
    }

    /// Grows the reserve back to its size; `Ok` once it is whole.
    pub fn refill_reserve(&self) -> std::io::Result<()> {
        self.reserve.fill()
    }

    /// Bytes the reserve should hold, and holds.
    pub fn reserve(&self) -> (u64, u64) {
        (self.reserve.size, self.reserve.held())
    }

    /// Path of a task's content file.
    /// Checks that content can be written: creates, syncs and removes a
    /// small file in the content directory.
    pub fn probe_writable(&self) -> Result<(), StorageError> {
        let path = self.content_dir.join(".ready-probe");
        let io = |source| StorageError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&path).map_err(io)?;
        std::io::Write::write_all(&mut f, b"ok").map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::remove_file(&path).map_err(io)?;
        Ok(())
    }

    pub fn content_path(&self, task_id: &str) -> PathBuf {
        self.content_dir
            .join(&task_id[..3.min(task_id.len())])
            .join(task_id)
    }

    pub fn task(&self, id: &str) -> Result<Option<TaskRecord>, StorageError> {
        self.with(|h| h.tasks.get(id))?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    pub fn put_task(&self, task: &TaskRecord) -> Result<(), StorageError> {
        let value = serde_json::to_vec(task).expect("records serialize");
        self.with(|h| h.tasks.insert(task.id.as_bytes(), value))?;
        Ok(())
    }

    /// Records a piece whose bytes the caller has already synced.
    pub fn put_piece(&self, task_id: &str, piece: &PieceRecord) -> Result<(), StorageError> {
        let value = serde_json::to_vec(piece).expect("records serialize");
        self.with(|h| h.pieces.insert(piece_key(task_id, piece.number), value))?;
        Ok(())
    }

    /// The recorded pieces of a task, in order.
    pub fn pieces(&self, task_id: &str) -> Result<Vec<PieceRecord>, StorageError> {
        let mut prefix = task_id.as_bytes().to_vec();
        prefix.push(b'/');
        self.h()?
            .pieces
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.sled(e))?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Drops a task's piece records (its bytes are overwritten on refetch).
    pub fn clear_pieces(&self, task_id: &str) -> Result<(), StorageError> {
        let mut prefix = task_id.as_bytes().to_vec();
        prefix.push(b'/');
        let h = self.h()?;
        let mut batch = sled::Batch::default();
        for kv in h.pieces.scan_prefix(prefix) {
            batch.remove(kv.map_err(|e| self.sled(e))?.0);
        }
        h.pieces.apply_batch(batch).map_err(|e| self.sled(e))?;
        Ok(())
    }

    /// Forgets one piece (its bytes failed their digest).
    pub fn remove_piece(&self, task_id: &str, number: u32) -> Result<(), StorageError> {
        self.with(|h| h.pieces.remove(piece_key(task_id, number)))?;
        Ok(())
    }

    /// Every task record.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>, StorageError> {
        self.h()?
            .tasks
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.sled(e))?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Deletes a task: its record first (so a crash never leaves a record
    /// without bytes), then its pieces, then its content file — whose space
    /// is free at once, as nothing else links to it.
    pub fn delete_task(&self, task_id: &str) -> Result<(), StorageError> {
        self.with(|h| h.tasks.remove(task_id))?;
        self.clear_pieces(task_id)?;
        remove_content(self.content_path(task_id))
    }

    /// Brings records and content files back in line after a crash or a
    /// hand-edited data directory:
    /// - a task whose content file is gone or has the wrong length loses its
    ///   piece records (they would point at nothing) and is marked running;
    /// - piece records of unknown tasks, or beyond their file, are dropped;
    /// - content files without a task record are deleted.
    pub fn reconcile(&self) -> Result<Reconciled, StorageError> {
        let mut out = Reconciled::default();
        let mut known = std::collections::HashSet::new();
        for mut task in self.tasks()? {
            known.insert(task.id.clone());
            let len = std::fs::metadata(self.content_path(&task.id))
                .ok()
                .map(|m| m.len());
            if len != Some(task.content_length) {
                let pieces = self.pieces(&task.id)?;
                if !pieces.is_empty() || task.state == TaskState::Succeeded {
                    out.tasks_without_bytes += 1;
                    out.pieces_dropped += pieces.len();
                    self.clear_pieces(&task.id)?;
                    task.state = TaskState::Running;
                    self.put_task(&task)?;
                }
                continue;
            }
            // A record whose bytes are a hole in the file outlived them
            // (the file was replaced, and the removal of the records was
            // lost with an unflushed or failed metadata write).
            let holes = self.pieces_over_holes(&task.id)?;
            if !holes.is_empty() {
                out.pieces_dropped += holes.len();
                for n in &holes {
                    self.remove_piece(&task.id, *n)?;
                }
                if task.state == TaskState::Succeeded {
                    out.tasks_without_bytes += 1;
                    task.state = TaskState::Running;
                    self.put_task(&task)?;
                }
                tracing::warn!(task = %task.id, pieces = ?holes, "piece records over holes in the content file dropped");
            }
        }
        let h = self.h()?;
        let mut batch = sled::Batch::default();
        for kv in h.pieces.iter() {
            let (k, _) = kv.map_err(|e| self.sled(e))?;
            let id = k.split(|b| *b == b'/').next().unwrap_or_default();
            if !known.contains(std::str::from_utf8(id).unwrap_or_default()) {
                batch.remove(k);
                out.pieces_dropped += 1;
            }
        }
        h.pieces.apply_batch(batch).map_err(|e| self.sled(e))?;
        drop(h);
        let dirs = std::fs::read_dir(&self.content_dir).map_err(|source| StorageError::Io {
            path: self.content_dir.clone(),
            source,
        })?;
        for dir in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    let _ = std::fs::remove_file(file.path());
                    out.files_deleted += 1;
                }
            }
        }
        if out != Reconciled::default() {
            self.with(|h| h.db.flush())?;
        }
        Ok(out)
    }

    /// The recorded pieces of a task whose byte range in the content file
    /// holds a hole (`SEEK_HOLE`): bytes that were never written, or were
    /// lost with the file they were in.
    fn pieces_over_holes(&self, task_id: &str) -> Result<Vec<u32>, StorageError> {
        let path = self.content_path(task_id);
        let Ok(file) = std::fs::File::open(&path) else {
            return Ok(Vec::new());
        };
        let mut holes = Vec::new();
        for p in self.pieces(task_id)? {
            match rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(p.offset)) {
                Ok(hole) if hole < p.offset + p.length => holes.push(p.number),
                _ => {}
            }
        }
        Ok(holes)
    }

    /// Makes every record written so far durable.
    ///
    /// One flush at a time, on tokio's blocking pool. sled 0.34's
    /// `flush_async` runs on sled's own small I/O pool and waits there for
    /// log writes that need that same pool: eight tasks finishing at once
    /// filled it with waiters and deadlocked the store (seen in the retry
    /// test: every sled-io thread parked in `make_stable`). A flush that
    /// waits for the one in progress finds its records already durable, or
    /// makes them so right after.
    pub async fn flush(&self) -> Result<(), StorageError> {
        use std::sync::atomic::Ordering;
        // Callers that queue behind a flush which started after they
        // registered are covered by it: one flush serves them all.
        let ticket = self.flush_requests.fetch_add(1, Ordering::SeqCst) + 1;
        let _one = self.flushing.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let covers = self.flush_requests.load(Ordering::SeqCst);
        let db = self.h()?.db;
        let r = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StorageError::Io {
                path: PathBuf::from("metadata"),
                source: std::io::Error::other(e.to_string()),
            })?;
        r.map_err(|e| self.sled(e))?;
        self.flushed.store(covers, Ordering::SeqCst);
        Ok(())
    }

    /// Creates (or reopens) a task's content file at its full length, for
    /// reading and writing. The file is sparse until pieces land.
    pub fn prepare_content(
        &self,
        task_id: &str,
        length: u64,
    ) -> Result<std::fs::File, StorageError> {
        let path = self.content_path(task_id);
        let io = |source| StorageError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() != length {
            file.set_len(length).map_err(io)?;
        }
        Ok(file)
    }

    /// Starts a task's content over in a new, empty file. Readers that still
    /// hold the old file keep reading the old version's bytes.
    pub fn replace_content(
        &self,
        task_id: &str,
        length: u64,
    ) -> Result<std::fs::File, StorageError> {
        remove_content(self.content_path(task_id))?;
        self.prepare_content(task_id, length)
    }

    /// Opens a complete task's content file for reading.
    pub fn open_content(&self, task_id: &str) -> Result<std::fs::File, StorageError> {
        let path = self.content_path(task_id);
        std::fs::File::open(&path).map_err(|source| StorageError::Io { path, source })
    }

    /// Total and used bytes of the filesystem holding the content.
    pub fn filesystem_usage(&self) -> Result<(u64, u64), StorageError> {
        let st = self.statvfs()?;
        let total = st.f_blocks * st.f_frsize;
        let used = (st.f_blocks - st.f_bfree) * st.f_frsize;
        Ok((total, used))
    }

    /// Bytes of the filesystem an unprivileged writer may still use.
    pub fn filesystem_available(&self) -> Result<u64, StorageError> {
        let st = self.statvfs()?;
        Ok(st.f_bavail * st.f_frsize)
    }

    fn statvfs(&self) -> Result<rustix::fs::StatVfs, StorageError> {
        rustix::fs::statvfs(&self.content_dir).map_err(|e| StorageError::Io {
            path: self.content_dir.clone(),
            source: e.into(),
        })
    }
}
impl From<StorageError> for crate::error::Error {
    fn from(e: StorageError) -> Self {
        let kind = if e.is_disk_full() {
            crate::error::ErrorKind::DiskFull
        } else {
            crate::error::ErrorKind::Internal
        };
        crate::error::Error::new(kind, e.to_string())
    }
}
