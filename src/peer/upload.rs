//! `dfdaemon.v2.DfdaemonUpload`: the gRPC service a Dragonfly scheduler
//! and peers call on a seed peer.
//!
//! Served: `DownloadTask` (the scheduler's trigger and preheat path: back to
//! source through seedgate's origins, streaming each piece as it lands),
//! `SyncPieces` (piece metadata as pieces land, with the TCP piece port),
//! `StatTask`, `StatLocalTask`, `DeleteTask` and `SyncHost` (live load).
//! Every other method answers `Unimplemented`.

use std::pin::Pin;
use std::sync::Arc;

use dragonfly_api::common::v2::{self as common, Download, Piece, TaskType};
use dragonfly_api::dfdaemon::v2::dfdaemon_upload_server::DfdaemonUpload;
use dragonfly_api::dfdaemon::v2::*;
use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert::{piece_message, response_header, size_scope, timestamp};
use super::host::HostProbe;
use crate::error::Error;
use crate::metrics::{METRICS, RpcLabels};
use crate::origin::OriginRouter;
use crate::task::{Object, PieceInfo};
use crate::task::{TaskManager, TaskSpec};

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The upload service.
#[derive(Clone)]
pub struct Upload {
    pub tasks: Arc<TaskManager>,
    pub origins: Arc<OriginRouter>,
    pub host: Arc<HostProbe>,
    pub announcer: Arc<super::announcer::Announcer>,
    pub sync_host_interval: std::time::Duration,
}

/// An engine error as a gRPC status, with its one-line reason (the code
/// is decided beside the HTTP status, in `crate::error`).
pub fn status(e: Error) -> Status {
    Status::new(e.grpc_code(), e.to_string())
}

/// Counts a call by method and outcome.
fn counted<T>(method: &str, r: Result<T, Status>) -> Result<T, Status> {
    let code = match &r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    METRICS
        .peer_rpcs
        .get_or_create(&RpcLabels {
            method: method.into(),
            code: format!("{code:?}"),
        })
        .inc();
    if let Err(s) = &r {
        tracing::debug!(method, code = ?s.code(), message = s.message(), "upload call refused");
    }
    r
}

fn check_task_id(id: &str) -> Result<(), Status> {
    if super::is_task_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "task id '{}' is not 64 hex digits",
            id.escape_debug()
        )))
    }
}

impl Upload {
    async fn find(&self, id: &str) -> Result<Object, Status> {
        check_task_id(id)?;
        self.tasks
            .find(id)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("task {id} is not on this seed peer")))
    }

    /// Checks a `Download` and opens its task (joining or starting the
    /// download back to source). The built-in scheduler starts its seed
    /// downloads here too.
    pub(crate) async fn open(
        &self,
        download: Download,
    ) -> Result<(Object, bool, Download), Status> {
        if download.r#type != TaskType::Standard as i32 {
            return Err(Status::invalid_argument(format!(
                "task type {} is not served: this seed peer downloads standard tasks",
                download.r#type
            )));
        }
        if download.content_for_calculating_task_id.is_some() {
            return Err(Status::invalid_argument(
                "content_for_calculating_task_id is not supported: task ids come from the URL",
            ));
        }
        if download.output_path.is_some() {
            return Err(Status::invalid_argument(
                "output_path is not supported: fetch the pieces (SyncPieces + the piece port) or use the HTTP gateway",
            ));
        }
        if download.disable_back_to_source {
            return Err(Status::invalid_argument(
                "disable_back_to_source: a seed peer's downloads go back to the source",
            ));
        }
        if let Some(len) = download.piece_length {
            crate::piece::check_piece_length(len).map_err(Status::invalid_argument)?;
        }
        let url = url::Url::parse(&download.url).map_err(|e| {
            Status::invalid_argument(format!("'{}' is not a URL: {e}", download.url))
        })?;
        let origin = self.origins.resolve_url(&url).map_err(status)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &download.request_header {
            let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                Status::invalid_argument(format!(
                    "request header name '{}' is invalid",
                    k.escape_debug()
                ))
            })?;
            let value = http::HeaderValue::from_str(v).map_err(|_| {
                Status::invalid_argument(format!("request header '{k}' has an invalid value"))
            })?;
            headers.insert(name, value);
        }
        let spec = TaskSpec {
            tag: download.tag.clone(),
            application: download.application.clone(),
            piece_length: download.piece_length,
            filtered_query_params: download.filtered_query_params.clone(),
            blob_digest: download.enable_task_id_based_blob_digest,
        }
        .of(&origin);
        let first_byte = download.range.as_ref().map_or(0, |r| r.start);
        // The register of a download this starts carries what was asked.
        let id = self.tasks.task_id_of(&url, &spec).map_err(status)?;
        self.announcer.expect_trigger(&id, download.clone());
        let object = self
            .tasks
            .open_with(&origin, &url, &headers, first_byte, spec)
            .await;
        self.announcer.forget_trigger(&id);
        let object = object.map_err(status)?;
        let cached = object.cached();
        Ok((object, cached, download))
    }
}

