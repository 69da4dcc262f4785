//! The WebAssembly plugin host (wasmtime 48).
//!
//! Each plugin is a component implementing `wit/origin.wit`'s
//! `origin-plugin` world, compiled once and pre-linked ([`InstancePre`]).
//! Every call gets a fresh instance in a fresh store (~10 µs with the
//! pooling allocator), so a trap or a leak never outlives its call, with:
//! - an epoch deadline (a ticker thread bumps the engine's epoch every
//!   [`EPOCH_TICK`] while a call runs, [`epoch`]) that bounds guest CPU —
//!   the guest yields to the tokio runtime at every tick, so even a
//!   spinning plugin never holds a worker thread — and a tokio timeout
//!   around the whole call, because epochs do not interrupt host calls;
//! - a memory cap (`StoreLimits`, growth beyond it traps);
//! - a WASI context that grants nothing: no files, sockets, environment,
//!   arguments or stdio. The guest reaches the world only through the
//!   `log`, `config`, `clock` and allowlisted, capped `http` imports.

mod cache;
pub mod check;
mod epoch;
mod imports;
mod registry;
pub mod scheduler;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::allowlist::AllowList;
use crate::config::{EffectiveLimits, PluginsConfig};
use crate::error::{Error, ErrorKind, Result};

pub use imports::LogLimiter;
pub use registry::{PluginSlot, Registry, ReloadOutcome, SlotSummary};

/// Generated bindings of the `origin-plugin` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "origin-plugin",
        imports: {
            "seedgate:plugin/http.send": async,
        },
        exports: { default: async },
    });
}

use bindings::seedgate::plugin::types as wit;
use bindings::{OriginPlugin, OriginPluginPre};

/// How often the epoch advances; a runaway guest is stopped within one tick
/// of its deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Instances the pooling allocator keeps slots for, across all plugins.
const POOL_INSTANCES: u32 = 256;

