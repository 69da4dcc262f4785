//! The handle on a task that a reader or a peer holds: its record, where
//! its bytes come from (all on disk, or a running download), its content
//! file. While a handle lives the task is not evicted.

use std::fs::File;
use std::sync::{Arc, OnceLock};

use futures_util::Stream;
use http::HeaderMap;

use super::index::Lease;
use super::lifecycle::{Download, Request};
use super::state::State;
use super::{TaskManager, TaskSpec};
use crate::error::{Error, Result};
use crate::origin::Origin;
use crate::piece::{crc32_digest, piece_count, piece_span};
use crate::storage::{PieceRecord, TaskRecord};

/// Parses `crc32:<decimal>`.
pub(super) fn parse_digest(digest: &str) -> Option<u32> {
    digest.strip_prefix("crc32:")?.parse().ok()
}

/// A complete task as its readers need it, kept in memory once read: its
/// record, its piece digests and its open content file, so a hit costs no
/// metadata read and no `open`. Dropped whenever its pieces change or the
/// task goes (closing the file, so eviction frees space at once).
#[derive(Debug)]
pub(super) struct Hot {
    /// Shared with every handle opened on it: a hit copies no string.
    pub(super) record: Arc<TaskRecord>,
    pub(super) pieces: Arc<Vec<Landed>>,
    pub(super) file: Arc<File>,
    /// Pieces whose bytes this process has checked against their digest
    /// since it started (or since they landed): served from then on
    /// without reading them first. The scrubber re-checks them all.
    pub(super) checked: Arc<Checked>,
    /// The headers every answer about it carries, made on its first read
    /// and cloned for later ones (no header value copied per hit).
    pub(super) headers: Arc<OnceLock<HeaderMap>>,
}

/// One bit per piece: checked since this process found it on disk.
#[derive(Debug)]
pub(super) struct Checked(Box<[std::sync::atomic::AtomicU64]>);

impl Checked {
    pub(super) fn new(pieces: usize) -> Self {
        Self(
            (0..pieces.div_ceil(64))
                .map(|_| Default::default())
                .collect(),
        )
    }

    pub(super) fn get(&self, n: u32) -> bool {
        let n = n as usize;
        self.0
            .get(n / 64)
            .is_some_and(|w| w.load(std::sync::atomic::Ordering::Relaxed) & (1 << (n % 64)) != 0)
    }

