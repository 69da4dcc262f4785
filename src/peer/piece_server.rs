//! Dragonfly's TCP piece protocol ("vortex", TLV framing), served from the
//! content files.
//!
//! A peer sends `DownloadPiece` (task id, piece number); the answer is a
//! `PieceContent` packet carrying the piece's metadata (offset, length,
//! `crc32:` digest the peer verifies) followed by the piece's raw bytes, or
//! an `Error` packet with a code (`NotFound`: not here or not landed yet;
//! `InvalidArgument`: a malformed request). A connection may carry many
//! requests in turn; `Close` or EOF ends it. The bytes go from the page
//! cache to the socket with `sendfile`, never through user space.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use vortex_protocol::tlv::download_piece::DownloadPiece;
use vortex_protocol::tlv::error::{Code, Error as VortexError};
use vortex_protocol::tlv::piece_content::PieceContent;
use vortex_protocol::tlv::piece_metadata::PieceMetadata;
use vortex_protocol::tlv::{PIECE_NUMBER_SIZE, TASK_ID_SIZE, Tag};
use vortex_protocol::{HEADER_SIZE, Header, Message};

use super::host::UploadStats;
use crate::metrics::{CodeLabels, METRICS};
use crate::task::PieceInfo;
use crate::task::TaskManager;
use crate::zerocopy::SendFile;

/// A request value is a task id and a piece number; anything much longer
/// is not a request this server serves (and is not read into memory).
const MAX_REQUEST_VALUE: usize = 1024;
/// Between requests a connection may stay idle this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A started request must arrive whole within this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a peer's request asks for, decoded from untrusted bytes.
#[derive(Debug)]
pub enum Request {
    /// A piece of a task (the task id is checked to be 64 hex digits).
    Piece(DownloadPiece),
    /// The peer ends the connection.
    Close,
    /// A request this server refuses, with the code and reason to send.
    Refuse(Code, String),
}

/// Decodes a request header: its tag and the length of the value to read.
/// A header that does not decode ends the connection (`Err(Close)`); a
/// value too long to be a request is refused before it is read.
pub fn request_header(head: &[u8; HEADER_SIZE]) -> Result<(Tag, usize), Request> {
    let header = Header::decode(head).map_err(|_| Request::Close)?;
    let len = header.length() as usize;
    if len > MAX_REQUEST_VALUE {
        return Err(Request::Refuse(
            Code::InvalidArgument,
            format!(
                "a {:?} request of {len} bytes is too long (at most {MAX_REQUEST_VALUE})",
                header.tag()
            ),
        ));
    }
    Ok((header.tag(), len))
}

/// Decodes a request's value. Pure: the fuzz target `piece_request` runs
/// it (with [`request_header`]) on arbitrary bytes.
pub fn request(tag: Tag, value: &[u8]) -> Request {
    match tag {
        Tag::DownloadPiece => match DownloadPiece::decode(value) {
            Ok(r) if super::is_task_id(&r.task_id) => Request::Piece(r),
            Ok(r) => Request::Refuse(
                Code::InvalidArgument,
                format!(
                    "task id '{}' is not 64 hex digits",
                    r.task_id.escape_debug()
                ),
            ),
            Err(e) => Request::Refuse(
                Code::InvalidArgument,
                format!(
                    "malformed DownloadPiece ({e}): expected a {TASK_ID_SIZE}-character task id and a {PIECE_NUMBER_SIZE}-byte piece number"
                ),
            ),
        },
        Tag::Close => Request::Close,
        tag => Request::Refuse(
            Code::InvalidArgument,
            format!("{tag:?} is not served here: this seed peer serves DownloadPiece"),
        ),
    }
}

/// Paces piece uploads to a byte rate over all connections: a token
/// bucket holding a tenth of a second of bytes, that a piece may overdraw;
/// the sender then waits out its debt (so concurrent senders queue in
/// arrival order and the average rate holds).
#[derive(Debug)]
pub struct RateLimit {
    per_sec: f64,
    burst: f64,
    state: parking_lot::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> Self {
        let per_sec = bytes_per_sec as f64;
        Self {
            per_sec,
            burst: per_sec / 10.0,
            state: parking_lot::Mutex::new((per_sec / 10.0, tokio::time::Instant::now())),
        }
    }

