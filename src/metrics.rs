//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text).
//!
//! Events (a breaker opening, a refusal, a retry, a watchdog firing, a
//! plugin call) count into process-wide families as they happen. States
//! (each breaker's position, downloads running, negative-cache entries) are
//! read live from the process at scrape time, never from a copy.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    /// `origin` or `plugin`.
    pub scope: String,
    /// The origin's or the plugin's name.
    pub name: String,
    /// The authority (`host:port`) for an origin; the plugin's name again.
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub scope: String,
    pub name: String,
    pub key: String,
    /// `open`, `half-open` or `closed`.
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub scope: String,
    pub name: String,
    /// `breaker` (open circuit) or `bulkhead` (limit of concurrent work).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    pub origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchdogLabels {
    pub origin: String,
    /// `task`, `first_byte` or `idle`.
    pub layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    pub plugin: String,
    /// `ok`, `error` (the plugin answered with an error), `trap`, `timeout`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `local` (every byte was stored) or `origin` (fetched for it).
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    /// `stored` (content recorded), `used` and `limit` (as the watermarks
    /// see them: the quota and `stored`, or the filesystem's size and use).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

/// The counters of one source of object reads.
#[derive(Debug, Clone)]
pub struct SourceCounters {
    pub requests: Counter,
    pub served: Counter,
}

