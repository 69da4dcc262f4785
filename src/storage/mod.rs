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
//! - `metadata/`: the sled database (`tasks`, `pieces` trees);
//! - `content/<first 3 hex of id>/<task id>`: the object's bytes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("metadata store: {0}")]
    Db(#[from] sled::Error),
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
    db: sled::Db,
    /// Serializes flushes (see [`Storage::flush`]).
    flushing: tokio::sync::Mutex<()>,
    /// Flush requests registered, and how many of them a finished flush
    /// covered.
    flush_requests: std::sync::atomic::AtomicU64,
    flushed: std::sync::atomic::AtomicU64,
    tasks: sled::Tree,
    pieces: sled::Tree,
    content_dir: PathBuf,
}

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
    /// Opens (creating) the store under `data_dir`.
    pub fn open(data_dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let content_dir = data_dir.join("content");
        std::fs::create_dir_all(&content_dir).map_err(|source| StorageError::Io {
            path: content_dir.clone(),
            source,
        })?;
        let db = sled::Config::new()
            .path(data_dir.join("metadata"))
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()?;
        let tasks = db.open_tree("tasks")?;
        let pieces = db.open_tree("pieces")?;
        Ok(Self {
            db,
            flushing: tokio::sync::Mutex::new(()),
            flush_requests: Default::default(),
            flushed: Default::default(),
            tasks,
            pieces,
            content_dir,
        })
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

    /// A tree of the metadata store for another module's records (preheat
    /// jobs), flushed with the rest by [`Storage::flush`].
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StorageError> {
        Ok(self.db.open_tree(name)?)
    }

    pub fn content_path(&self, task_id: &str) -> PathBuf {
        self.content_dir
            .join(&task_id[..3.min(task_id.len())])
            .join(task_id)
    }

    pub fn task(&self, id: &str) -> Result<Option<TaskRecord>, StorageError> {
        self.tasks
            .get(id)?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    pub fn put_task(&self, task: &TaskRecord) -> Result<(), StorageError> {
        let value = serde_json::to_vec(task).expect("records serialize");
        self.tasks.insert(task.id.as_bytes(), value)?;
        Ok(())
    }

    /// Records a piece whose bytes the caller has already synced.
    pub fn put_piece(&self, task_id: &str, piece: &PieceRecord) -> Result<(), StorageError> {
        let value = serde_json::to_vec(piece).expect("records serialize");
        self.pieces
            .insert(piece_key(task_id, piece.number), value)?;
        Ok(())
    }

    /// The recorded pieces of a task, in order.
    pub fn pieces(&self, task_id: &str) -> Result<Vec<PieceRecord>, StorageError> {
        let mut prefix = task_id.as_bytes().to_vec();
        prefix.push(b'/');
        self.pieces
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Drops a task's piece records (its bytes are overwritten on refetch).
    pub fn clear_pieces(&self, task_id: &str) -> Result<(), StorageError> {
        let mut prefix = task_id.as_bytes().to_vec();
        prefix.push(b'/');
        let mut batch = sled::Batch::default();
        for kv in self.pieces.scan_prefix(prefix) {
            batch.remove(kv?.0);
        }
        self.pieces.apply_batch(batch)?;
        Ok(())
    }

    /// Forgets one piece (its bytes failed their digest).
    pub fn remove_piece(&self, task_id: &str, number: u32) -> Result<(), StorageError> {
        self.pieces.remove(piece_key(task_id, number))?;
        Ok(())
    }

    /// Every task record.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>, StorageError> {
        self.tasks
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Deletes a task: its record first (so a crash never leaves a record
    /// without bytes), then its pieces, then its content file — whose space
    /// is free at once, as nothing else links to it.
    pub fn delete_task(&self, task_id: &str) -> Result<(), StorageError> {
        self.tasks.remove(task_id)?;
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
            }
        }
        let mut batch = sled::Batch::default();
        for kv in self.pieces.iter() {
            let (k, _) = kv?;
            let id = k.split(|b| *b == b'/').next().unwrap_or_default();
            if !known.contains(std::str::from_utf8(id).unwrap_or_default()) {
                batch.remove(k);
                out.pieces_dropped += 1;
            }
        }
        self.pieces.apply_batch(batch)?;
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
            self.db.flush()?;
        }
        Ok(out)
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
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StorageError::Io {
                path: PathBuf::from("metadata"),
                source: std::io::Error::other(e.to_string()),
            })??;
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
        let st = rustix::fs::statvfs(&self.content_dir).map_err(|e| StorageError::Io {
            path: self.content_dir.clone(),
            source: e.into(),
        })?;
        let total = st.f_blocks * st.f_frsize;
        let used = (st.f_blocks - st.f_bfree) * st.f_frsize;
        Ok((total, used))
    }
}