    /// Takes `bytes`, waiting as long as that overdraws the bucket.
    pub async fn take(&self, bytes: u64) {
        let wait = {
            let mut s = self.state.lock();
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.per_sec;
            s.0 = (s.0 + refill).min(self.burst) - bytes as f64;
            s.1 = now;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.0 / self.per_sec)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The TCP piece server.
pub struct PieceServer {
    listener: TcpListener,
    tasks: Arc<TaskManager>,
    stats: Arc<UploadStats>,
    rate: Option<Arc<RateLimit>>,
    write_timeout: Duration,
    /// Connections served at once; more are told so and closed.
    slots: Arc<tokio::sync::Semaphore>,
}

impl PieceServer {
    pub fn new(
        listener: TcpListener,
        tasks: Arc<TaskManager>,
        stats: Arc<UploadStats>,
        max_connections: usize,
        rate: Option<u64>,
        write_timeout: Duration,
    ) -> Self {
        Self {
            write_timeout,
            listener,
            tasks,
            stats,
            rate: rate.map(|r| Arc::new(RateLimit::new(r))),
            slots: Arc::new(tokio::sync::Semaphore::new(max_connections)),
        }
    }

    /// Accepts until `cancel`; connections in flight end with their
    /// current piece.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                a = self.listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "piece server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = cancel.cancelled() => return,
            };
            let conn = Connection {
                tasks: self.tasks.clone(),
                stats: self.stats.clone(),
                rate: self.rate.clone(),
                write_timeout: self.write_timeout,
            };
            let slot = self.slots.clone().try_acquire_owned();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                let Ok(_slot) = slot else {
                    let _ = send_error(
                        &mut stream,
                        Code::Internal,
                        "too many piece connections (seed_peer.max_piece_connections); try again"
                            .into(),
                    )
                    .await;
                    return;
                };
                conn.stats.connections.fetch_add(1, Ordering::Relaxed);
                METRICS.peer_connections.inc();
                let r = tokio::select! {
                    r = conn.serve(&mut stream) => r,
                    () = cancel.cancelled() => Ok(()),
                };
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "piece connection ended");
                }
                conn.stats.connections.fetch_sub(1, Ordering::Relaxed);
                METRICS.peer_connections.dec();
            });
        }
    }
}

struct Connection {
    tasks: Arc<TaskManager>,
    stats: Arc<UploadStats>,
    rate: Option<Arc<RateLimit>>,
    write_timeout: Duration,
}