/// A store for one call that is interrupted at `timeout` from now.
///
/// A new store's deadline is 0: it is set here, before instantiating. Every
/// tick the guest yields to the runtime (so a spinning guest never holds a
/// worker thread) until its deadline, when it is interrupted. The deadline
/// is wall-clock time, not a tick count: a late ticker on a loaded machine
/// must not stretch it.
///
/// Time the guest spends waiting in host imports (`wait`: the `http`
/// import, waiting on an origin) does not count: the guest's own deadline
/// is `timeout` of its own running time, so a slow origin is never a
/// deadline kill of the plugin.
fn guarded_store<T>(
    clocked: &epoch::Clocked,
    state: T,
    timeout: Duration,
    wait: Option<Arc<CallTrace>>,
) -> Store<T> {
    let mut store = Store::new(&clocked.engine, state);
    let deadline = tokio::time::Instant::now() + timeout;
    // The epoch advances while this store lives (the callback is dropped
    // with it).
    let ticking = clocked.ticker.hold();
    store.epoch_deadline_callback(move |_| {
        let _ = &ticking;
        let waited = wait.as_ref().map_or(Duration::ZERO, |w| w.waited());
        Ok(if tokio::time::Instant::now() >= deadline + waited {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    store.set_epoch_deadline(1);
    store
}

/// What the host saw of one call's imports: how long the guest waited in
/// them and on what, and whether the origin's policy refused one.
///
/// Blame for a call that ran out of time follows this: a call killed at
/// its deadline while it spent the larger share of its time waiting on an
/// origin (through the `http` import) is the origin's timeout and counts
/// against the origin's breaker; only a guest that burned its own time is a
/// plugin deadline kill.
#[derive(Debug, Default)]
pub struct CallTrace {
    state: parking_lot::Mutex<WaitState>,
    /// The refusal of an `http` import by the origin's policy (a redirect
    /// off the base path or allowlist). A plugin can only pass that on as
    /// `invalid`; the host knows it was the origin leading astray.
    denied: parking_lot::Mutex<Option<String>>,
    /// The memory cap refused a growth during the call.
    grow_refused: std::sync::atomic::AtomicBool,
    /// The key of its config the plugin said is wrong (`config.misconfigured`).
    misconfigured: parking_lot::Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct WaitState {
    /// Waits that ended.
    total: Duration,
    /// The wait in progress: since when, on what URL.
    current: Option<(tokio::time::Instant, String)>,
}

impl CallTrace {
    /// Marks a wait on `url` until the returned guard drops (also when the
    /// call is abandoned mid-wait).
    pub fn begin(self: &Arc<Self>, url: &url::Url) -> WaitGuard {
        self.state.lock().current = Some((tokio::time::Instant::now(), url.to_string()));
        WaitGuard(self.clone())
    }

    /// Time waited so far, the wait in progress included.
    pub fn waited(&self) -> Duration {
        let s = self.state.lock();
        s.total
            + s.current
                .as_ref()
                .map_or(Duration::ZERO, |(t, _)| t.elapsed())
    }

    /// The URL being waited on now, if any.
    pub fn waiting_on(&self) -> Option<String> {
        self.state.lock().current.as_ref().map(|(_, u)| u.clone())
    }

    /// Records that the policy refused an import.
    pub fn deny(&self, why: &str) {
        self.denied.lock().get_or_insert_with(|| why.to_string());
    }

    /// The plugin said `key` of its config is wrong (the first one counts).
    pub fn misconfigured(&self, key: &str, reason: &str) {
        tracing::debug!(key, reason, "a plugin reports its config wrong");
        self.misconfigured
            .lock()
            .get_or_insert_with(|| key.to_string());
    }

    /// The plugin's error, with the blame the host saw: an `invalid` after
    /// a refused import is the origin's policy refusal (502), not a bad
    /// request.
    ///
    /// A timeout the plugin reports after waiting (nearly) its whole
    /// deadline on the origin is not retried: the client would wait that
    /// deadline once per attempt.
    fn blame(&self, mut e: Error, plugin: &str, deadline: Duration) -> Error {
        if e.kind == ErrorKind::Invalid
            && let Some(key) = self.misconfigured.lock().take()
        {
            // Not the client's request: the operator's config of the plugin.
            e.blame = crate::error::Blame::Plugin;
            e.message = format!(
                "plugin '{plugin}' is misconfigured (config '{key}'): {}",
                e.message
            );
            return e;
        }
        if e.kind == ErrorKind::Invalid && self.denied.lock().take().is_some() {
            // The plugin's own words (they name the refusal); the host's
            // blame.
            e.kind = ErrorKind::PolicyDenied;
            e.blame = crate::error::Blame::Origin;
        }
        if e.kind == ErrorKind::Timeout && self.waited() * 10 >= deadline * 9 {
            e.final_attempt = true;
        }
        e
    }
}

/// Ends a [`CallTrace`] wait when dropped.
pub struct WaitGuard(Arc<CallTrace>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        if let Some((since, _)) = s.current.take() {
            s.total += since.elapsed();
        }
    }
}

/// Memory limits that trap when a guest grows past `bytes`.
fn memory_cap(bytes: usize) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(bytes)
        .trap_on_grow_failure(true)
        .build()
}

/// [`memory_cap`] that records on the call's trace when it refused a
/// growth, so the trap is told as the memory cap by a typed cause, not by
/// matching wasmtime's message.
struct MemoryCap {
    limits: StoreLimits,
    trace: Arc<CallTrace>,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let r = self.limits.memory_growing(current, desired, maximum);
        if !matches!(r, Ok(true)) {
            self.trace
                .grow_refused
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Threads of the runtime plugin calls run on.
const PLUGIN_THREADS: usize = 2;

/// Guest code runs on its own small runtime, never on the gateway's: a
/// guest burning its whole deadline only slows other plugin calls, while
/// requests that need no plugin (hits, range reads) keep their latency.
fn plugin_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PLUGIN_THREADS)
            .thread_name("seedgate-plugin")
            .enable_all()
            .build()
            .expect("the plugin runtime starts")
    })
}

/// Runs `fut` on the plugin runtime. Dropping the returned future (a
/// timeout) aborts it there, dropping the guest's store.
async fn on_plugin_runtime<R: Send + 'static>(
    fut: impl Future<Output = wasmtime::Result<R>> + Send + 'static,
) -> wasmtime::Result<R> {
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(plugin_runtime().spawn(fut));
    match (&mut task.0).await {
        Ok(r) => r,
        Err(e) => Err(wasmtime::Error::msg(format!("plugin task ended: {e}"))),
    }
}

