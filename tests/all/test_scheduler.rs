//! A Dragonfly scheduler for the tests, built on `dragonfly-api`'s server
//! traits as a real scheduler is, that places peers by the Go scheduler's
//! rules (`scheduler/service/service_v2.go` and `scheduling/scheduling.go`
//! in dragonflyoss/dragonfly), reduced to what the tests meet:
//!
//! - a task is made from its **first** register: its length is that
//!   register's `actual_content_length` (0 makes it an empty task, and
//!   every later peer gets `EmptyTaskResponse`);
//! - a `metadata_only` register is answered `MetadataOnlyResponse`;
//! - a normal peer of a task that is new, failed, or succeeded with no
//!   available peer triggers the seed peer (`DownloadTask` with
//!   `need_back_to_source`), then is scheduled: up to 4 rounds 500 ms apart
//!   (±25 %) looking for parents (peers of the task on other hosts, not
//!   blocked, running, back-to-source or succeeded, or any registered peer
//!   of a seed host), then `NeedBackToSourceResponse`;
//! - a seed peer, or a peer that asks `need_back_to_source`, is told to go
//!   back to source;
//! - `ReschedulePeer` blocks the parents it names and schedules again;
//! - the stream ends after each terminal message;
//! - `DeleteTask{host, task}` drops that host's peers of the task;
//!   `DeleteHost` drops the host and its peers.
//!
//! It records what it is sent (in order) and what it answered, answers
//! `AnnounceHost` as told, and counts the TCP connections it accepts.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dragonfly_api::common::v2 as common;
use dragonfly_api::dfdaemon::v2::DownloadTaskRequest;
use dragonfly_api::dfdaemon::v2::dfdaemon_upload_client::DfdaemonUploadClient;
use dragonfly_api::scheduler::v2::announce_peer_request::Request as PeerRequest;
use dragonfly_api::scheduler::v2::announce_peer_response::Response as Answer;
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
    /// `DeleteTask{host_id, task_id}`.
    DeleteTask(String, String),
}

/// A peer's state, as the Go scheduler's peer FSM names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    ReceivedEmpty,
    ReceivedNormal,
    Running,
    BackToSource,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
pub struct PeerRecord {
    pub id: String,
    pub host_id: String,
    pub task_id: String,
    pub state: PeerState,
    /// Pieces reported finished: number, parent peer id, traffic type.
    pub pieces: Vec<(u32, Option<String>, i32)>,
    /// Answers sent to this peer, in order.
    pub answers: Vec<AnswerSeen>,
    need_back_to_source: bool,
    blocked: HashSet<String>,
}

/// An answer the scheduler sent: its kind and, for a normal task, the
/// parents offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerSeen {
    pub kind: &'static str,
    pub parents: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub content_length: u64,
    pub piece_count: u64,
    pub state: TaskState,
}

#[derive(Debug, Default)]
pub struct Resources {
    pub hosts: HashMap<String, common::Host>,
    pub tasks: HashMap<String, TaskRecord>,
    pub peers: HashMap<String, PeerRecord>,
}

#[derive(Debug, Default)]
pub struct State {
    pub seen: parking_lot::Mutex<Vec<Seen>>,
    pub resources: parking_lot::Mutex<Resources>,
    /// `AnnounceHost` answers `Unavailable` while set.
    pub refuse_hosts: AtomicBool,
    pub connections: AtomicUsize,
    /// `DownloadTask` triggers sent to a seed peer.
    pub seed_triggers: AtomicUsize,
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

    /// Every peer known now, of every task.
    pub fn peers(&self) -> Vec<PeerRecord> {
        self.resources.lock().peers.values().cloned().collect()
    }

    /// The peers of `host_id`, of any task, in no order.
    pub fn peers_of_host(&self, host_id: &str) -> Vec<PeerRecord> {
        self.peers()
            .into_iter()
            .filter(|p| p.host_id == host_id)
            .collect()
    }

    pub fn task(&self, task_id: &str) -> Option<TaskRecord> {
        self.resources.lock().tasks.get(task_id).cloned()
    }

    /// Forgets every task and peer, as a restarted scheduler would (hosts
    /// stay: they announce again on their own).
    pub fn forget_tasks(&self) {
        let mut r = self.resources.lock();
        r.tasks.clear();
        r.peers.clear();
    }

