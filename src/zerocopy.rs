//! Zero-copy sends of stored bytes.
//!
//! A hit is sent with `sendfile(2)`: the kernel moves the bytes from the
//! page cache to the socket and they never pass through user space, as
//! nginx's `sendfile on` does. hyper writes body chunks (`Bytes`) by
//! reference into `writev`, so the path works through it unchanged:
//!
//! - [`region`] returns a piece's bytes as a `Bytes` backed by a read-only
//!   shared mapping of the content file (not populated: mapping costs no
//!   page faults and no resident memory), and registers the mapping's
//!   address range with its file and offset;
//! - the gateway's connection stream ([`crate::gateway::ReasonedErrors`])
//!   looks up each slice it is asked to write; a slice inside a registered
//!   mapping is sent from the file with `sendfile` instead of being copied
//!   from the mapping. To a client on this host (`server.sendfile =
//!   "auto"`), the slice is written as it is instead: the kernel copies it
//!   from the mapping, so the client's own copy out of its socket reads
//!   bytes a core has just written rather than cold page cache.
//!
//! The mapping holds the true bytes, so anything that does read it (an
//! HTTP/2 stream copying into frames, a slice written by another path) gets
//! them right: the registry is only a shortcut. What reading a mapping
//! costs is the risk every mmap carries: a content file truncated by
//! another process under a live mapping, or a disk error, would be a
//! SIGBUS. seedgate never truncates a live content file (a new version
//! gets a new file, eviction unlinks), HTTP/2 answers are read into memory
//! instead, and `sendfile` on a file that shrank returns short, which ends
//! that one answer with an error. A `write` from the mapping is the
//! kernel's copy, not seedgate's: a page past the end of a shrunk file
//! fails that write with `EFAULT` (no signal), which ends that one answer
//! the same way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::RwLock;

/// A registered mapping: where its bytes are in which file.
#[derive(Clone)]
struct Registered {
    end: usize,
    file: Arc<File>,
    offset: u64,
}

/// Live mappings by start address.
static REGIONS: LazyLock<RwLock<BTreeMap<usize, Registered>>> =
    LazyLock::new(|| RwLock::new(BTreeMap::new()));

/// How many mappings are live: with none, a write looks nothing up (every
/// answer's head and every small object goes through [`lookup`]).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The owner of a region's `Bytes`: unregistered, then unmapped, when the
/// last clone drops.
struct FileRegion {
    map: memmap2::Mmap,
}

impl AsRef<[u8]> for FileRegion {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for FileRegion {
    fn drop(&mut self) {
        REGIONS.write().remove(&(self.map.as_ptr() as usize));
        LIVE.fetch_sub(1, Ordering::Release);
    }
}

/// Bytes `offset..offset + len` of `file` as a registered, unpopulated
/// mapping. `len` must be > 0 and the range inside the file.
pub fn region(file: &Arc<File>, offset: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: content files are never truncated or rewritten in place
    // while their task exists (a new version gets a new file; eviction
    // unlinks, which keeps the mapped inode alive); see the module doc
    // for what another process doing so would cost.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(&**file)?
    };
    let start = map.as_ptr() as usize;
    REGIONS.write().insert(
        start,
        Registered {
            end: start + len,
            file: file.clone(),
            offset,
        },
    );
    LIVE.fetch_add(1, Ordering::Release);
    // A piece that is not in the page cache is asked for now, without
    // waiting, so `sendfile` finds it there instead of reading the disk on
    // a runtime thread. Three pages are sampled: asking for a whole cached
    // piece costs a walk over all its pages on every answer.
    if !resident(&map) {
        let _ = rustix::fs::fadvise(
            &**file,
            offset,
            std::num::NonZeroU64::new(len as u64),
            rustix::fs::Advice::WillNeed,
        );
    }
    Ok(Bytes::from_owner(FileRegion { map }))
}

