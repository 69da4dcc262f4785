//! A Dragonfly scheduler for the tests, built on `dragonfly-api`'s server
//! traits as a real scheduler is: it records what the seed peer's
//! announcer sends (in order), answers `AnnounceHost` as told, and counts
//! the TCP connections it accepts (a sick scheduler must not see a storm).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dragonfly_api::common::v2 as common;
use dragonfly_api::scheduler::v2::scheduler_server::{Scheduler, SchedulerServer};
use dragonfly_api::scheduler::v2::*;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What the scheduler saw, in arrival order.
#[derive(Debug, Clone)]
pub enum Seen {
    AnnounceHost(Box<AnnounceHostRequest>),
    /// One message of an `AnnouncePeer` stream, with the stream's number.
    AnnouncePeer(usize, Box<AnnouncePeerRequest>),
    /// An `AnnouncePeer` stream ended (the client closed it).
    AnnouncePeerEnd(usize),
    DeleteHost(String),
}

#[derive(Debug, Default)]
pub struct State {
    pub seen: parking_lot::Mutex<Vec<Seen>>,
    /// `AnnounceHost` answers `Unavailable` while set.
    pub refuse_hosts: AtomicBool,
    pub connections: AtomicUsize,
    streams: AtomicUsize,
}

impl State {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub fn host_announces(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| matches!(s, Seen::AnnounceHost(_)))
            .count()
    }
}

#[derive(Clone)]
struct Service(Arc<State>);

