//! The seedgate configuration file (TOML).
//!
//! Every struct denies unknown keys, every default is a named function whose
//! doc comment says the value, and [`Config::validate`] reports *all*
//! problems at once, each with its key path. `config/seedgate.toml` documents
//! every key for operators.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use url::Url;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub download: DownloadConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub negative_cache: NegativeCacheConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub preheat: PreheatConfig,
    /// The Dragonfly seed peer; absent: off.
    #[serde(default)]
    pub seed_peer: Option<SeedPeerConfig>,
    /// The built-in Dragonfly scheduler; absent: off. Needs `[seed_peer]`.
    #[serde(default)]
    pub scheduler: Option<SchedulerConfig>,
    /// Named origins: `/o/NAME/KEY` reads `KEY` from origin `NAME`.
    #[serde(default)]
    pub origins: BTreeMap<String, OriginConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: the log format and trace export.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (default) or `json`: one JSON object per line with the
    /// fields of every span it is in (request id, task id, origin, peer
    /// id). `SEEDGATE_LOG_FORMAT` overrides it.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where to export traces over OTLP/gRPC (`http://collector:4317`);
    /// absent: no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The fraction of requests whose traces are exported (0 to 1; a
    /// child follows its parent's decision).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// "seedgate".
fn default_service_name() -> String {
    "seedgate".into()
}

/// 1: every trace.
fn default_sample_ratio() -> f64 {
    1.0
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            otlp_endpoint: None,
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
        }
    }
}

/// `[preheat]`: preheat jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreheatConfig {
    /// Objects of one job downloaded at once, unless the job says.
    #[serde(default = "default_preheat_concurrency")]
    pub concurrency: usize,
    /// The most a job may ask for.
    #[serde(default = "default_preheat_max_concurrency")]
    pub max_concurrency: usize,
    /// Jobs running at once; more wait, queued.
    #[serde(default = "default_preheat_max_running_jobs")]
    pub max_running_jobs: usize,
    /// Objects one job may hold (a prefix that lists more fails the job).
    #[serde(default = "default_preheat_max_items")]
    pub max_items: usize,
}

fn default_preheat_concurrency() -> usize {
    4
}

fn default_preheat_max_concurrency() -> usize {
    32
}

fn default_preheat_max_running_jobs() -> usize {
    4
}

fn default_preheat_max_items() -> usize {
    10_000
}

impl Default for PreheatConfig {
    fn default() -> Self {
        Self {
            concurrency: default_preheat_concurrency(),
            max_concurrency: default_preheat_max_concurrency(),
            max_running_jobs: default_preheat_max_running_jobs(),
            max_items: default_preheat_max_items(),
        }
    }
}

/// `[scheduler]`: Dragonfly's `scheduler.v2.Scheduler`, served by seedgate
/// itself: dfdaemon peers announce their hosts and downloads here, and
/// each is handed parents (this host's seed peer, and peers that already
/// hold pieces) ranked by the scheduling-policy plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// `scheduler.v2.Scheduler` and `grpc.health.v1` (gRPC). Dragonfly's
    /// port: 8002.
    #[serde(default = "default_scheduler_listen")]
    pub listen: SocketAddr,
    /// The scheduling policy: a built-in (`default`) or the name of a
    /// scheduler-world component in `plugins.dir`.
    #[serde(default = "default_scheduler_policy")]
    pub policy: String,
    /// Parents handed to a peer at once (Dragonfly's
    /// `candidateParentLimit`).
    #[serde(default = "default_candidate_parent_limit")]
    pub candidate_parent_limit: u32,
    /// Peers of a task looked at per scheduling round (Dragonfly's
    /// `filterParentLimit`).
    #[serde(default = "default_filter_parent_limit")]
    pub filter_parent_limit: usize,
    /// Rounds without a parent before a peer is told to go back to source
    /// (Dragonfly's `RetryBackToSourceLimit`).
    #[serde(default = "default_back_to_source_rounds")]
    pub back_to_source_rounds: u32,
    /// The wait between two rounds (±25 %).
    #[serde(default = "default_round_interval", with = "humantime_serde")]
    pub round_interval: Duration,
    /// Children one normal peer uploads to at once, and one seed host.
    #[serde(default = "default_peer_upload_limit")]
    pub peer_upload_limit: u32,
    #[serde(default = "default_seed_upload_limit")]
    pub seed_upload_limit: u32,
    /// A host that announces no `interval` is removed after this long
    /// without an announce; one that does, after twice its interval.
    #[serde(default = "default_host_ttl", with = "humantime_serde")]
    pub host_ttl: Duration,
    /// Bounds of what the scheduler holds in memory: announces past them
    /// are refused with `ResourceExhausted`.
    #[serde(default = "default_max_hosts")]
    pub max_hosts: usize,
    #[serde(default = "default_max_tasks")]
    pub max_tasks: usize,
    #[serde(default = "default_max_peers_per_task")]
    pub max_peers_per_task: usize,
    /// A seed host of another seedgate (or a Dragonfly seed peer) picked
    /// for a task must start it (`DfdaemonUpload.DownloadTask`) within
    /// this long; otherwise the next seed host in the task's hash order is
    /// tried.
    #[serde(default = "default_seed_trigger_timeout", with = "humantime_serde")]
    pub seed_trigger_timeout: Duration,
    /// Whether this seedgate's own seed peer is one of the cluster's seed
    /// hosts. `false`: the scheduler only schedules, and a task's seed is
    /// picked among the seed hosts that announce to it (Dragonfly seed
    /// peers, other seedgates), as when seedgate replaces the scheduler of
    /// a cluster whose seed peers stay.
    #[serde(default = "default_true")]
    pub local_seed: bool,
}

/// 30 seconds: the origin's stat, behind its own watchdog, comes first.
fn default_seed_trigger_timeout() -> Duration {
    Duration::from_secs(30)
}

/// 127.0.0.1:8002 (Dragonfly's scheduler port, on loopback).
fn default_scheduler_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8002))
}