    pub(super) fn set(&self, n: u32) {
        let n = n as usize;
        if let Some(w) = self.0.get(n / 64) {
            w.fetch_or(1 << (n % 64), std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn clear(&self, n: u32) {
        let n = n as usize;
        if let Some(w) = self.0.get(n / 64) {
            w.fetch_and(!(1 << (n % 64)), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A piece readers may read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Landed {
    pub(super) crc: u32,
    /// Fetch time (ms) and when it landed (Unix ms), as recorded.
    pub(super) cost_ms: u64,
    pub(super) created_at_ms: u64,
    /// Written by this download from bytes whose crc it computed, so still
    /// trusted; pieces found on disk are checked before they are served.
    pub(super) fresh: bool,
}

impl Landed {
    /// A recorded piece (found on disk: checked before it is served).
    pub(super) fn stored(piece: &PieceRecord) -> Option<Self> {
        Some(Self {
            crc: parse_digest(&piece.digest)?,
            cost_ms: piece.cost_ms,
            created_at_ms: piece.created_at_ms,
            fresh: false,
        })
    }
}

/// Where an object's bytes come from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// Every piece is on disk, as recorded.
    Local(Arc<Vec<Landed>>),
    /// Pieces are landing.
    Download(Arc<Download>),
}

/// One readable piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceInfo {
    pub number: u32,
    pub offset: u64,
    pub length: u64,
    /// CRC-32/IEEE of the bytes.
    pub crc: u32,
    /// How long fetching it from the origin took (ms); 0 if not recorded.
    pub cost_ms: u64,
    /// When it landed (Unix ms); 0 if not recorded.
    pub created_at_ms: u64,
}

impl PieceInfo {
    /// Dragonfly's digest string, `crc32:<decimal>`.
    pub fn digest(&self) -> String {
        crc32_digest(self.crc)
    }
}

/// Piece `n` of a task, as landed.
pub(super) fn piece_info(record: &TaskRecord, n: u32, landed: Landed) -> PieceInfo {
    let (offset, length) = piece_span(n, record.content_length, record.piece_length);
    PieceInfo {
        number: n,
        offset,
        length,
        crc: landed.crc,
        cost_ms: landed.cost_ms,
        created_at_ms: landed.created_at_ms,
    }
}

/// The one handle on a task, whoever holds it: a reader of the gateway or
/// a preheat job (opened by URL through its origin), or a Dragonfly peer
/// (found by id, [`TaskManager::find`]). It reads the same content file and
/// the same live progress either way, so an object is stored once whoever
/// asked for it. While a handle lives, its task is not evicted.
#[derive(Debug, Clone)]
pub struct Object {
    pub record: Arc<TaskRecord>,
    /// Tag, application and piece length it was opened with (the default
    /// for a task found stored by id).
    pub spec: TaskSpec,
    pub(super) source: Source,
    pub(super) file: Arc<File>,
    /// Which stored pieces were checked (`None` while downloading).
    pub(super) checked: Option<Arc<Checked>>,
    /// Its hot copy's answer headers (`None` while downloading).
    pub(super) headers: Option<Arc<OnceLock<HeaderMap>>>,
    /// How to fetch it again (a piece that fails its digest is repaired
    /// from the origin); `None` for a handle found by id, or for one
    /// opened with `origin` alone (see below).
    pub(super) request: Option<Arc<Request>>,
    /// For a hit on an origin that forwards no client header: the request
    /// a repair needs is made from this, the record's URL and `spec` when
    /// a repair happens, not on every hit.
    pub(super) origin: Option<Arc<Origin>>,
    pub(super) _lease: Arc<Lease>,
}

impl Object {
    /// A handle on a task stored whole, as `record` says it now.
    pub(super) fn stored(
        record: Arc<TaskRecord>,
        hot: &Hot,
        spec: TaskSpec,
        request: Option<Arc<Request>>,
        origin: Option<Arc<Origin>>,
        lease: Arc<Lease>,
    ) -> Self {
        Self {
            record,
            spec,
            source: Source::Local(hot.pieces.clone()),
            file: hot.file.clone(),
            checked: Some(hot.checked.clone()),
            headers: Some(hot.headers.clone()),
            request,
            origin,
            _lease: lease,
        }
    }

    /// A handle on a task while `dl` downloads it.
    pub(super) fn downloading(dl: &Arc<Download>, lease: Arc<Lease>) -> Self {
        Self {
            record: Arc::new(dl.record.clone()),
            spec: dl.request.spec.clone(),
            source: Source::Download(dl.clone()),
            file: dl.file.clone(),
            checked: None,
            headers: None,
            request: Some(dl.request.clone()),
            origin: None,
            _lease: lease,
        }
    }

    /// The headers every answer about this object carries: made by `make`
    /// on the first read of a stored object's hot copy and cloned from
    /// then on; made each time while it downloads.
    pub fn answer_headers(&self, make: impl FnOnce() -> HeaderMap) -> HeaderMap {
        match &self.headers {
            Some(cell) => cell.get_or_init(make).clone(),
            None => make(),
        }
    }

    /// True when every byte was already on disk when the object was opened.
    pub fn cached(&self) -> bool {
        matches!(self.source, Source::Local(_))
    }

    /// Where it stands now: stored whole, or as its download stands.
    pub fn state(&self) -> State {
        match &self.source {
            Source::Local(_) => State::Succeeded,
            Source::Download(dl) => State::of_phase(&dl.progress.borrow().phase),
        }
    }

    /// True while its bytes still have to match the blob digest naming
    /// it: its download runs, and it checks the digest when it ends.
    pub fn digest_pending(&self) -> bool {
        match &self.source {
            Source::Local(_) => false,
            Source::Download(dl) => dl.request.spec.content_digest(&dl.request.url).is_some(),
        }
    }

    /// True while its download runs (pieces may still land).
    pub fn running(&self) -> bool {
        self.state() == State::Running
    }

    pub fn piece_count(&self) -> u32 {
        piece_count(self.record.content_length, self.record.piece_length)
    }

    /// Piece `n`, if it can be read now.
    pub fn piece(&self, n: u32) -> Option<PieceInfo> {
        let landed = match &self.source {
            Source::Local(pieces) => pieces.get(n as usize).copied(),
            Source::Download(dl) => dl.progress.borrow().pieces.get(n as usize).copied()?,
        }?;
        Some(piece_info(&self.record, n, landed))
    }

    /// The pieces readable now, in order.
    pub fn landed(&self) -> Vec<PieceInfo> {
        (0..self.piece_count())
            .filter_map(|n| self.piece(n))
            .collect()
    }

    /// The content file (pieces at their offsets).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Every piece once: those readable now first, then each as it lands.
    /// Ends when all have been given, or with the download's error.
    pub fn pieces(&self) -> impl Stream<Item = Result<PieceInfo>> + Send + 'static {
        let record = self.record.clone();
        let source = self.source.clone();
        let verify = self.digest_pending();
        async_stream::try_stream! {
            let count = piece_count(record.content_length, record.piece_length) as usize;
            let info = |n: usize, landed: Landed| piece_info(&record, n as u32, landed);
            match source {
                Source::Local(pieces) => {
                    for (n, landed) in pieces.iter().enumerate() {
                        yield info(n, *landed);
                    }
                }
                Source::Download(dl) => {
                    let mut rx = dl.progress.subscribe();
                    let mut sent = vec![false; count];
                    let mut left = count;
                    while left > 0 {
                        let (fresh, outcome) = {
                            let p = rx.borrow_and_update();
                            let fresh: Vec<PieceInfo> = p
                                .pieces
                                .iter()
                                .enumerate()
                                .filter(|(n, l)| l.is_some() && !sent[*n])
                                .map(|(n, l)| info(n, l.expect("filtered")))
                                .collect();
                            (fresh, p.phase.outcome())
                        };
                        for piece in fresh {
                            if left == 1 && verify {
                                // A blob's last piece is given only once the
                                // whole blob matched its digest.
                                let outcome = match rx.wait_for(|p| p.phase.outcome().is_some()).await {
                                    Ok(p) => p.phase.outcome(),
                                    Err(_) => Some(Err(Error::internal("download vanished"))),
                                };
                                if let Some(Err(e)) = outcome {
                                    Err(e)?;
                                }
                            }
                            sent[piece.number as usize] = true;
                            left -= 1;
                            yield piece;
                        }
                        if left == 0 {
                            break;
                        }
                        match outcome {
                            Some(Err(e)) => Err(e)?,
                            Some(Ok(())) => Err(Error::internal(format!(
                                "task {} ended with {left} pieces missing",
                                record.id
                            )))?,
                            None => {}
                        }
                        rx.changed().await.map_err(|_| Error::internal("download vanished"))?;
                    }
                }
            }
        }
    }
}

impl TaskManager {
    /// The task `id` if it is stored whole or downloading now; `None`
    /// otherwise (partly stored tasks with no download are not offered).
    pub async fn find(&self, id: &str) -> Result<Option<Object>> {
        if let Some(hot) = self.complete(id)? {
            let lease = Arc::new(self.lease(id));
            return Ok(Some(Object::stored(
                hot.record.clone(),
                &hot,
                TaskSpec::default(),
                None,
                None,
                lease,
            )));
        }
        let slot = self.slots.lock().await.get(id).cloned();
        let Some(dl) = slot.and_then(|s| s.download.get().cloned()) else {
            return Ok(None);
        };
        Ok(Some(Object::downloading(&dl, Arc::new(self.lease(id)))))
    }
}