/// The built-in plugins, compiled by build.rs.
pub const BUILTINS: &[(&str, &[u8])] = &[
    ("http", include_bytes!(env!("SEEDGATE_PLUGIN_HTTP_WASM"))),
    ("s3", include_bytes!(env!("SEEDGATE_PLUGIN_S3_WASM"))),
    (
        "gitlab-lfs",
        include_bytes!(env!("SEEDGATE_PLUGIN_GITLAB_LFS_WASM")),
    ),
    ("oci", include_bytes!(env!("SEEDGATE_PLUGIN_OCI_WASM"))),
];

/// Per-call state of a store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryCap,
    env: Arc<CallEnv>,
    plugin: Arc<PluginInfo>,
    /// Time spent in the `http` import.
    wait: Arc<CallTrace>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What a call may use: set up once per origin, shared by its calls.
#[derive(Debug)]
pub struct CallEnv {
    /// The origin's name, for logs and errors.
    pub origin: String,
    /// The plugin's own config table, secrets resolved.
    pub config: BTreeMap<String, String>,
    /// Client for the `http` import; its resolver enforces `allow`.
    pub http: reqwest::Client,
    pub allow: Arc<AllowList>,
    pub http_timeout: Duration,
    pub http_body_limit: u64,
}

/// Identity and counters of a loaded plugin.
#[derive(Debug)]
pub struct PluginInfo {
    pub name: String,
    /// sha256 of the component bytes.
    pub digest: String,
    /// The component's `version` custom section, if it has one (what
    /// `wasm-tools metadata add --version X` writes; the built-ins carry
    /// their crate version).
    pub version: Option<String>,
    pub builtin: bool,
    /// Shared by every version of the plugin, so a reload does not reset it.
    pub log: Arc<LogLimiter>,
}

/// The text of a component's top-level `version` custom section (the
/// component metadata `wasm-tools metadata add --version` writes), if any.
/// Sections of nested modules and components are not the plugin's.
pub fn component_version(bytes: &[u8]) -> Option<String> {
    use wasmtime::wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) if depth > 0 => depth -= 1,
            Payload::CustomSection(c) if depth == 0 && c.name() == "version" => {
                let v = std::str::from_utf8(c.data()).ok()?.trim();
                return (!v.is_empty() && v.len() <= 128).then(|| v.to_string());
            }
            _ => {}
        }
    }
    None
}