/// A running test scheduler.
pub struct TestScheduler {
    pub state: Arc<State>,
    pub port: u16,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestScheduler {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let counted = state.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).inspect(move |c| {
            if c.is_ok() {
                counted.connections.fetch_add(1, Ordering::SeqCst);
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = SchedulerServer::new(Service(state.clone()));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestScheduler {
            state,
            port,
            _stop: stop,
        }
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[tonic::async_trait]
impl Scheduler for Service {
    type AnnouncePeerStream = Streamed<AnnouncePeerResponse>;

    async fn announce_peer(
        &self,
        request: Request<tonic::Streaming<AnnouncePeerRequest>>,
    ) -> Result<Response<Self::AnnouncePeerStream>, Status> {
        let state = self.0.clone();
        let n = state.streams.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let stream = async_stream::stream! {
            while let Some(m) = inbound.next().await {
                let Ok(m) = m else { break };
                let register = matches!(m.request, Some(announce_peer_request::Request::RegisterPeerRequest(_)));
                state.seen.lock().push(Seen::AnnouncePeer(n, Box::new(m)));
                if register {
                    // A seed peer is told to go back to source.
                    yield Ok(AnnouncePeerResponse {
                        response: Some(announce_peer_response::Response::NeedBackToSourceResponse(
                            NeedBackToSourceResponse { description: Some("seed peer".into()) },
                        )),
                    });
                }
            }
            state.seen.lock().push(Seen::AnnouncePeerEnd(n));
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn announce_host(
        &self,
        request: Request<AnnounceHostRequest>,
    ) -> Result<Response<()>, Status> {
        self.0
            .seen
            .lock()
            .push(Seen::AnnounceHost(Box::new(request.into_inner())));
        if self.0.refuse_hosts.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the test scheduler refuses hosts now"));
        }
        Ok(Response::new(()))
    }

    async fn delete_host(
        &self,
        request: Request<DeleteHostRequest>,
    ) -> Result<Response<()>, Status> {
        self.0
            .seen
            .lock()
            .push(Seen::DeleteHost(request.into_inner().host_id));
        Ok(Response::new(()))
    }

    type AnnounceCachePeerStream = Streamed<AnnounceCachePeerResponse>;
    type AnnouncePersistentPeerStream = Streamed<AnnouncePersistentPeerResponse>;
    type AnnouncePersistentCachePeerStream = Streamed<AnnouncePersistentCachePeerResponse>;

    async fn stat_peer(
        &self,
        _: Request<StatPeerRequest>,
    ) -> Result<Response<common::Peer>, Status> {
        Err(Status::unimplemented("stat_peer"))
    }

    async fn delete_peer(&self, _: Request<DeletePeerRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_peer"))
    }

    async fn stat_task(
        &self,
        _: Request<StatTaskRequest>,
    ) -> Result<Response<common::Task>, Status> {
        Err(Status::unimplemented("stat_task"))
    }

    async fn delete_task(&self, _: Request<DeleteTaskRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_task"))
    }

    async fn list_hosts(
        &self,
        _: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        Err(Status::unimplemented("list_hosts"))
    }

    async fn announce_cache_peer(
        &self,
        _: Request<tonic::Streaming<AnnounceCachePeerRequest>>,
    ) -> Result<Response<Self::AnnounceCachePeerStream>, Status> {
        Err(Status::unimplemented("announce_cache_peer"))
    }

    async fn stat_cache_peer(
        &self,
        _: Request<StatCachePeerRequest>,
    ) -> Result<Response<common::CachePeer>, Status> {
        Err(Status::unimplemented("stat_cache_peer"))
    }

    async fn delete_cache_peer(
        &self,
        _: Request<DeleteCachePeerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_cache_peer"))
    }

    async fn stat_cache_task(
        &self,
        _: Request<StatCacheTaskRequest>,
    ) -> Result<Response<common::CacheTask>, Status> {
        Err(Status::unimplemented("stat_cache_task"))
    }

    async fn delete_cache_task(
        &self,
        _: Request<DeleteCacheTaskRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_cache_task"))
    }

    async fn announce_persistent_peer(
        &self,
        _: Request<tonic::Streaming<AnnouncePersistentPeerRequest>>,
    ) -> Result<Response<Self::AnnouncePersistentPeerStream>, Status> {
        Err(Status::unimplemented("announce_persistent_peer"))
    }

    async fn stat_persistent_peer(
        &self,
        _: Request<StatPersistentPeerRequest>,
    ) -> Result<Response<common::PersistentPeer>, Status> {
        Err(Status::unimplemented("stat_persistent_peer"))
    }

    async fn delete_persistent_peer(
        &self,
        _: Request<DeletePersistentPeerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_persistent_peer"))
    }

    async fn upload_persistent_task_started(
        &self,
        _: Request<UploadPersistentTaskStartedRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("upload_persistent_task_started"))
    }

    async fn upload_persistent_task_finished(
        &self,
        _: Request<UploadPersistentTaskFinishedRequest>,
    ) -> Result<Response<common::PersistentTask>, Status> {
        Err(Status::unimplemented("upload_persistent_task_finished"))
    }

    async fn upload_persistent_task_failed(
        &self,
        _: Request<UploadPersistentTaskFailedRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("upload_persistent_task_failed"))
    }

    async fn stat_persistent_task(
        &self,
        _: Request<StatPersistentTaskRequest>,
    ) -> Result<Response<common::PersistentTask>, Status> {
        Err(Status::unimplemented("stat_persistent_task"))
    }

    async fn delete_persistent_task(
        &self,
        _: Request<DeletePersistentTaskRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_persistent_task"))
    }

    async fn announce_persistent_cache_peer(
        &self,
        _: Request<tonic::Streaming<AnnouncePersistentCachePeerRequest>>,
    ) -> Result<Response<Self::AnnouncePersistentCachePeerStream>, Status> {
        Err(Status::unimplemented("announce_persistent_cache_peer"))
    }

    async fn stat_persistent_cache_peer(
        &self,
        _: Request<StatPersistentCachePeerRequest>,
    ) -> Result<Response<common::PersistentCachePeer>, Status> {
        Err(Status::unimplemented("stat_persistent_cache_peer"))
    }

    async fn delete_persistent_cache_peer(
        &self,
        _: Request<DeletePersistentCachePeerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_persistent_cache_peer"))
    }

    async fn upload_persistent_cache_task_started(
        &self,
        _: Request<UploadPersistentCacheTaskStartedRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "upload_persistent_cache_task_started",
        ))
    }

    async fn upload_persistent_cache_task_finished(
        &self,
        _: Request<UploadPersistentCacheTaskFinishedRequest>,
    ) -> Result<Response<common::PersistentCacheTask>, Status> {
        Err(Status::unimplemented(
            "upload_persistent_cache_task_finished",
        ))
    }

    async fn upload_persistent_cache_task_failed(
        &self,
        _: Request<UploadPersistentCacheTaskFailedRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("upload_persistent_cache_task_failed"))
    }

    async fn stat_persistent_cache_task(
        &self,
        _: Request<StatPersistentCacheTaskRequest>,
    ) -> Result<Response<common::PersistentCacheTask>, Status> {
        Err(Status::unimplemented("stat_persistent_cache_task"))
    }

    async fn delete_persistent_cache_task(
        &self,
        _: Request<DeletePersistentCacheTaskRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_persistent_cache_task"))
    }

    async fn preheat_image(&self, _: Request<PreheatImageRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("preheat_image"))
    }

    async fn stat_image(
        &self,
        _: Request<StatImageRequest>,
    ) -> Result<Response<StatImageResponse>, Status> {
        Err(Status::unimplemented("stat_image"))
    }

    async fn preheat_file(&self, _: Request<PreheatFileRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("preheat_file"))
    }

    async fn stat_file(
        &self,
        _: Request<StatFileRequest>,
    ) -> Result<Response<StatFileResponse>, Status> {
        Err(Status::unimplemented("stat_file"))
    }
}
