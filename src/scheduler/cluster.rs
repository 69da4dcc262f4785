//! What the scheduler knows, all of it in memory: hosts from
//! `AnnounceHost`, tasks and their peers from `AnnouncePeer`. Bounded by
//! `[scheduler] max_hosts`, `max_tasks` and `max_peers_per_task`; a host
//! that stops announcing is removed with its peers. A restart loses it all
//! and peers announce again (README, "Scheduler").
//!
//! Every view the API, the status page and `seedgate status` show is read
//! from here when asked, never from a periodic copy.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use dragonfly_api::common::v2 as common;
use serde::Serialize;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::config::SchedulerConfig;

/// Piece costs kept per peer, for the policy's "recent piece costs".
const RECENT_COSTS: usize = 16;

/// Where a peer is in its download (Dragonfly's peer FSM names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PeerState {
    Pending,
    ReceivedEmpty,
    ReceivedNormal,
    Running,
    BackToSource,
    Succeeded,
    Failed,
    /// Its stream ended without a terminal message.
    Leave,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::ReceivedEmpty => "ReceivedEmpty",
            Self::ReceivedNormal => "ReceivedNormal",
            Self::Running => "Running",
            Self::BackToSource => "BackToSource",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Leave => "Leave",
        }
    }

    pub const ALL: [PeerState; 8] = [
        Self::Pending,
        Self::ReceivedEmpty,
        Self::ReceivedNormal,
        Self::Running,
        Self::BackToSource,
        Self::Succeeded,
        Self::Failed,
        Self::Leave,
    ];
}

/// A host as announced.
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub host: common::Host,
    /// Removed when no announce came for this long.
    pub ttl: Duration,
    pub announced: Instant,
    pub joined_at_ms: u64,
    /// This seedgate's own seed peer.
    pub local: bool,
    /// Pieces its peers uploaded, and uploads that failed, as the children
    /// reported them (Dragonfly's `UploadCount`/`UploadFailedCount`, which
    /// the policy weighs).
    pub uploaded: u64,
    pub upload_failed: u64,
}

impl HostEntry {
    pub fn is_seed(&self) -> bool {
        self.host.r#type != 0
    }
}

/// One host's download of one task.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    pub id: String,
    pub host_id: String,
    pub task_id: String,
    pub state: PeerState,
    pub finished: BTreeSet<u32>,
    /// The most recent piece costs, oldest first (ms).
    pub costs: VecDeque<u64>,
    /// Bytes by where they came from: another peer, or the origin.
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    /// Pieces by the parent they came from.
    pub pieces_by_parent: BTreeMap<String, u32>,
    /// The parents of the last `NormalTaskResponse`.
    pub parents: Vec<String>,
    /// Parents it must not get again (Reschedule, failed pieces).
    pub blocked: HashSet<String>,
    /// Scheduling rounds answered with no usable parent, and Reschedules.
    pub rounds: u32,
    /// Why it was sent back to source, when it was.
    pub back_to_source: Option<String>,
    pub need_back_to_source: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl PeerEntry {
    pub fn new(id: &str, host_id: &str, task_id: &str) -> Self {
        let now = now_ms();
        Self {
            id: id.into(),
            host_id: host_id.into(),
            task_id: task_id.into(),
            state: PeerState::Pending,
            finished: BTreeSet::new(),
            costs: VecDeque::new(),
            bytes_from_peers: 0,
            bytes_from_source: 0,
            pieces_by_parent: BTreeMap::new(),
            parents: Vec::new(),
            blocked: HashSet::from([id.to_string()]),
            rounds: 0,
            back_to_source: None,
            need_back_to_source: false,
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    /// A piece it reports finished: `from_peer` unless from the origin.
    /// Whether it was new (a piece reported twice counts once).
    pub fn piece(&mut self, piece: &common::Piece, from_peer: bool) -> bool {
        if !self.finished.insert(piece.number) {
            return false;
        }
        if from_peer {
            self.bytes_from_peers += piece.length;
        } else {
            self.bytes_from_source += piece.length;
        }
        if let Some(parent) = piece.parent_id.as_ref().filter(|_| from_peer) {
            *self.pieces_by_parent.entry(parent.clone()).or_default() += 1;
        }
        let cost = piece.cost.as_ref().map_or(0, |c| {
            c.seconds.max(0) as u64 * 1000 + c.nanos.max(0) as u64 / 1_000_000
        });
        if self.costs.len() == RECENT_COSTS {
            self.costs.pop_front();
        }
        self.costs.push_back(cost);
        self.updated_at_ms = now_ms();
        true
    }

    /// Whether a download of it runs and may hand out pieces.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state,
            PeerState::ReceivedNormal
                | PeerState::Running
                | PeerState::BackToSource
                | PeerState::Succeeded
        )
    }
}