/// `default`, the built-in policy.
fn default_scheduler_policy() -> String {
    "default".into()
}

/// 3, as Dragonfly's scheduler.
fn default_candidate_parent_limit() -> u32 {
    3
}

/// 15, as Dragonfly's scheduler.
fn default_filter_parent_limit() -> usize {
    15
}

/// 4, as Dragonfly's `RetryBackToSourceLimit`.
fn default_back_to_source_rounds() -> u32 {
    4
}

/// 500 ms, as Dragonfly's scheduler.
fn default_round_interval() -> Duration {
    Duration::from_millis(500)
}

/// 200, Dragonfly's `DefaultPeerConcurrentUploadLimit`.
fn default_peer_upload_limit() -> u32 {
    200
}

/// 2000, Dragonfly's `DefaultSeedPeerConcurrentUploadLimit`.
fn default_seed_upload_limit() -> u32 {
    2000
}

/// 10 minutes: twice dfdaemon's default announce interval.
fn default_host_ttl() -> Duration {
    Duration::from_secs(600)
}

/// 10,000 hosts.
fn default_max_hosts() -> usize {
    10_000
}

/// 100,000 tasks.
fn default_max_tasks() -> usize {
    100_000
}

/// 10,000 peers of one task.
fn default_max_peers_per_task() -> usize {
    10_000
}

/// `[seed_peer]`: seedgate as a Dragonfly v2 seed peer: the
/// `DfdaemonUpload` gRPC service, Dragonfly's TCP piece protocol, and the
/// announcer that registers this host with schedulers as a super seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPeerConfig {
    /// `DfdaemonUpload` and `grpc.health.v1` (gRPC). Dragonfly's port: 4000.
    #[serde(default = "default_upload_listen")]
    pub upload_listen: SocketAddr,
    /// Dragonfly's TCP piece protocol ("vortex"). Dragonfly's port: 4005.
    #[serde(default = "default_piece_listen")]
    pub piece_listen: SocketAddr,
    /// The address peers and schedulers reach this host at. Unset: the
    /// local address of the route to the first scheduler, else the upload
    /// listener's address when it is not a wildcard, else 127.0.0.1.
    #[serde(default)]
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Unset: the system's hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Told to schedulers, which prefer parents in the same IDC and
    /// location (`country|province|city|...`).
    #[serde(default)]
    pub idc: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    /// The scheduler cluster this seed peer belongs to.
    #[serde(default = "default_scheduler_cluster_id")]
    pub scheduler_cluster_id: u64,
    /// Schedulers to register with (`http://HOST:8002`). Each task is
    /// reported to one of them, picked by rendezvous hashing of its id.
    #[serde(default)]
    pub schedulers: Vec<String>,
    /// How often the host is announced again (Dragonfly's default).
    #[serde(default = "default_announce_interval", with = "humantime_serde")]
    pub announce_interval: Duration,
    /// After a failed announce, the wait before the next one starts here
    /// and doubles (with jitter) up to `reconnect_backoff_max`.
    #[serde(default = "default_reconnect_backoff_min", with = "humantime_serde")]
    pub reconnect_backoff_min: Duration,
    #[serde(default = "default_reconnect_backoff_max", with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    /// Each scheduler RPC (announce, delete) gives up after this long.
    #[serde(default = "default_scheduler_timeout", with = "humantime_serde")]
    pub scheduler_timeout: Duration,
    /// `SyncHost` sends the host's load this often.
    #[serde(default = "default_sync_host_interval", with = "humantime_serde")]
    pub sync_host_interval: Duration,
    /// `/readyz` answers 503 until at least one scheduler has accepted the
    /// host (when schedulers are configured).
    #[serde(default = "default_true")]
    pub ready_requires_scheduler: bool,
    /// Piece protocol connections served at once; one more is answered
    /// with an error packet and closed.
    #[serde(default = "default_max_piece_connections")]
    pub max_piece_connections: usize,
    /// Piece bytes sent to peers per second, over all connections (bursts
    /// of a tenth of a second above it). Unset: no limit.
    #[serde(default)]
    pub upload_rate_limit: Option<ByteSize>,
    /// A peer that takes no bytes for this long while a piece is sent to
    /// it is dropped (it would hold a connection slot and pin its task).
    #[serde(default = "default_piece_write_timeout", with = "humantime_serde")]
    pub piece_write_timeout: Duration,
}

/// 30 seconds without taking a byte.
fn default_piece_write_timeout() -> Duration {
    Duration::from_secs(30)
}

/// 1024 piece connections.
fn default_max_piece_connections() -> usize {
    1024
}

/// 0.0.0.0:4000, Dragonfly's upload port.
fn default_upload_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4000))
}

/// 0.0.0.0:4005, Dragonfly's TCP piece port.
fn default_piece_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4005))
}

/// Cluster 1, Dragonfly's default cluster.
fn default_scheduler_cluster_id() -> u64 {
    1
}

/// 5 minutes between host announcements.
fn default_announce_interval() -> Duration {
    Duration::from_secs(300)
}

/// 1 second after the first failed announce...
fn default_reconnect_backoff_min() -> Duration {
    Duration::from_secs(1)
}

/// ...doubling up to 1 minute.
fn default_reconnect_backoff_max() -> Duration {
    Duration::from_secs(60)
}

/// 10 seconds per scheduler call.
fn default_scheduler_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Host load every 5 seconds on `SyncHost`.
fn default_sync_host_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_true() -> bool {
    true
}

