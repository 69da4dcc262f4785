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
//! Each download goes to one scheduler, picked by rendezvous hashing of its
//! task id, so every scheduler sees all of a task's reports. A report is an
//! `AnnouncePeer` stream: `RegisterPeer`, `DownloadPeerBackToSourceStarted`,
//! one `DownloadPieceBackToSourceFinished` per piece, then
//! `DownloadPeerBackToSourceFinished` (or `...Failed` with the reason).
//! `DeleteHost` goes to every scheduler on shutdown.

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

use super::host::HostProbe;
use super::upload::piece_message;
use crate::config::SeedPeerConfig;
use crate::metrics::{METRICS, SchedulerLabels, SchedulerOutcomeLabels};
use crate::task::peer::PeerTask;

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
    pub fn new(config: &SeedPeerConfig, host: Arc<HostProbe>) -> anyhow::Result<Self> {
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
        Ok(Self {
            links,
            host,
            config: config.clone(),
            peers: Default::default(),
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

    /// Whether `/readyz` may say ready as far as schedulers go.
    pub fn ready(&self) -> bool {
        !self.config.ready_requires_scheduler
            || self.links.is_empty()
            || self.links.iter().any(|l| l.registered())
    }

    /// Announces the host to every scheduler until `cancel`, then deletes
    /// it from each.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let loops = self.links.iter().map(|link| {
            let me = self.clone();
            let link = link.clone();
            let cancel = cancel.clone();
            async move { me.announce_loop(&link, cancel).await }
        });
        futures_util::future::join_all(loops).await;
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
                        since_ms: crate::task::now_ms(),
                    });
                    backoff = c.reconnect_backoff_min;
                    c.announce_interval
                }
                Err(error) => {
                    link.set(LinkState::Unreachable {
                        error,
                        since_ms: crate::task::now_ms(),
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
    pub fn report(self: &Arc<Self>, task: PeerTask) {
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
        let peer_id = self.host.identity.peer_id();
        let task_id = task.record.id.clone();
        self.peers.lock().insert(task_id.clone(), peer_id.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let r = me.report_download(&link, task, peer_id).await;
            me.peers.lock().remove(&task_id);
            match r {
                Ok(()) => count("ok"),
                Err(e) => {
                    count("error");
                    tracing::warn!(scheduler = %link.address, error = %e, "reporting a download to the scheduler failed");
                }
            }
        });
    }

    async fn report_download(
        &self,
        link: &Link,
        task: PeerTask,
        peer_id: String,
    ) -> Result<(), String> {
        let id = &self.host.identity;
        let (tx, rx) = mpsc::channel::<AnnouncePeerRequest>(REPORT_QUEUE);
        let envelope = {
            let host_id = id.host_id.clone();
            let task_id = task.record.id.clone();
            move |request| AnnouncePeerRequest {
                host_id: host_id.clone(),
                task_id: task_id.clone(),
                peer_id: peer_id.clone(),
                request: Some(request),
            }
        };
        let download = Download {
            url: task.record.url.clone(),
            r#type: TaskType::Standard as i32,
            tag: task.spec.tag.clone(),
            application: task.spec.application.clone(),
            piece_length: task.spec.piece_length,
            filtered_query_params: task.spec.filtered_query_params.clone(),
            need_back_to_source: true,
            ..Default::default()
        };
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
        send(PeerRequest::DownloadPeerBackToSourceStartedRequest(
            DownloadPeerBackToSourceStartedRequest { description: None },
        ))
        .await?;
        let mut client = link.client.clone();
        let call = tokio::time::timeout(
            timeout,
            client.announce_peer(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| format!("AnnouncePeer: no answer within {timeout:?}"))?
        .map_err(|s| format!("AnnouncePeer: {:?}: {}", s.code(), s.message()))?;
        // The scheduler's answers (a seed is told to go back to source,
        // which it does anyway) are read so the stream keeps flowing.
        let mut inbound = call.into_inner();
        let drain = tokio::spawn(async move {
            while let Some(r) = inbound.next().await {
                match r {
                    Ok(m) => {
                        tracing::debug!(response = ?m.response.map(|r| std::mem::discriminant(&r)), "scheduler answered")
                    }
                    Err(s) => {
                        tracing::debug!(error = %s.message(), "scheduler stream ended");
                        break;
                    }
                }
            }
        });
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
        drop(tx);
        // The stream ends when the scheduler has read everything.
        let _ = tokio::time::timeout(timeout, drain).await;
        Ok(())
    }
}
