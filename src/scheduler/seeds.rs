//! Which seed host fetches a task from its origin, and how one that is not
//! this seedgate is started.
//!
//! Several seedgates form one scheduler cluster when each lists all of
//! their schedulers in `[seed_peer] schedulers`: every scheduler then
//! knows every seed host (their announcers tell it), and dfdaemon spreads
//! its tasks over the schedulers by its own hash ring. For each task, a
//! scheduler picks the seed host by rendezvous (highest random weight)
//! hashing of the task id over the live seed hosts' ids, as Dragonfly's
//! scheduler picks its seed peer by consistent hashing. Every scheduler
//! holding the same hosts computes the same seed host, so a task is
//! fetched from its origin once whichever scheduler a peer asked; a host
//! that joins or leaves moves only the tasks that hash to it.
//!
//! A remote seed host is started as Dragonfly's scheduler starts its seed
//! peers: `DfdaemonUpload.DownloadTask` on its upload port. The answer
//! stream names the seed's peer and reports every piece it lands; that is
//! what this scheduler records of the seed peer, so it does not depend on
//! which scheduler the seed reports its own download to. The register is
//! answered once the seed has started (the task's length is known); a
//! seed that does not start within `scheduler.seed_trigger_timeout` (or
//! refuses) is skipped for the next host in the hash order.

use std::collections::HashMap;
use std::sync::Arc;

use dragonfly_api::common::v2 as common;
use dragonfly_api::dfdaemon::v2::dfdaemon_upload_client::DfdaemonUploadClient;
use dragonfly_api::dfdaemon::v2::{
    DownloadTaskRequest, DownloadTaskResponse, StatTaskRequest, download_task_response,
};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

use super::cluster::{Cluster, HostEntry, PeerEntry, PeerState, TaskEntry};
use super::{Scheduler, TaskGates};
use crate::clock::now_ms;
use crate::piece::piece_count;

/// A host's weight for a task: the first 8 bytes of
/// `sha256(task_id 0x00 host_id)`. The same on every seedgate and every
/// build (a std hasher is not promised to be).
fn weight(task_id: &str, host_id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(task_id.as_bytes());
    h.update([0]);
    h.update(host_id.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

impl Cluster {
    /// The live, shared seed hosts in the order `task_id` tries them;
    /// this seedgate's own among them only when `local_seed`.
    pub fn seed_order(&self, task_id: &str, local_seed: bool) -> Vec<HostEntry> {
        let mut seeds: Vec<(u64, &HostEntry)> = self
            .hosts
            .values()
            .filter(|h| h.is_seed() && !h.host.disable_shared && (local_seed || !h.local))
            .map(|h| (weight(task_id, &h.host.id), h))
            .collect();
        seeds.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.host.id.cmp(&b.1.host.id)));
        seeds.into_iter().map(|(_, h)| h.clone()).collect()
    }

    /// A peer of `task_id` on `host_id` that downloads or holds it.
    fn live_peer_on(&self, task_id: &str, host_id: &str) -> Option<&PeerEntry> {
        let task = self.tasks.get(task_id)?;
        task.peers
            .iter()
            .filter_map(|p| self.peers.get(p))
            .find(|p| p.host_id == host_id && p.is_live())
    }
}

/// Channels to remote seed hosts, and one trigger at a time per task.
#[derive(Debug, Default)]
pub struct Seeds {
    channels: Mutex<HashMap<String, Channel>>,
    triggering: TaskGates,
}