/// Every metric seedgate exports.
pub struct Metrics {
    registry: Registry,
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    pub breaker_state: Family<BreakerLabels, Gauge>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub retries: Family<OriginLabels, Counter>,
    pub retries_denied: Family<OriginLabels, Counter>,
    pub watchdog_fired: Family<WatchdogLabels, Counter>,
    pub negative_hits: Counter,
    pub negative_entries: Gauge,
    pub downloads_running: Family<OriginLabels, Gauge>,
    pub plugin_calls: Family<PluginCallLabels, Counter>,
    pub plugin_call_seconds: Family<PluginLabels, Histogram>,
    pub jobs: Family<JobLabels, Gauge>,
    /// Requests and bytes served, for hits (`local`) and misses
    /// (`origin`): created once, so a request updates two counters without
    /// a label lookup.
    pub local: SourceCounters,
    pub origin: SourceCounters,
    pub origin_bytes: Family<OriginLabels, Counter>,
    pub hit_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub storage_bytes: Family<StorageLabels, Gauge>,
    /// The Dragonfly seed peer: pieces and bytes sent over the TCP piece
    /// protocol, its refusals by error code, connections open now.
    pub peer_pieces_served: Counter,
    pub peer_bytes_served: Counter,
    pub peer_piece_errors: Family<CodeLabels, Counter>,
    pub peer_connections: Gauge,
    pub peer_rpcs: Family<RpcLabels, Counter>,
    /// Per scheduler: 1 while it has accepted this host, else 0; announces
    /// by outcome; back-to-source reports by outcome.
    pub scheduler_registered: Family<SchedulerLabels, Gauge>,
    pub scheduler_announces: Family<SchedulerOutcomeLabels, Counter>,
    pub peer_announces: Family<SchedulerOutcomeLabels, Counter>,
    /// `DeleteTask` calls for tasks removed from the store, by outcome.
    pub scheduler_task_deletes: Family<SchedulerOutcomeLabels, Counter>,
    /// 1 while the disk (or the metadata store) is full, else 0; how often
    /// a write ran out of space; downloads refused before they started
    /// because the object would not fit; reopens of the metadata store.
    pub disk_full: Gauge,
    pub disk_full_events: Counter,
    pub storage_refused: Counter,
    pub metadata_reopens: Counter,
    /// The scrubber: stored pieces re-checked against their digests, those
    /// that failed (dropped, fetched again on their next read), and passes
    /// over the whole store finished.
    pub scrub_pieces: Counter,
    pub scrub_corrupt: Counter,
    pub scrub_passes: Counter,
    /// The built-in scheduler: hosts by type and peers by state (read
    /// live at each scrape), answers sent by kind, policy calls by outcome
    /// (`ok`, `fallback`, `breaker_open`), peers sent back to source, and
    /// hosts that joined or left.
    pub cluster_hosts: Family<HostTypeLabels, Gauge>,
    pub cluster_peers: Family<JobLabels, Gauge>,
    pub scheduler_answers: Family<AnswerLabels, Counter>,
    pub scheduler_policy_calls: Family<PluginCallLabels, Counter>,
    pub scheduler_back_to_source: Counter,
    pub cluster_host_events: Family<HostEventLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostTypeLabels {
    /// `normal`, `super`, `strong`, `weak`.
    pub host_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    /// `normal_task`, `need_back_to_source`, `empty_task`,
    /// `metadata_only`, or `error`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostEventLabels {
    /// `joined`, `left` (DeleteHost), `expired` (no announce in time).
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// `not_found`, `invalid_argument`, `internal`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The gRPC method (`DownloadTask`, ...).
    pub method: String,
    /// The gRPC status code name (`Ok`, `NotFound`, ...).
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchedulerLabels {
    pub scheduler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchedulerOutcomeLabels {
    pub scheduler: String,
    /// `ok`, `error`, or `skipped` (a report not sent: the scheduler is
    /// not registered, or its queue is full).
    pub outcome: String,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("seedgate");
        let cluster_hosts = Family::default();
        registry.register(
            "cluster_hosts",
            "Hosts the built-in scheduler knows, by type",
            cluster_hosts.clone(),
        );
        let cluster_peers = Family::default();
        registry.register(
            "cluster_peers",
            "Peers the built-in scheduler knows, by state",
            cluster_peers.clone(),
        );
        let scheduler_answers = Family::default();
        registry.register(
            "scheduler_answers",
            "AnnouncePeer answers sent by the built-in scheduler, by kind",
            scheduler_answers.clone(),
        );
        let scheduler_policy_calls = Family::default();
        registry.register(
            "scheduler_policy_calls",
            "Scheduling-policy rankings, by policy and outcome (ok, fallback, breaker_open)",
            scheduler_policy_calls.clone(),
        );
        let scheduler_back_to_source = Counter::default();
        registry.register(
            "scheduler_back_to_source",
            "Peers the built-in scheduler sent back to source",
            scheduler_back_to_source.clone(),
        );
        let cluster_host_events = Family::default();
        registry.register(
            "cluster_host_events",
            "Hosts that joined or left the built-in scheduler's cluster",
            cluster_host_events.clone(),
        );
        let breaker_transitions = Family::default();
        registry.register(
            "breaker_transitions",
            "Circuit breaker state changes, by breaker and new state",
            breaker_transitions.clone(),
        );
        let breaker_state = Family::default();
        registry.register(
            "breaker_state",
            "Circuit breaker state now: 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        let refusals = Family::default();
        registry.register(
            "refusals",
            "Requests refused at once (503) by an open breaker or a full bulkhead",
            refusals.clone(),
        );
        let retries = Family::default();
        registry.register(
            "origin_retries",
            "Retries of transient or timed-out origin work",
            retries.clone(),
        );
        let retries_denied = Family::default();
        registry.register(
            "origin_retries_denied",
            "Retries not made because the origin's retry budget was spent",
            retries_denied.clone(),
        );
        let watchdog_fired = Family::default();
        registry.register(
            "watchdog_fired",
            "Watchdog timeouts, by origin and layer (task, first_byte, idle)",
            watchdog_fired.clone(),
        );
        let negative_hits = Counter::default();
        registry.register(
            "negative_cache_hits",
            "Requests answered 'not found' from the negative cache",
            negative_hits.clone(),
        );
        let negative_entries = Gauge::default();
        registry.register(
            "negative_cache_entries",
            "Objects remembered as missing now",
            negative_entries.clone(),
        );
        let downloads_running = Family::default();
        registry.register(
            "downloads_running",
            "Downloads in flight now, by origin",
            downloads_running.clone(),
        );
        let plugin_calls = Family::default();
        registry.register(
            "plugin_calls",
            "Plugin calls, by plugin and outcome (ok, error, trap, timeout)",
            plugin_calls.clone(),
        );
        let plugin_call_seconds = Family::<PluginLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~13 s.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
        });
        registry.register(
            "plugin_call_duration_seconds",
            "Duration of plugin calls (instantiation included)",
            plugin_call_seconds.clone(),
        );
        let jobs = Family::default();
        registry.register(
            "preheat_jobs",
            "Preheat jobs known now, by state",
            jobs.clone(),
        );
        let object_requests = Family::<SourceLabels, Counter>::default();
        registry.register(
            "object_requests",
            "Object GETs answered, by source: local (a hit) or origin (a miss)",
            object_requests.clone(),
        );
        let bytes_served = Family::<SourceLabels, Counter>::default();
        registry.register(
            "served_bytes",
            "Object bytes sent to clients, by source of the request",
            bytes_served.clone(),
        );
        let origin_bytes = Family::default();
        registry.register(
            "origin_bytes",
            "Piece bytes received from origins",
            origin_bytes.clone(),
        );
        let hit_ratio = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "hit_ratio",
            "Object GETs answered from local pieces, of all object GETs since start",
            hit_ratio.clone(),
        );
        let storage_bytes = Family::default();
        registry.register(
            "storage_bytes",
            "Content bytes stored, and the use and limit the watermarks apply to",
            storage_bytes.clone(),
        );
        let peer_pieces_served = Counter::default();
        registry.register(
            "peer_pieces_served",
            "Pieces sent to peers over Dragonfly's TCP piece protocol",
            peer_pieces_served.clone(),
        );
        let peer_bytes_served = Counter::default();
        registry.register(
            "peer_bytes_served",
            "Piece bytes sent to peers over Dragonfly's TCP piece protocol",
            peer_bytes_served.clone(),
        );
        let peer_piece_errors = Family::default();
        registry.register(
            "peer_piece_errors",
            "Piece requests answered with an error packet, by code",
            peer_piece_errors.clone(),
        );
        let peer_connections = Gauge::default();
        registry.register(
            "peer_connections",
            "Piece protocol connections open now",
            peer_connections.clone(),
        );
        let peer_rpcs = Family::default();
        registry.register(
            "peer_rpcs",
            "DfdaemonUpload calls by method and gRPC status",
            peer_rpcs.clone(),
        );
        let scheduler_registered = Family::default();
        registry.register(
            "scheduler_registered",
            "1 while the scheduler has accepted this host (AnnounceHost), else 0",
            scheduler_registered.clone(),
        );
        let scheduler_announces = Family::default();
        registry.register(
            "scheduler_announces",
            "AnnounceHost calls by scheduler and outcome",
            scheduler_announces.clone(),
        );
        let peer_announces = Family::default();
        registry.register(
            "peer_announces",
            "Downloads and stored tasks reported (AnnouncePeer) by scheduler and outcome",
            peer_announces.clone(),
        );
        let scheduler_task_deletes = Family::default();
        registry.register(
            "scheduler_task_deletes",
            "Tasks removed from the store told to their scheduler (DeleteTask), by outcome",
            scheduler_task_deletes.clone(),
        );
        let disk_full = Gauge::default();
        registry.register(
            "disk_full",
            "1 while the disk holding data_dir is full (a write failed with ENOSPC and space is not back), else 0",
            disk_full.clone(),
        );
        let disk_full_events = Counter::default();
        registry.register(
            "disk_full_events",
            "Writes (content or metadata) that failed for want of space",
            disk_full_events.clone(),
        );
        let storage_refused = Counter::default();
        registry.register(
            "storage_refused",
            "Downloads refused before they started (507): the object does not fit under the quota or in the free space",
            storage_refused.clone(),
        );
        let metadata_reopens = Counter::default();
        registry.register(
            "metadata_reopens",
            "Times the metadata store was reopened after it failed",
            metadata_reopens.clone(),
        );
        let scrub_pieces = Counter::default();
        registry.register(
            "scrub_pieces",
            "Stored pieces the scrubber read back and checked against their digest",
            scrub_pieces.clone(),
        );
        let scrub_corrupt = Counter::default();
        registry.register(
            "scrub_corrupt_pieces",
            "Stored pieces whose bytes no longer matched their digest (dropped, fetched again on their next read)",
            scrub_corrupt.clone(),
        );
        let scrub_passes = Counter::default();
        registry.register(
            "scrub_passes",
            "Passes of the scrubber over every stored piece that finished",
            scrub_passes.clone(),
        );
        let by_source = |source: &str| SourceCounters {
            requests: object_requests
                .get_or_create(&SourceLabels {
                    source: source.into(),
                })
                .clone(),
            served: bytes_served
                .get_or_create(&SourceLabels {
                    source: source.into(),
                })
                .clone(),
        };
        Self {
            local: by_source("local"),
            origin: by_source("origin"),
            origin_bytes,
            hit_ratio,
            storage_bytes,
            jobs,
            registry,
            breaker_transitions,
            breaker_state,
            refusals,
            retries,
            retries_denied,
            watchdog_fired,
            negative_hits,
            negative_entries,
            downloads_running,
            plugin_calls,
            plugin_call_seconds,
            peer_pieces_served,
            peer_bytes_served,
            peer_piece_errors,
            peer_connections,
            peer_rpcs,
            scheduler_registered,
            scheduler_announces,
            peer_announces,
            scheduler_task_deletes,
            disk_full,
            disk_full_events,
            storage_refused,
            metadata_reopens,
            scrub_pieces,
            scrub_corrupt,
            scrub_passes,
            cluster_hosts,
            cluster_peers,
            scheduler_answers,
            scheduler_policy_calls,
            scheduler_back_to_source,
            cluster_host_events,
        }
    }

