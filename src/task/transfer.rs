//! Moving bytes from an origin to the content file: ranged piece workers
//! or one sequential stream cut into pieces, written with positioned
//! writes, synced and recorded in batches (group commit).

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

use super::TaskManager;
use super::lifecycle::Download;
use super::object::Landed;
use crate::clock::now_ms;
use crate::error::{Error, ErrorKind, Result};
use crate::origin::{Expect, Plan};
use crate::piece::{crc32_digest, piece_count, piece_span};
use crate::storage::PieceRecord;

/// Bytes a piece writer gathers before one positioned write...
const WRITE_BUFFER: usize = 1024 * 1024;
/// ...or chunks, well under the kernel's IOV_MAX (1024).
const WRITE_CHUNKS: usize = 256;
/// Landed pieces waiting for their sync and record, at most: bounds what a
/// crash can cost (they are fetched again) and the dirty bytes in flight.
const COMMIT_QUEUE: usize = 16;
/// How often a piece worker past its download's share of the origin
/// looks again whether the share has grown.
const SHARE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);
/// Bytes per `pwritev` call, at most. The kernel sizes the page-cache
/// folios of a buffered write by the call's length; on a VM that hands
/// free memory back to its host, large folios land in memory the host
/// must fault in again, and a 1 MiB call filled page cache at 90-160 MB/s
/// where 16 KiB calls ran at 0.4-1.5 GB/s (BENCHMARKS.md, "Page cache").
const WRITE_CALL: usize = 16 * 1024;

/// Writes `chunks` contiguously at `offset`, in `pwritev` calls that end
/// on multiples of `WRITE_CALL` in the file: a call that ended inside a
/// new block would have the kernel zero the rest of that block first.
pub(super) fn write_all_at(file: &File, chunks: &[Bytes], mut offset: u64) -> io::Result<()> {
    // (chunk, byte within it) of the next byte to write.
    let (mut chunk, mut within) = (0, 0);
    let mut call: Vec<io::IoSlice<'_>> = Vec::new();
    loop {
        while chunk < chunks.len() && within == chunks[chunk].len() {
            (chunk, within) = (chunk + 1, 0);
        }
        if chunk == chunks.len() {
            return Ok(());
        }
        let room = WRITE_CALL - (offset % WRITE_CALL as u64) as usize;
        call.clear();
        let (mut i, mut j, mut len) = (chunk, within, 0);
        while i < chunks.len() && len < room && call.len() < WRITE_CHUNKS {
            let take = (chunks[i].len() - j).min(room - len);
            call.push(io::IoSlice::new(&chunks[i][j..j + take]));
            len += take;
            j += take;
            if j == chunks[i].len() {
                (i, j) = (i + 1, 0);
            }
        }
        let mut n = rustix::io::pwritev(file, &call, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        while n > 0 {
            let left = chunks[chunk].len() - within;
            if n < left {
                within += n;
                break;
            }
            n -= left;
            (chunk, within) = (chunk + 1, 0);
        }
    }
}

/// Makes a task's written bytes durable (fdatasync: the file's new blocks
/// included) before a piece is recorded.
pub(super) async fn sync(file: &Arc<File>) -> Result<()> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || file.sync_data())
        .await
        .map_err(|e| Error::internal(format!("piece committer: {e}")))?
        .map_err(|e| Error::io("syncing pieces to disk", &e))
}

/// Writes one piece at its offset in buffered positioned writes, checking
/// its length and computing its digest. The caller lands the piece for
/// readers, then syncs the file, and only then records it.
pub(super) struct PieceWriter {
    pub(super) file: Arc<File>,
    pub(super) number: u32,
    pub(super) offset: u64,
    pub(super) length: u64,
    pub(super) written: u64,
    /// Received chunks not yet written, kept as they came (no copy): one
    /// `pwritev` writes them.
    pub(super) pending: Vec<Bytes>,
    pub(super) pending_len: usize,
    pub(super) crc: crc32fast::Hasher,
    pub(super) started: tokio::time::Instant,
}

