//! `scheduler.v2.Scheduler`, as a real dfdaemon 1.5 calls it
//! (`dragonfly-client` `resource/task.rs`, `announcer/mod.rs`; the Go
//! scheduler's `service/service_v2.go` is the reference for each answer).
//!
//! `AnnouncePeer`: the response stream is returned at once; the requests
//! are read one by one, and each `Register` or `Reschedule` gets exactly
//! one answer. The stream ends after every terminal message (the peer
//! finished or failed, its back-to-source download finished or failed):
//! dfdaemon waits for that end with no timeout. A stream that breaks off
//! leaves its peer in state `Leave`, never handed out again.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dragonfly_api::common::v2 as common;
use dragonfly_api::scheduler::v2::announce_peer_request::Request as PeerRequest;
use dragonfly_api::scheduler::v2::announce_peer_response::Response as Answer;
use dragonfly_api::scheduler::v2::scheduler_server::Scheduler as SchedulerRpc;
use dragonfly_api::scheduler::v2::*;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::Scheduler;
use super::cluster::{PeerEntry, PeerState, TaskEntry};
use super::placement::{self, Candidate};
use super::seeds;
use crate::clock::now_ms;
use crate::metrics::METRICS;
use crate::peer::is_task_id;
use crate::piece::piece_count;

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gRPC face of [`Scheduler`].
#[derive(Clone)]
pub struct Service(pub Arc<Scheduler>);

fn answer(kind: Answer) -> AnnouncePeerResponse {
    METRICS.answered(match &kind {
        Answer::EmptyTaskResponse(_) => "empty_task",
        Answer::NormalTaskResponse(_) => "normal_task",
        Answer::NeedBackToSourceResponse(_) => "need_back_to_source",
        Answer::MetadataOnlyResponse(_) => "metadata_only",
    });
    AnnouncePeerResponse {
        response: Some(kind),
    }
}

fn check_ids(host_id: &str, task_id: &str, peer_id: &str) -> Result<(), Status> {
    if host_id.is_empty() {
        return Err(Status::invalid_argument("host_id is empty"));
    }
    if !is_task_id(task_id) {
        return Err(Status::invalid_argument(format!(
            "task id '{}' is not 64 hex digits",
            task_id.escape_debug()
        )));
    }
    if peer_id.is_empty() {
        return Err(Status::invalid_argument("peer_id is empty"));
    }
    Ok(())
}

fn full(e: super::cluster::Full) -> Status {
    Status::resource_exhausted(e.to_string())
}

fn ttl_of(request: &AnnounceHostRequest, default: Duration) -> Duration {
    request
        .interval
        .as_ref()
        .and_then(|d| {
            let d = Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32);
            (!d.is_zero()).then(|| d * 2)
        })
        .unwrap_or(default)
}

impl Scheduler {
    /// Tells `peer_id` to go back to source, recording why.
    fn back_to_source(&self, peer_id: &str, why: String) -> AnnouncePeerResponse {
        if let Some(p) = self.cluster.lock().peers.get_mut(peer_id) {
            p.back_to_source = Some(why.clone());
            p.updated_at_ms = now_ms();
        }
        METRICS.scheduler_back_to_source.inc();
        tracing::info!(peer = %peer_id, reason = %why, "peer sent back to source");
        answer(Answer::NeedBackToSourceResponse(NeedBackToSourceResponse {
            description: Some(why),
        }))
    }