/// Reads a piece's bytes (for `need_piece_content`).
async fn piece_content(task: &Object, p: &PieceInfo) -> Result<Vec<u8>, Status> {
    let file = task.file().clone();
    let (offset, length) = (p.offset, p.length as usize);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; length];
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, offset).map(|()| buf)
    })
    .await
    .map_err(|e| Status::internal(format!("piece reader: {e}")))?
    .map_err(|e| Status::internal(format!("reading piece {}: {e}", p.number)))
}

/// The answer of every method this seed peer does not serve.
fn unimplemented<T>(method: &str) -> Result<T, Status> {
    counted(
        method,
        Err(Status::unimplemented(format!(
            "seedgate's seed peer does not serve {method}"
        ))),
    )
}

#[tonic::async_trait]
impl DfdaemonUpload for Upload {
    type DownloadTaskStream = Streamed<DownloadTaskResponse>;
    type SyncPiecesStream = Streamed<SyncPiecesResponse>;
    type DownloadCacheTaskStream = Streamed<DownloadCacheTaskResponse>;
    type SyncCachePiecesStream = Streamed<SyncCachePiecesResponse>;
    type DownloadPersistentTaskStream = Streamed<DownloadPersistentTaskResponse>;
    type SyncPersistentPiecesStream = Streamed<SyncPersistentPiecesResponse>;
    type DownloadPersistentCacheTaskStream = Streamed<DownloadPersistentCacheTaskResponse>;
    type SyncPersistentCachePiecesStream = Streamed<SyncPersistentCachePiecesResponse>;
    type SyncHostStream = Streamed<common::Host>;

    async fn download_task(
        &self,
        request: Request<DownloadTaskRequest>,
    ) -> Result<Response<Self::DownloadTaskStream>, Status> {
        let r = async {
            let download = request
                .into_inner()
                .download
                .ok_or_else(|| Status::invalid_argument("download is required"))?;
            let (task, cached, download) = self.open(download).await?;
            let record = task.record.clone();
            let host_id = self.host.identity.host_id.clone();
            // Stored whole: the scheduler hears it (metadata only) under
            // the peer id this answer names, as from Dragonfly's own seed.
            // Downloading: the id its back-to-source report registered.
            let peer_id = if cached {
                self.announcer.report_stored(task.clone(), download.clone())
            } else {
                self.announcer
                    .peer_id_of(&record.id)
                    .unwrap_or_else(|| self.host.identity.peer_id())
            };
            let with_content = download.need_piece_content;
            let range = download.range;
            let span = tracing::Span::current();
            span.record("task_id", record.id.as_str());
            span.record("peer_id", peer_id.as_str());
            tracing::info!(task = %record.id, url = %record.url, cached, "DownloadTask");
            let stream = async_stream::try_stream! {
                let envelope = |response| DownloadTaskResponse {
                    host_id: host_id.clone(),
                    task_id: record.id.clone(),
                    peer_id: peer_id.clone(),
                    response: Some(response),
                };
                yield envelope(download_task_response::Response::DownloadTaskStartedResponse(
                    DownloadTaskStartedResponse {
                        content_length: record.content_length,
                        range,
                        response_header: response_header(&record),
                        pieces: Vec::new(),
                        is_finished: cached,
                    },
                ));
                let mut pieces = std::pin::pin!(task.pieces());
                while let Some(p) = pieces.next().await {
                    let p = p.map_err(status)?;
                    let content = if with_content { Some(piece_content(&task, &p).await?) } else { None };
                    yield envelope(download_task_response::Response::DownloadPieceFinishedResponse(
                        DownloadPieceFinishedResponse { piece: Some(piece_message(&p, content)) },
                    ));
                }
            };
            Ok(Response::new(Box::pin(stream) as Self::DownloadTaskStream))
        }
        .instrument(tracing::info_span!(
            "seed_download",
            task_id = tracing::field::Empty,
            peer_id = tracing::field::Empty,
        ))
        .await;
        counted("DownloadTask", r)
    }