impl PieceWriter {
    pub(super) fn new(file: Arc<File>, number: u32, offset: u64, length: u64) -> Self {
        Self {
            file,
            number,
            offset,
            length,
            written: 0,
            pending: Vec::new(),
            pending_len: 0,
            crc: crc32fast::Hasher::new(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Bytes received so far.
    pub(super) fn received(&self) -> u64 {
        self.written + self.pending_len as u64
    }

    pub(super) async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.written + (self.pending_len + chunk.len()) as u64 > self.length {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "origin sent more than the {} bytes of piece {}",
                    self.length, self.number
                ),
            ));
        }
        self.crc.update(&chunk);
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= WRITE_BUFFER || self.pending.len() >= WRITE_CHUNKS {
            self.flush(false).await?;
        }
        Ok(())
    }

    /// Writes the pending chunks; unless `all`, only up to the last
    /// multiple of `WRITE_CALL` in the file, keeping the rest pending so
    /// that every write but a piece's last ends on that boundary.
    pub(super) async fn flush(&mut self, all: bool) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut chunks = std::mem::take(&mut self.pending);
        let start = self.offset + self.written;
        let end = start + self.pending_len as u64;
        let cut = if all {
            end
        } else {
            end - end % WRITE_CALL as u64
        };
        if cut <= start {
            self.pending = chunks;
            return Ok(());
        }
        let mut keep = (end - cut) as usize;
        while keep > 0 {
            let last = chunks.last_mut().expect("pending bytes are in chunks");
            if last.len() <= keep {
                keep -= last.len();
                self.pending.insert(0, chunks.pop().expect("checked above"));
            } else {
                let tail = last.split_off(last.len() - keep);
                self.pending.insert(0, tail);
                keep = 0;
            }
        }
        let len = cut - start;
        self.pending_len -= len as usize;
        let file = self.file.clone();
        let at = self.offset + self.written;
        let n = self.number;
        tokio::task::spawn_blocking(move || write_all_at(&file, &chunks, at))
            .await
            .map_err(|e| Error::internal(format!("piece writer: {e}")))?
            .map_err(|e| Error::io(format!("writing piece {n} to disk"), &e))?;
        self.written += len;
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<PieceRecord> {
        self.flush(true).await?;
        if self.written != self.length {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "piece {} ended after {} of {} bytes",
                    self.number, self.written, self.length
                ),
            ));
        }
        Ok(PieceRecord {
            number: self.number,
            offset: self.offset,
            length: self.length,
            digest: crc32_digest(self.crc.finalize()),
            cost_ms: self.started.elapsed().as_millis() as u64,
            created_at_ms: now_ms(),
        })
    }
}

impl TaskManager {
    /// Fetches every piece not yet recorded, as the plan allows.
    ///
    /// Fetching never waits for the disk: landed pieces go to a committer
    /// that syncs the file once for every batch and then records the batch
    /// (group commit). When fetching fails, what landed is still committed.
    ///
    /// `origin_slot` (the origin's `max_downloads` bulkhead) is given back
    /// as soon as fetching ends: the origin is no longer being read while
    /// the last batch is synced, and on a disk slow to sync, downloads
    /// waiting for it had filled the bulkhead and refused new ones (503).
    pub(super) async fn run(
        &self,
        dl: &Download,
        origin_slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<()> {
        let plan = dl.plan(false).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<PieceRecord>(COMMIT_QUEUE);
        let fetch = async move {
            let _slot = origin_slot;
            if plan.ranged() {
                let most = self.config.piece_concurrency.max(1);
                let workers = (0..most).map(|worker| {
                    let tx = tx.clone();
                    async move {
                        let origin = &dl.request.origin;
                        loop {
                            // Past this download's share of its origin, a
                            // worker waits instead of adding a request.
                            if worker >= origin.piece_workers(most) {
                                if dl.queue.lock().is_empty() {
                                    break;
                                }
                                tokio::time::sleep(SHARE_RECHECK).await;
                                continue;
                            }
                            let Some(n) = dl.next_piece() else { break };
                            let piece = origin
                                .guarded(&dl.request.url, "piece", || self.fetch_piece(dl, n))
                                .instrument(tracing::info_span!("piece", piece = n))
                                .await?;
                            tx.send(piece)
                                .await
                                .map_err(|_| Error::internal("the piece committer stopped"))?;
                        }
                        Ok::<_, Error>(())
                    }
                });
                futures_util::future::try_join_all(workers).await?;
                Ok(())
            } else {
                let origin = &dl.request.origin;
                origin
                    .guarded(&dl.request.url, "object", || {
                        self.fetch_sequential(dl, &plan, &tx)
                    })
                    .instrument(tracing::info_span!("object"))
                    .await
            }
        };
        let (fetched, committed) = tokio::join!(fetch, self.commit(dl, rx));
        committed.and(fetched)
    }

    /// Syncs and records landed pieces, in batches.
    pub(super) async fn commit(
        &self,
        dl: &Download,
        mut rx: tokio::sync::mpsc::Receiver<PieceRecord>,
    ) -> Result<()> {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(piece) = rx.try_recv() {
                batch.push(piece);
            }
            sync(&dl.file).await?;
            for piece in batch {
                self.record_piece(dl, piece)?;
            }
            // Durable at once rather than at sled's next periodic flush, so
            // a crash costs only the pieces being fetched (at most
            // `download.piece_concurrency`), not also the ones recorded in
            // the last half second.
            self.storage.flush().await?;
        }
        Ok(())
    }