/// Whether the first, middle and last pages of `map` are in memory.
fn resident(map: &memmap2::Mmap) -> bool {
    let page = rustix::param::page_size();
    let base = map.as_ptr() as usize;
    [0, map.len() / 2, map.len() - 1].iter().all(|at| {
        let addr = (base + at) & !(page - 1);
        let mut vec = 0u8;
        // SAFETY: `addr` is page-aligned and inside the mapping (memmap2
        // maps from the page holding `offset`); `vec` has room for the one
        // page asked about.
        let r = unsafe { libc::mincore(addr as *mut libc::c_void, page, &mut vec) };
        r == 0 && vec & 1 == 1
    })
}

/// Where `slice` is in a file, if it lies inside a registered mapping.
pub fn lookup(slice: &[u8]) -> Option<(Arc<File>, u64)> {
    if slice.is_empty() || LIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let at = slice.as_ptr() as usize;
    let regions = REGIONS.read();
    let (start, r) = regions.range(..=at).next_back()?;
    (at + slice.len() <= r.end).then(|| (r.file.clone(), r.offset + (at - start) as u64))
}

/// The most of a mapping written by one `write` when stored bytes are
/// copied rather than sent with `sendfile`: the pages it faults in are
/// released after each write ([`release`]), so however many answers are
/// being copied, at most this much per thread is mapped at once.
pub const COPY_CHUNK: usize = 1 << 20;

/// Drops the page-table entries of the whole pages of `slice`, part of a
/// registered mapping that was just written to a socket. The pages stay in
/// the page cache (the mapping is shared, of a file), a later read of them
/// faults them in again, and the process's RSS stops counting them: without
/// this, 64 answers copied at once held 258 MiB of file pages in the
/// process's RSS (each a piece's mapping, faulted in by the kernel's copy).
pub fn release(slice: &[u8]) {
    let page = rustix::param::page_size();
    let start = slice.as_ptr() as usize & !(page - 1);
    let end = (slice.as_ptr() as usize + slice.len()) & !(page - 1);
    if end > start && lookup(slice).is_some() {
        // SAFETY: `slice` lies in a live registered mapping, which starts
        // on a page boundary at or before it, so `start..end` is inside
        // it; dropping a shared file mapping's entries loses nothing (the
        // next access reads the page cache again).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Why an answer from a content file ended early.
pub const SHRUNK: &str =
    "a content file is shorter than its record says (changed on disk by another process?)";

/// A socket the bytes of a file can be sent to with `sendfile`.
pub trait SendFile {
    /// Sends up to `len` bytes of `file` from `offset`; the count sent.
    fn poll_send_file(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>>;
}

macro_rules! send_file_for {
    ($t:ty) => {
        impl SendFile for $t {
            fn poll_send_file(
                &self,
                cx: &mut Context<'_>,
                file: &File,
                offset: u64,
                len: usize,
            ) -> Poll<io::Result<usize>> {
                loop {
                    std::task::ready!(self.poll_write_ready(cx))?;
                    let sent = self.try_io(tokio::io::Interest::WRITABLE, || {
                        let mut at = offset;
                        rustix::fs::sendfile(self, file, Some(&mut at), len)
                            .map_err(io::Error::from)
                    });
                    match sent {
                        Ok(0) => {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                SHRUNK,
                            )));
                        }
                        Ok(n) => return Poll::Ready(Ok(n)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    };
}

send_file_for!(tokio::net::TcpStream);
send_file_for!(tokio::net::UnixStream);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_region_holds_the_files_bytes_and_is_found_until_dropped() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        f.write_all(&data).unwrap();
        let f = Arc::new(f);
        let r = region(&f, 70_000, 100_000).unwrap();
        assert_eq!(&r[..], &data[70_000..170_000]);
        let part = r.slice(1000..2000);
        let (_, at) = lookup(&part).unwrap();
        assert_eq!(at, 71_000);
        assert!(lookup(&data[..10]).is_none(), "heap bytes are not a region");
        let ptr = part.as_ptr() as usize;
        drop(r);
        assert!(lookup(&part).is_some(), "a slice keeps its mapping");
        drop(part);
        assert!(
            REGIONS.read().get(&(ptr - 1000)).is_none(),
            "unregistered with its last clone"
        );
    }
}