/// `[server]`: the HTTP gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A bearer token every API call must carry (`Authorization: Bearer
    /// TOKEN`), except object reads and health; `env:NAME` and `file:PATH`
    /// are resolved. Unset: no token is asked for.
    #[serde(default)]
    pub api_token: Option<String>,
    /// Object reads (`/o/`, `/fetch`) need the token too.
    #[serde(default)]
    pub token_for_reads: bool,
    /// A client must send its whole request head within this long after
    /// connecting (or after its previous request), or it is disconnected.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// The same API on a unix socket at this path, for local clients.
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// Whether error bodies of object reads (`/o/`, `/fetch`) may show the
    /// origin's URLs (`http://10.0.0.5/pub/x answered 404`). Unset: shown
    /// when `listen` is a loopback address, hidden (`<origin URL>`)
    /// otherwise, so clients beyond the host do not learn internal
    /// addresses. The reason stays either way; logs keep the URL.
    #[serde(default)]
    pub expose_origin_urls: Option<bool>,
    /// Threads that serve the TCP listener's connections, each with its
    /// own event loop, as nginx's workers are: an accepted connection goes
    /// to the thread serving the fewest and its requests are answered
    /// there, with no wake-ups between threads. Unset: one per core. 0:
    /// the main runtime's workers serve them.
    #[serde(default)]
    pub connection_threads: Option<usize>,
    /// How stored pieces of large objects leave for a client: see
    /// [`SendStored`].
    #[serde(default)]
    pub sendfile: SendStored,
}

/// `server.sendfile`: how a stored, checked piece is written to a client's
/// connection. Either way its bytes are never read into seedgate's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendStored {
    /// `sendfile(2)` to clients on other hosts; a copy from a mapping of
    /// the content file (`write(2)`) to clients on this host (a loopback
    /// address or the unix socket). With `sendfile` the kernel hands the
    /// page cache's pages to the socket, so a remote client's network card
    /// reads them and no core copies them; but a client on the same host
    /// then copies pages no core has touched (cold in the cache), which
    /// cost wrk twice the CPU per byte (BENCHMARKS.md). Copying on the
    /// server's core leaves the local client a warm copy, and costs the
    /// host less CPU in all.
    #[default]
    Auto,
    /// `sendfile(2)` to every client.
    Always,
    /// A copy from the mapping to every client (for clients on this host
    /// that `auto` cannot tell from remote ones, such as containers behind
    /// a bridge).
    Never,
}

impl SendStored {
    /// Whether stored bytes go to a client at `peer` (`None`: the unix
    /// socket) with `sendfile`.
    pub fn sendfile_to(self, peer: Option<std::net::IpAddr>) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => peer.is_some_and(|ip| !ip.to_canonical().is_loopback()),
        }
    }
}

/// 10 seconds to send a request head.
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

/// 64 KiB of request head.
fn default_max_header_bytes() -> ByteSize {
    ByteSize::kib(64)
}

impl ServerConfig {
    /// [`ServerConfig::expose_origin_urls`] with its default applied.
    pub fn exposes_origin_urls(&self) -> bool {
        self.expose_origin_urls
            .unwrap_or_else(|| self.listen.ip().is_loopback())
    }

    /// The API token with its secret resolved.
    pub fn resolved_api_token(&self) -> Option<String> {
        self.api_token
            .as_deref()
            .map(|t| resolve_secret(t).unwrap_or_default())
    }
}

/// 127.0.0.1:8080: loopback only until an operator opens it up.
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            api_token: None,
            token_for_reads: false,
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            unix_socket: None,
            expose_origin_urls: None,
            connection_threads: None,
            sendfile: SendStored::Auto,
        }
    }
}

/// `[storage]`: where pieces and records live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_metadata_cache")]
    pub metadata_cache: ByteSize,
    /// Space held for the metadata store in `data_dir/metadata.reserve`, a
    /// preallocated file that content never uses. When a write fails for
    /// want of space, half of it is released so the metadata store can
    /// still record (the deletes that free space included); at startup all
    /// of it is, so a restart on a full disk comes up. Downloads are
    /// admitted only if they fit in the free space without this room.
    #[serde(default = "default_metadata_reserve")]
    pub metadata_reserve: ByteSize,
    /// Bytes of content seedgate may keep. Unset: the watermarks apply to
    /// the whole filesystem holding `data_dir` (as Dragonfly's GC does).
    #[serde(default)]
    pub quota: Option<ByteSize>,
    /// Above this fraction of the quota, least-recently-used tasks that no
    /// reader or download holds are evicted ...
    #[serde(default = "default_high_watermark")]
    pub high_watermark: f64,
    /// ... until usage is at or below this fraction.
    #[serde(default = "default_low_watermark")]
    pub low_watermark: f64,
    /// A task not read for this long is evicted; `0s` keeps tasks forever.
    #[serde(default = "default_task_ttl", with = "humantime_serde")]
    pub task_ttl: Duration,
    /// How often the collector checks TTLs and watermarks (it also runs as
    /// soon as a stored piece crosses the high watermark).
    #[serde(default = "default_gc_interval", with = "humantime_serde")]
    pub gc_interval: Duration,
    /// Every stored piece is read back and checked against its digest at
    /// least this often (a read checks a piece only the first time after
    /// a start). `0s` turns the scrubber off.
    #[serde(default = "default_scrub_interval", with = "humantime_serde")]
    pub scrub_interval: Duration,
    /// Bytes per second the scrubber may read.
    #[serde(default = "default_scrub_rate")]
    pub scrub_rate: ByteSize,
    /// Stored tasks kept open, with their records and digests in memory,
    /// for hits; the least recently opened are closed past it (and read
    /// again from the metadata store on their next hit).
    #[serde(default = "default_open_files")]
    pub open_files: usize,
}

/// 4,096 stored tasks kept open for hits.
fn default_open_files() -> usize {
    4096
}

/// A day between scrubs of the whole store.
fn default_scrub_interval() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// 64 MiB/s of scrubbing: 5.4 TiB a day, a small share of a disk's reads.
fn default_scrub_rate() -> ByteSize {
    ByteSize::mib(64)
}

/// Dragonfly's `gc.policy.distHighThresholdPercent` default, 80 %.
fn default_high_watermark() -> f64 {
    0.8
}

/// Dragonfly's `gc.policy.distLowThresholdPercent` default, 60 %.
fn default_low_watermark() -> f64 {
    0.6
}