/// A task: what the seed learnt of it, and its peers.
#[derive(Debug, Clone)]
pub struct TaskEntry {
    pub id: String,
    pub url: String,
    pub content_length: u64,
    pub piece_length: u64,
    pub piece_count: u32,
    pub peers: BTreeSet<String>,
    /// This seedgate's own seed peer of the task, once it was started.
    pub seed_peer: Option<String>,
    /// The seed host that fetches it from the origin: this one or another
    /// seedgate's (`seeds`), once one started it.
    pub seed_host: Option<String>,
    pub created_at_ms: u64,
}

impl TaskEntry {
    /// A task whose layout is not known yet.
    pub fn new(id: &str, url: &str) -> Self {
        Self {
            id: id.into(),
            url: url.into(),
            content_length: 0,
            piece_length: 0,
            piece_count: 0,
            peers: Default::default(),
            seed_peer: None,
            seed_host: None,
            created_at_ms: now_ms(),
        }
    }
}

/// Hosts, tasks and peers.
#[derive(Debug, Default)]
pub struct Cluster {
    pub hosts: HashMap<String, HostEntry>,
    pub tasks: HashMap<String, TaskEntry>,
    pub peers: HashMap<String, PeerEntry>,
}

/// Why something could not be added.
#[derive(Debug)]
pub enum Full {
    Hosts(usize),
    Tasks(usize),
    Peers(usize),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Hosts(n) => write!(f, "the scheduler holds {n} hosts (scheduler.max_hosts)"),
            Full::Tasks(n) => write!(f, "the scheduler holds {n} tasks (scheduler.max_tasks)"),
            Full::Peers(n) => write!(f, "the task has {n} peers (scheduler.max_peers_per_task)"),
        }
    }
}

impl Cluster {
    /// Adds or refreshes a host. `Ok(true)` when it is new.
    pub fn announce(
        &mut self,
        host: common::Host,
        ttl: Duration,
        local: bool,
        config: &SchedulerConfig,
    ) -> Result<bool, Full> {
        let now = Instant::now();
        if let Some(h) = self.hosts.get_mut(&host.id) {
            h.host = host;
            h.ttl = ttl;
            h.announced = now;
            h.local |= local;
            return Ok(false);
        }
        if self.hosts.len() >= config.max_hosts {
            return Err(Full::Hosts(self.hosts.len()));
        }
        self.hosts.insert(
            host.id.clone(),
            HostEntry {
                host,
                ttl,
                announced: now,
                joined_at_ms: now_ms(),
                local,
                uploaded: 0,
                upload_failed: 0,
            },
        );
        Ok(true)
    }

