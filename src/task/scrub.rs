//! The scrubber: every stored piece is read back and checked against its
//! digest at least once per `storage.scrub_interval`, at no more than
//! `storage.scrub_rate`.
//!
//! It is what lets a hit skip the check. A read checks a stored piece the
//! first time it is asked for after a start (or trusts it as it lands from
//! bytes whose crc was computed on the way in), and then sends it from the
//! file without reading it. Bytes that rot on disk later are found here: the
//! piece is dropped, so no new reader is served it (in-flight readers check
//! it again before their next send of it) and the next read fetches exactly
//! that piece from the origin again.

use std::sync::Arc;
use std::time::Duration;

use super::TaskManager;
use super::object::parse_digest;
use super::read::read_at;
use crate::error::{Error, Result};
use crate::metrics::METRICS;
use crate::piece::piece_span;
use crate::storage::TaskState;

/// What one pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScrubReport {
    pub tasks: usize,
    pub pieces: usize,
    pub bytes: u64,
    pub corrupt: usize,
}

impl TaskManager {
    /// Runs a pass every `storage.scrub_interval` (the first one an
    /// interval after start: a start checks each piece on its first read).
    pub fn spawn_scrub(self: &Arc<Self>) {
        let interval = self.gc.scrub_interval;
        if interval.is_zero() {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + interval;
            loop {
                tokio::time::sleep_until(next).await;
                next += interval;
                let Some(tasks) = me.upgrade() else { return };
                let started = tokio::time::Instant::now();
                match tasks.scrub().await {
                    Ok(r) => tracing::info!(
                        tasks = r.tasks,
                        pieces = r.pieces,
                        bytes = r.bytes,
                        corrupt = r.corrupt,
                        took_ms = started.elapsed().as_millis() as u64,
                        "scrub pass finished"
                    ),
                    Err(e) => tracing::warn!(error = %e, "scrub pass failed"),
                }
                // A pass longer than the interval starts the next at once.
                next = next.max(tokio::time::Instant::now());
            }
        });
    }

    /// One pass over every stored task: each piece read (on a blocking
    /// thread, one at a time) and checked, paced to `storage.scrub_rate`.
    pub async fn scrub(self: &Arc<Self>) -> Result<ScrubReport> {
        let rate = self.gc.scrub_rate.as_u64().max(1) as f64;
        let started = tokio::time::Instant::now();
        let mut report = ScrubReport::default();
        let records = self.storage.tasks()?;
        for record in records {
            if record.state != TaskState::Succeeded {
                continue;
            }
            let id = record.id.clone();
            // Held so the collector does not delete the file mid-pass.
            let _lease = self.lease(&id);
            let Ok(file) = self.storage.open_content(&id) else {
                continue; // evicted since the list was read
            };
            let file = Arc::new(file);
            report.tasks += 1;
            for piece in self.storage.pieces(&id)? {
                let Some(crc) = parse_digest(&piece.digest) else {
                    continue;
                };
                let n = piece.number;
                let (offset, length) = piece_span(n, record.content_length, record.piece_length);
                let f = file.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    read_at(&f, offset, length as usize).map(|b| crc32fast::hash(&b) == crc)
                })
                .await
                .map_err(|e| Error::internal(format!("scrub reader: {e}")))?;
                report.pieces += 1;
                report.bytes += length;
                METRICS.scrub_pieces.inc();
                match ok {
                    Ok(true) => {}
                    Ok(false) => {
                        report.corrupt += 1;
                        METRICS.scrub_corrupt.inc();
                        tracing::error!(task = %id, piece = n, "scrub: stored piece no longer matches its digest; dropped, its next read fetches it again");
                        self.forget_corrupt_piece(&id, n, length)?;
                    }
                    Err(e) => {
                        tracing::warn!(task = %id, piece = n, error = %e, "scrub: piece not readable");
                    }
                }
                let due = started + Duration::from_secs_f64(report.bytes as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
        }
        METRICS.scrub_passes.inc();
        Ok(report)
    }

    /// Forgets stored piece `n` of `id` whose bytes failed their digest
    /// (found by a read or by the scrubber): its record goes, the task is
    /// no longer complete (its next read fetches the piece again), and
    /// readers holding it check it again.
    pub(super) fn forget_corrupt_piece(&self, id: &str, n: u32, length: u64) -> Result<()> {
        if let Some(hot) = self.index.lock().tasks.get(id).and_then(|u| u.hot.clone()) {
            hot.checked.clear(n);
        }
        self.storage.remove_piece(id, n)?;
        if let Some(mut record) = self.storage.task(id)? {
            record.state = TaskState::Running;
            self.storage.put_task(&record)?;
        }
        self.index.lock().sub(id, length);
        Ok(())
    }
}
