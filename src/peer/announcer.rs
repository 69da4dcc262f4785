//! Registers this host with Dragonfly schedulers as a super seed, and
//! reports each back-to-source download to them.
//!
//! One long-lived gRPC channel per scheduler, made once and never thrown
//! away: HTTP/2 multiplexes every call on it, and when the scheduler is
//! down the channel reconnects only when a call is made. Calls are paced:
//! `AnnounceHost` every `announce_interval` while the scheduler accepts it,
//! and after a failure with a doubling, jittered backoff
//! (`reconnect_backoff_min..=max`) — a sick scheduler sees one connection
//! attempt per backoff step, not a storm. Downloads are reported only to a
//! scheduler that has accepted the host; the rest are counted as skipped.
//!
//! Each task goes to one scheduler, picked by rendezvous hashing of its
//! task id, so every scheduler sees all of a task's reports. What it is
//! told, as Dragonfly's own seed peer (`dragonfly-client` 1.5.10,
//! `resource/task.rs`, `gc/mod.rs`) tells it:
//!
//! - a download back to source is an `AnnouncePeer` stream: `RegisterPeer`
//!   with the task's size (`actual_content_length`, `actual_piece_length`,
//!   `actual_piece_count`: the Go scheduler builds its task from the first
//!   register, and a length of 0 is an empty task) and what the trigger
//!   asked (priority, timeout, range, ...); then, once the scheduler has
//!   answered, `DownloadPeerBackToSourceStarted`, one
//!   `DownloadPieceBackToSourceFinished` per piece and
//!   `DownloadPeerBackToSourceFinished` (or `...Failed` with the reason);
//! - a `DownloadTask` for a task stored whole registers with
//!   `metadata_only`, then `DownloadPeerStarted` and `DownloadPeerFinished`:
//!   the scheduler learns this host has the whole task;
//! - a task removed from the store (evicted, deleted) is a `DeleteTask`;
//! - `DeleteHost` goes to every scheduler on shutdown.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use dragonfly_api::common::v2::{Download, TaskType};
use dragonfly_api::scheduler::v2::announce_peer_request::Request as PeerRequest;
use dragonfly_api::scheduler::v2::scheduler_client::SchedulerClient;
use dragonfly_api::scheduler::v2::*;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::convert::piece_message;
use super::host::HostProbe;
use crate::config::SeedPeerConfig;
use crate::metrics::{METRICS, SchedulerLabels, SchedulerOutcomeLabels};
use crate::task::Object;

/// What this seed peer tells a scheduler about one task, by kind.
#[derive(Debug, Clone, Copy)]
enum Report {
    /// A download back to source, piece by piece.
    BackToSource,
    /// The task is stored whole: metadata only.
    Stored,
}

/// Reports queued per download before the report task waits for the
/// scheduler to take them.
const REPORT_QUEUE: usize = 128;

/// Where this host stands with one scheduler.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LinkState {
    /// Not announced yet.
    Connecting,
    /// The scheduler accepted the last `AnnounceHost`.
    Registered { since_ms: u64 },
    /// The last `AnnounceHost` failed; the next try is after a backoff.
    Unreachable { error: String, since_ms: u64 },
}

/// One scheduler: its channel and state.
#[derive(Debug)]
pub struct Link {
    pub address: String,
    client: SchedulerClient<Channel>,
    state: watch::Sender<LinkState>,
}

impl Link {
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    fn registered(&self) -> bool {
        matches!(*self.state.borrow(), LinkState::Registered { .. })
    }

    /// Sets the state; logs and counts a change (one line per change).
    fn set(&self, next: LinkState) {
        let changed = self.state.send_if_modified(|s| {
            let same = std::mem::discriminant(s) == std::mem::discriminant(&next);
            if !same {
                *s = next.clone();
            }
            !same
        });
        let gauge = METRICS
            .scheduler_registered
            .get_or_create(&SchedulerLabels {
                scheduler: self.address.clone(),
            });
        match &next {
            LinkState::Registered { .. } => {
                gauge.set(1);
                if changed {
                    tracing::info!(scheduler = %self.address, "registered with the scheduler as a super seed");
                }
            }
            LinkState::Unreachable { error, .. } => {
                gauge.set(0);
                if changed {
                    tracing::warn!(scheduler = %self.address, %error, "not registered with the scheduler; retrying with backoff");
                }
            }
            LinkState::Connecting => {
                gauge.set(0);
            }
        }
    }
}