/// Dragonfly's `gc.policy.taskTTL` default, 6 hours.
fn default_task_ttl() -> Duration {
    Duration::from_secs(6 * 3600)
}

/// 30 seconds between collector runs.
fn default_gc_interval() -> Duration {
    Duration::from_secs(30)
}

/// `./data`, relative to the working directory.
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// 64 MiB held for the metadata store: sled's log segments are 512 KiB,
/// and recovering and recording a few thousand deletes needs a few MiB.
fn default_metadata_reserve() -> ByteSize {
    ByteSize::mib(64)
}

/// 64 MiB of page cache for the sled metadata store.
fn default_metadata_cache() -> ByteSize {
    ByteSize::mib(64)
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            metadata_cache: default_metadata_cache(),
            metadata_reserve: default_metadata_reserve(),
            quota: None,
            high_watermark: default_high_watermark(),
            low_watermark: default_low_watermark(),
            task_ttl: default_task_ttl(),
            gc_interval: default_gc_interval(),
            scrub_interval: default_scrub_interval(),
            scrub_rate: default_scrub_rate(),
            open_files: default_open_files(),
        }
    }
}

/// `[download]`: how the host fetches pieces from origins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Ranged piece requests one download keeps in flight when it is alone
    /// on its origin; with several downloads on one origin, each keeps its
    /// share (this / downloads running, at least one).
    #[serde(default = "default_piece_concurrency")]
    pub piece_concurrency: usize,
    /// Fixed piece length; unset uses Dragonfly's rule (length / 500, next
    /// power of two, 4–64 MiB). A fixed length becomes part of task ids.
    #[serde(default)]
    pub piece_length: Option<ByteSize>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// From sending a piece request to its response headers.
    #[serde(default = "default_first_byte_timeout", with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// A piece fetch that receives no byte for this long fails (progress
    /// watchdog of one request).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A task that makes no progress (no answer from its origin, no byte of
    /// any piece) for this long fails, and every waiter gets 504 at once.
    #[serde(default = "default_watchdog_timeout", with = "humantime_serde")]
    pub watchdog_timeout: Duration,
    /// A plan with an expiry (a presigned URL) is re-requested from the
    /// plugin this long before it expires.
    #[serde(default = "default_plan_refresh_margin", with = "humantime_serde")]
    pub plan_refresh_margin: Duration,
    /// Check each stored piece's crc32 the first time it is read after a
    /// start, before serving any of it; a mismatch drops the piece and
    /// fetches it again. The scrubber re-checks pieces later.
    #[serde(default = "default_verify_on_read")]
    pub verify_on_read: bool,
}

/// 10 seconds: a piece fetch never starts on a plan about to expire.
fn default_plan_refresh_margin() -> Duration {
    Duration::from_secs(10)
}

fn default_verify_on_read() -> bool {
    true
}

/// 4 pieces of one object in flight at once.
fn default_piece_concurrency() -> usize {
    4
}

/// 5 seconds to open a connection to an origin.
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// 10 seconds from a piece request to its response headers.
fn default_first_byte_timeout() -> Duration {
    Duration::from_secs(10)
}

/// 15 seconds without a byte fails a piece fetch.
fn default_idle_timeout() -> Duration {
    Duration::from_secs(15)
}

/// 30 seconds without progress fails a task.
fn default_watchdog_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            piece_concurrency: default_piece_concurrency(),
            piece_length: None,
            connect_timeout: default_connect_timeout(),
            first_byte_timeout: default_first_byte_timeout(),
            idle_timeout: default_idle_timeout(),
            watchdog_timeout: default_watchdog_timeout(),
            plan_refresh_margin: default_plan_refresh_margin(),
            verify_on_read: default_verify_on_read(),
        }
    }
}

/// `[retry]`: retries of transient and timed-out origin work.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per operation (a piece fetch, a stat), the first included.
    #[serde(default = "default_retry_attempts")]
    pub max_attempts: u32,
    /// The first backoff's cap; each retry doubles it, up to `max_delay`.
    /// The wait is random between 0 and the cap (full jitter).
    #[serde(default = "default_retry_base", with = "humantime_serde")]
    pub base_delay: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub max_delay: Duration,
    /// Retries may add at most this fraction to an origin's requests...
    #[serde(default = "default_retry_ratio")]
    pub budget_ratio: f64,
    /// ...plus this many per second, for origins with little traffic.
    #[serde(default = "default_retry_min")]
    pub budget_min_per_second: u32,
}

/// 4 attempts: 3 retries.
fn default_retry_attempts() -> u32 {
    4
}

/// 100 ms.
fn default_retry_base() -> Duration {
    Duration::from_millis(100)
}

/// 5 seconds.
fn default_retry_max() -> Duration {
    Duration::from_secs(5)
}

/// 20 %.
fn default_retry_ratio() -> f64 {
    0.2
}

/// 10 per second, linkerd's and Finagle's floor: enough that a burst right
/// after start (when the window has counted few requests yet) still gets
/// its retries.
fn default_retry_min() -> u32 {
    10
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_retry_attempts(),
            base_delay: default_retry_base(),
            max_delay: default_retry_max(),
            budget_ratio: default_retry_ratio(),
            budget_min_per_second: default_retry_min(),
        }
    }
}

/// `[breaker]`: circuit breakers per origin authority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures in a row that open a breaker; 0 turns breakers off.
    #[serde(default = "default_breaker_consecutive")]
    pub consecutive_failures: u32,
    /// A failure rate that opens a breaker once `min_requests` calls fell
    /// in the last `window`.
    #[serde(default = "default_breaker_rate")]
    pub failure_rate: f64,
    #[serde(default = "default_breaker_min")]
    pub min_requests: u32,
    #[serde(default = "default_breaker_window", with = "humantime_serde")]
    pub window: Duration,
    /// The first open interval; it doubles after each failed probe...
    #[serde(default = "default_breaker_open_base", with = "humantime_serde")]
    pub open_base: Duration,
    /// ...up to this.
    #[serde(default = "default_breaker_open_max", with = "humantime_serde")]
    pub open_max: Duration,
}

