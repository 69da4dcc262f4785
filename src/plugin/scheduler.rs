//! Scheduling-policy plugins (`wit/scheduler.wit`): which parents a peer
//! downloads from and in what order it fetches pieces.
//!
//! A policy imports nothing from seedgate. Its WASI context grants nothing
//! and freezes what a guest's standard library could still reach: the wall
//! clock reads the epoch, the monotonic clock never moves, and "random"
//! bytes are a fixed pattern. Same question, same answer. Calls run under
//! the same epoch deadline and memory cap as origin plugins, and the host
//! checks every answer (indexes in range, no repeats, within the limit,
//! every missing piece exactly once), so a broken policy fails loudly
//! instead of steering a swarm wrong.

use std::collections::BTreeSet;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Store, StoreLimits};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::PluginHost;
use crate::error::{Error, ErrorKind, Result};

/// Generated bindings of the `scheduler-plugin` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "scheduler-plugin",
        exports: { default: async },
    });
}

pub use bindings::exports::seedgate::plugin::scheduling::{
    Host as SchedHost, HostType, Peer, PeerState, PieceAvailability,
};
use bindings::{SchedulerPlugin, SchedulerPluginPre};

/// The built-in policies, compiled by build.rs.
pub const BUILTIN_SCHEDULERS: &[(&str, &[u8])] = &[(
    "default",
    include_bytes!(env!("SEEDGATE_SCHEDULER_DEFAULT_WASM")),
)];

struct FrozenWallClock;

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

pub struct SchedState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for SchedState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A loaded scheduling policy.
pub struct SchedulerPolicy {
    pub name: String,
    pub digest: String,
    pre: SchedulerPluginPre<SchedState>,
    clocked: super::epoch::Clocked,
    memory_limit: usize,
    call_timeout: Duration,
}

impl std::fmt::Debug for SchedulerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerPolicy")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The linker scheduler policies are instantiated with: WASI only (frozen).
pub(super) fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<SchedState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Ok(linker)
}

impl PluginHost {
    /// Compiles and links a scheduling policy under the limits of `name`.
    pub fn load_scheduler(&self, name: &str, bytes: &[u8]) -> Result<SchedulerPolicy, String> {
        let digest = hex::encode(Sha256::digest(bytes));
        let component = self.compile(name, bytes, &digest)?;
        let pre = self.sched_linker.instantiate_pre(&component).map_err(|e| {
            format!("policy '{name}' imports what the host does not provide: {e:#}")
        })?;
        let pre = SchedulerPluginPre::new(pre).map_err(|e| {
            format!("policy '{name}' does not implement the scheduler-plugin world: {e:#}")
        })?;
        let limits = self.limits_for(name);
        Ok(SchedulerPolicy {
            name: name.to_string(),
            digest,
            pre,
            clocked: self.clocked.clone(),
            memory_limit: limits.memory_limit.as_u64() as usize,
            call_timeout: limits.call_timeout,
        })
    }

    /// The built-in policy called `name`.
    pub fn builtin_scheduler(&self, name: &str) -> Result<SchedulerPolicy, String> {
        let (_, bytes) = BUILTIN_SCHEDULERS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("no built-in scheduling policy '{name}'"))?;
        self.load_scheduler(name, bytes)
    }
}

impl SchedulerPolicy {
    async fn call<R: Send + 'static>(
        &self,
        what: &str,
        f: impl for<'a> FnOnce(
            &'a SchedulerPlugin,
            &'a mut Store<SchedState>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>,
        > + Send
        + 'static,
    ) -> Result<R> {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenWallClock)
            .monotonic_clock(FrozenMonotonicClock)
            .secure_random(wasmtime_wasi::random::Deterministic::new(vec![7; 32]))
            .insecure_random(wasmtime_wasi::random::Deterministic::new(vec![7; 32]))
            .insecure_random_seed(7)
            .build();
        let state = SchedState {
            wasi,
            table: ResourceTable::new(),
            limits: super::memory_cap(self.memory_limit),
        };
        let mut store = super::guarded_store(&self.clocked, state, self.call_timeout, None);
        store.limiter(|s| &mut s.limits);
        let pre = self.pre.clone();
        let run = async move {
            let instance = pre.instantiate_async(&mut store).await?;
            f(&instance, &mut store).await
        };
        let fail = |why: String| {
            Error::new(
                ErrorKind::PluginFailed,
                format!("scheduling policy '{}' {what}: {why}", self.name),
            )
        };
        match tokio::time::timeout(
            self.call_timeout + super::EPOCH_TICK * 2,
            super::on_plugin_runtime(run),
        )
        .await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(fail(format!(
                "trapped: {}",
                super::first_line(&e.root_cause().to_string())
            ))),
            Err(_) => Err(fail("exceeded its deadline".into())),
        }
    }

    /// Indexes into `candidates`, best first, at most `limit`; checked.
    pub async fn rank_parents(
        &self,
        child: &Peer,
        candidates: &[Peer],
        total_pieces: u32,
        limit: u32,
    ) -> Result<Vec<usize>> {
        let (child, cands) = (child.clone(), candidates.to_vec());
        let ranked = self
            .call("rank-parents", move |p, s| {
                Box::pin(async move {
                    p.seedgate_plugin_scheduling()
                        .call_rank_parents(s, &child, &cands, total_pieces, limit)
                        .await
                })
            })
            .await?;
        let mut seen = BTreeSet::new();
        for &i in &ranked {
            if i as usize >= candidates.len() || !seen.insert(i) {
                return Err(self.broken(format!(
                    "rank-parents answered index {i} for {} candidates (out of range or repeated)",
                    candidates.len()
                )));
            }
        }
        if ranked.len() > limit as usize {
            return Err(self.broken(format!(
                "rank-parents answered {} parents, over the limit of {limit}",
                ranked.len()
            )));
        }
        Ok(ranked.into_iter().map(|i| i as usize).collect())
    }

    /// The order to fetch `missing` in; checked to be a permutation of it.
    pub async fn order_pieces(&self, missing: &[PieceAvailability]) -> Result<Vec<u32>> {
        let input = missing.to_vec();
        let order = self
            .call("order-pieces", move |p, s| {
                Box::pin(async move {
                    p.seedgate_plugin_scheduling()
                        .call_order_pieces(s, &input)
                        .await
                })
            })
            .await?;
        let want: BTreeSet<u32> = missing.iter().map(|p| p.number).collect();
        let got: BTreeSet<u32> = order.iter().copied().collect();
        if got != want || order.len() != want.len() {
            return Err(self.broken(format!(
                "order-pieces answered {} pieces, not each of the {} missing exactly once",
                order.len(),
                want.len()
            )));
        }
        Ok(order)
    }

    fn broken(&self, why: String) -> Error {
        Error::new(
            ErrorKind::PluginFailed,
            format!("scheduling policy '{}': {why}", self.name),
        )
    }
}
