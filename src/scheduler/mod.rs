//! seedgate as a Dragonfly scheduler: `scheduler.v2.Scheduler` served by
//! seedgate itself, so `seedgate serve` plus `dfdaemon` on each host is a
//! whole P2P cluster with no Go control plane.
//!
//! - [`cluster`]: hosts, tasks and peers, in memory and bounded;
//! - [`placement`]: Dragonfly's parent filter, then the scheduling-policy
//!   plugin's ranking, guarded (deadline, memory cap, its own breaker, a
//!   built-in order when it fails);
//! - [`seeds`]: which seed host fetches a task from its origin when several
//!   seedgates form one cluster (rendezvous hashing of the task id), and
//!   how a remote one is started (`DfdaemonUpload.DownloadTask`);
//! - [`service`]: the gRPC service, message by message as a real dfdaemon
//!   1.5 speaks it.
//!
//! A normal peer registering for a task nobody has is handed this host's
//! own seed peer: the scheduler starts the task in the same engine the
//! gateway uses ([`crate::peer::upload::Upload::open`]) and answers as soon
//! as the task's length and piece layout are known. Later peers also get
//! the peers that already hold pieces.

pub mod cluster;
pub mod placement;
pub mod seeds;
pub mod service;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dragonfly_api::common::v2 as common;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::SchedulerConfig;
use crate::peer::host::HostProbe;
use crate::peer::upload::Upload;
use crate::plugin::PluginHost;
use crate::resilience::breaker::{Breakers, Scope};
use crate::task::TaskManager;
use cluster::Cluster;
use placement::Policy;

/// One async lock per task id: made when first asked for, dropped when
/// its last holder or waiter is done (or cancelled).
#[derive(Debug, Default)]
pub struct TaskGates(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl TaskGates {
    /// Runs `f` holding the lock of `task_id`.
    pub async fn with<T>(&self, task_id: &str, f: impl Future<Output = T>) -> T {
        /// Forgets the task's lock once nobody holds or waits for it, also
        /// when the caller is cancelled.
        struct Forget<'a> {
            gates: &'a TaskGates,
            task_id: &'a str,
            gate: Option<Arc<tokio::sync::Mutex<()>>>,
        }
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                drop(self.gate.take());
                let mut gates = self.gates.0.lock();
                if gates
                    .get(self.task_id)
                    .is_some_and(|g| Arc::strong_count(g) == 1)
                {
                    gates.remove(self.task_id);
                }
            }
        }
        let gate = self.0.lock().entry(task_id.into()).or_default().clone();
        // The only other reference: dropped first, even when cancelled.
        let forget = Forget {
            gates: self,
            task_id,
            gate: Some(gate),
        };
        let out = {
            let _held = forget.gate.as_ref().expect("set above").lock().await;
            f.await
        };
        drop(forget);
        out
    }

    /// Tasks with a lock now (held or waited for).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// The scheduler, bound and ready to run.
pub struct Scheduler {
    pub config: SchedulerConfig,
    pub cluster: Mutex<Cluster>,
    policy: Arc<Policy>,
    /// This host's seed peer: how seed downloads start, and its host.
    seed: Upload,
    tasks: Arc<TaskManager>,
    /// Remote seed hosts: channels and triggers.
    seeds: seeds::Seeds,
    /// One scheduling round of a task at a time.
    placing: TaskGates,
    /// Cancelled when the scheduler stops: ends what follows remote seeds.
    stop: CancellationToken,
    listener: Mutex<Option<TcpListener>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

/// Loads the policy `name`: a built-in, or `plugins_dir/NAME.wasm`.
fn load_policy(
    host: &PluginHost,
    name: &str,
    plugins_dir: Option<&Path>,
) -> anyhow::Result<crate::plugin::scheduler::SchedulerPolicy> {
    if let Some(dir) = plugins_dir {
        let path = dir.join(format!("{name}.wasm"));
        if path.exists() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            return host.load_scheduler(name, &bytes).map_err(|e| {
                anyhow::anyhow!("scheduler.policy '{name}' ({}): {e}", path.display())
            });
        }
    }
    host.builtin_scheduler(name).map_err(|e| {
        anyhow::anyhow!(
            "scheduler.policy: {e} (built-ins: default; or put {name}.wasm in plugins.dir)"
        )
    })
}

impl Scheduler {
    /// Binds the listener (a taken port fails the start) and loads the
    /// policy.
    pub async fn bind(
        config: &SchedulerConfig,
        plugins: &PluginHost,
        plugins_dir: Option<&Path>,
        seed: Upload,
    ) -> anyhow::Result<Arc<Self>> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding scheduler.listen {}", config.listen))?;
        let plugin = load_policy(plugins, &config.policy, plugins_dir)?;
        tracing::info!(
            listen = %listener.local_addr()?,
            policy = %plugin.name,
            digest = %&plugin.digest[..16],
            "scheduler ready"
        );
        let breaker = Breakers::scoped(
            Scope::Plugin(plugin.name.clone()),
            plugins.breaker_config().clone(),
        );
        let tasks = seed.tasks.clone();
        let me = Arc::new(Self {
            config: config.clone(),
            cluster: Mutex::new(Cluster::default()),
            policy: Arc::new(Policy { plugin, breaker }),
            seed,
            tasks,
            seeds: Default::default(),
            placing: Default::default(),
            stop: CancellationToken::new(),
            listener: Mutex::new(Some(listener)),
        });
        me.refresh_local_host();
        Ok(me)
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener
            .lock()
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    fn seed_probe(&self) -> &HostProbe {
        &self.seed.host
    }

