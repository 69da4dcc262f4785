//! Reading: waiting for pieces, checking them against their digests,
//! repairing a piece that no longer matches, and streaming a range of an
//! object with bounded read-ahead.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

use super::TaskManager;
use super::lifecycle::{Request, same_version};
use super::object::{Checked, Hot, Landed, Object, Source};
use super::state::Phase;
use crate::error::{Error, ErrorKind, Result};
use crate::piece::{piece_count, piece_span};
use crate::storage::TaskState;

/// A piece being read (and checked): `None` when its bytes failed their
/// digest. Small pieces are read at once; others on a blocking thread.
pub(super) enum PieceRead {
    Done(Result<Option<Bytes>>),
    Blocking(tokio::task::JoinHandle<Result<Option<Bytes>>>),
}

impl PieceRead {
    pub(super) async fn bytes(self) -> io::Result<Result<Option<Bytes>>> {
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
pub(super) const INLINE_READ: u64 = 64 * 1024;

/// Reads `len` bytes at `offset` into a new buffer (no zero-fill first: on
/// the hot path that is a whole extra pass over the bytes).
pub(super) fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
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

impl TaskManager {
    /// The stored task of `id` with its piece digests, if complete. The
    /// digests are read from sled once and then kept in the index (a read
    /// of a hot object does not scan its piece records).
    pub(super) fn complete(&self, id: &str) -> Result<Option<Arc<Hot>>> {
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
            checked: Arc::new(Checked::new(pieces.len())),
            headers: Default::default(),
            pieces: Arc::new(pieces),
            file: Arc::new(self.storage.open_content(id)?),
            record: Arc::new(record),
        });
        // Kept only while the index agrees the task is whole (a repair or
        // eviction in between has changed it).
        let mut index = self.index.lock();
        if index
            .tasks
            .get(id)
            .is_some_and(|u| u.stored == hot.record.content_length)
        {
            index.keep_hot(id, hot.clone(), self.open_files);
        }
        Ok(Some(hot))
    }