    /// One ranged request for piece `n`, written at its offset. A plan the
    /// origin refuses after it expired is renewed once.
    pub(super) async fn fetch_piece(&self, dl: &Download, n: u32) -> Result<PieceRecord> {
        let origin = &dl.request.origin;
        let r = &dl.record;
        let (offset, length) = piece_span(n, r.content_length, r.piece_length);
        let expect = Expect {
            offset,
            length,
            total: r.content_length,
        };
        let plan = dl.plan(false).await?;
        let mut body = match origin.fetch(&plan, expect, true).await {
            Err(e) if e.kind == ErrorKind::Forbidden && plan.expires_at_ms().is_some() => {
                let plan = dl.plan(true).await?;
                origin.fetch(&plan, expect, true).await?
            }
            other => other?,
        };
        dl.watchdog.touch();
        let received = origin.received_counter();
        let mut writer = PieceWriter::new(dl.file.clone(), n, offset, length);
        while let Some(chunk) = body.next_chunk(offset + writer.received()).await? {
            self.check_room()?;
            dl.watchdog.touch();
            received.inc_by(chunk.len() as u64);
            writer.write(chunk).await?;
        }
        let piece = writer.finish().await?;
        self.land(dl, &piece);
        Ok(piece)
    }

    /// One request for the whole object, cut into pieces as it arrives.
    /// Pieces already recorded are read past, not rewritten.
    pub(super) async fn fetch_sequential(
        &self,
        dl: &Download,
        plan: &Plan,
        commit: &tokio::sync::mpsc::Sender<PieceRecord>,
    ) -> Result<()> {
        let origin = &dl.request.origin;
        let r = &dl.record;
        let expect = Expect {
            offset: 0,
            length: r.content_length,
            total: r.content_length,
        };
        let received = origin.received_counter();
        let mut body = origin.fetch(plan, expect, false).await?;
        dl.watchdog.touch();
        let count = piece_count(r.content_length, r.piece_length);
        let mut pending = Bytes::new();
        for n in 0..count {
            let (offset, length) = piece_span(n, r.content_length, r.piece_length);
            let keep = dl.progress.borrow().pieces[n as usize].is_none();
            let mut writer = keep.then(|| PieceWriter::new(dl.file.clone(), n, offset, length));
            let mut remaining = length;
            while remaining > 0 {
                if pending.is_empty() {
                    let at = offset + length - remaining;
                    pending = match body.next_chunk(at).await? {
                        Some(chunk) => {
                            dl.watchdog.touch();
                            received.inc_by(chunk.len() as u64);
                            chunk
                        }
                        None => {
                            return Err(Error::new(
                                ErrorKind::Transient,
                                format!(
                                    "origin '{}': {}: body ended at byte {} of {}",
                                    origin.name,
                                    plan.url(),
                                    offset + length - remaining,
                                    r.content_length
                                ),
                            ));
                        }
                    };
                }
                self.check_room()?;
                let take = (remaining as usize).min(pending.len());
                let part = pending.split_to(take);
                if let Some(w) = writer.as_mut() {
                    w.write(part).await?;
                }
                remaining -= take as u64;
            }
            if let Some(w) = writer {
                let piece = w.finish().await?;
                self.land(dl, &piece);
                commit
                    .send(piece)
                    .await
                    .map_err(|_| Error::internal("the piece committer stopped"))?;
            }
        }
        if !pending.is_empty() || body.next_chunk(r.content_length).await?.is_some() {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "origin '{}': {}: body is longer than {} bytes",
                    origin.name,
                    plan.url(),
                    r.content_length
                ),
            ));
        }
        Ok(())
    }

    /// Lets readers read a piece written in full (not yet synced: readers
    /// need the bytes, only the record needs them durable).
    pub(super) fn land(&self, dl: &Download, piece: &PieceRecord) {
        if let Some(landed) = Landed::stored(piece) {
            dl.progress.send_modify(|p| {
                p.pieces[piece.number as usize] = Some(Landed {
                    fresh: true,
                    ..landed
                })
            });
        }
    }

    /// Records a durable piece.
    pub(super) fn record_piece(&self, dl: &Download, piece: PieceRecord) -> Result<()> {
        self.storage.put_piece(&dl.record.id, &piece)?;
        self.index.lock().add(&dl.record.id, piece.length);
        dl.promise.spend(self, piece.length);
        if self.over_high_watermark() {
            self.gc_kick.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(length: u64) -> (PieceWriter, Arc<File>) {
        let file = Arc::new(tempfile::tempfile().unwrap());
        (PieceWriter::new(file.clone(), 2, 8, length), file)
    }

    #[tokio::test]
    async fn a_piece_lands_at_its_offset_with_its_crc() {
        let (mut w, file) = writer(6);
        w.write(Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(w.received(), 3);
        w.write(Bytes::from_static(b"def")).await.unwrap();
        let piece = w.finish().await.unwrap();
        assert_eq!((piece.number, piece.offset, piece.length), (2, 8, 6));
        assert_eq!(piece.digest, crc32_digest(crc32fast::hash(b"abcdef")));
        let mut buf = vec![0; 6];
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, 8).unwrap();
        assert_eq!(buf, b"abcdef");
    }

    /// Chunks of odd sizes, flushed at the write boundaries and in between,
    /// land byte for byte, with only the unaligned tail left pending.
    #[tokio::test]
    async fn odd_chunks_are_written_up_to_the_call_boundary_then_whole() {
        let length = 3 * WRITE_CALL + 1234;
        let data: Vec<u8> = (0..length).map(|i| (i * 7 % 251) as u8).collect();
        let (mut w, file) = writer(length as u64);
        let mut at = 0;
        for size in [1, 4095, 5000, 17, WRITE_CALL, 3].iter().cycle() {
            let end = (at + size).min(length);
            w.write(Bytes::copy_from_slice(&data[at..end]))
                .await
                .unwrap();
            at = end;
            w.flush(false).await.unwrap();
            let landed = w.offset + w.written;
            assert!(
                w.written == 0 || landed % WRITE_CALL as u64 == 0,
                "a write ended off the boundary, at {landed}"
            );
            assert!(w.received() - w.written < WRITE_CALL as u64);
            if at == length {
                break;
            }
        }
        let piece = w.finish().await.unwrap();
        assert_eq!(piece.digest, crc32_digest(crc32fast::hash(&data)));
        let mut buf = vec![0; length];
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, 8).unwrap();
        assert!(buf == data);
    }

    #[tokio::test]
    async fn a_piece_too_long_or_too_short_is_refused() {
        let (mut w, _f) = writer(4);
        let e = w.write(Bytes::from_static(b"abcde")).await.unwrap_err();
        assert!(
            e.message.contains("more than the 4 bytes of piece 2"),
            "{e}"
        );
        let (mut w, _f) = writer(4);
        w.write(Bytes::from_static(b"ab")).await.unwrap();
        let e = w.finish().await.unwrap_err();
        assert!(e.message.contains("ended after 2 of 4 bytes"), "{e}");
        assert_eq!(e.kind, ErrorKind::Transient);
    }

    #[test]
    fn many_chunks_are_written_in_order() {
        let file = tempfile::tempfile().unwrap();
        let chunks: Vec<Bytes> = (0..300u32)
            .map(|i| Bytes::from(i.to_le_bytes().to_vec()))
            .collect();
        write_all_at(&file, &chunks, 4).unwrap();
        let mut buf = vec![0; 1200];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 4).unwrap();
        let back: Vec<u32> = buf
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, (0..300).collect::<Vec<_>>());
    }
}