/// 10 in a row: an origin failing 10% of its answers at random (which
/// retries absorb) opens it about once in ten billion calls, while a dead
/// one opens it within a few requests.
fn default_breaker_consecutive() -> u32 {
    10
}
fn default_breaker_rate() -> f64 {
    0.5
}
fn default_breaker_min() -> u32 {
    20
}
fn default_breaker_window() -> Duration {
    Duration::from_secs(10)
}
fn default_breaker_open_base() -> Duration {
    Duration::from_secs(1)
}
fn default_breaker_open_max() -> Duration {
    Duration::from_secs(60)
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_breaker_consecutive(),
            failure_rate: default_breaker_rate(),
            min_requests: default_breaker_min(),
            window: default_breaker_window(),
            open_base: default_breaker_open_base(),
            open_max: default_breaker_open_max(),
        }
    }
}

/// `[negative_cache]`: how long "not found" is remembered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NegativeCacheConfig {
    /// How long a not-found answer is remembered; "0s" turns the cache off.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// The longest an origin's Retry-After may stretch an entry.
    #[serde(default = "default_negative_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Entries kept at most; when full, the ones closest to expiring go.
    #[serde(default = "default_negative_max_entries")]
    pub max_entries: usize,
}

/// 30 seconds, as DESIGN.md measured across Kraken, nginx and CDNs.
fn default_negative_ttl() -> Duration {
    Duration::from_secs(30)
}

/// 10 minutes.
fn default_negative_max_ttl() -> Duration {
    Duration::from_secs(600)
}

/// 100 000 entries (about 30 MB at most).
fn default_negative_max_entries() -> usize {
    100_000
}

impl Default for NegativeCacheConfig {
    fn default() -> Self {
        Self {
            ttl: default_negative_ttl(),
            max_ttl: default_negative_max_ttl(),
            max_entries: default_negative_max_entries(),
        }
    }
}

/// `[plugins]`: the WebAssembly host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// A directory of custom plugins: `NAME.wasm` is loaded as plugin `NAME`
    /// (a custom plugin named like a built-in one replaces it).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub http_timeout: Duration,
    #[serde(default = "default_http_body_limit")]
    pub http_body_limit: ByteSize,
    #[serde(default = "default_log_lines_per_second")]
    pub log_lines_per_second: u32,
    /// Calls one plugin may run at once; more are refused with 503 at once
    /// (a bulkhead, never a queue).
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: u32,
    /// Where compiled plugins are cached, keyed by the plugin's digest and
    /// the engine's settings. Unset: `<data_dir>/plugin-cache`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// How often `dir` is checked for replaced plugin files; "0s" turns
    /// the check off (the reload API still works).
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Per-plugin overrides, `[plugins.limits.NAME]`.
    #[serde(default)]
    pub limits: BTreeMap<String, PluginLimits>,
    /// `[plugins.breaker]`: each plugin's own circuit breaker, which counts
    /// its traps and deadline kills.
    #[serde(default = "default_plugin_breaker")]
    pub breaker: BreakerConfig,
}

/// A plugin's breaker opens after 5 traps or kills in a row (they rarely
/// pass by themselves) and stays open 5 s, doubling up to 5 minutes.
fn default_plugin_breaker() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 5,
        open_base: Duration::from_secs(5),
        open_max: Duration::from_secs(300),
        ..BreakerConfig::default()
    }
}

/// `[plugins.limits.NAME]`: limits of one plugin, overriding `[plugins]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    #[serde(default, with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
    pub memory_limit: Option<ByteSize>,
    pub max_concurrent_calls: Option<u32>,
    /// Hosts this plugin (its http calls and its plans) may reach at all,
    /// whatever an origin allows: both lists must admit a destination.
    pub allowed_hosts: Option<Vec<String>>,
}

/// The limits that apply to one plugin.
#[derive(Debug, Clone)]
pub struct EffectiveLimits {
    pub call_timeout: Duration,
    pub memory_limit: ByteSize,
    pub max_concurrent_calls: u32,
    pub allowed_hosts: Option<Vec<String>>,
}

impl PluginsConfig {
    /// `[plugins]` with `[plugins.limits.NAME]` applied.
    pub fn limits_for(&self, name: &str) -> EffectiveLimits {
        let o = self.limits.get(name).cloned().unwrap_or_default();
        EffectiveLimits {
            call_timeout: o.call_timeout.unwrap_or(self.call_timeout),
            memory_limit: o.memory_limit.unwrap_or(self.memory_limit),
            max_concurrent_calls: o.max_concurrent_calls.unwrap_or(self.max_concurrent_calls),
            allowed_hosts: o.allowed_hosts,
        }
    }

    /// The largest memory limit of any plugin (the pool's slot size).
    pub fn max_memory_limit(&self) -> ByteSize {
        self.limits
            .values()
            .filter_map(|l| l.memory_limit)
            .fold(self.memory_limit, |a, b| if b > a { b } else { a })
    }
}

/// 64 calls at once per plugin.
fn default_max_concurrent_calls() -> u32 {
    64
}

/// Check plugins.dir every 2 seconds.
fn default_reload_interval() -> Duration {
    Duration::from_secs(2)
}

/// 2 seconds for one plugin call, host http included.
fn default_call_timeout() -> Duration {
    Duration::from_secs(2)
}

/// 64 MiB of linear memory per plugin instance.
fn default_memory_limit() -> ByteSize {
    ByteSize::mib(64)
}

/// 10 seconds for one http request a plugin makes (capped by the call timeout).
fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}

/// 1 MiB of response body per plugin http request.
fn default_http_body_limit() -> ByteSize {
    ByteSize::mib(1)
}

/// 50 log lines per second per plugin; the rest are dropped and counted.
fn default_log_lines_per_second() -> u32 {
    50
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            call_timeout: default_call_timeout(),
            memory_limit: default_memory_limit(),
            http_timeout: default_http_timeout(),
            http_body_limit: default_http_body_limit(),
            log_lines_per_second: default_log_lines_per_second(),
            max_concurrent_calls: default_max_concurrent_calls(),
            cache_dir: None,
            reload_interval: default_reload_interval(),
            limits: BTreeMap::new(),
            breaker: default_plugin_breaker(),
        }
    }
}