    /// Waits until piece `n` of `object` can be read; returns its crc32
    /// and whether it is fresh from this download.
    pub(super) async fn wait_piece(object: &Object, n: u32) -> Result<Landed> {
        let dl = match &object.source {
            Source::Local(pieces) => return Ok(pieces[n as usize]),
            Source::Download(dl) => dl,
        };
        dl.want(n);
        let mut rx = dl.progress.subscribe();
        let p = rx
            .wait_for(|p| p.pieces[n as usize].is_some() || !p.phase.fetching())
            .await
            .map_err(|_| Error::internal("download vanished"))?;
        if let Some(landed) = p.pieces[n as usize] {
            return Ok(landed);
        }
        Err(match &p.phase {
            Phase::Failed(e) => e.clone(),
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
                (bytes, p.phase.outcome())
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
    pub(super) async fn repair(self: &Arc<Self>, object: &mut Object, n: u32) -> Result<()> {
        let id = object.record.id.clone();
        let (_, length) = piece_span(n, object.record.content_length, object.record.piece_length);
        self.forget_corrupt_piece(&id, n, length)?;
        let request = match (&object.request, &object.origin) {
            (Some(request), _) => request.clone(),
            // A hit on an origin that forwards no header: the request is
            // made now, as the open that found it stored would have.
            (None, Some(origin)) => Arc::new(Request {
                origin: origin.clone(),
                url: url::Url::parse(&object.record.url).map_err(|e| {
                    Error::internal(format!("task {id}: stored URL does not parse: {e}"))
                })?,
                headers: http::HeaderMap::new(),
                first_byte: 0,
                spec: object.spec.clone(),
            }),
            (None, None) => {
                return Err(Error::internal(format!(
                    "task {id}: piece {n} failed its digest and this handle cannot fetch it again"
                )));
            }
        };
        let fresh = self.open_request(request, 0).await?;
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

    /// True when piece `n` may be sent without checking its bytes first:
    /// checking is off, the piece is fresh from this process's download,
    /// or this process has checked it since it started.
    fn trusted(&self, object: &Object, n: u32, landed: Landed) -> bool {
        !self.config.verify_on_read
            || landed.fresh
            || object.checked.as_ref().is_some_and(|c| c.get(n))
    }

    /// Makes sure piece `n` may be sent without reading it (the piece
    /// protocol sends it with `sendfile`): an untrusted piece is read and
    /// checked once, as a read through the gateway would. `Ok(false)`: it
    /// has not landed, or its bytes no longer match its digest, and it was
    /// dropped so that the next read fetches it again.
    pub async fn check_piece(&self, object: &Object, n: u32) -> Result<bool> {
        let Some(landed) = Self::landed_now(object, n) else {
            return Ok(false);
        };
        if self.trusted(object, n, landed) {
            return Ok(true);
        }
        let read = self
            .start_read(object, n, landed)
            .bytes()
            .await
            .map_err(|e| Error::internal(format!("reading piece {n}: {e}")))??;
        if read.is_some() {
            return Ok(true);
        }
        let r = &object.record;
        let (_, length) = piece_span(n, r.content_length, r.piece_length);
        self.forget_corrupt_piece(&r.id, n, length)?;
        Ok(false)
    }

    /// Reads piece `n` whole, checking its crc32 unless it is
    /// [trusted](Self::trusted); a piece that passes is trusted from then
    /// on.
    pub(super) fn start_read(&self, object: &Object, n: u32, landed: Landed) -> PieceRead {
        let r = &object.record;
        let (offset, length) = piece_span(n, r.content_length, r.piece_length);
        let file = object.file.clone();
        let verify = !self.trusted(object, n, landed);
        let checked = object.checked.clone();
        let record = object.record.clone();
        let read = move || {
            let id = &record.id;
            let buf = read_at(&file, offset, length as usize)
                .map_err(|e| Error::internal(format!("reading piece {n} of task {id}: {e}")))?;
            if verify {
                if crc32fast::hash(&buf) != landed.crc {
                    tracing::error!(task = %id, piece = n, "piece bytes do not match their digest; fetching it again");
                    return Ok(None);
                }
                if let Some(c) = checked {
                    c.set(n);
                }
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
    pub(super) fn landed_now(object: &Object, n: u32) -> Option<Landed> {
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

    /// Bytes `start..end` of a stored object when they lie in one small
    /// piece (at most [`INLINE_READ`]) that is [trusted](Self::trusted):
    /// the answer to a small object then goes out as one buffer, without
    /// the stream of [`Self::read`]. `None` means "use [`Self::read`]",
    /// which checks an untrusted piece and repairs one that fails.
    pub fn read_small(&self, object: &Object, start: u64, end: u64) -> Option<Bytes> {
        let Source::Local(pieces) = &object.source else {
            return None;
        };
        let piece_length = object.record.piece_length;
        let n = start / piece_length;
        if start >= end || (end - 1) / piece_length != n {
            return None;
        }
        let n = u32::try_from(n).ok()?;
        let (offset, length) = piece_span(n, object.record.content_length, piece_length);
        if length > INLINE_READ {
            return None;
        }
        let landed = pieces.get(n as usize).copied()?;
        // A piece not checked since the start takes the stream's path,
        // which checks it and fetches it again if it rotted.
        if !self.trusted(object, n, landed) {
            return None;
        }
        let PieceRead::Done(Ok(Some(bytes))) = self.start_read(object, n, landed) else {
            return None;
        };
        Some(bytes.slice((start - offset) as usize..(end - offset) as usize))
    }

    /// Streams bytes `start..end` of an object, each piece as soon as it is
    /// readable and checked. A piece not yet [trusted](Self::trusted) is
    /// read and checked first (a corrupt one is fetched again before it is
    /// sent). With `zero_copy`, a trusted piece is then given as a mapping
    /// of the content file that the gateway's connection sends with
    /// `sendfile` ([`crate::zerocopy`]); otherwise it is read into memory.
    /// While one piece is sent, the next one that needs reading (if
    /// already readable, and the shared read-ahead budget allows) is read
    /// on a blocking thread. A failed download ends the stream with its
    /// error.
    pub fn read(
        self: &Arc<Self>,
        object: &Object,
        start: u64,
        end: u64,
        zero_copy: bool,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let mut object = object.clone();
        let me = self.clone();
        async_stream::try_stream! {
            let piece_length = object.record.piece_length;
            let content_length = object.record.content_length;
            let mut pos = start;
            let mut ahead: Option<(u32, PieceRead, tokio::sync::OwnedSemaphorePermit)> = None;
            // Sent from the file: a trusted piece past the inline size.
            let mapped = |me: &Self, object: &Object, n: u32, landed: Landed| {
                zero_copy
                    && piece_span(n, content_length, piece_length).1 > INLINE_READ
                    && me.trusted(object, n, landed)
            };
            while pos < end {
                let n = (pos / piece_length) as u32;
                let offset = n as u64 * piece_length;
                let mut attempts = 0;
                let part = loop {
                    let landed = Self::wait_piece(&object, n).await.map_err(io::Error::other)?;
                    if mapped(&me, &object, n, landed) {
                        let until = end.min(offset + piece_length);
                        break crate::zerocopy::region(&object.file, pos, (until - pos) as usize)?;
                    }
                    let read = match ahead.take() {
                        Some((m, read, _budget)) if m == n => read,
                        _ => me.start_read(&object, n, landed),
                    };
                    let read = read.bytes().await?;
                    if let Some(bytes) = read.map_err(io::Error::other)? {
                        break bytes.slice((pos - offset) as usize..((end - offset) as usize).min(bytes.len()));
                    }
                    attempts += 1;
                    if attempts > 2 {
                        Err(io::Error::other(format!("piece {n} of task {} stays corrupt after refetching", object.record.id)))?;
                    }
                    me.repair(&mut object, n).await.map_err(io::Error::other)?;
                };
                pos += part.len() as u64;
                if pos == content_length && object.digest_pending() {
                    // A blob's last bytes go out only once the whole blob
                    // matched its digest: a client never gets a complete
                    // body of bytes that do not.
                    me.wait_stored(&object, |_| {}).await.map_err(io::Error::other)?;
                }
                if pos < end
                    && let Some(landed) = Self::landed_now(&object, n + 1)
                    && !mapped(&me, &object, n + 1, landed)
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