impl Connection {
    async fn serve(&self, stream: &mut TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        loop {
            let mut head = [0u8; HEADER_SIZE];
            match tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(&mut head)).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            };
            let (tag, len) = match request_header(&head) {
                Ok(h) => h,
                Err(Request::Refuse(code, why)) => {
                    send_error(stream, code, why).await?;
                    return Ok(());
                }
                Err(_) => return Ok(()),
            };
            let mut value = vec![0u8; len];
            tokio::time::timeout(REQUEST_TIMEOUT, stream.read_exact(&mut value))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request body"))??;
            match request(tag, &value) {
                Request::Piece(request) => {
                    self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                    let sent = self.download_piece(stream, request).await;
                    self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    sent?
                }
                Request::Close => return Ok(()),
                Request::Refuse(code, why) => send_error(stream, code, why).await?,
            }
        }
    }

    async fn download_piece(
        &self,
        stream: &mut TcpStream,
        request: DownloadPiece,
    ) -> io::Result<()> {
        let DownloadPiece {
            task_id,
            piece_number: n,
        } = request;
        let task = match self.tasks.find(&task_id).await {
            Ok(Some(task)) => task,
            Ok(None) => {
                return send_error(
                    stream,
                    Code::NotFound,
                    format!("task {task_id} is not on this seed peer"),
                )
                .await;
            }
            Err(e) => return send_error(stream, Code::Internal, e.to_string()).await,
        };
        let Some(piece) = task.piece(n) else {
            let count = task.piece_count();
            let (code, why) = if n >= count {
                (
                    Code::InvalidArgument,
                    format!("task {task_id} has {count} pieces; there is no piece {n}"),
                )
            } else {
                (
                    Code::NotFound,
                    format!("piece {n} of task {task_id} has not landed yet"),
                )
            };
            return send_error(stream, code, why).await;
        };
        // Sent unread (sendfile), so checked first, once per start, as
        // the gateway's reads are: a piece whose bytes no longer match its
        // digest is never sent.
        match self.tasks.check_piece(&task, n).await {
            Ok(true) => {}
            Ok(false) => {
                return send_error(
                    stream,
                    Code::NotFound,
                    format!(
                        "piece {n} of task {task_id} failed its digest check on this seed peer and was dropped; it will be fetched again"
                    ),
                )
                .await;
            }
            Err(e) => return send_error(stream, Code::Internal, e.to_string()).await,
        }
        if let Some(rate) = &self.rate {
            rate.take(piece.length).await;
        }
        let mut head = BytesMut::new();
        PieceContent {
            metadata: metadata(&piece),
        }
        .encode_packet(&mut head);
        let idle = self.write_timeout;
        tokio::time::timeout(idle, stream.write_all(&head))
            .await
            .map_err(|_| stalled(idle))??;
        send_file(stream, task.file(), piece.offset, piece.length, idle).await?;
        self.stats.bytes.fetch_add(piece.length, Ordering::Relaxed);
        METRICS.peer_pieces_served.inc();
        METRICS.peer_bytes_served.inc_by(piece.length);
        Ok(())
    }
}

/// The metadata a peer gets with a piece, as Dragonfly's own TCP server
/// sends it (`dragonfly-client-storage` `server/tcp.rs`): no parent, traffic
/// type `REMOTE_PEER` (the piece reaches the asker from a remote peer), and
/// the time its fetch took, which the wire carries in whole seconds.
fn metadata(piece: &PieceInfo) -> PieceMetadata {
    let created_at = chrono::DateTime::from_timestamp_millis(piece.created_at_ms as i64)
        .unwrap_or_default()
        .naive_utc();
    PieceMetadata {
        number: piece.number,
        offset: piece.offset,
        length: piece.length,
        digest: piece.digest(),
        parent_id: String::new(),
        traffic_type: dragonfly_api::common::v2::TrafficType::RemotePeer as u8,
        cost: Duration::from_millis(piece.cost_ms),
        created_at,
    }
}

fn stalled(idle: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the peer took no bytes for {idle:?} (seed_peer.piece_write_timeout)"),
    )
}

async fn send_error(stream: &mut TcpStream, code: Code, message: String) -> io::Result<()> {
    let label = match code {
        Code::NotFound => "not_found",
        Code::InvalidArgument => "invalid_argument",
        Code::Internal => "internal",
        _ => "unknown",
    };
    METRICS
        .peer_piece_errors
        .get_or_create(&CodeLabels { code: label.into() })
        .inc();
    let mut buf = BytesMut::new();
    VortexError::new(code, message).encode_packet(&mut buf);
    stream.write_all(&buf).await
}

/// Sends `length` bytes of `file` from `offset` with sendfile(2), the
/// gateway's own send ([`SendFile`]); a peer that takes no bytes for
/// `idle` ends it.
async fn send_file(
    stream: &mut TcpStream,
    file: &std::fs::File,
    offset: u64,
    length: u64,
    idle: Duration,
) -> io::Result<()> {
    let end = offset + length;
    let mut at = offset;
    while at < end {
        let want = (end - at).min(1 << 30) as usize;
        let sent = std::future::poll_fn(|cx| stream.poll_send_file(cx, file, at, want));
        at += tokio::time::timeout(idle, sent)
            .await
            .map_err(|_| stalled(idle))?? as u64;
    }
    Ok(())
}