    /// Starts (or joins) this host's seed download of the task and makes
    /// sure the cluster knows the task and the seed peer.
    pub(super) async fn seed_task(
        &self,
        task_id: &str,
        download: &common::Download,
    ) -> Result<(), String> {
        let known = {
            let c = self.cluster.lock();
            c.tasks.get(task_id).is_some_and(|t| t.seed_peer.is_some())
        };
        if known && self.tasks.find(task_id).await.ok().flatten().is_some() {
            return Ok(());
        }
        let (object, cached, _) = self
            .seed
            .open(seeds::seed_download(download))
            .await
            .map_err(|s| s.message().to_string())?;
        let record = &object.record;
        if record.id != task_id {
            return Err(format!(
                "this seedgate computes task id {} for {}, the peer asked for {task_id}; it cannot serve the peer's task",
                record.id, record.url
            ));
        }
        let local = self.seed_probe().identity.clone();
        let seed_peer = self
            .seed
            .announcer
            .peer_id_of(&record.id)
            .unwrap_or_else(|| local.peer_id());
        let pieces = piece_count(record.content_length, record.piece_length);
        let mut c = self.cluster.lock();
        c.admit_task(&record.id, &self.config)
            .map_err(|e| e.to_string())?;
        let task = c
            .tasks
            .entry(record.id.clone())
            .or_insert_with(|| TaskEntry::new(&record.id, &record.url));
        task.content_length = record.content_length;
        task.piece_length = record.piece_length;
        task.piece_count = pieces;
        if task.seed_peer.is_none() {
            task.seed_peer = Some(seed_peer.clone());
            // The seed's own report may have registered it already (this
            // scheduler is in its [seed_peer] schedulers): keep that.
            if !c.peers.contains_key(&seed_peer) {
                let mut p = PeerEntry::new(&seed_peer, &local.host_id, &record.id);
                p.state = if cached {
                    PeerState::Succeeded
                } else {
                    PeerState::Running
                };
                c.add_peer(p, &self.config).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// `handleRegisterPeerRequest`: the one answer to a register.
    async fn register(
        self: &Arc<Self>,
        m: &AnnouncePeerRequest,
        download: &common::Download,
    ) -> Result<AnnouncePeerResponse, Status> {
        check_ids(&m.host_id, &m.task_id, &m.peer_id)?;
        let seed_host = {
            let c = self.cluster.lock();
            let host = c.hosts.get(&m.host_id).ok_or_else(|| {
                Status::not_found(format!(
                    "host {} has not announced itself (AnnounceHost first)",
                    m.host_id
                ))
            })?;
            c.admit_task(&m.task_id, &self.config).map_err(full)?;
            host.is_seed()
        };
        if download.url.is_empty() {
            return Err(Status::invalid_argument("download.url is empty"));
        }
        // The task and its seed peer first: a peer is only ever handed a
        // parent that knows the task.
        let seeded = if seed_host || download.need_back_to_source {
            Ok(())
        } else {
            self.place_seed(&m.task_id, download).await
        };
        let content_length = {
            let mut c = self.cluster.lock();
            let task = c
                .tasks
                .entry(m.task_id.clone())
                .or_insert_with(|| TaskEntry::new(&m.task_id, &download.url));
            if task.content_length == 0
                && let Some(len) = download.actual_content_length
            {
                task.content_length = len;
                task.piece_length = download.actual_piece_length.unwrap_or(0);
                task.piece_count = download.actual_piece_count.unwrap_or(0) as u32;
            }
            // A seed registering the download this scheduler already
            // follows (its DownloadTask answer, or this host's own seed)
            // keeps its record: same peer, one more source of news.
            let known = c
                .peers
                .get(&m.peer_id)
                .is_some_and(|p| p.task_id == m.task_id && p.host_id == m.host_id);
            if seed_host && known {
                if let Some(p) = c.peers.get_mut(&m.peer_id) {
                    p.need_back_to_source = true;
                }
            } else {
                c.remove_peer(&m.peer_id);
                let mut peer = PeerEntry::new(&m.peer_id, &m.host_id, &m.task_id);
                peer.state = PeerState::ReceivedNormal;
                peer.need_back_to_source = download.need_back_to_source || seed_host;
                c.add_peer(peer, &self.config).map_err(full)?;
            }
            c.tasks
                .get(&m.task_id)
                .map(|t| (t.content_length, t.seed_host.is_some()))
        };
        if download.metadata_only {
            return Ok(answer(Answer::MetadataOnlyResponse(
                MetadataOnlyResponse {},
            )));
        }
        if seed_host {
            return Ok(
                self.back_to_source(&m.peer_id, "a seed peer downloads back to source".into())
            );
        }
        if download.need_back_to_source {
            return Ok(self.back_to_source(
                &m.peer_id,
                "the peer asked to download back to source".into(),
            ));
        }
        if let Err(why) = seeded {
            return Ok(self.back_to_source(
                &m.peer_id,
                format!("this seedgate cannot seed the task: {why}"),
            ));
        }
        if let Some((0, true)) = content_length {
            self.set_peer(&m.peer_id, PeerState::ReceivedEmpty);
            return Ok(answer(Answer::EmptyTaskResponse(EmptyTaskResponse {})));
        }
        Ok(self.schedule(&m.peer_id).await)
    }

    /// The finished pieces the policy sees for a candidate: a seed peer of
    /// this host that stored the task whole has them all.
    fn finished_of(&self, c: &Candidate, total: u32) -> u32 {
        if c.peer.state == PeerState::Succeeded {
            total
        } else {
            c.peer.finished.len() as u32
        }
    }

    /// Brings this host's seed peer of `task_id` up to date with the
    /// engine (its download may have ended since).
    async fn refresh_seed_peer(&self, task_id: &str) {
        let Some(seed_peer) = self
            .cluster
            .lock()
            .tasks
            .get(task_id)
            .and_then(|t| t.seed_peer.clone())
        else {
            return;
        };
        let state = match self.tasks.find(task_id).await {
            Ok(Some(o)) => match o.state() {
                crate::task::State::Succeeded => PeerState::Succeeded,
                crate::task::State::Failed => PeerState::Failed,
                _ => PeerState::Running,
            },
            // Evicted or gone: the next register starts it again.
            _ => PeerState::Leave,
        };
        let mut c = self.cluster.lock();
        if state == PeerState::Leave {
            c.remove_peer(&seed_peer);
        } else if let Some(p) = c.peers.get_mut(&seed_peer) {
            p.state = state;
        }
    }

    /// `ScheduleCandidateParents`: rounds until the peer has parents or
    /// has had `back_to_source_rounds` rounds without.
    async fn schedule(&self, peer_id: &str) -> AnnouncePeerResponse {
        loop {
            let task_id = match self.cluster.lock().peers.get(peer_id) {
                Some(p) => p.task_id.clone(),
                None => return self.back_to_source(peer_id, "the peer left".into()),
            };
            self.refresh_seed_peer(&task_id).await;
            // One round of a task at a time: a round reads the parents'
            // upload counts and adds to them, so rounds of peers that
            // register together would otherwise all see the same free
            // slots (and all get the seed, whatever its upload limit).
            let placed = self.placing.with(&task_id, self.round(peer_id)).await;
            if let Some(answer) = placed {
                return answer;
            }
            if let Some(p) = self.cluster.lock().peers.get_mut(peer_id) {
                p.rounds += 1;
            }
            let jitter = 0.75 + fastrand::f64() * 0.5;
            tokio::time::sleep(self.config.round_interval.mul_f64(jitter)).await;
        }
    }

    /// One scheduling round: the answer, or `None` when no parent passed
    /// the filter and the policy this time.
    async fn round(&self, peer_id: &str) -> Option<AnnouncePeerResponse> {
        let round = {
            let c = self.cluster.lock();
            let Some(child) = c.peers.get(peer_id).cloned() else {
                return Some(self.back_to_source(peer_id, "the peer left".into()));
            };
            if child.rounds >= self.config.back_to_source_rounds {
                drop(c);
                return Some(self.back_to_source(
                    peer_id,
                    format!(
                        "no parent after {} scheduling rounds (scheduler.back_to_source_rounds)",
                        child.rounds
                    ),
                ));
            }
            let host = c.hosts.get(&child.host_id).cloned();
            let total = c.tasks.get(&child.task_id).map_or(0, |t| t.piece_count);
            let cands = placement::candidates(&c, &child, &self.config);
            host.map(|h| (child, h, cands, total))
        };
        let Some((child, child_host, cands, total)) = round else {
            return Some(self.back_to_source(peer_id, "the peer's host left".into()));
        };
        if cands.is_empty() {
            return None;
        }
        let (order, _) = self
            .policy
            .rank(&child, &child_host, &cands, total, &self.config, |c| {
                self.finished_of(c, total)
            })
            .await;
        if order.is_empty() {
            return None;
        }
        let parents: Vec<common::Peer> = order
            .iter()
            .map(|&i| {
                let cand = &cands[i];
                let host = if cand.host.local {
                    self.local_host()
                } else {
                    cand.host.host.clone()
                };
                common::Peer {
                    id: cand.peer.id.clone(),
                    state: cand.peer.state.as_str().into(),
                    host: Some(host),
                    ..Default::default()
                }
            })
            .collect();
        if let Some(p) = self.cluster.lock().peers.get_mut(peer_id) {
            p.parents = parents.iter().map(|p| p.id.clone()).collect();
            p.updated_at_ms = now_ms();
        }
        Some(answer(Answer::NormalTaskResponse(NormalTaskResponse {
            candidate_parents: parents,
        })))
    }

    fn set_peer(&self, peer_id: &str, state: PeerState) {
        if let Some(p) = self.cluster.lock().peers.get_mut(peer_id) {
            p.state = state;
            p.updated_at_ms = now_ms();
        }
    }

    /// One message of a peer's stream: the answer to send, if any, and
    /// whether the stream ends after it.
    async fn handle(
        self: &Arc<Self>,
        m: &AnnouncePeerRequest,
    ) -> (Option<Result<AnnouncePeerResponse, Status>>, bool) {
        let peer = m.peer_id.as_str();
        let is_register = matches!(m.request, Some(PeerRequest::RegisterPeerRequest(_)));
        if !is_register && !self.cluster.lock().peers.contains_key(peer) {
            return (
                Some(Err(Status::failed_precondition(format!(
                    "peer {peer} has not registered on this stream (RegisterPeerRequest comes first)"
                )))),
                true,
            );
        }
        let piece = |p: &Option<common::Piece>, from_peer: bool| {
            let Some(p) = p else { return };
            let mut c = self.cluster.lock();
            let Some(rec) = c.peers.get_mut(peer) else {
                return;
            };
            if rec.piece(p, from_peer)
                && from_peer
                && let Some(parent) = &p.parent_id
            {
                c.count_upload(parent, false);
            }
        };
        match &m.request {
            Some(PeerRequest::RegisterPeerRequest(r)) => {
                let download = r.download.clone().unwrap_or_default();
                match self.register(m, &download).await {
                    Ok(a) => (Some(Ok(a)), false),
                    Err(s) => {
                        METRICS.answered("error");
                        (Some(Err(s)), true)
                    }
                }
            }
            Some(PeerRequest::DownloadPeerStartedRequest(_)) => {
                self.set_peer(peer, PeerState::Running);
                (None, false)
            }
            Some(PeerRequest::DownloadPeerBackToSourceStartedRequest(r)) => {
                let mut c = self.cluster.lock();
                if let Some(p) = c.peers.get_mut(peer) {
                    p.state = PeerState::BackToSource;
                    if p.back_to_source.is_none() {
                        p.back_to_source = Some(
                            r.description
                                .clone()
                                .unwrap_or_else(|| "the peer went back to source itself".into()),
                        );
                    }
                }
                (None, false)
            }
            Some(PeerRequest::ReschedulePeerRequest(r)) => {
                if let Some(p) = self.cluster.lock().peers.get_mut(peer) {
                    p.blocked
                        .extend(r.candidate_parents.iter().map(|c| c.id.clone()));
                    p.parents.clear();
                    p.rounds += 1;
                }
                (Some(Ok(self.schedule(peer).await)), false)
            }
            Some(PeerRequest::DownloadPieceFinishedRequest(r)) => {
                piece(&r.piece, true);
                (None, false)
            }
            Some(PeerRequest::DownloadPieceBackToSourceFinishedRequest(r)) => {
                piece(&r.piece, false);
                (None, false)
            }
            Some(PeerRequest::DownloadPieceFailedRequest(r)) => {
                let mut c = self.cluster.lock();
                if let Some(p) = c.peers.get_mut(peer) {
                    p.blocked.insert(r.parent_id.clone());
                }
                c.count_upload(&r.parent_id, true);
                (None, false)
            }
            Some(PeerRequest::DownloadPieceBackToSourceFailedRequest(_)) => (None, false),
            Some(
                PeerRequest::DownloadPeerFinishedRequest(_)
                | PeerRequest::DownloadPeerBackToSourceFinishedRequest(_),
            ) => {
                self.set_peer(peer, PeerState::Succeeded);
                (None, true)
            }
            Some(
                PeerRequest::DownloadPeerFailedRequest(_)
                | PeerRequest::DownloadPeerBackToSourceFailedRequest(_),
            ) => {
                self.set_peer(peer, PeerState::Failed);
                (None, true)
            }
            None => (
                Some(Err(Status::invalid_argument(
                    "AnnouncePeerRequest without a request",
                ))),
                true,
            ),
        }
    }
}

/// A peer's stream that broke off (the client reset it, or it ended
/// without a terminal message) leaves its peer in `Leave`: never handed
/// out again.
struct LeaveUnlessEnded {
    scheduler: Arc<Scheduler>,
    peer: Option<String>,
    ended: bool,
}

impl Drop for LeaveUnlessEnded {
    fn drop(&mut self) {
        let (false, Some(peer)) = (self.ended, &self.peer) else {
            return;
        };
        let mut c = self.scheduler.cluster.lock();
        if let Some(p) = c.peers.get_mut(peer)
            && !matches!(p.state, PeerState::Succeeded | PeerState::Failed)
        {
            p.state = PeerState::Leave;
            p.updated_at_ms = now_ms();
        }
    }
}

fn unimplemented<T>(method: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "seedgate's scheduler does not serve {method}: it schedules standard tasks (preheat goes through the gateway's /api/v1/preheat)"
    )))
}