/// `[origins.NAME]`: one named origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// The plugin serving it: a built-in (`http`) or a custom plugin's name.
    pub plugin: String,
    /// Object URLs are `base_url` + key.
    pub base_url: String,
    /// Hosts the plugin and its plans may reach besides `base_url`'s host:
    /// names (`cdn.example`, `*.example`) and addresses or networks
    /// (`10.0.0.0/8`). A name resolving to a private, loopback or link-local
    /// address is refused unless a network entry covers that address.
    /// An entry may carry a port (`storage.example:9000`, `[::1]:9000`):
    /// redirects are followed only to the origin's own authority under its
    /// base path or to an entry here, on the entry's port or, for a bare
    /// entry, the default port of the target's scheme.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Client request headers passed to the plugin (e.g. `authorization`).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Downloads from this origin running at once; a request that would
    /// start one more is refused with 503 and Retry-After (a bulkhead).
    #[serde(default = "default_max_downloads")]
    pub max_downloads: usize,
    /// Requests for piece bytes in flight to this origin at once; piece
    /// fetches beyond it wait for a free one (at most `max_downloads` ×
    /// `download.piece_concurrency` wait).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Objects may also be asked for by full URL (`GET /fetch?url=URL`)
    /// when the URL falls under `base_url`.
    #[serde(default)]
    pub allow_full_urls: bool,
    /// Name each OCI blob (`…/v2/NAME/blobs/sha256:HEX`) by its digest, as
    /// Dragonfly's registry mirror does, so a blob preheated here is the
    /// task a dfdaemon proxy asks for; its bytes are then checked against
    /// the digest before the task is complete. Default: true for the `oci`
    /// plugin, false otherwise.
    #[serde(default)]
    pub blob_digest_task_ids: Option<bool>,
    /// The plugin's own table. String values `env:NAME` are replaced by the
    /// environment variable `NAME` when the config is loaded.
    #[serde(default)]
    pub config: toml::Table,
}

/// 64 downloads from one origin at once.
fn default_max_downloads() -> usize {
    64
}

/// 32 piece requests to one origin at once.
fn default_max_connections() -> usize {
    32
}