/// A compiled, pre-linked plugin.
pub struct Plugin {
    pub info: Arc<PluginInfo>,
    pre: OriginPluginPre<HostState>,
    clocked: epoch::Clocked,
    pub memory_limit: usize,
    pub call_timeout: Duration,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The engine and linker shared by all plugins.
pub struct PluginHost {
    clocked: epoch::Clocked,
    linker: Linker<HostState>,
    sched_linker: Linker<scheduler::SchedState>,
    config: PluginsConfig,
    cache: Option<cache::ArtifactCache>,
}

impl PluginHost {
    /// Builds the engine (epochs, pooling, no component-model concurrency)
    /// and starts its epoch ticker. Compiled plugins are cached in
    /// `cache_dir` when one is given.
    pub fn new(config: PluginsConfig, cache_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(config.max_memory_limit().as_u64() as usize);
        // SEEDGATE_PLUGIN_ALLOCATOR=on-demand: instances allocated one by
        // one instead of from the pool, whose terabytes of reserved address
        // space valgrind refuses; for profiling with callgrind
        // (BENCHMARKS.md), not for serving.
        let strategy = match std::env::var("SEEDGATE_PLUGIN_ALLOCATOR").as_deref() {
            Ok("on-demand") => InstanceAllocationStrategy::OnDemand,
            _ => InstanceAllocationStrategy::Pooling(pool),
        };
        let mut wasm = wasmtime::Config::new();
        wasm.epoch_interruption(true)
            .wasm_component_model(true)
            .concurrency_support(false)
            .allocation_strategy(strategy);
        let engine = Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        OriginPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;

        let cache = match cache_dir {
            Some(dir) => Some(cache::ArtifactCache::open(dir, &engine)?),
            None => None,
        };
        Ok(Self {
            sched_linker: scheduler::linker(&engine)?,
            clocked: epoch::Clocked::start(engine)?,
            linker,
            config,
            cache,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.clocked.engine
    }

    /// The component in `bytes`, from the artifact cache when it holds it.
    fn compile(&self, name: &str, bytes: &[u8], digest: &str) -> Result<Component, String> {
        if wasmtime::wasmparser::Parser::is_core_wasm(bytes) {
            return Err(format!(
                "plugin '{name}' is a core WebAssembly module, not a component (build it for wasm32-wasip2, or wrap it with `wasm-tools component new`)"
            ));
        }
        if !wasmtime::wasmparser::Parser::is_component(bytes) {
            return Err(format!("plugin '{name}' is not a WebAssembly component"));
        }
        if let Some(cache) = &self.cache
            && let Some(component) = cache.get(self.engine(), digest)
        {
            return Ok(component);
        }
        let component = Component::new(self.engine(), bytes)
            .map_err(|e| format!("plugin '{name}' does not compile: {e:#}"))?;
        if let Some(cache) = &self.cache {
            cache.put(digest, &component);
        }
        Ok(component)
    }

    /// Compiles and links a component, checking that it is an origin
    /// plugin, under the limits configured for `name`.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        builtin: bool,
        log: Arc<LogLimiter>,
    ) -> Result<Plugin, String> {
        let digest = hex::encode(Sha256::digest(bytes));
        let component = self.compile(name, bytes, &digest)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!("plugin '{name}' imports what the host does not provide: {e:#}")
        })?;
        let pre = OriginPluginPre::new(pre).map_err(|e| {
            format!("plugin '{name}' does not implement the origin-plugin world: {e:#}")
        })?;
        let limits = self.limits_for(name);
        Ok(Plugin {
            info: Arc::new(PluginInfo {
                name: name.to_string(),
                digest,
                version: component_version(bytes),
                builtin,
                log,
            }),
            pre,
            clocked: self.clocked.clone(),
            memory_limit: limits.memory_limit.as_u64() as usize,
            call_timeout: limits.call_timeout,
        })
    }

    /// The limits configured for plugin `name`.
    /// Settings of each plugin's own circuit breaker.
    pub fn breaker_config(&self) -> &crate::config::BreakerConfig {
        &self.config.breaker
    }

    pub fn limits_for(&self, name: &str) -> EffectiveLimits {
        self.config.limits_for(name)
    }

    /// A new log budget for a plugin.
    pub fn log_limiter(&self) -> Arc<LogLimiter> {
        Arc::new(LogLimiter::new(self.config.log_lines_per_second))
    }
}

