//! Reasons for the errors hyper answers itself.
//!
//! A request head that hyper cannot parse (a garbage request line, a
//! control byte in a header, a head over `server.max_header_bytes`) never
//! reaches the router: hyper answers it with a bare status and
//! `content-length: 0`, then closes the connection. Every error the gateway
//! sends must carry its one-line reason, so [`ReasonedErrors`] wraps the
//! connection's stream and gives such an answer a body.
//!
//! It only looks at the **first** bytes written on a connection: those are
//! always a response head, never body bytes, so an object's content can
//! never be mistaken for an error head (an object whose bytes spell one
//! must be served byte for byte). A malformed request that follows a good
//! one on a kept-alive connection keeps hyper's bare status; RELIABILITY.md
//! lists that gap.
//!
//! It is also where stored bytes leave by `sendfile`: a body slice that
//! lies in a registered mapping of a content file ([`crate::zerocopy`]) is
//! sent from the file, never copied through user space. On a connection
//! that `server.sendfile` says is not for `sendfile` (a client on this
//! host), the slice is written as it is: the kernel copies it from the
//! mapping into the socket, and seedgate still never reads it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::zerocopy::{self, SendFile};

/// A stream whose first response, if it is one of hyper's own bodiless
/// error answers, gets its reason as a body.
pub struct ReasonedErrors<S> {
    inner: S,
    /// The first write has been looked at.
    looked: bool,
    /// The replacement answer, and how much of it went out.
    pending: Option<(Vec<u8>, usize)>,
    max_header_bytes: usize,
    /// Stored bytes are sent with `sendfile`; otherwise copied from their
    /// mapping by `write`.
    sendfile: bool,
}

impl<S> ReasonedErrors<S> {
    pub fn new(inner: S, max_header_bytes: usize, sendfile: bool) -> Self {
        Self {
            inner,
            looked: false,
            pending: None,
            max_header_bytes,
            sendfile,
        }
    }
}

/// A write that copied from a content file's mapping and found the file
/// shorter than its mapping (changed by another process) fails with
/// `EFAULT` rather than a signal: that one answer ends with the reason.
fn shrunk(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EFAULT) {
        io::Error::new(io::ErrorKind::UnexpectedEof, zerocopy::SHRUNK)
    } else {
        e
    }
}

/// The reason of one of hyper's own error statuses.
fn reason(status: &[u8], max_header_bytes: usize) -> Option<String> {
    Some(match status {
        b"400" => "malformed HTTP request: the request line or a header could not be parsed (bad syntax or a control character)".to_string(),
        b"414" => "the request URI is too long".to_string(),
        b"431" => format!(
            "the request head is larger than {max_header_bytes} bytes (server.max_header_bytes)"
        ),
        b"505" => "HTTP version not supported".to_string(),
        _ => return None,
    })
}