    /// Parents for `peer_id` now, best first (at most 3).
    fn candidates(&self, peer_id: &str) -> Vec<common::Peer> {
        let r = self.resources.lock();
        let Some(me) = r.peers.get(peer_id) else {
            return Vec::new();
        };
        let mut found: Vec<&PeerRecord> = r
            .peers
            .values()
            .filter(|p| p.task_id == me.task_id && p.id != me.id && p.host_id != me.host_id)
            .filter(|p| !me.blocked.contains(&p.id))
            .filter(|p| {
                let seed = r.hosts.get(&p.host_id).is_some_and(|h| h.r#type != 0);
                match p.state {
                    PeerState::Failed | PeerState::ReceivedEmpty => false,
                    PeerState::BackToSource | PeerState::Succeeded | PeerState::Running => true,
                    PeerState::ReceivedNormal => seed,
                }
            })
            .collect();
        // Seeds and finished peers first.
        found.sort_by_key(|p| (p.state != PeerState::Succeeded, p.id.clone()));
        found
            .into_iter()
            .take(3)
            .filter_map(|p| {
                Some(common::Peer {
                    id: p.id.clone(),
                    host: Some(r.hosts.get(&p.host_id)?.clone()),
                    ..Default::default()
                })
            })
            .collect()
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
        // Real dfdaemons health-check their scheduler before they announce.
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<SchedulerServer<Service>>().await;
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health_service)
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

fn answer(kind: Answer) -> AnnouncePeerResponse {
    AnnouncePeerResponse {
        response: Some(kind),
    }
}

fn answer_seen(a: &Answer) -> AnswerSeen {
    let (kind, parents) = match a {
        Answer::EmptyTaskResponse(_) => ("EmptyTaskResponse", vec![]),
        Answer::NormalTaskResponse(n) => (
            "NormalTaskResponse",
            n.candidate_parents.iter().map(|p| p.id.clone()).collect(),
        ),
        Answer::NeedBackToSourceResponse(_) => ("NeedBackToSourceResponse", vec![]),
        Answer::MetadataOnlyResponse(_) => ("MetadataOnlyResponse", vec![]),
    };
    AnswerSeen { kind, parents }
}

impl Service {
    /// Records and returns an answer to `peer_id`.
    fn send(&self, peer_id: &str, a: Answer) -> AnnouncePeerResponse {
        if let Some(p) = self.0.resources.lock().peers.get_mut(peer_id) {
            p.answers.push(answer_seen(&a));
        }
        answer(a)
    }

    /// `handleRegisterPeerRequest`, reduced. The answer, or the status the
    /// stream ends with.
    async fn register(
        &self,
        m: &AnnouncePeerRequest,
        download: &common::Download,
    ) -> Result<AnnouncePeerResponse, Status> {
        let (host_type, task_state, content_length, has_available) = {
            let mut r = self.0.resources.lock();
            let host_type = r
                .hosts
                .get(&m.host_id)
                .map(|h| h.r#type)
                .ok_or_else(|| Status::not_found(format!("host {} not found", m.host_id)))?;
            let task = r
                .tasks
                .entry(m.task_id.clone())
                .or_insert_with(|| TaskRecord {
                    content_length: download.actual_content_length.unwrap_or(0),
                    piece_count: download.actual_piece_count.unwrap_or(0),
                    state: TaskState::Pending,
                });
            let (state, content_length) = (task.state, task.content_length);
            r.peers
                .entry(m.peer_id.clone())
                .or_insert_with(|| PeerRecord {
                    id: m.peer_id.clone(),
                    host_id: m.host_id.clone(),
                    task_id: m.task_id.clone(),
                    state: PeerState::ReceivedNormal,
                    pieces: Vec::new(),
                    answers: Vec::new(),
                    need_back_to_source: false,
                    blocked: HashSet::from([m.peer_id.clone()]),
                });
            let available = r.peers.values().any(|p| {
                p.task_id == m.task_id
                    && p.host_id != m.host_id
                    && matches!(
                        p.state,
                        PeerState::Running | PeerState::Succeeded | PeerState::BackToSource
                    )
            });
            (host_type, state, content_length, available)
        };
        // TaskEventDownload: whatever it was, the task runs again.
        self.set_task(&m.task_id, TaskState::Running);
        if download.metadata_only {
            return Ok(self.send(
                &m.peer_id,
                Answer::MetadataOnlyResponse(MetadataOnlyResponse {}),
            ));
        }
        let need_back_to_source = if download.need_back_to_source {
            true
        } else if matches!(task_state, TaskState::Pending | TaskState::Failed)
            || (task_state == TaskState::Succeeded && !has_available)
        {
            match (host_type, self.seed_host()) {
                (0, Some(seed)) => {
                    self.trigger_seed(seed, download.clone());
                    false
                }
                _ => true,
            }
        } else {
            false
        };
        if let Some(p) = self.0.resources.lock().peers.get_mut(&m.peer_id) {
            p.need_back_to_source = need_back_to_source;
        }
        if content_length == 0 {
            self.set_peer(&m.peer_id, PeerState::ReceivedEmpty);
            return Ok(self.send(&m.peer_id, Answer::EmptyTaskResponse(EmptyTaskResponse {})));
        }
        self.schedule(&m.peer_id).await
    }

    /// `ScheduleCandidateParents`, reduced.
    async fn schedule(&self, peer_id: &str) -> Result<AnnouncePeerResponse, Status> {
        let need = self
            .0
            .resources
            .lock()
            .peers
            .get(peer_id)
            .is_some_and(|p| p.need_back_to_source);
        for round in 0.. {
            if need || round >= 4 {
                return Ok(self.send(
                    peer_id,
                    Answer::NeedBackToSourceResponse(NeedBackToSourceResponse {
                        description: Some(if need {
                            "peer need back to source".into()
                        } else {
                            "scheduling exceeded RetryBackToSourceLimit".into()
                        }),
                    }),
                ));
            }
            let parents = self.0.candidates(peer_id);
            if !parents.is_empty() {
                return Ok(self.send(
                    peer_id,
                    Answer::NormalTaskResponse(NormalTaskResponse {
                        candidate_parents: parents,
                    }),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500).mul_f64(0.75 + fastrand::f64() * 0.5))
                .await;
        }
        unreachable!()
    }

    fn seed_host(&self) -> Option<common::Host> {
        self.0
            .resources
            .lock()
            .hosts
            .values()
            .find(|h| h.r#type != 0)
            .cloned()
    }

    /// `downloadTaskBySeedPeer`: the seed's `DownloadTask`, in the
    /// background, its answers drained.
    fn trigger_seed(&self, seed: common::Host, mut download: common::Download) {
        download.need_back_to_source = true;
        download.output_path = None;
        self.0.seed_triggers.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let Ok(mut client) =
                DfdaemonUploadClient::connect(format!("http://{}:{}", seed.ip, seed.port)).await
            else {
                return;
            };
            if let Ok(r) = client
                .download_task(DownloadTaskRequest {
                    download: Some(download),
                })
                .await
            {
                let mut s = r.into_inner();
                while let Some(Ok(_)) = s.next().await {}
            }
        });
    }

    fn set_peer(&self, peer_id: &str, state: PeerState) {
        let mut r = self.0.resources.lock();
        let Some(p) = r.peers.get_mut(peer_id) else {
            return;
        };
        p.state = state;
        let (task_id, whole) = (p.task_id.clone(), state == PeerState::Succeeded);
        if whole && let Some(t) = r.tasks.get_mut(&task_id) {
            t.state = TaskState::Succeeded;
        }
    }

    fn set_task(&self, task_id: &str, state: TaskState) {
        if let Some(t) = self.0.resources.lock().tasks.get_mut(task_id) {
            t.state = state;
        }
    }

    /// Handles one message of a peer's stream: the answer to send, if any,
    /// and whether the stream ends after it.
    async fn handle(
        &self,
        m: &AnnouncePeerRequest,
    ) -> (Option<Result<AnnouncePeerResponse, Status>>, bool) {
        let peer = m.peer_id.as_str();
        let record_piece = |p: &Option<common::Piece>| {
            if let (Some(p), Some(rec)) = (p, self.0.resources.lock().peers.get_mut(peer)) {
                rec.pieces
                    .push((p.number, p.parent_id.clone(), p.traffic_type.unwrap_or(-1)));
            }
        };
        match &m.request {
            Some(PeerRequest::RegisterPeerRequest(r)) => {
                let download = r.download.clone().unwrap_or_default();
                match self.register(m, &download).await {
                    Ok(a) => (Some(Ok(a)), false),
                    Err(s) => (Some(Err(s)), true),
                }
            }
            Some(PeerRequest::DownloadPeerStartedRequest(_)) => {
                self.set_peer(peer, PeerState::Running);
                (None, false)
            }
            Some(PeerRequest::DownloadPeerBackToSourceStartedRequest(_)) => {
                self.set_peer(peer, PeerState::BackToSource);
                (None, false)
            }
            Some(PeerRequest::ReschedulePeerRequest(r)) => {
                if let Some(p) = self.0.resources.lock().peers.get_mut(peer) {
                    p.blocked
                        .extend(r.candidate_parents.iter().map(|c| c.id.clone()));
                }
                (Some(self.schedule(peer).await), false)
            }
            Some(PeerRequest::DownloadPieceFinishedRequest(r)) => {
                record_piece(&r.piece);
                (None, false)
            }
            Some(PeerRequest::DownloadPieceBackToSourceFinishedRequest(r)) => {
                record_piece(&r.piece);
                (None, false)
            }
            Some(PeerRequest::DownloadPieceFailedRequest(r)) => {
                if let Some(p) = self.0.resources.lock().peers.get_mut(peer) {
                    p.blocked.insert(r.parent_id.clone());
                }
                (None, false)
            }
            Some(
                PeerRequest::DownloadPeerFinishedRequest(_)
                | PeerRequest::DownloadPeerBackToSourceFinishedRequest(_),
            ) => {
                self.set_peer(peer, PeerState::Succeeded);
                (None, true)
            }
            Some(PeerRequest::DownloadPeerFailedRequest(_)) => {
                self.set_peer(peer, PeerState::Failed);
                (None, true)
            }
            // TaskEventDownloadFailed: the next peer triggers the seed again.
            Some(PeerRequest::DownloadPeerBackToSourceFailedRequest(_)) => {
                self.set_peer(peer, PeerState::Failed);
                let task = m.task_id.clone();
                self.set_task(&task, TaskState::Failed);
                (None, true)
            }
            _ => (None, false),
        }
    }
}

#[tonic::async_trait]
impl Scheduler for Service {
    type AnnouncePeerStream = Streamed<AnnouncePeerResponse>;

    async fn announce_peer(
        &self,
        request: Request<tonic::Streaming<AnnouncePeerRequest>>,
    ) -> Result<Response<Self::AnnouncePeerStream>, Status> {
        let service = self.clone();
        let state = self.0.clone();
        let n = state.streams.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let stream = async_stream::stream! {
            while let Some(m) = inbound.next().await {
                let Ok(m) = m else { break };
                state.seen.lock().push(Seen::AnnouncePeer(n, Box::new(m.clone())));
                let (reply, end) = service.handle(&m).await;
                if let Some(reply) = reply {
                    yield reply;
                }
                if end {
                    break;
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
        let request = request.into_inner();
        self.0
            .seen
            .lock()
            .push(Seen::AnnounceHost(Box::new(request.clone())));
        if self.0.refuse_hosts.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the test scheduler refuses hosts now"));
        }
        if let Some(host) = request.host {
            self.0.resources.lock().hosts.insert(host.id.clone(), host);
        }
        Ok(Response::new(()))
    }

    async fn delete_host(
        &self,
        request: Request<DeleteHostRequest>,
    ) -> Result<Response<()>, Status> {
        let host_id = request.into_inner().host_id;
        self.0.seen.lock().push(Seen::DeleteHost(host_id.clone()));
        let mut r = self.0.resources.lock();
        r.hosts.remove(&host_id);
        r.peers.retain(|_, p| p.host_id != host_id);
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

    /// Go's `DeleteTask`: the host's peers of the task are dropped.
    async fn delete_task(
        &self,
        request: Request<DeleteTaskRequest>,
    ) -> Result<Response<()>, Status> {
        let DeleteTaskRequest { host_id, task_id } = request.into_inner();
        self.0
            .seen
            .lock()
            .push(Seen::DeleteTask(host_id.clone(), task_id.clone()));
        let mut r = self.0.resources.lock();
        if !r.hosts.contains_key(&host_id) {
            return Err(Status::not_found(format!("host {host_id} not found")));
        }
        r.peers
            .retain(|_, p| !(p.host_id == host_id && p.task_id == task_id));
        Ok(Response::new(()))
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