    pub fn policy_call(&self, policy: &str, outcome: &str) {
        self.scheduler_policy_calls
            .get_or_create(&PluginCallLabels {
                plugin: policy.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn answered(&self, kind: &str) {
        self.scheduler_answers
            .get_or_create(&AnswerLabels { kind: kind.into() })
            .inc();
    }

    pub fn host_event(&self, event: &str) {
        self.cluster_host_events
            .get_or_create(&HostEventLabels {
                event: event.into(),
            })
            .inc();
    }

    /// The metrics in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn refused(&self, scope: &str, name: &str, reason: &str) {
        self.refusals
            .get_or_create(&RefusalLabels {
                scope: scope.into(),
                name: name.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn watchdog(&self, origin: &str, layer: &str) {
        self.watchdog_fired
            .get_or_create(&WatchdogLabels {
                origin: origin.into(),
                layer: layer.into(),
            })
            .inc();
    }

    pub fn plugin_call(&self, plugin: &str, outcome: &str, took: Duration) {
        self.plugin_calls
            .get_or_create(&PluginCallLabels {
                plugin: plugin.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.plugin_call_seconds
            .get_or_create(&PluginLabels {
                plugin: plugin.into(),
            })
            .observe(took.as_secs_f64());
    }
}

/// The media type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
