//! The loaded plugins by name, each in a slot that can be reloaded while it
//! is being called, with a bulkhead and call counters.
//!
//! A slot holds the current version behind a lock that is only held to
//! clone an `Arc`: a call runs on the version it started with, so swapping
//! in a new one never fails a call in flight. A new version that does not
//! load is refused with its reason and the old one stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::bindings::seedgate::plugin::types as wit;
use super::{BUILTINS, CallEnv, LogLimiter, Plugin, PluginHost};
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::METRICS;
use crate::resilience::breaker::{Breakers, Scope};

/// Where a plugin's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    Builtin(&'static [u8]),
    File(PathBuf),
}

/// Call counters of one plugin (all versions).
#[derive(Debug, Default)]
struct Stats {
    calls: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    micros: AtomicU64,
    reloads: AtomicU64,
    /// Durations (µs) of the last [`RECENT_CALLS`] calls, for percentiles.
    recent: parking_lot::Mutex<std::collections::VecDeque<u32>>,
}

/// Calls the percentiles of `/api/v1/plugins` are taken over.
const RECENT_CALLS: usize = 1024;

impl Stats {
    fn record(&self, micros: u64) {
        let mut recent = self.recent.lock();
        if recent.len() == RECENT_CALLS {
            recent.pop_front();
        }
        recent.push_back(micros.min(u32::MAX as u64) as u32);
    }

    /// p50 and p99 (µs) of the recent calls; 0 with none.
    fn percentiles(&self) -> (u64, u64) {
        let mut v: Vec<u32> = self.recent.lock().iter().copied().collect();
        if v.is_empty() {
            return (0, 0);
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as u64;
        (at(0.5), at(0.99))
    }
}

/// One plugin name and its current version.
pub struct PluginSlot {
    pub name: String,
    source: Source,
    current: RwLock<Arc<Plugin>>,
    permits: Arc<Semaphore>,
    max_calls: u32,
    /// Opens on repeated traps and deadline kills.
    pub breaker: Breakers,
    log: Arc<LogLimiter>,
    stats: Stats,
    /// (modified, length) of the file when last looked at.
    seen: Mutex<Option<(SystemTime, u64)>>,
    /// Why the last reload was refused, if it was.
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for PluginSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSlot")
            .field("name", &self.name)
            .field("digest", &self.current().info.digest)
            .finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub plugin: String,
    pub previous_digest: String,
    pub digest: String,
    /// False when the bytes were the same and nothing was swapped.
    pub changed: bool,
}

/// A plugin as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotSummary {
    pub name: String,
    pub world: &'static str,
    pub builtin: bool,
    pub path: Option<String>,
    pub digest: String,
    /// From the component's `version` custom section, if present.
    pub version: Option<String>,
    pub call_timeout_ms: u64,
    pub memory_limit: u64,
    pub max_concurrent_calls: u32,
    pub in_flight: u32,
    pub calls: u64,
    pub failures: u64,
    pub rejected: u64,
    pub mean_call_us: u64,
    /// Over the last 1024 calls.
    pub p50_call_us: u64,
    pub p99_call_us: u64,
    pub reloads: u64,
    pub log_lines_dropped: u64,
    pub last_reload_error: Option<String>,
    /// The plugin's own breaker (traps and deadline kills).
    pub breaker: crate::resilience::breaker::State,
}