impl Plugin {
    /// Runs `f` against a fresh instance under the call's deadline and
    /// memory cap, mapping traps and timeouts onto [`ErrorKind`]s.
    async fn call<R, F>(
        &self,
        env: &Arc<CallEnv>,
        what: &str,
        trace: &Arc<CallTrace>,
        f: F,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(
                &'a OriginPlugin,
                &'a mut Store<HostState>,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>,
            > + Send
            + 'static,
    {
        let state = HostState {
            // Grants nothing: no preopens, env, args, sockets; stdio closed.
            wasi: WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
            limits: MemoryCap {
                limits: memory_cap(self.memory_limit),
                trace: trace.clone(),
            },
            env: env.clone(),
            plugin: self.info.clone(),
            wait: trace.clone(),
        };
        let wait = trace.clone();
        let mut store = guarded_store(&self.clocked, state, self.call_timeout, Some(wait.clone()));
        store.limiter(|s| &mut s.limits);

        let pre = self.pre.clone();
        let run = async move {
            let instance = pre.instantiate_async(&mut store).await?;
            f(&instance, &mut store).await
        };
        // Epochs do not interrupt host calls (http), so bound the whole
        // call: a client waits no longer than the deadline, whoever is slow.
        let grace = EPOCH_TICK * 2;
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(self.call_timeout + grace, on_plugin_runtime(run)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self.trap_error(what, &env.origin, &wait, e)),
            Err(_) => Err(self.deadline_error(what, &env.origin, &wait, started.elapsed())),
        }
    }

    /// The error of a call stopped at its wall-clock deadline: the origin's
    /// timeout when the guest spent most of the call waiting on it through
    /// the `http` import (not the plugin's fault), else the plugin's.
    fn deadline_error(
        &self,
        what: &str,
        origin: &str,
        wait: &CallTrace,
        elapsed: Duration,
    ) -> Error {
        let name = &self.info.name;
        let deadline = humantime::format_duration(self.call_timeout);
        let waited = wait.waited();
        if waited * 2 >= elapsed {
            let on = wait
                .waiting_on()
                .map_or_else(String::new, |u| format!(" on {u}"));
            crate::metrics::METRICS.watchdog(origin, "plugin_http");
            let mut e = Error::new(
                ErrorKind::Timeout,
                format!(
                    "origin '{origin}': no answer within the {deadline} deadline of plugin '{name}' {what} (it waited {}{on})",
                    humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
                ),
            );
            e.final_attempt = true;
            return e;
        }
        Error::new(
            ErrorKind::PluginTimeout,
            format!(
                "plugin '{name}' {what} for origin '{origin}' exceeded its {deadline} deadline"
            ),
        )
    }

    fn trap_error(&self, what: &str, origin: &str, trace: &CallTrace, e: wasmtime::Error) -> Error {
        let name = &self.info.name;
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Error::new(
                ErrorKind::PluginTimeout,
                format!(
                    "plugin '{name}' {what} for origin '{origin}' was stopped at its {} deadline",
                    humantime::format_duration(self.call_timeout)
                ),
            ),
            Some(Trap::AllocationTooLarge) => Error::new(
                ErrorKind::PluginFailed,
                format!(
                    "plugin '{name}' {what} for origin '{origin}' exceeded its {} B memory cap",
                    self.memory_limit
                ),
            ),
            _ => {
                let capped = trace
                    .grow_refused
                    .load(std::sync::atomic::Ordering::Relaxed);
                let kind = if capped {
                    format!("exceeded its {} B memory cap", self.memory_limit)
                } else {
                    "trapped".to_string()
                };
                // The outer context is "error while executing at wasm
                // backtrace:"; the root cause says what happened.
                let cause = e.root_cause().to_string();
                Error::new(
                    ErrorKind::PluginFailed,
                    format!(
                        "plugin '{name}' {what} for origin '{origin}' {kind}: {}",
                        first_line(&cause)
                    ),
                )
            }
        }
    }

    /// `stat`: the object's metadata.
    pub async fn stat(
        &self,
        env: &Arc<CallEnv>,
        ctx: wit::RequestContext,
    ) -> Result<wit::ObjectMeta> {
        let trace = Arc::new(CallTrace::default());
        let r = self
            .call(env, "stat", &trace, move |p, s| {
                Box::pin(async move { p.seedgate_plugin_origin().call_stat(s, &ctx).await })
            })
            .await?;
        r.map_err(|e| {
            trace.blame(
                origin_error(e, &self.info.name, &env.origin),
                &self.info.name,
                self.call_timeout,
            )
        })
    }

    /// `plan-read`: request plans yielding `range` (all when none).
    pub async fn plan_read(
        &self,
        env: &Arc<CallEnv>,
        ctx: wit::RequestContext,
        meta: wit::ObjectMeta,
        range: Option<wit::ByteRange>,
    ) -> Result<Vec<wit::RequestPlan>> {
        let trace = Arc::new(CallTrace::default());
        let r = self
            .call(env, "plan-read", &trace, move |p, s| {
                Box::pin(async move {
                    p.seedgate_plugin_origin()
                        .call_plan_read(s, &ctx, &meta, range)
                        .await
                })
            })
            .await?;
        r.map_err(|e| {
            trace.blame(
                origin_error(e, &self.info.name, &env.origin),
                &self.info.name,
                self.call_timeout,
            )
        })
    }

    /// `schemes`: the URL schemes the plugin serves.
    pub async fn schemes(&self, env: &Arc<CallEnv>) -> Result<Vec<String>> {
        self.call(env, "schemes", &Arc::default(), move |p, s| {
            Box::pin(async move { p.seedgate_plugin_origin().call_schemes(s).await })
        })
        .await
    }