/// The announcer: every scheduler link, and what it announces.
#[derive(Debug)]
pub struct Announcer {
    links: Vec<Arc<Link>>,
    host: Arc<HostProbe>,
    config: SeedPeerConfig,
    /// The peer id each download in flight was registered under, so a
    /// `DownloadTask` answer names the peer the scheduler knows.
    peers: parking_lot::Mutex<std::collections::HashMap<String, String>>,
    /// What a `DownloadTask` asked, by task id, until its download starts
    /// (the register carries it).
    triggers: parking_lot::Mutex<std::collections::HashMap<String, Download>>,
    /// Pieces one download fetches at once (the register's
    /// `concurrent_piece_count`, as the real seed sets it from its config).
    piece_concurrency: u32,
    /// Tasks removed from the store, for `DeleteTask`.
    removed: mpsc::UnboundedSender<String>,
    removed_rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Cancelled by `seedgate drain`: the host leaves its schedulers
    /// (DeleteHost) while it keeps serving uploads.
    leaving: CancellationToken,
}

/// What `/readyz` shows of one scheduler.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchedulerStatus {
    pub address: String,
    #[serde(flatten)]
    pub state: LinkState,
}

impl Announcer {
    /// Makes one lazy channel per scheduler (nothing connects yet).
    pub fn new(
        config: &SeedPeerConfig,
        host: Arc<HostProbe>,
        piece_concurrency: u32,
    ) -> anyhow::Result<Self> {
        let links = config
            .schedulers
            .iter()
            .map(|url| {
                let address = url.trim_end_matches('/').to_string();
                let channel = Endpoint::from_shared(address.clone())?
                    .connect_timeout(config.scheduler_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                let (state, _) = watch::channel(LinkState::Connecting);
                Ok(Arc::new(Link {
                    address,
                    client: SchedulerClient::new(channel),
                    state,
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (removed, removed_rx) = mpsc::unbounded_channel();
        Ok(Self {
            links,
            host,
            config: config.clone(),
            peers: Default::default(),
            triggers: Default::default(),
            piece_concurrency,
            removed,
            removed_rx: parking_lot::Mutex::new(Some(removed_rx)),
            leaving: CancellationToken::new(),
        })
    }

    pub fn status(&self) -> Vec<SchedulerStatus> {
        self.links
            .iter()
            .map(|l| SchedulerStatus {
                address: l.address.clone(),
                state: l.state(),
            })
            .collect()
    }

    /// The peer id a download of `task_id` in flight was reported under.
    pub fn peer_id_of(&self, task_id: &str) -> Option<String> {
        self.peers.lock().get(task_id).cloned()
    }

    /// Holds what a `DownloadTask` for `task_id` asked until its download
    /// starts (or [`Self::forget_trigger`]); the register carries it.
    pub fn expect_trigger(&self, task_id: &str, download: Download) {
        self.triggers.lock().insert(task_id.to_string(), download);
    }

    pub fn forget_trigger(&self, task_id: &str) {
        self.triggers.lock().remove(task_id);
    }

    /// Queues a `DeleteTask` for a task removed from the store. Never
    /// blocks (the engine calls it under its own calls).
    pub fn removed(&self, task_id: &str) {
        let _ = self.removed.send(task_id.to_string());
    }

    /// Whether `/readyz` may say ready as far as schedulers go.
    pub fn ready(&self) -> bool {
        !self.config.ready_requires_scheduler
            || self.links.is_empty()
            || self.links.iter().any(|l| l.registered())
    }

    /// Leaves every scheduler (DeleteHost) and stops announcing, so peers
    /// are no longer sent here; uploads in flight go on.
    pub fn leave(&self) {
        self.leaving.cancel();
    }

    /// Pieces being sent to peers now.
    pub fn uploads_in_flight(&self) -> u64 {
        self.host
            .uploads
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether [`Announcer::leave`] was called and no scheduler still
    /// counts this host as registered.
    pub fn left(&self) -> bool {
        self.leaving.is_cancelled() && !self.links.iter().any(|l| l.registered())
    }

    /// Announces the host to every scheduler until `cancel` (or
    /// [`Announcer::leave`]), then deletes it from each.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let stop = CancellationToken::new();
        {
            let (stop, leaving) = (stop.clone(), self.leaving.clone());
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = leaving.cancelled() => {}
                }
                stop.cancel();
            });
        }
        let cancel = stop;
        let loops = self.links.iter().map(|link| {
            let me = self.clone();
            let link = link.clone();
            let cancel = cancel.clone();
            async move { me.announce_loop(&link, cancel).await }
        });
        let deletes = self.clone().delete_loop(cancel.clone());
        tokio::join!(futures_util::future::join_all(loops), deletes);
    }

    /// Tells each removed task's scheduler, one call at a time, as
    /// Dragonfly's GC does (`gc/mod.rs` `delete_task_from_scheduler`): a
    /// failure is logged and counted, not retried (the scheduler drops the
    /// seed as a parent anyway when `SyncPieces` says the task is gone).
    async fn delete_loop(self: Arc<Self>, cancel: CancellationToken) {
        let Some(mut rx) = self.removed_rx.lock().take() else {
            return;
        };
        loop {
            let task_id = tokio::select! {
                t = rx.recv() => match t { Some(t) => t, None => break },
                () = cancel.cancelled() => break,
            };
            let Some(link) = self.link_for(&task_id).cloned() else {
                continue;
            };
            let outcome = if link.registered() {
                let request = DeleteTaskRequest {
                    host_id: self.host.identity.host_id.clone(),
                    task_id: task_id.clone(),
                };
                let mut client = link.client.clone();
                match tokio::time::timeout(
                    self.config.scheduler_timeout,
                    client.delete_task(request),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        tracing::info!(task = %task_id, scheduler = %link.address, "told the scheduler the task is gone (DeleteTask)");
                        "ok"
                    }
                    Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
                        tracing::debug!(task = %task_id, scheduler = %link.address, "DeleteTask: the scheduler did not know the task");
                        "ok"
                    }
                    Ok(Err(s)) => {
                        tracing::warn!(task = %task_id, scheduler = %link.address, code = ?s.code(), error = %s.message(), "DeleteTask failed");
                        "error"
                    }
                    Err(_) => {
                        tracing::warn!(task = %task_id, scheduler = %link.address, "DeleteTask: no answer within seed_peer.scheduler_timeout");
                        "error"
                    }
                }
            } else {
                tracing::debug!(task = %task_id, scheduler = %link.address, "DeleteTask not sent: the scheduler has not accepted this host");
                "skipped"
            };
            METRICS
                .scheduler_task_deletes
                .get_or_create(&SchedulerOutcomeLabels {
                    scheduler: link.address.clone(),
                    outcome: outcome.into(),
                })
                .inc();
        }
    }

    async fn announce_loop(&self, link: &Link, cancel: CancellationToken) {
        let c = &self.config;
        let mut backoff = c.reconnect_backoff_min;
        let mut ever = false;
        loop {
            let host = self.host.clone();
            let host = tokio::task::spawn_blocking(move || host.host()).await;
            let request = AnnounceHostRequest {
                host: host.ok(),
                interval: Some(prost_wkt_types::Duration {
                    seconds: c.announce_interval.as_secs() as i64,
                    nanos: c.announce_interval.subsec_nanos() as i32,
                }),
            };
            let mut client = link.client.clone();
            let r = tokio::select! {
                r = tokio::time::timeout(c.scheduler_timeout, client.announce_host(request)) => r,
                () = cancel.cancelled() => break,
            };
            let outcome = match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => Err(format!(
                    "no answer within {:?} (seed_peer.scheduler_timeout)",
                    c.scheduler_timeout
                )),
            };
            METRICS
                .scheduler_announces
                .get_or_create(&SchedulerOutcomeLabels {
                    scheduler: link.address.clone(),
                    outcome: if outcome.is_ok() { "ok" } else { "error" }.into(),
                })
                .inc();
            let wait = match outcome {
                Ok(()) => {
                    ever = true;
                    link.set(LinkState::Registered {
                        since_ms: crate::clock::now_ms(),
                    });
                    backoff = c.reconnect_backoff_min;
                    c.announce_interval
                }
                Err(error) => {
                    link.set(LinkState::Unreachable {
                        error,
                        since_ms: crate::clock::now_ms(),
                    });
                    // Full jitter over the upper half: never a burst, never
                    // longer than the step.
                    let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
                    backoff = (backoff * 2).min(c.reconnect_backoff_max);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => break,
            }
        }
        if ever {
            let request = DeleteHostRequest {
                host_id: self.host.identity.host_id.clone(),
            };
            let mut client = link.client.clone();
            match tokio::time::timeout(
                c.scheduler_timeout.min(Duration::from_secs(5)),
                client.delete_host(request),
            )
            .await
            {
                Ok(Ok(_)) => {
                    tracing::info!(scheduler = %link.address, "deleted the host from the scheduler")
                }
                Ok(Err(s)) => {
                    tracing::warn!(scheduler = %link.address, error = %s.message(), "DeleteHost failed")
                }
                Err(_) => tracing::warn!(scheduler = %link.address, "DeleteHost timed out"),
            }
        }
        link.set(LinkState::Connecting);
    }

    /// The scheduler a task's reports go to (rendezvous hashing).
    fn link_for(&self, task_id: &str) -> Option<&Arc<Link>> {
        self.links.iter().max_by_key(|l| {
            let mut h = std::hash::DefaultHasher::new();
            task_id.hash(&mut h);
            l.address.hash(&mut h);
            h.finish()
        })
    }

    /// Reports a back-to-source download to its scheduler, in the
    /// background, until the download ends.
    pub fn report(self: &Arc<Self>, task: Object) {
        let trigger = self.triggers.lock().remove(&task.record.id);
        let peer_id = self.host.identity.peer_id();
        self.spawn_report(task, trigger, peer_id, Report::BackToSource);
    }

    /// Tells the scheduler that a task asked for by `DownloadTask` is
    /// stored whole here (a `metadata_only` register), in the background.
    /// Returns the peer id it is registered under, for the answer.
    pub fn report_stored(self: &Arc<Self>, task: Object, trigger: Download) -> String {
        let peer_id = self.host.identity.peer_id();
        self.spawn_report(task, Some(trigger), peer_id.clone(), Report::Stored);
        peer_id
    }

    fn spawn_report(
        self: &Arc<Self>,
        task: Object,
        trigger: Option<Download>,
        peer_id: String,
        kind: Report,
    ) {
        let Some(link) = self.link_for(&task.record.id).cloned() else {
            return;
        };
        let address = link.address.clone();
        let count = move |outcome: &str| {
            METRICS
                .peer_announces
                .get_or_create(&SchedulerOutcomeLabels {
                    scheduler: address.clone(),
                    outcome: outcome.into(),
                })
                .inc();
        };
        if !link.registered() {
            count("skipped");
            tracing::debug!(task = %task.record.id, scheduler = %link.address, "download not reported: the scheduler has not accepted this host");
            return;
        }
        let task_id = task.record.id.clone();
        if matches!(kind, Report::BackToSource) {
            self.peers.lock().insert(task_id.clone(), peer_id.clone());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let r = me
                .report_download(&link, task, trigger, peer_id, kind)
                .await;
            if matches!(kind, Report::BackToSource) {
                me.peers.lock().remove(&task_id);
            }
            match r {
                Ok(()) => count("ok"),
                Err(e) => {
                    count("error");
                    tracing::warn!(task = %task_id, scheduler = %link.address, error = %e, "reporting a download to the scheduler failed");
                }
            }
        });
    }