impl Seeds {
    /// One lazy channel per seed host address, kept: HTTP/2 multiplexes
    /// every trigger on it and it reconnects when a call needs it.
    fn channel(&self, host: &common::Host) -> Result<Channel, String> {
        let ip: std::net::IpAddr = host
            .ip
            .parse()
            .map_err(|_| format!("host ip '{}' is not an IP address", host.ip))?;
        let addr = std::net::SocketAddr::new(ip, host.port as u16);
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(&addr.to_string()) {
            return Ok(c.clone());
        }
        let c = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// What a seed's `DownloadTask` is asked: the peer's download, back to
/// source, whole, with no content in the answers.
pub fn seed_download(download: &common::Download) -> common::Download {
    let mut seed = download.clone();
    seed.need_back_to_source = true;
    seed.disable_back_to_source = false;
    seed.output_path = None;
    seed.range = None;
    seed.need_piece_content = false;
    seed
}

impl Scheduler {
    /// Makes sure the task has a seed peer: on the seed host it had, else
    /// on the first live seed host in its hash order that starts it.
    /// The error names every host tried and why it was skipped.
    pub(super) async fn place_seed(
        self: &Arc<Self>,
        task_id: &str,
        download: &common::Download,
    ) -> Result<(), String> {
        let (mut order, current) = {
            let c = self.cluster.lock();
            let current = c.tasks.get(task_id).and_then(|t| t.seed_host.clone());
            (c.seed_order(task_id, self.config.local_seed), current)
        };
        if let Some(cur) = current
            && let Some(i) = order.iter().position(|h| h.host.id == cur)
        {
            let h = order.remove(i);
            order.insert(0, h);
        }
        let mut skipped = Vec::new();
        for h in order {
            let r = if h.local {
                self.seed_task(task_id, download).await
            } else {
                self.remote_seed(&h, task_id, download).await
            };
            match r {
                Ok(()) => {
                    if let Some(t) = self.cluster.lock().tasks.get_mut(task_id) {
                        t.seed_host = Some(h.host.id.clone());
                    }
                    return Ok(());
                }
                Err(why) => {
                    tracing::warn!(task = %task_id, seed_host = %h.host.id, reason = %why, "seed host skipped for the task");
                    skipped.push(format!("{}: {why}", h.host.id));
                }
            }
        }
        Err(if skipped.is_empty() {
            "no live seed host".into()
        } else {
            skipped.join("; ")
        })
    }

    /// Starts the task on a remote seed host (`DownloadTask`) unless a
    /// peer of it there already downloads or holds it, and follows the
    /// seed's answer stream in the background.
    async fn remote_seed(
        self: &Arc<Self>,
        host: &HostEntry,
        task_id: &str,
        download: &common::Download,
    ) -> Result<(), String> {
        let r = async {
            if self
                .cluster
                .lock()
                .live_peer_on(task_id, &host.host.id)
                .is_some()
            {
                return Ok(());
            }
            self.trigger(host, task_id, download).await
        };
        self.seeds.triggering.with(task_id, r).await
    }

    async fn trigger(
        self: &Arc<Self>,
        host: &HostEntry,
        task_id: &str,
        download: &common::Download,
    ) -> Result<(), String> {
        let mut client = DfdaemonUploadClient::new(self.seeds.channel(&host.host)?)
            .max_decoding_message_size(usize::MAX);
        let timeout = self.config.seed_trigger_timeout;
        let start = async {
            let mut stream = client
                .download_task(DownloadTaskRequest {
                    download: Some(seed_download(download)),
                })
                .await
                .map_err(|s| format!("DownloadTask: {}", s.message()))?
                .into_inner();
            let first = stream
                .message()
                .await
                .map_err(|s| format!("DownloadTask: {}", s.message()))?
                .ok_or("DownloadTask ended before the task started")?;
            let stat = client
                .stat_task(StatTaskRequest {
                    task_id: task_id.into(),
                    ..Default::default()
                })
                .await
                .ok()
                .map(|r| r.into_inner());
            Ok::<_, String>((stream, first, stat))
        };
        let (stream, first, stat) =
            tokio::time::timeout(timeout, start).await.map_err(|_| {
                format!(
                    "it did not start the task within {} (scheduler.seed_trigger_timeout)",
                    humantime::format_duration(timeout)
                )
            })??;
        if first.task_id != task_id {
            return Err(format!(
                "it computes task id {} for {}, the peer asked for {task_id}",
                first.task_id, download.url
            ));
        }
        let Some(download_task_response::Response::DownloadTaskStartedResponse(started)) =
            &first.response
        else {
            return Err("its first DownloadTask answer is not DownloadTaskStartedResponse".into());
        };
        let content_length = started.content_length;
        let pieces = stat.as_ref().map_or(0, |t| t.piece_count);
        {
            let mut c = self.cluster.lock();
            c.admit_task(task_id, &self.config)
                .map_err(|e| e.to_string())?;
            let task = c
                .tasks
                .entry(task_id.to_string())
                .or_insert_with(|| TaskEntry::new(task_id, &download.url));
            task.content_length = content_length;
            if pieces > 0 {
                task.piece_count = pieces;
                task.piece_length = content_length.div_ceil(u64::from(pieces));
            }
            if !c.peers.contains_key(&first.peer_id) {
                let mut p = PeerEntry::new(&first.peer_id, &host.host.id, task_id);
                p.state = if started.is_finished {
                    PeerState::Succeeded
                } else {
                    PeerState::Running
                };
                c.add_peer(p, &self.config).map_err(|e| e.to_string())?;
            }
        }
        tracing::info!(task = %task_id, seed_host = %host.host.id, seed_peer = %first.peer_id, content_length, "remote seed host started the task");
        let me = self.clone();
        let (peer, task) = (first.peer_id.clone(), task_id.to_string());
        tokio::spawn(async move { me.follow(stream, &task, &peer).await });
        Ok(())
    }

    /// Records the remote seed's pieces as they land, and its end.
    async fn follow(
        &self,
        mut stream: tonic::Streaming<DownloadTaskResponse>,
        task_id: &str,
        peer_id: &str,
    ) {
        let end = loop {
            let m = tokio::select! {
                m = stream.message() => m,
                () = self.stop.cancelled() => return,
            };
            match m {
                Ok(Some(m)) => {
                    let Some(download_task_response::Response::DownloadPieceFinishedResponse(f)) =
                        m.response
                    else {
                        continue;
                    };
                    let Some(piece) = f.piece else { continue };
                    let mut c = self.cluster.lock();
                    let Some(p) = c.peers.get_mut(peer_id) else {
                        // Gone with its host: nothing left to record.
                        return;
                    };
                    if p.state == PeerState::Running {
                        p.state = PeerState::BackToSource;
                    }
                    p.piece(&piece, false);
                    if let Some(t) = c.tasks.get_mut(task_id)
                        && t.piece_count == 0
                        && t.content_length > 0
                    {
                        t.piece_length = t.piece_length.max(piece.length);
                        t.piece_count = piece_count(t.content_length, t.piece_length);
                    }
                }
                Ok(None) => break Ok(()),
                Err(s) => break Err(s.message().to_string()),
            }
        };
        let mut c = self.cluster.lock();
        let Some(p) = c.peers.get_mut(peer_id) else {
            return;
        };
        p.updated_at_ms = now_ms();
        match end {
            Ok(()) => p.state = PeerState::Succeeded,
            Err(why) => {
                tracing::warn!(task = %task_id, seed_peer = %peer_id, reason = %why, "the remote seed's download failed");
                p.state = PeerState::Failed;
            }
        }
    }
}

impl crate::preheat::SeedFanout for Scheduler {
    /// `all_seed_peers`: `DownloadTask` on every live remote seed host at
    /// once, each followed to the end of its stream (this host's own copy
    /// is the job's local download).
    fn preheat(
        &self,
        download: common::Download,
    ) -> futures_util::future::BoxFuture<'static, Vec<crate::preheat::HostResult>> {
        let hosts: Vec<HostEntry> = self
            .cluster
            .lock()
            .hosts
            .values()
            .filter(|h| h.is_seed() && !h.local)
            .cloned()
            .collect();
        let channels: Vec<_> = hosts.iter().map(|h| self.seeds.channel(&h.host)).collect();
        let stop = self.stop.clone();
        Box::pin(async move {
            let runs = hosts.into_iter().zip(channels).map(|(host, channel)| {
                let download = seed_download(&download);
                let stop = stop.clone();
                async move {
                    let run = async {
                        let mut client = DfdaemonUploadClient::new(channel?)
                            .max_decoding_message_size(usize::MAX);
                        let mut stream = client
                            .download_task(DownloadTaskRequest {
                                download: Some(download),
                            })
                            .await
                            .map_err(|s| format!("DownloadTask: {}", s.message()))?
                            .into_inner();
                        while stream
                            .message()
                            .await
                            .map_err(|s| format!("DownloadTask: {}", s.message()))?
                            .is_some()
                        {}
                        Ok::<(), String>(())
                    };
                    let error = tokio::select! {
                        r = run => r.err(),
                        () = stop.cancelled() => Some("the scheduler stopped".to_owned()),
                    };
                    if let Some(e) = &error {
                        tracing::warn!(seed_host = %host.host.id, error = %e, "preheat on a seed host failed");
                    }
                    crate::preheat::HostResult {
                        hostname: host.host.hostname.clone(),
                        ip: host.host.ip.clone(),
                        error,
                    }
                }
            });
            futures_util::future::join_all(runs).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(hosts: &[&str]) -> Cluster {
        let config: crate::config::Config = toml::from_str("[seed_peer]\n[scheduler]\n").unwrap();
        let config = config.scheduler.unwrap();
        let mut c = Cluster::default();
        for id in hosts {
            let host = common::Host {
                id: id.to_string(),
                r#type: 1,
                ip: "127.0.0.1".into(),
                ..Default::default()
            };
            c.announce(host, std::time::Duration::from_secs(60), false, &config)
                .unwrap();
        }
        let normal = common::Host {
            id: "normal".into(),
            ip: "127.0.0.1".into(),
            ..Default::default()
        };
        c.announce(normal, std::time::Duration::from_secs(60), false, &config)
            .unwrap();
        c
    }

    fn first(c: &Cluster, task: &str) -> String {
        c.seed_order(task, true)[0].host.id.clone()
    }

    #[test]
    fn every_scheduler_picks_the_same_seed_host_and_a_leaving_host_moves_only_its_tasks() {
        let a = cluster(&["seed-a", "seed-b", "seed-c"]);
        // Another scheduler, hosts announced in another order: same picks.
        let b = cluster(&["seed-c", "seed-a", "seed-b"]);
        let tasks: Vec<String> = (0..300).map(|i| format!("{i:064x}")).collect();
        let mut per_host: HashMap<String, usize> = HashMap::new();
        for t in &tasks {
            assert_eq!(first(&a, t), first(&b, t));
            assert_eq!(
                a.seed_order(t, true).len(),
                3,
                "normal hosts are never seeds"
            );
            *per_host.entry(first(&a, t)).or_default() += 1;
        }
        // Spread over all three (each gets 100 ± a wide margin).
        for (h, n) in &per_host {
            assert!((50..=150).contains(n), "{h}: {n} of 300");
        }
        let mut gone = cluster(&["seed-a", "seed-b", "seed-c"]);
        gone.remove_host("seed-b");
        for t in &tasks {
            let before = first(&a, t);
            let after = first(&gone, t);
            if before != "seed-b" {
                assert_eq!(before, after, "task {t} moved though its host stayed");
            } else {
                assert_ne!(after, "seed-b");
            }
        }
    }

    #[test]
    fn the_weight_is_pinned() {
        // sha256("t" 0x00 "h")[..8], computed outside the project: every
        // seedgate build must agree on it, or two seedgates of different
        // releases would each fetch a task from the origin.
        assert_eq!(weight("t", "h"), 0xe06f_be59_7a40_f532);
        assert_ne!(weight("t", "h"), weight("t", "g"));
    }
}