    /// `list-objects`: one page of the objects under `prefix` (a URL).
    /// `ctx.url` is the origin's base URL.
    pub async fn list_objects(
        &self,
        env: &Arc<CallEnv>,
        ctx: wit::RequestContext,
        prefix: String,
        page_token: Option<String>,
        max: u32,
    ) -> Result<wit::ListPage> {
        let trace = Arc::new(CallTrace::default());
        let r = self
            .call(env, "list-objects", &trace, move |p, s| {
                Box::pin(async move {
                    p.seedgate_plugin_origin()
                        .call_list_objects(s, &ctx, &prefix, page_token.as_deref(), max)
                        .await
                })
            })
            .await?;
        r.map_err(|e| {
            trace.blame(
                origin_error(e, &self.info.name, &env.origin),
                &self.info.name,
                self.call_timeout,
            )
        })
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Maps the plugin's verdict onto the host's error kinds.
fn origin_error(e: wit::OriginError, plugin: &str, origin: &str) -> Error {
    let (kind, d) = match e {
        wit::OriginError::NotFound(d) => (ErrorKind::NotFound, d),
        wit::OriginError::Forbidden(d) => (ErrorKind::Forbidden, d),
        wit::OriginError::Transient(d) => (ErrorKind::Transient, d),
        wit::OriginError::Timeout(d) => (ErrorKind::Timeout, d),
        wit::OriginError::Invalid(d) => (ErrorKind::Invalid, d),
    };
    let mut message = d.message;
    message.truncate(512);
    // `invalid` is the client's request, unless the plugin said in the same
    // call that its config is wrong (`config.misconfigured`, seen by
    // [`CallTrace::blame`]).
    let blame = crate::error::Blame::of(kind);
    let message = if message.is_empty() {
        format!("origin '{origin}': plugin '{plugin}' gave no reason")
    } else {
        format!("origin '{origin}': {message}")
    };
    Error {
        kind,
        blame,
        message,
        upstream_status: d.upstream_status,
        retry_after: d.retry_after_ms.map(Duration::from_millis),
        final_attempt: false,
    }
}

/// Paths of the test components build.rs compiled, for the integration
/// tests (build-script env vars do not reach them directly). Not embedded.
#[doc(hidden)]
pub mod test_components {
    /// `plugins/example-artifact`: the SDK's example origin.
    pub const EXAMPLE_ARTIFACT: &str = env!("SEEDGATE_EXAMPLE_ARTIFACT_WASM");
    /// `plugins/test-hostile`: misbehaves on purpose.
    pub const HOSTILE: &str = env!("SEEDGATE_TEST_HOSTILE_WASM");
    /// `plugins/test-incomplete`: an origin interface missing functions.
    pub const INCOMPLETE: &str = env!("SEEDGATE_TEST_INCOMPLETE_WASM");
    /// `plugins/test-wrong-world`: a component of another world.
    pub const WRONG_WORLD: &str = env!("SEEDGATE_TEST_WRONG_WORLD_WASM");
    /// `plugins/test-hostile-policy`: a scheduling policy that answers
    /// garbage, traps or loops.
    pub const HOSTILE_POLICY: &str = env!("SEEDGATE_TEST_HOSTILE_POLICY_WASM");
}

#[cfg(test)]
mod version_tests {
    use super::component_version;

    /// A component holding only custom sections.
    fn component(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut wasm = b"\0asm\x0d\0\x01\0".to_vec();
        for (name, payload) in sections {
            let body = [&[name.len() as u8], name.as_bytes(), payload].concat();
            wasm.push(0);
            wasm.push(body.len() as u8);
            wasm.extend_from_slice(&body);
        }
        wasm
    }

    #[test]
    fn reads_the_top_level_version_section() {
        assert_eq!(
            component_version(&component(&[("producers-x", b"?"), ("version", b"1.4.2")])),
            Some("1.4.2".into())
        );
        assert_eq!(component_version(&component(&[("name", b"x")])), None);
        assert_eq!(component_version(&component(&[("version", b"")])), None);
        assert_eq!(component_version(b"not wasm"), None);
    }
}