    /// This host's seed peer as a host of the cluster, its figures now;
    /// not a host of it when `scheduler.local_seed` is off.
    fn refresh_local_host(&self) {
        if !self.config.local_seed {
            return;
        }
        let host = self.seed_probe().host();
        let _ = self
            .cluster
            .lock()
            .announce(host, Duration::MAX, true, &self.config);
    }

    /// Serves until `cancel`. Also keeps the cluster fresh: hosts that
    /// stopped announcing are removed (with their peers), and this host's
    /// own figures are refreshed.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let listener = self
            .listener
            .lock()
            .take()
            .context("the scheduler runs once")?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<dragonfly_api::scheduler::v2::scheduler_server::SchedulerServer<service::Service>>()
            .await;
        // dfdaemon checks the empty service name.
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let grpc = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(
                dragonfly_api::scheduler::v2::scheduler_server::SchedulerServer::new(
                    service::Service(self.clone()),
                ),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                cancel.clone().cancelled_owned(),
            );
        let sweep = {
            let me = self.clone();
            let cancel = cancel.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut n = 0u64;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = cancel.cancelled() => return,
                    }
                    me.sweep();
                    n += 1;
                    if n.is_multiple_of(10) {
                        me.refresh_local_host();
                    }
                }
            }
        };
        let (grpc, ()) = tokio::join!(grpc, sweep);
        self.stop.cancel();
        grpc.context("the scheduler server")
    }

    /// Removes hosts whose announces stopped, and tasks left with no peer.
    fn sweep(&self) {
        let gone = {
            let mut c = self.cluster.lock();
            let gone = c.expire(tokio::time::Instant::now());
            c.drop_idle_tasks();
            gone
        };
        for h in gone {
            crate::metrics::METRICS.host_event("expired");
            tracing::info!(
                host = %h.host.id,
                hostname = %h.host.hostname,
                ip = %h.host.ip,
                silent_for = %humantime::format_duration(Duration::from_secs(h.announced.elapsed().as_secs())),
                "host left the cluster: no announce within its time to live"
            );
        }
    }

    /// Exports the live figures to the metrics (at each scrape).
    pub fn export_metrics(&self) {
        let m = &*crate::metrics::METRICS;
        let c = self.cluster.lock();
        m.cluster_hosts.clear();
        for h in c.hosts.values() {
            m.cluster_hosts
                .get_or_create(&crate::metrics::HostTypeLabels {
                    host_type: cluster::host_type_name(h.host.r#type).into(),
                })
                .inc();
        }
        m.cluster_peers.clear();
        for state in cluster::PeerState::ALL {
            m.cluster_peers
                .get_or_create(&crate::metrics::JobLabels {
                    state: state.as_str().into(),
                })
                .set(0);
        }
        for p in c.peers.values() {
            m.cluster_peers
                .get_or_create(&crate::metrics::JobLabels {
                    state: p.state.as_str().into(),
                })
                .inc();
        }
    }

    /// The scheduling policy's breaker, for `/api/v1/breakers`.
    pub fn policy_breakers(&self) -> Vec<crate::resilience::breaker::BreakerView> {
        self.policy.breaker.list()
    }

    pub fn hosts(&self) -> Vec<cluster::HostView> {
        self.cluster.lock().host_views()
    }

    pub fn task_list(&self) -> Vec<cluster::TaskView> {
        self.cluster.lock().task_views()
    }

    pub fn task(&self, id: &str) -> Option<cluster::TaskView> {
        let c = self.cluster.lock();
        c.tasks.get(id).map(|t| c.task_view(t, true))
    }

    /// The local seed host, as handed to peers.
    fn local_host(&self) -> common::Host {
        let id = &self.seed_probe().identity.host_id;
        self.cluster
            .lock()
            .hosts
            .get(id)
            .map(|h| h.host.clone())
            .unwrap_or_else(|| self.seed_probe().host())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Rounds of one task never overlap, other tasks are not held up, and
    /// no lock is left behind, also when a holder is cancelled.
    #[tokio::test(start_paused = true)]
    async fn task_gates_serialise_one_task_and_forget_their_locks() {
        let gates = Arc::new(TaskGates::default());
        let inside = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let round = |task: &'static str| {
            let (gates, inside, most) = (gates.clone(), inside.clone(), most.clone());
            async move {
                gates
                    .with(task, async {
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }
        };
        let t = tokio::time::Instant::now();
        futures_util::future::join_all((0..5).map(|_| round("a"))).await;
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "rounds of one task overlapped"
        );
        assert_eq!(t.elapsed(), Duration::from_millis(50));
        let t = tokio::time::Instant::now();
        futures_util::future::join(round("b"), round("c")).await;
        assert_eq!(
            t.elapsed(),
            Duration::from_millis(10),
            "tasks held each other up"
        );
        assert_eq!(gates.len(), 0);
        // A holder cancelled halfway leaves nothing behind.
        let held = tokio::spawn(round("d"));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(gates.len(), 1);
        held.abort();
        let _ = held.await;
        assert_eq!(gates.len(), 0);
    }
}
