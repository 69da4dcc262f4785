//! The handle on a task that a reader or a peer holds: its record, where
//! its bytes come from (all on disk, or a running download), its content
//! file. While a handle lives the task is not evicted.

use std::fs::File;
use std::sync::Arc;

use super::index::Lease;
use super::lifecycle::{Download, Request};
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
    pub(super) record: TaskRecord,
    pub(super) pieces: Arc<Vec<Landed>>,
    pub(super) file: Arc<File>,
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

/// An object ready to read. While it lives, its task is not evicted.
#[derive(Debug, Clone)]
pub struct Object {
    pub record: TaskRecord,
    pub(super) source: Source,
    pub(super) file: Arc<File>,
    pub(super) request: Arc<Request>,
    pub(super) _lease: Arc<Lease>,
}

impl Object {
    /// True when every byte was already on disk when the object was opened.
    pub fn cached(&self) -> bool {
        matches!(self.source, Source::Local(_))
    }
}