    /// Removes a host and its peers; its entry, if it was known.
    pub fn remove_host(&mut self, id: &str) -> Option<HostEntry> {
        let host = self.hosts.remove(id)?;
        let peers: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.host_id == id)
            .map(|p| p.id.clone())
            .collect();
        for p in peers {
            self.remove_peer(&p);
        }
        Some(host)
    }

    /// Hosts whose announces stopped: removed, and returned.
    pub fn expire(&mut self, now: Instant) -> Vec<HostEntry> {
        let gone: Vec<String> = self
            .hosts
            .values()
            .filter(|h| !h.local && now.saturating_duration_since(h.announced) > h.ttl)
            .map(|h| h.host.id.clone())
            .collect();
        gone.iter().filter_map(|id| self.remove_host(id)).collect()
    }

    pub fn remove_peer(&mut self, id: &str) -> Option<PeerEntry> {
        let peer = self.peers.remove(id)?;
        if let Some(t) = self.tasks.get_mut(&peer.task_id) {
            t.peers.remove(id);
            if t.seed_peer.as_deref() == Some(id) {
                t.seed_peer = None;
            }
        }
        Some(peer)
    }

    /// Adds a peer (replacing one of the same id) to a known task.
    pub fn add_peer(&mut self, peer: PeerEntry, config: &SchedulerConfig) -> Result<(), Full> {
        let task = self
            .tasks
            .get_mut(&peer.task_id)
            .expect("the task is known");
        if !task.peers.contains(&peer.id) && task.peers.len() >= config.max_peers_per_task {
            return Err(Full::Peers(task.peers.len()));
        }
        task.peers.insert(peer.id.clone());
        self.peers.insert(peer.id.clone(), peer);
        Ok(())
    }

    /// Makes room for a task that is not known yet.
    pub fn admit_task(&self, id: &str, config: &SchedulerConfig) -> Result<(), Full> {
        // Tasks left with no peer are dropped by the sweep, once a second.
        if !self.tasks.contains_key(id) && self.tasks.len() >= config.max_tasks {
            return Err(Full::Tasks(self.tasks.len()));
        }
        Ok(())
    }

    /// Drops tasks with no peer left (their seed's copy stays in the
    /// engine, which a new register finds again). Run by the sweep.
    pub fn drop_idle_tasks(&mut self) {
        self.tasks.retain(|_, t| !t.peers.is_empty());
    }

    /// Children assigned to each host now: what the upload limits count.
    /// Counts one upload by the host of peer `parent`: a piece a child got
    /// from it, or (`failed`) one it could not.
    pub fn count_upload(&mut self, parent: &str, failed: bool) {
        let Some(host) = self.peers.get(parent).map(|p| p.host_id.clone()) else {
            return;
        };
        if let Some(h) = self.hosts.get_mut(&host) {
            if failed {
                h.upload_failed += 1;
            } else {
                h.uploaded += 1;
            }
        }
    }

    pub fn uploads_by_host(&self) -> HashMap<&str, u32> {
        let mut by_peer: HashMap<&str, u32> = HashMap::new();
        for p in self.peers.values() {
            if matches!(p.state, PeerState::ReceivedNormal | PeerState::Running) {
                for parent in &p.parents {
                    *by_peer.entry(parent.as_str()).or_default() += 1;
                }
            }
        }
        let mut by_host: HashMap<&str, u32> = HashMap::new();
        for (peer, n) in by_peer {
            if let Some(p) = self.peers.get(peer) {
                *by_host.entry(p.host_id.as_str()).or_default() += n;
            }
        }
        by_host
    }
}

/// A host as `GET /api/v1/cluster/hosts` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub id: String,
    pub hostname: String,
    pub ip: String,
    /// `normal`, `super`, `strong`, `weak` (seed types).
    pub r#type: &'static str,
    pub upload_port: i32,
    pub idc: Option<String>,
    pub location: Option<String>,
    pub peers: usize,
    /// Pieces its peers uploaded to children, and uploads that failed.
    pub uploaded_pieces: u64,
    pub upload_failed_pieces: u64,
    pub local: bool,
    pub joined_at_ms: u64,
    /// Time since its last announce, and until it is removed without one.
    pub last_announce_ms_ago: u64,
    /// `null` for this seedgate's own host, which never expires.
    pub expires_in_ms: Option<u64>,
}