#[tonic::async_trait]
impl SchedulerRpc for Service {
    type AnnouncePeerStream = Streamed<AnnouncePeerResponse>;
    type AnnounceCachePeerStream = Streamed<AnnounceCachePeerResponse>;
    type AnnouncePersistentPeerStream = Streamed<AnnouncePersistentPeerResponse>;
    type AnnouncePersistentCachePeerStream = Streamed<AnnouncePersistentCachePeerResponse>;

    async fn announce_peer(
        &self,
        request: Request<tonic::Streaming<AnnouncePeerRequest>>,
    ) -> Result<Response<Self::AnnouncePeerStream>, Status> {
        let me = self.0.clone();
        let mut inbound = request.into_inner();
        let stream = async_stream::stream! {
            // Dropped with the stream: when the client resets it, tonic
            // drops the stream where it waits, and no code after the loop
            // would run.
            let mut guard = LeaveUnlessEnded {
                scheduler: me.clone(),
                peer: None,
                ended: false,
            };
            while let Some(m) = inbound.next().await {
                let Ok(m) = m else { break };
                guard.peer.get_or_insert_with(|| m.peer_id.clone());
                let (reply, end) = me.handle(&m).await;
                if let Some(reply) = reply {
                    yield reply;
                }
                if end {
                    guard.ended = true;
                    break;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn announce_host(
        &self,
        request: Request<AnnounceHostRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let ttl = ttl_of(&request, self.0.config.host_ttl);
        let host = request
            .host
            .ok_or_else(|| Status::invalid_argument("AnnounceHostRequest.host is required"))?;
        if host.id.is_empty() {
            return Err(Status::invalid_argument("host.id is empty"));
        }
        if host.ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "host.ip '{}' is not an IP address (peers dial it)",
                host.ip.escape_debug()
            )));
        }
        let local = host.id == self.0.seed_probe().identity.host_id;
        let (id, hostname, ip, kind) = (
            host.id.clone(),
            host.hostname.clone(),
            host.ip.clone(),
            super::cluster::host_type_name(host.r#type),
        );
        let new = self
            .0
            .cluster
            .lock()
            .announce(host, ttl, local, &self.0.config)
            .map_err(full)?;
        if new {
            METRICS.host_event("joined");
            tracing::info!(host = %id, %hostname, %ip, r#type = kind, ttl = %humantime::format_duration(ttl), "host joined the cluster");
        }
        Ok(Response::new(()))
    }

    async fn stat_peer(
        &self,
        request: Request<StatPeerRequest>,
    ) -> Result<Response<common::Peer>, Status> {
        let r = request.into_inner();
        let c = self.0.cluster.lock();
        let p = c
            .peers
            .get(&r.peer_id)
            .filter(|p| p.task_id == r.task_id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "peer {} of task {} is not known",
                    r.peer_id, r.task_id
                ))
            })?;
        Ok(Response::new(common::Peer {
            id: p.id.clone(),
            state: p.state.as_str().into(),
            host: c.hosts.get(&p.host_id).map(|h| h.host.clone()),
            need_back_to_source: p.need_back_to_source,
            ..Default::default()
        }))
    }

    async fn delete_peer(
        &self,
        request: Request<DeletePeerRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let mut c = self.0.cluster.lock();
        match c.peers.get(&r.peer_id) {
            Some(p) if p.task_id == r.task_id => {
                c.remove_peer(&r.peer_id);
                Ok(Response::new(()))
            }
            _ => Err(Status::not_found(format!(
                "peer {} of task {} is not known",
                r.peer_id, r.task_id
            ))),
        }
    }

    async fn stat_task(
        &self,
        request: Request<StatTaskRequest>,
    ) -> Result<Response<common::Task>, Status> {
        let r = request.into_inner();
        let c = self.0.cluster.lock();
        let t = c
            .tasks
            .get(&r.task_id)
            .ok_or_else(|| Status::not_found(format!("task {} is not known", r.task_id)))?;
        let peers: Vec<&PeerEntry> = t.peers.iter().filter_map(|p| c.peers.get(p)).collect();
        let state = if peers.iter().any(|p| p.state == PeerState::Succeeded) {
            "Succeeded"
        } else if peers.iter().any(|p| p.is_live()) {
            "Running"
        } else if peers.iter().any(|p| p.state == PeerState::Failed) {
            "Failed"
        } else {
            "Pending"
        };
        Ok(Response::new(common::Task {
            id: t.id.clone(),
            url: t.url.clone(),
            content_length: t.content_length,
            piece_count: t.piece_count,
            state: state.into(),
            peer_count: peers.len() as u32,
            has_available_peer: peers.iter().any(|p| p.is_live()),
            ..Default::default()
        }))
    }

    async fn delete_task(
        &self,
        request: Request<DeleteTaskRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let mut c = self.0.cluster.lock();
        let ids: Vec<String> = c
            .tasks
            .get(&r.task_id)
            .map(|t| t.peers.iter().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            if c.peers.get(&id).is_some_and(|p| p.host_id == r.host_id) {
                c.remove_peer(&id);
            }
        }
        Ok(Response::new(()))
    }

    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let want = request.into_inner().r#type;
        let c = self.0.cluster.lock();
        let mut hosts: Vec<common::Host> = c
            .hosts
            .values()
            .filter(|h| want.is_none_or(|t| h.host.r#type == t))
            .map(|h| h.host.clone())
            .collect();
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    async fn delete_host(
        &self,
        request: Request<DeleteHostRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().host_id;
        if id == self.0.seed_probe().identity.host_id {
            // This seedgate's own host stays while it runs.
            return Ok(Response::new(()));
        }
        if let Some(h) = self.0.cluster.lock().remove_host(&id) {
            METRICS.host_event("left");
            tracing::info!(host = %id, hostname = %h.host.hostname, ip = %h.host.ip, "host left the cluster (DeleteHost)");
        }
        Ok(Response::new(()))
    }

    async fn announce_cache_peer(
        &self,
        _: Request<tonic::Streaming<AnnounceCachePeerRequest>>,
    ) -> Result<Response<Self::AnnounceCachePeerStream>, Status> {
        unimplemented("AnnounceCachePeer")
    }
    async fn stat_cache_peer(
        &self,
        _: Request<StatCachePeerRequest>,
    ) -> Result<Response<common::CachePeer>, Status> {
        unimplemented("StatCachePeer")
    }
    async fn delete_cache_peer(
        &self,
        _: Request<DeleteCachePeerRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("DeleteCachePeer")
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
    async fn announce_persistent_peer(
        &self,
        _: Request<tonic::Streaming<AnnouncePersistentPeerRequest>>,
    ) -> Result<Response<Self::AnnouncePersistentPeerStream>, Status> {
        unimplemented("AnnouncePersistentPeer")
    }

    async fn stat_persistent_peer(
        &self,
        _: Request<StatPersistentPeerRequest>,
    ) -> Result<Response<common::PersistentPeer>, Status> {
        unimplemented("StatPersistentPeer")
    }

    async fn delete_persistent_peer(
        &self,
        _: Request<DeletePersistentPeerRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("DeletePersistentPeer")
    }

    async fn upload_persistent_task_started(
        &self,
        _: Request<UploadPersistentTaskStartedRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("UploadPersistentTaskStarted")
    }

    async fn upload_persistent_task_finished(
        &self,
        _: Request<UploadPersistentTaskFinishedRequest>,
    ) -> Result<Response<common::PersistentTask>, Status> {
        unimplemented("UploadPersistentTaskFinished")
    }

    async fn upload_persistent_task_failed(
        &self,
        _: Request<UploadPersistentTaskFailedRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("UploadPersistentTaskFailed")
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

    async fn announce_persistent_cache_peer(
        &self,
        _: Request<tonic::Streaming<AnnouncePersistentCachePeerRequest>>,
    ) -> Result<Response<Self::AnnouncePersistentCachePeerStream>, Status> {
        unimplemented("AnnouncePersistentCachePeer")
    }

    async fn stat_persistent_cache_peer(
        &self,
        _: Request<StatPersistentCachePeerRequest>,
    ) -> Result<Response<common::PersistentCachePeer>, Status> {
        unimplemented("StatPersistentCachePeer")
    }

    async fn delete_persistent_cache_peer(
        &self,
        _: Request<DeletePersistentCachePeerRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("DeletePersistentCachePeer")
    }

    async fn upload_persistent_cache_task_started(
        &self,
        _: Request<UploadPersistentCacheTaskStartedRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("UploadPersistentCacheTaskStarted")
    }

    async fn upload_persistent_cache_task_finished(
        &self,
        _: Request<UploadPersistentCacheTaskFinishedRequest>,
    ) -> Result<Response<common::PersistentCacheTask>, Status> {
        unimplemented("UploadPersistentCacheTaskFinished")
    }

    async fn upload_persistent_cache_task_failed(
        &self,
        _: Request<UploadPersistentCacheTaskFailedRequest>,
    ) -> Result<Response<()>, Status> {
        unimplemented("UploadPersistentCacheTaskFailed")
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

    async fn preheat_image(&self, _: Request<PreheatImageRequest>) -> Result<Response<()>, Status> {
        unimplemented("PreheatImage")
    }

    async fn stat_image(
        &self,
        _: Request<StatImageRequest>,
    ) -> Result<Response<StatImageResponse>, Status> {
        unimplemented("StatImage")
    }

    async fn preheat_file(&self, _: Request<PreheatFileRequest>) -> Result<Response<()>, Status> {
        unimplemented("PreheatFile")
    }

    async fn stat_file(
        &self,
        _: Request<StatFileRequest>,
    ) -> Result<Response<StatFileResponse>, Status> {
        unimplemented("StatFile")
    }
}