/// A problem found in a config file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// Names of the plugins built into the binary.
pub const BUILTIN_PLUGINS: &[&str] = &["http", "s3", "gitlab-lfs", "oci"];

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every problem of the config, each with its key path.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: String, message: String| problems.push(Problem { key, message });
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            bad(
                "telemetry.sample_ratio".into(),
                format!(
                    "{} is not a fraction in [0, 1]",
                    self.telemetry.sample_ratio
                ),
            );
        }
        if let Some(ep) = &self.telemetry.otlp_endpoint
            && !matches!(Url::parse(ep), Ok(u) if matches!(u.scheme(), "http" | "https"))
        {
            bad(
                "telemetry.otlp_endpoint".into(),
                format!("'{ep}' is not an http:// or https:// URL"),
            );
        }
        if self.download.piece_concurrency == 0 {
            bad(
                "download.piece_concurrency".into(),
                "must be at least 1".into(),
            );
        }
        if let Some(len) = self.download.piece_length
            && let Err(e) = crate::piece::check_piece_length(len.as_u64())
        {
            bad("download.piece_length".into(), e);
        }
        let (high, low) = (self.storage.high_watermark, self.storage.low_watermark);
        if !(0.0 < high && high <= 1.0) {
            bad(
                "storage.high_watermark".into(),
                format!("{high} is not a fraction in (0, 1]"),
            );
        }
        if !(0.0 <= low && low < high) {
            bad(
                "storage.low_watermark".into(),
                format!("{low} must be at least 0 and below the high watermark {high}"),
            );
        }
        for (key, t) in [
            ("download.connect_timeout", self.download.connect_timeout),
            (
                "download.first_byte_timeout",
                self.download.first_byte_timeout,
            ),
            ("download.idle_timeout", self.download.idle_timeout),
            ("download.watchdog_timeout", self.download.watchdog_timeout),
        ] {
            if t.is_zero() {
                bad(key.into(), "must be more than zero".into());
            }
        }
        if self.storage.quota.is_some_and(|q| q.as_u64() == 0) {
            bad(
                "storage.quota".into(),
                "must be more than zero (leave it unset to use the filesystem's size)".into(),
            );
        }
        if !self.storage.scrub_interval.is_zero() && self.storage.scrub_rate.as_u64() < 1 << 20 {
            bad(
                "storage.scrub_rate".into(),
                format!(
                    "{} is below 1 MiB per second: a scrub of a large store would never end",
                    self.storage.scrub_rate
                ),
            );
        }
        if self.storage.open_files == 0 {
            bad("storage.open_files".into(), "must be at least 1".into());
        }
        if self.storage.gc_interval.is_zero() {
            bad(
                "storage.gc_interval".into(),
                "must be more than zero".into(),
            );
        }
        if self.plugins.call_timeout.is_zero() {
            bad(
                "plugins.call_timeout".into(),
                "must be more than zero".into(),
            );
        }
        let mut memory = vec![(
            "plugins.memory_limit".to_string(),
            self.plugins.memory_limit,
        )];
        let mut concurrency = vec![(
            "plugins.max_concurrent_calls".to_string(),
            self.plugins.max_concurrent_calls,
        )];
        for (name, l) in &self.plugins.limits {
            let key = |k: &str| format!("plugins.limits.{name}.{k}");
            memory.extend(l.memory_limit.map(|m| (key("memory_limit"), m)));
            concurrency.extend(
                l.max_concurrent_calls
                    .map(|c| (key("max_concurrent_calls"), c)),
            );
            if l.call_timeout.is_some_and(|t| t.is_zero()) {
                bad(key("call_timeout"), "must be more than zero".into());
            }
            for (i, h) in l.allowed_hosts.iter().flatten().enumerate() {
                if let Err(e) = crate::allowlist::Entry::parse(h) {
                    bad(format!("plugins.limits.{name}.allowed_hosts[{i}]"), e);
                }
            }
        }
        for (key, m) in memory {
            if m.as_u64() < ByteSize::mib(1).as_u64() {
                bad(key, "must be at least 1 MiB".into());
            } else if m.as_u64() > ByteSize::gib(4).as_u64() {
                bad(key, "must be at most 4 GiB (32-bit linear memory)".into());
            }
        }
        for (key, c) in concurrency {
            if c == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        if self.server.header_read_timeout.is_zero() {
            bad(
                "server.header_read_timeout".into(),
                "must be more than zero".into(),
            );
        }
        if self.server.max_header_bytes.as_u64() < 8192 {
            bad(
                "server.max_header_bytes".into(),
                "must be at least 8 KiB".into(),
            );
        }
        if let Some(token) = &self.server.api_token {
            match resolve_secret(token) {
                Err(e) => bad("server.api_token".into(), e),
                Ok(t) if t.len() < 16 => bad(
                    "server.api_token".into(),
                    "must be at least 16 characters".into(),
                ),
                Ok(_) => {}
            }
        } else if self.server.token_for_reads {
            bad(
                "server.token_for_reads".into(),
                "needs server.api_token".into(),
            );
        }
        if let Some(sp) = &self.seed_peer {
            for (key, t) in [
                ("seed_peer.announce_interval", sp.announce_interval),
                ("seed_peer.reconnect_backoff_min", sp.reconnect_backoff_min),
                ("seed_peer.reconnect_backoff_max", sp.reconnect_backoff_max),
                ("seed_peer.scheduler_timeout", sp.scheduler_timeout),
                ("seed_peer.sync_host_interval", sp.sync_host_interval),
                ("seed_peer.piece_write_timeout", sp.piece_write_timeout),
            ] {
                if t.is_zero() {
                    bad(key.into(), "must be more than zero".into());
                }
            }
            if sp
                .upload_rate_limit
                .is_some_and(|r| r.as_u64() < 1024 * 1024)
            {
                bad(
                    "seed_peer.upload_rate_limit".into(),
                    "must be at least 1 MiB (per second)".into(),
                );
            }
            if sp.max_piece_connections == 0 {
                bad(
                    "seed_peer.max_piece_connections".into(),
                    "must be at least 1".into(),
                );
            }
            if sp.reconnect_backoff_min > sp.reconnect_backoff_max {
                bad(
                    "seed_peer.reconnect_backoff_min".into(),
                    "is above seed_peer.reconnect_backoff_max".into(),
                );
            }
            if sp.upload_listen == sp.piece_listen && sp.upload_listen.port() != 0 {
                bad(
                    "seed_peer.piece_listen".into(),
                    format!("{} is also seed_peer.upload_listen", sp.piece_listen),
                );
            }
            for (i, u) in sp.schedulers.iter().enumerate() {
                let ok = Url::parse(u).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.port_or_known_default().is_some()
                });
                if !ok {
                    bad(
                        format!("seed_peer.schedulers[{i}]"),
                        format!("'{u}' is not an http(s)://HOST:PORT address"),
                    );
                }
            }
            if sp.hostname.as_deref().is_some_and(str::is_empty) {
                bad("seed_peer.hostname".into(), "must not be empty".into());
            }
        }
        if let Some(sc) = &self.scheduler {
            if self.seed_peer.is_none() {
                bad(
                    "scheduler".into(),
                    "needs [seed_peer]: the scheduler hands out this host's seed peer as the first parent".into(),
                );
            }
            for (key, v) in [
                (
                    "scheduler.candidate_parent_limit",
                    sc.candidate_parent_limit as usize,
                ),
                ("scheduler.filter_parent_limit", sc.filter_parent_limit),
                ("scheduler.peer_upload_limit", sc.peer_upload_limit as usize),
                ("scheduler.seed_upload_limit", sc.seed_upload_limit as usize),
                ("scheduler.max_hosts", sc.max_hosts),
                ("scheduler.max_tasks", sc.max_tasks),
                ("scheduler.max_peers_per_task", sc.max_peers_per_task),
            ] {
                if v == 0 {
                    bad(key.into(), "must be at least 1".into());
                }
            }
            if sc.candidate_parent_limit > 20 {
                bad(
                    "scheduler.candidate_parent_limit".into(),
                    "must be at most 20 (dfdaemon opens a connection to each)".into(),
                );
            }
            if sc.host_ttl.is_zero() {
                bad("scheduler.host_ttl".into(), "must be more than zero".into());
            }
            if sc.seed_trigger_timeout.is_zero() {
                bad(
                    "scheduler.seed_trigger_timeout".into(),
                    "must be more than zero".into(),
                );
            }
            if sc.policy.is_empty() {
                bad("scheduler.policy".into(), "must name a policy".into());
            }
            if let Some(sp) = &self.seed_peer
                && sc.listen.port() != 0
                && (sc.listen == sp.upload_listen || sc.listen == sp.piece_listen)
            {
                bad(
                    "scheduler.listen".into(),
                    format!("{} is also a seed_peer listener", sc.listen),
                );
            }
        }
        let p = &self.preheat;
        for (key, v) in [
            ("preheat.concurrency", p.concurrency),
            ("preheat.max_concurrency", p.max_concurrency),
            ("preheat.max_running_jobs", p.max_running_jobs),
            ("preheat.max_items", p.max_items),
        ] {
            if v == 0 {
                bad(key.into(), "must be at least 1".into());
            }
        }
        if p.concurrency > p.max_concurrency {
            bad(
                "preheat.concurrency".into(),
                format!(
                    "{} is above preheat.max_concurrency ({})",
                    p.concurrency, p.max_concurrency
                ),
            );
        }
        if self.retry.max_attempts == 0 {
            bad("retry.max_attempts".into(), "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.retry.budget_ratio) {
            bad(
                "retry.budget_ratio".into(),
                format!("{} must be between 0 and 1", self.retry.budget_ratio),
            );
        }
        for (name, origin) in &self.origins {
            let key = |k: &str| format!("origins.{name}.{k}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bad(
                    format!("origins.{name}"),
                    "origin names use letters, digits, '-' and '_'".into(),
                );
            }
            if origin.max_downloads == 0 {
                bad(key("max_downloads"), "must be at least 1".into());
            }
            if origin.max_connections == 0 {
                bad(key("max_connections"), "must be at least 1".into());
            }
            let custom_dir = self.plugins.dir.is_some();
            if !BUILTIN_PLUGINS.contains(&origin.plugin.as_str()) && !custom_dir {
                bad(
                    key("plugin"),
                    format!(
                        "unknown plugin '{}': built-ins are {:?}, and no plugins.dir is set for custom ones",
                        origin.plugin, BUILTIN_PLUGINS
                    ),
                );
            }
            match Url::parse(&origin.base_url) {
                Ok(url) if !matches!(url.scheme(), "http" | "https") && origin.plugin == "http" => {
                    bad(
                        key("base_url"),
                        format!("scheme '{}' is not http or https", url.scheme()),
                    );
                }
                Ok(url) if url.host_str().is_none() => bad(key("base_url"), "has no host".into()),
                Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                    bad(key("base_url"), "must not carry a query or fragment".into())
                }
                Ok(_) => {}
                Err(e) => bad(
                    key("base_url"),
                    format!("'{}' is not a URL: {e}", origin.base_url),
                ),
            }
            for (i, entry) in origin.allowed_hosts.iter().enumerate() {
                if let Err(e) = crate::allowlist::HostEntry::parse(entry) {
                    bad(format!("origins.{name}.allowed_hosts[{i}]"), e);
                }
            }
            for (i, h) in origin.forward_headers.iter().enumerate() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    bad(
                        format!("origins.{name}.forward_headers[{i}]"),
                        format!("'{h}' is not a header name"),
                    );
                }
            }
            for (k, v) in &origin.config {
                if let Some(Err(e)) = v.as_str().map(resolve_secret) {
                    bad(format!("origins.{name}.config.{k}"), e);
                }
            }
        }
        problems
    }
}