/// A peer as the task view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub id: String,
    pub host_id: String,
    pub hostname: String,
    pub state: &'static str,
    pub finished_pieces: usize,
    pub parents: Vec<String>,
    pub pieces_by_parent: BTreeMap<String, u32>,
    /// Bytes by traffic type: `remote_peer` or `back_to_source`.
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_to_source_reason: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// A task as `GET /api/v1/cluster/tasks` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub url: String,
    pub content_length: u64,
    pub piece_count: u32,
    pub peers_by_state: BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerView>>,
    pub created_at_ms: u64,
}

pub fn host_type_name(t: u32) -> &'static str {
    match t {
        0 => "normal",
        1 => "super",
        2 => "strong",
        3 => "weak",
        _ => "unknown",
    }
}

impl Cluster {
    pub fn host_views(&self) -> Vec<HostView> {
        let now = Instant::now();
        let mut peers: HashMap<&str, usize> = HashMap::new();
        for p in self.peers.values() {
            *peers.entry(p.host_id.as_str()).or_default() += 1;
        }
        let mut v: Vec<HostView> = self
            .hosts
            .values()
            .map(|h| {
                let ago = now.saturating_duration_since(h.announced);
                let network = h.host.network.as_ref();
                HostView {
                    id: h.host.id.clone(),
                    hostname: h.host.hostname.clone(),
                    ip: h.host.ip.clone(),
                    r#type: host_type_name(h.host.r#type),
                    upload_port: h.host.port,
                    idc: network.and_then(|n| n.idc.clone()),
                    location: network.and_then(|n| n.location.clone()),
                    peers: peers.get(h.host.id.as_str()).copied().unwrap_or(0),
                    uploaded_pieces: h.uploaded,
                    upload_failed_pieces: h.upload_failed,
                    local: h.local,
                    joined_at_ms: h.joined_at_ms,
                    last_announce_ms_ago: ago.as_millis() as u64,
                    expires_in_ms: (!h.local).then(|| h.ttl.saturating_sub(ago).as_millis() as u64),
                }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn peer_view(&self, p: &PeerEntry) -> PeerView {
        PeerView {
            id: p.id.clone(),
            host_id: p.host_id.clone(),
            hostname: self
                .hosts
                .get(&p.host_id)
                .map(|h| h.host.hostname.clone())
                .unwrap_or_default(),
            state: p.state.as_str(),
            finished_pieces: p.finished.len(),
            parents: p.parents.clone(),
            pieces_by_parent: p.pieces_by_parent.clone(),
            bytes_from_peers: p.bytes_from_peers,
            bytes_from_source: p.bytes_from_source,
            back_to_source_reason: p.back_to_source.clone(),
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
        }
    }

    pub fn task_view(&self, t: &TaskEntry, with_peers: bool) -> TaskView {
        let peers: Vec<&PeerEntry> = t.peers.iter().filter_map(|p| self.peers.get(p)).collect();
        let mut by_state = BTreeMap::new();
        for p in &peers {
            *by_state.entry(p.state.as_str()).or_default() += 1;
        }
        TaskView {
            id: t.id.clone(),
            url: t.url.clone(),
            content_length: t.content_length,
            piece_count: t.piece_count,
            peers_by_state: by_state,
            seed_peer: t.seed_peer.clone(),
            seed_host: t.seed_host.clone(),
            peers: with_peers.then(|| peers.iter().map(|p| self.peer_view(p)).collect()),
            created_at_ms: t.created_at_ms,
        }
    }

    pub fn task_views(&self) -> Vec<TaskView> {
        let mut v: Vec<TaskView> = self
            .tasks
            .values()
            .map(|t| self.task_view(t, false))
            .collect();
        v.sort_by_key(|t| std::cmp::Reverse(t.created_at_ms));
        v
    }
}