fn file_state(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl PluginSlot {
    /// The version new calls run on.
    pub fn current(&self) -> Arc<Plugin> {
        self.current.read().clone()
    }

    /// Runs one call under the bulkhead and the plugin's breaker: refused
    /// at once when the plugin already runs `max_concurrent_calls` calls, or
    /// when it trapped or was killed repeatedly (until its next probe).
    async fn guarded<R>(
        &self,
        origin: &str,
        op: &'static str,
        call: impl AsyncFnOnce(Arc<Plugin>) -> Result<R>,
    ) -> Result<R> {
        let span = tracing::info_span!("plugin_call", plugin = %self.name, origin, op);
        tracing::Instrument::instrument(self.guarded_inner(origin, call), span).await
    }

    async fn guarded_inner<R>(
        &self,
        origin: &str,
        call: impl AsyncFnOnce(Arc<Plugin>) -> Result<R>,
    ) -> Result<R> {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            METRICS.refused("plugin", &self.name, "bulkhead");
            let mut e = Error::new(
                ErrorKind::Overloaded,
                format!(
                    "origin '{origin}': plugin '{}' already runs its limit of {} calls",
                    self.name, self.max_calls
                ),
            );
            e.retry_after = Some(Duration::from_secs(1));
            return Err(e);
        };
        let ticket = self.breaker.admit(&self.name).inspect_err(|_| {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        })?;
        let started = tokio::time::Instant::now();
        let r = call(self.current()).await;
        self.breaker.record(ticket, &r);
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) if e.kind == ErrorKind::PluginFailed => "trap",
            Err(e) if e.kind == ErrorKind::PluginTimeout => "timeout",
            Err(_) => "error",
        };
        METRICS.plugin_call(&self.name, outcome, started.elapsed());
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let micros = started.elapsed().as_micros() as u64;
        self.stats.micros.fetch_add(micros, Ordering::Relaxed);
        self.stats.record(micros);
        if r.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    pub async fn schemes(&self, env: &Arc<CallEnv>) -> Result<Vec<String>> {
        self.guarded(&env.origin, "schemes", async |p| p.schemes(env).await)
            .await
    }

    pub async fn stat(
        &self,
        env: &Arc<CallEnv>,
        ctx: wit::RequestContext,
    ) -> Result<wit::ObjectMeta> {
        self.guarded(&env.origin, "stat", async |p| p.stat(env, ctx).await)
            .await
    }

    pub async fn plan_read(
        &self,
        env: &Arc<CallEnv>,
        ctx: wit::RequestContext,
        meta: wit::ObjectMeta,
        range: Option<wit::ByteRange>,
    ) -> Result<Vec<wit::RequestPlan>> {
        self.guarded(&env.origin, "plan_read", async |p| {
            p.plan_read(env, ctx, meta, range).await
        })
        .await
    }

    pub async fn list_objects(
        &self,
        env: &Arc<CallEnv>,
        ctx: wit::RequestContext,
        prefix: String,
        page_token: Option<String>,
        max: u32,
    ) -> Result<wit::ListPage> {
        self.guarded(&env.origin, "list_objects", async |p| {
            p.list_objects(env, ctx, prefix, page_token, max).await
        })
        .await
    }

    /// Loads the plugin's bytes again (its file; a built-in's embedded
    /// bytes) and swaps the new version in if it loads and differs.
    pub fn reload(&self, host: &PluginHost) -> std::result::Result<ReloadOutcome, String> {
        let (bytes, builtin) = match &self.source {
            Source::Builtin(b) => (b.to_vec(), true),
            Source::File(path) => {
                *self.seen.lock() = file_state(path);
                let bytes = std::fs::read(path).map_err(|e| {
                    format!(
                        "plugin '{}': cannot read {}: {e}",
                        self.name,
                        path.display()
                    )
                })?;
                (bytes, false)
            }
        };
        let previous = self.current();
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        if digest == previous.info.digest {
            return Ok(ReloadOutcome {
                plugin: self.name.clone(),
                previous_digest: digest.clone(),
                digest,
                changed: false,
            });
        }
        match host.load(&self.name, &bytes, builtin, self.log.clone()) {
            Ok(plugin) => {
                *self.current.write() = Arc::new(plugin);
                *self.last_error.lock() = None;
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(plugin = %self.name, from = %&previous.info.digest[..16], to = %&digest[..16], "plugin reloaded");
                Ok(ReloadOutcome {
                    plugin: self.name.clone(),
                    previous_digest: previous.info.digest.clone(),
                    digest,
                    changed: true,
                })
            }
            Err(e) => {
                let e = format!(
                    "new version refused, still serving {}: {e}",
                    &previous.info.digest[..16]
                );
                tracing::warn!(plugin = %self.name, error = %e, "plugin reload refused");
                *self.last_error.lock() = Some(e.clone());
                Err(e)
            }
        }
    }

    pub fn summary(&self) -> SlotSummary {
        let p = self.current();
        let calls = self.stats.calls.load(Ordering::Relaxed);
        let (p50, p99) = self.stats.percentiles();
        SlotSummary {
            name: self.name.clone(),
            world: "origin-plugin",
            builtin: p.info.builtin,
            path: match &self.source {
                Source::File(path) => Some(path.display().to_string()),
                Source::Builtin(_) => None,
            },
            digest: p.info.digest.clone(),
            version: p.info.version.clone(),
            call_timeout_ms: p.call_timeout.as_millis() as u64,
            memory_limit: p.memory_limit as u64,
            max_concurrent_calls: self.max_calls,
            in_flight: self.max_calls - self.permits.available_permits() as u32,
            calls,
            failures: self.stats.failures.load(Ordering::Relaxed),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
            mean_call_us: self.stats.micros.load(Ordering::Relaxed) / calls.max(1),
            p50_call_us: p50,
            p99_call_us: p99,
            reloads: self.stats.reloads.load(Ordering::Relaxed),
            log_lines_dropped: self.log.dropped_total(),
            last_reload_error: self.last_error.lock().clone(),
            breaker: self
                .breaker
                .list()
                .first()
                .map_or(crate::resilience::breaker::State::Closed, |b| b.state),
        }
    }
}