    /// The register's `Download`: what the trigger asked (as the real seed
    /// forwards it), with this seed's piece concurrency and the task's
    /// actual size. Without a trigger (a gateway read, seedgate's own
    /// preheat), what the engine knows of the request.
    fn register_download(
        &self,
        task: &Object,
        trigger: Option<Download>,
        kind: Report,
    ) -> Download {
        let mut d = trigger.unwrap_or_else(|| Download {
            url: task.record.url.clone(),
            r#type: TaskType::Standard as i32,
            tag: task.spec.tag.clone(),
            application: task.spec.application.clone(),
            piece_length: task.spec.piece_length,
            filtered_query_params: task.spec.filtered_query_params.clone(),
            ..Default::default()
        });
        d.concurrent_piece_count = Some(self.piece_concurrency);
        d.actual_content_length = Some(task.record.content_length);
        d.actual_piece_length = Some(task.record.piece_length);
        d.actual_piece_count = Some(task.piece_count() as u64);
        // Where the bytes go is this seed's business, not the scheduler's.
        d.output_path = None;
        match kind {
            // seedgate fetches from its origin whatever the scheduler
            // answers; it says so (deliberate: see README "seed peer").
            Report::BackToSource => d.need_back_to_source = true,
            Report::Stored => {
                d.metadata_only = true;
                d.need_back_to_source = false;
            }
        }
        d
    }