    async fn sync_pieces(
        &self,
        request: Request<SyncPiecesRequest>,
    ) -> Result<Response<Self::SyncPiecesStream>, Status> {
        let r = async {
            let req = request.into_inner();
            let task = self.find(&req.task_id).await?;
            let count = task.piece_count();
            let mut wanted = vec![req.interested_piece_numbers.is_empty(); count as usize];
            for &n in &req.interested_piece_numbers {
                let slot = wanted.get_mut(n as usize).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "task {} has {count} pieces; there is no piece {n}",
                        req.task_id
                    ))
                })?;
                *slot = true;
            }
            let mut left = wanted.iter().filter(|w| **w).count();
            let ip = self.host.identity.ip.to_string();
            let tcp_port = Some(self.host.identity.piece_port as i32);
            let stream = async_stream::try_stream! {
                let mut pieces = std::pin::pin!(task.pieces());
                while left > 0 {
                    let Some(p) = pieces.next().await else { break };
                    let p = p.map_err(status)?;
                    if !wanted[p.number as usize] {
                        continue;
                    }
                    left -= 1;
                    yield SyncPiecesResponse {
                        number: p.number,
                        offset: p.offset,
                        length: p.length,
                        ip: ip.clone(),
                        tcp_port,
                        quic_port: None,
                    };
                }
            };
            Ok(Response::new(Box::pin(stream) as Self::SyncPiecesStream))
        }
        .await;
        counted("SyncPieces", r)
    }

    async fn stat_task(
        &self,
        request: Request<StatTaskRequest>,
    ) -> Result<Response<common::Task>, Status> {
        let r = async {
            let task = self.find(&request.get_ref().task_id).await?;
            let r = &task.record;
            let pieces: Vec<Piece> = task
                .landed()
                .iter()
                .map(|p| piece_message(p, None))
                .collect();
            let count = task.piece_count();
            Ok(Response::new(common::Task {
                id: r.id.clone(),
                r#type: TaskType::Standard as i32,
                url: r.url.clone(),
                digest: None,
                tag: task.spec.tag.clone(),
                application: task.spec.application.clone(),
                filtered_query_params: task.spec.filtered_query_params.clone(),
                request_header: Default::default(),
                content_length: r.content_length,
                piece_count: count,
                size_scope: size_scope(r.content_length, count) as i32,
                state: task.state().dragonfly().into(),
                peer_count: 1,
                has_available_peer: !pieces.is_empty(),
                pieces,
                created_at: timestamp(r.created_at_ms),
                updated_at: timestamp(r.accessed_at_ms.max(r.created_at_ms)),
            }))
        }
        .await;
        counted("StatTask", r)
    }

    async fn stat_local_task(
        &self,
        request: Request<StatLocalTaskRequest>,
    ) -> Result<Response<StatLocalTaskResponse>, Status> {
        let r = async {
            let task = self.find(&request.get_ref().task_id).await?;
            let r = &task.record;
            let running = task.running();
            Ok(Response::new(StatLocalTaskResponse {
                task_id: r.id.clone(),
                piece_length: Some(r.piece_length),
                content_length: Some(r.content_length),
                response_header: response_header(r),
                uploading_count: 0,
                uploaded_count: 0,
                created_at: timestamp(r.created_at_ms),
                updated_at: timestamp(r.accessed_at_ms.max(r.created_at_ms)),
                prefetched_at: None,
                failed_at: None,
                finished_at: if running {
                    None
                } else {
                    timestamp(r.accessed_at_ms.max(r.created_at_ms))
                },
            }))
        }
        .await;
        counted("StatLocalTask", r)
    }

    async fn delete_task(
        &self,
        request: Request<DeleteTaskRequest>,
    ) -> Result<Response<()>, Status> {
        let r = async {
            let id = request.into_inner().task_id;
            check_task_id(&id)?;
            let tasks = self.tasks.clone();
            let freed = tokio::task::spawn_blocking(move || tasks.delete(&id))
                .await
                .map_err(|e| Status::internal(format!("delete: {e}")))?
                .map_err(status)?;
            tracing::info!(freed, "DeleteTask");
            Ok(Response::new(()))
        }
        .await;
        counted("DeleteTask", r)
    }

    async fn sync_host(
        &self,
        _: Request<SyncHostRequest>,
    ) -> Result<Response<Self::SyncHostStream>, Status> {
        let host = self.host.clone();
        let every = self.sync_host_interval;
        let stream = async_stream::stream! {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let probe = host.clone();
                match tokio::task::spawn_blocking(move || probe.host()).await {
                    Ok(h) => yield Ok(h),
                    Err(e) => {
                        yield Err(Status::internal(format!("host probe: {e}")));
                        break;
                    }
                }
            }
        };
        counted(
            "SyncHost",
            Ok(Response::new(Box::pin(stream) as Self::SyncHostStream)),
        )
    }

    async fn list_task_entries(
        &self,
        _: Request<ListTaskEntriesRequest>,
    ) -> Result<Response<ListTaskEntriesResponse>, Status> {
        unimplemented("ListTaskEntries")
    }

    async fn download_cache_task(
        &self,
        _: Request<DownloadCacheTaskRequest>,
    ) -> Result<Response<Self::DownloadCacheTaskStream>, Status> {
        unimplemented("DownloadCacheTask")
    }

    async fn stat_cache_task(
        &self,
        _: Request<StatCacheTaskRequest>,
    ) -> Result<Response<common::CacheTask>, Status> {
        unimplemented("StatCacheTask")
    }

    async fn delete_cache_task(
        &self,
        _: Request<DeleteCacheTaskRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("DeleteCacheTask")
    }

    async fn sync_cache_pieces(
        &self,
        _: Request<SyncCachePiecesRequest>,
    ) -> Result<Response<Self::SyncCachePiecesStream>, Status> {
        unimplemented("SyncCachePieces")
    }

    async fn download_cache_piece(
        &self,
        _: Request<DownloadCachePieceRequest>,
    ) -> Result<Response<DownloadCachePieceResponse>, Status> {
        unimplemented("DownloadCachePiece")
    }

    async fn download_persistent_task(
        &self,
        _: Request<DownloadPersistentTaskRequest>,
    ) -> Result<Response<Self::DownloadPersistentTaskStream>, Status> {
        unimplemented("DownloadPersistentTask")
    }

    async fn sync_persistent_pieces(
        &self,
        _: Request<SyncPersistentPiecesRequest>,
    ) -> Result<Response<Self::SyncPersistentPiecesStream>, Status> {
        unimplemented("SyncPersistentPieces")
    }

    async fn update_persistent_task(
        &self,
        _: Request<UpdatePersistentTaskRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("UpdatePersistentTask")
    }

    async fn stat_persistent_task(
        &self,
        _: Request<StatPersistentTaskRequest>,
    ) -> Result<Response<common::PersistentTask>, Status> {
        unimplemented("StatPersistentTask")
    }

    async fn delete_persistent_task(
        &self,
        _: Request<DeletePersistentTaskRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("DeletePersistentTask")
    }

    async fn download_persistent_cache_task(
        &self,
        _: Request<DownloadPersistentCacheTaskRequest>,
    ) -> Result<Response<Self::DownloadPersistentCacheTaskStream>, Status> {
        unimplemented("DownloadPersistentCacheTask")
    }

    async fn update_persistent_cache_task(
        &self,
        _: Request<UpdatePersistentCacheTaskRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("UpdatePersistentCacheTask")
    }

    async fn stat_persistent_cache_task(
        &self,
        _: Request<StatPersistentCacheTaskRequest>,
    ) -> Result<Response<common::PersistentCacheTask>, Status> {
        unimplemented("StatPersistentCacheTask")
    }

    async fn delete_persistent_cache_task(
        &self,
        _: Request<DeletePersistentCacheTaskRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("DeletePersistentCacheTask")
    }

    async fn sync_persistent_cache_pieces(
        &self,
        _: Request<SyncPersistentCachePiecesRequest>,
    ) -> Result<Response<Self::SyncPersistentCachePiecesStream>, Status> {
        unimplemented("SyncPersistentCachePieces")
    }
}