/// Every loaded plugin, by name.
pub struct Registry {
    host: Arc<PluginHost>,
    dir: Option<PathBuf>,
    slots: BTreeMap<String, Arc<PluginSlot>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Loads the built-ins, then `NAME.wasm` files from `dir` (which replace
    /// built-ins of the same name). A plugin that does not load stops the
    /// start with its reason.
    pub fn load(host: Arc<PluginHost>, dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut sources: BTreeMap<String, Source> = BUILTINS
            .iter()
            .map(|(name, bytes)| (name.to_string(), Source::Builtin(bytes)))
            .collect();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| anyhow::anyhow!("plugins.dir {}: {e}", dir.display()))?;
            for entry in entries {
                let path = entry?.path();
                if path.extension().is_none_or(|e| e != "wasm") {
                    continue;
                }
                let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                sources.insert(name.to_string(), Source::File(path.clone()));
            }
        }
        let mut slots = BTreeMap::new();
        for (name, source) in sources {
            let log = host.log_limiter();
            let (bytes, builtin, seen) = match &source {
                Source::Builtin(b) => (b.to_vec(), true, None),
                Source::File(path) => (std::fs::read(path)?, false, file_state(path)),
            };
            let plugin = match host.load(&name, &bytes, builtin, log.clone()) {
                Ok(p) => p,
                // A scheduling policy in the same directory is not an
                // origin: `[scheduler] policy` loads it.
                Err(_) if !builtin && host.load_scheduler(&name, &bytes).is_ok() => {
                    tracing::info!(plugin = %name, "a scheduling policy, not an origin plugin: left to [scheduler] policy");
                    continue;
                }
                Err(e) => return Err(anyhow::Error::msg(e)),
            };
            if let Source::File(path) = &source {
                tracing::info!(plugin = %name, path = %path.display(), digest = %plugin.info.digest, "loaded custom plugin");
            }
            let limits = host.limits_for(&name);
            let breaker =
                Breakers::scoped(Scope::Plugin(name.clone()), host.breaker_config().clone());
            slots.insert(
                name.clone(),
                Arc::new(PluginSlot {
                    name,
                    source,
                    current: RwLock::new(Arc::new(plugin)),
                    permits: Arc::new(Semaphore::new(limits.max_concurrent_calls as usize)),
                    max_calls: limits.max_concurrent_calls,
                    breaker,
                    log,
                    stats: Stats::default(),
                    seen: Mutex::new(seen),
                    last_error: Mutex::new(None),
                }),
            );
        }
        Ok(Self {
            host,
            dir: dir.map(Path::to_owned),
            slots,
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.slots.keys()
    }

    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// Every plugin's breaker that has seen a call.
    pub fn export_breaker_states(&self) {
        for slot in self.slots.values() {
            slot.breaker.export_states();
        }
    }

    pub fn breakers(&self) -> Vec<crate::resilience::breaker::BreakerView> {
        self.slots.values().flat_map(|s| s.breaker.list()).collect()
    }

    pub fn summaries(&self) -> Vec<SlotSummary> {
        self.slots.values().map(|s| s.summary()).collect()
    }

    /// Reloads plugin `name`.
    pub fn reload(&self, name: &str) -> Result<ReloadOutcome> {
        let slot = self.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "no plugin named '{name}' (loaded: {})",
                    self.slots.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        slot.reload(&self.host)
            .map_err(|e| Error::new(ErrorKind::Invalid, e))
    }

    /// Reloads every file-backed plugin whose file changed since it was
    /// last read. Files of names no origin was started with are ignored
    /// (binding a new plugin name takes a restart).
    pub fn reload_changed(&self) {
        for slot in self.slots.values() {
            let Source::File(path) = &slot.source else {
                continue;
            };
            let now = file_state(path);
            if now.is_none() || *slot.seen.lock() == now {
                continue;
            }
            // Errors are logged and kept on the slot for the API.
            let _ = slot.reload(&self.host);
        }
    }

    /// Checks `plugins.dir` for replaced files every `interval`.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) {
        if interval.is_zero() || self.dir.is_none() {
            return;
        }
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                // Compiling is CPU work: keep it off the async workers.
                let r = registry.clone();
                let _ = tokio::task::spawn_blocking(move || r.reload_changed()).await;
            }
        });
    }
}
