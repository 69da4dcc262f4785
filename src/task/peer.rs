//! Tasks as peers see them: found by id (a peer knows nothing of origins),
//! with the pieces readable now and each piece as it lands.
//!
//! The Dragonfly seed peer ([`crate::peer`]) serves pieces, streams piece
//! lists and reports back-to-source downloads to its schedulers through
//! this view; it reads the same content files and the same live progress
//! as the HTTP gateway, so an object is stored once whoever asked for it.

use std::fs::File;
use std::sync::Arc;

use futures_util::Stream;

use super::index::Lease;
use super::object::{Landed, Source};
use super::{TaskManager, TaskSpec};
use crate::error::{Error, Result};
use crate::piece::{crc32_digest, piece_count, piece_span};
use crate::storage::TaskRecord;

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
fn piece_info(record: &TaskRecord, n: u32, landed: Landed) -> PieceInfo {
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

/// A stored or downloading task. While it lives, the task is not evicted.
#[derive(Debug)]
pub struct PeerTask {
    pub record: TaskRecord,
    /// Tag, application and piece length of the download (default for a
    /// task found stored).
    pub spec: TaskSpec,
    source: Source,
    file: Arc<File>,
    _lease: Lease,
}

impl PeerTask {
    /// True while its download runs (pieces may still land).
    pub fn running(&self) -> bool {
        matches!(&self.source, Source::Download(dl) if dl.progress.borrow().outcome.is_none())
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
                            (fresh, p.outcome.clone())
                        };
                        for piece in fresh {
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
    pub async fn peer_task(&self, id: &str) -> Result<Option<PeerTask>> {
        if let Some(hot) = self.complete(id)? {
            return Ok(Some(PeerTask {
                record: hot.record.clone(),
                spec: TaskSpec::default(),
                source: Source::Local(hot.pieces.clone()),
                file: hot.file.clone(),
                _lease: self.lease(id),
            }));
        }
        let slot = self.slots.lock().await.get(id).cloned();
        let Some(dl) = slot.and_then(|s| s.download.get().cloned()) else {
            return Ok(None);
        };
        Ok(Some(PeerTask {
            record: dl.record.clone(),
            spec: dl.request.spec.clone(),
            file: dl.file.clone(),
            source: Source::Download(dl),
            _lease: self.lease(id),
        }))
    }

    /// Calls `hook` with every download that goes back to the origin, as
    /// it starts (before its first piece is fetched). Set once.
    pub fn on_back_to_source(&self, hook: impl Fn(PeerTask) + Send + Sync + 'static) {
        if self
            .back_to_source
            .set(super::BackToSourceHook(Box::new(hook)))
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
        if self
            .removed
            .set(super::RemovedHook(Box::new(hook)))
            .is_err()
        {
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
    pub(super) fn announce_start(&self, dl: &Arc<super::lifecycle::Download>) {
        if let Some(hook) = self.back_to_source.get() {
            hook(PeerTask {
                record: dl.record.clone(),
                spec: dl.request.spec.clone(),
                file: dl.file.clone(),
                source: Source::Download(dl.clone()),
                _lease: self.lease(&dl.record.id),
            });
        }
    }
}