impl OriginConfig {
    /// The plugin's table as strings, with `env:NAME` and `file:PATH`
    /// values resolved (an unresolvable one becomes empty; `validate`
    /// reports it).
    pub fn resolved_plugin_config(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    toml::Value::String(s) => resolve_secret(s).unwrap_or_default(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect()
    }
}

/// A plugin config value: `env:NAME` is the environment variable `NAME`,
/// `file:PATH` the contents of the file `PATH` without a trailing newline,
/// anything else itself.
pub fn resolve_secret(value: &str) -> std::result::Result<String, String> {
    if let Some(var) = value.strip_prefix("env:") {
        return std::env::var(var).map_err(|_| format!("environment variable {var} is not set"));
    }
    if let Some(path) = value.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| format!("cannot read secret file {path}: {e}"));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/seedgate.toml");
        let config = Config::load(&path).unwrap();
        assert!(config.origins.contains_key("demo"));
    }

    /// `auto` sends with `sendfile` to other hosts only; a v4-mapped
    /// loopback address (a dual-stack listener) is this host too.
    #[test]
    fn sendfile_goes_to_other_hosts_unless_told() {
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        let auto = SendStored::default();
        assert_eq!(auto, SendStored::Auto);
        assert!(auto.sendfile_to(ip("10.1.2.3")));
        assert!(auto.sendfile_to(ip("2001:db8::1")));
        for local in ["127.0.0.1", "127.5.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(!auto.sendfile_to(ip(local)), "{local}");
        }
        assert!(!auto.sendfile_to(None), "the unix socket");
        assert!(SendStored::Always.sendfile_to(None));
        assert!(!SendStored::Never.sendfile_to(ip("10.1.2.3")));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            [download]
            piece_concurrency = 0
            [origins.a]
            plugin = "nope"
            base_url = "not a url"
            allowed_hosts = ["10.0.0.0/33"]
        "#;
        let err = Config::parse(text, Path::new("x.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected invalid, got {err}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "download.piece_concurrency",
                "origins.a.plugin",
                "origins.a.base_url",
                "origins.a.allowed_hosts[0]"
            ]
        );
    }

    #[test]
    fn plugin_limits_are_checked_and_applied() {
        let text = r#"
            [plugins]
            call_timeout = "3s"
            [plugins.limits.big]
            memory_limit = "256 MiB"
            max_concurrent_calls = 0
            allowed_hosts = ["*.ok.example", "bad/host"]
            [plugins.limits.small]
            call_timeout = "0s"
            [origins.a]
            plugin = "http"
            base_url = "http://a.example/"
            [origins.a.config]
            token = "file:/nonexistent/seedgate-secret"
        "#;
        let err = Config::parse(text, Path::new("x.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected invalid, got {err}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "plugins.limits.big.allowed_hosts[1]",
                "plugins.limits.small.call_timeout",
                "plugins.limits.big.max_concurrent_calls",
                "origins.a.config.token",
            ],
            "{problems:?}"
        );
        assert!(problems[3].message.contains("cannot read secret file"));

        let ok: Config = toml::from_str(
            "[plugins]\ncall_timeout = \"3s\"\n[plugins.limits.big]\nmemory_limit = \"256 MiB\"\n",
        )
        .unwrap();
        let big = ok.plugins.limits_for("big");
        assert_eq!(big.memory_limit, ByteSize::mib(256));
        assert_eq!(big.call_timeout, Duration::from_secs(3));
        assert_eq!(
            ok.plugins.limits_for("other").memory_limit,
            ByteSize::mib(64)
        );
        assert_eq!(ok.plugins.max_memory_limit(), ByteSize::mib(256));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\nlistne = 1\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }
}