    async fn report_download(
        &self,
        link: &Link,
        task: Object,
        trigger: Option<Download>,
        peer_id: String,
        kind: Report,
    ) -> Result<(), String> {
        let id = &self.host.identity;
        let task_id = task.record.id.clone();
        let (tx, rx) = mpsc::channel::<AnnouncePeerRequest>(REPORT_QUEUE);
        let envelope = {
            let host_id = id.host_id.clone();
            let task_id = task_id.clone();
            move |request| AnnouncePeerRequest {
                host_id: host_id.clone(),
                task_id: task_id.clone(),
                peer_id: peer_id.clone(),
                request: Some(request),
            }
        };
        let download = self.register_download(&task, trigger, kind);
        let timeout = self.config.scheduler_timeout;
        // A scheduler that stops reading fails the report after a while
        // (rather than holding the task, which the report leases).
        let send = |request| {
            let tx = tx.clone();
            let msg = envelope(request);
            async move {
                match tokio::time::timeout(timeout, tx.send(msg)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err("the scheduler closed the stream".to_string()),
                    Err(_) => Err(format!("the scheduler took no report for {timeout:?}")),
                }
            }
        };
        send(PeerRequest::RegisterPeerRequest(RegisterPeerRequest {
            download: Some(download),
        }))
        .await?;
        let mut client = link.client.clone();
        let call = tokio::time::timeout(
            timeout,
            client.announce_peer(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| format!("AnnouncePeer: no answer within {timeout:?}"))?
        .map_err(|s| format!("AnnouncePeer: {:?}: {}", s.code(), s.message()))?;
        let mut inbound = call.into_inner();
        // The register's answer first, as the real seed waits for it.
        let first = tokio::time::timeout(timeout, inbound.next())
            .await
            .map_err(|_| format!("the scheduler did not answer the register within {timeout:?}"))?;
        let answer = match first {
            Some(Ok(m)) => m.response,
            Some(Err(s)) => {
                return Err(format!(
                    "the scheduler refused the register: {:?}: {}",
                    s.code(),
                    s.message()
                ));
            }
            None => {
                return Err("the scheduler ended the stream before answering the register".into());
            }
        };
        self.check_answer(&task, kind, answer.as_ref())?;
        // Later answers are read so the stream keeps flowing.
        let drain = {
            let task_id = task_id.clone();
            tokio::spawn(async move {
                while let Some(r) = inbound.next().await {
                    match r {
                        Ok(m) => {
                            tracing::debug!(task = %task_id, answer = answer_name(m.response.as_ref()), "scheduler answered")
                        }
                        Err(s) => {
                            tracing::debug!(task = %task_id, error = %s.message(), "scheduler stream ended");
                            break;
                        }
                    }
                }
            })
        };
        match kind {
            Report::Stored => {
                send(PeerRequest::DownloadPeerStartedRequest(
                    DownloadPeerStartedRequest {},
                ))
                .await?;
                send(PeerRequest::DownloadPeerFinishedRequest(
                    DownloadPeerFinishedRequest {},
                ))
                .await?;
            }
            Report::BackToSource => {
                send(PeerRequest::DownloadPeerBackToSourceStartedRequest(
                    DownloadPeerBackToSourceStartedRequest { description: None },
                ))
                .await?;
                let mut pieces = std::pin::pin!(task.pieces());
                let mut failed = None;
                while let Some(p) = pieces.next().await {
                    match p {
                        Ok(p) => {
                            send(PeerRequest::DownloadPieceBackToSourceFinishedRequest(
                                DownloadPieceBackToSourceFinishedRequest {
                                    piece: Some(piece_message(&p, None)),
                                },
                            ))
                            .await?
                        }
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                }
                let last = match failed {
                    None => PeerRequest::DownloadPeerBackToSourceFinishedRequest(
                        DownloadPeerBackToSourceFinishedRequest {},
                    ),
                    Some(description) => PeerRequest::DownloadPeerBackToSourceFailedRequest(
                        DownloadPeerBackToSourceFailedRequest {
                            description: Some(description),
                        },
                    ),
                };
                send(last).await?;
            }
        }
        drop(tx);
        // The stream ends when the scheduler has read everything.
        let _ = tokio::time::timeout(timeout, drain).await;
        Ok(())
    }

    /// Logs the scheduler's answer to a register by name, and says when it
    /// is one a peer would be misled by.
    fn check_answer(
        &self,
        task: &Object,
        kind: Report,
        answer: Option<&announce_peer_response::Response>,
    ) -> Result<(), String> {
        use announce_peer_response::Response as A;
        let task_id = &task.record.id;
        let name = answer_name(answer);
        match (kind, answer) {
            (Report::Stored, Some(A::MetadataOnlyResponse(_))) => {
                tracing::debug!(task = %task_id, answer = name, "the scheduler took the stored task");
                Ok(())
            }
            (Report::Stored, _) => Err(format!(
                "the scheduler answered a metadata-only register with {name}, not MetadataOnlyResponse"
            )),
            (Report::BackToSource, Some(A::EmptyTaskResponse(_)))
                if task.record.content_length > 0 =>
            {
                tracing::warn!(
                    task = %task_id,
                    content_length = task.record.content_length,
                    "the scheduler takes this task for empty (EmptyTaskResponse): its peers will be told so"
                );
                Ok(())
            }
            (Report::BackToSource, None) => {
                tracing::warn!(task = %task_id, "the scheduler's answer to the register carried nothing");
                Ok(())
            }
            (Report::BackToSource, Some(_)) => {
                tracing::debug!(task = %task_id, answer = name, "scheduler answered the register");
                Ok(())
            }
        }
    }
}

/// The name of a scheduler's answer, for logs.
fn answer_name(answer: Option<&announce_peer_response::Response>) -> &'static str {
    use announce_peer_response::Response as A;
    match answer {
        None => "nothing",
        Some(A::EmptyTaskResponse(_)) => "EmptyTaskResponse",
        Some(A::NormalTaskResponse(_)) => "NormalTaskResponse",
        Some(A::NeedBackToSourceResponse(_)) => "NeedBackToSourceResponse",
        Some(A::MetadataOnlyResponse(_)) => "MetadataOnlyResponse",
    }
}