/// `head` with a body holding its reason, if `head` is a whole bodiless
/// error answer of hyper's.
pub fn with_reason(head: &[u8], max_header_bytes: usize) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ".as_slice())?;
    let why = reason(rest.get(..3)?, max_header_bytes)?;
    if !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let lower = text.to_ascii_lowercase();
    let at = lower.find("\r\ncontent-length: 0\r\n")?;
    let body = format!("{why}\n");
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(&head[..at]);
    out.extend_from_slice(
        format!(
            "\r\ncontent-length: {}\r\ncontent-type: text/plain; charset=utf-8",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&head[at + "\r\ncontent-length: 0".len()..]);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<S: AsyncWrite + Unpin> ReasonedErrors<S> {
    /// Writes out what is left of a replacement answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, at)) = &mut self.pending {
            if *at >= buf.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &buf[*at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Looks at the first write; `Some(n)` when it was replaced (hyper is
    /// told its `n` bytes went out).
    fn look(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Option<Poll<io::Result<usize>>> {
        if self.looked {
            return None;
        }
        self.looked = true;
        if bufs.iter().any(|b| zerocopy::lookup(b).is_some()) {
            return None; // a body: never read it
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total > 4096 {
            return None;
        }
        let whole: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let replaced = with_reason(&whole, self.max_header_bytes)?;
        self.pending = Some((replaced, 0));
        Some(match self.drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // The rest goes out on flush.
            _ => Poll::Ready(Ok(total)),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReasonedErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + SendFile + Unpin> ReasonedErrors<S> {
    /// Writes `bufs` up to the first slice of a content file's mapping,
    /// or sends that slice from its file (`sendfile`) or a chunk of it
    /// from the mapping (a copy by the kernel, whose faulted-in pages are
    /// released once written); `None` when there is none.
    fn send_regions(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Option<Poll<io::Result<usize>>> {
        let (i, (file, offset)) = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| Some((i, zerocopy::lookup(b)?)))?;
        Some(if i > 0 {
            Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs[..i])
        } else if self.sendfile {
            self.inner.poll_send_file(cx, &file, offset, bufs[0].len())
        } else {
            let chunk = &bufs[0][..bufs[0].len().min(zerocopy::COPY_CHUNK)];
            let written = Pin::new(&mut self.inner).poll_write(cx, chunk);
            if let Poll::Ready(Ok(n)) = written {
                zerocopy::release(&chunk[..n]);
            }
            written.map_err(shrunk)
        })
    }
}

impl<S: AsyncWrite + SendFile + Unpin> AsyncWrite for ReasonedErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let bufs = [io::IoSlice::new(buf)];
        if let Some(r) = self.look(cx, &bufs) {
            return r;
        }
        if self.pending.is_some() {
            std::task::ready!(self.drain(cx))?;
        }
        if let Some(r) = self.send_regions(cx, &bufs) {
            return r;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(r) = self.look(cx, bufs) {
            return r;
        }
        if self.pending.is_some() {
            std::task::ready!(self.drain(cx))?;
        }
        if let Some(r) = self.send_regions(cx, bufs) {
            return r;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both ways out send a content file's mapping byte for byte; when the
    /// file shrinks under a live mapping, both end that answer with the
    /// reason (a copy from the mapping gets `EFAULT`, not a SIGBUS).
    #[tokio::test]
    async fn both_ways_out_send_the_files_bytes_and_survive_a_shrunk_file() {
        let page = rustix::param::page_size();
        let data: Vec<u8> = (0..8 * page as u32).map(|i| (i * 13) as u8).collect();
        for sendfile in [true, false] {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&data).unwrap();
            let f = Arc::new(f);
            let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
            let mut out = ReasonedErrors::new(a, 65536, sendfile);
            out.looked = true; // a body, not a first answer head
            let region = zerocopy::region(&f, page as u64, 6 * page).unwrap();
            let reader = tokio::spawn(async move {
                let mut got = vec![0; 6 * page];
                b.read_exact(&mut got).await.unwrap();
                (b, got)
            });
            out.write_all(&region).await.unwrap();
            let (mut b, got) = reader.await.unwrap();
            assert_eq!(got, data[page..7 * page], "sendfile: {sendfile}");

            f.set_len(2 * page as u64).unwrap();
            let err = out.write_all(&region[2 * page..]).await.unwrap_err();
            assert_eq!(err.to_string(), zerocopy::SHRUNK, "sendfile: {sendfile}");
            drop(out);
            let mut rest = Vec::new();
            b.read_to_end(&mut rest).await.unwrap();
            assert!(
                rest.is_empty(),
                "sendfile: {sendfile}: nothing past the end"
            );
        }
    }

    #[test]
    fn bare_errors_get_a_reason() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(with_reason(head, 65536).unwrap()).unwrap();
        let (h, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            body.contains("65536 bytes (server.max_header_bytes)"),
            "{out}"
        );
        assert!(
            h.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        assert!(h.starts_with("HTTP/1.1 431 "));
        assert!(with_reason(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", 1).is_some());
    }

    #[test]
    fn other_answers_are_left_alone() {
        for head in [
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".as_slice(),
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nbody",
        ] {
            assert!(
                with_reason(head, 1).is_none(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
