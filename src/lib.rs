//! seedgate: a seed peer and origin gateway for P2P file distribution.
//!
//! Data flows one way: [`gateway`] → [`task`] → [`origin`] → [`plugin`],
//! with bytes landing in [`storage`]. [`serve`] wires them together.

pub mod config;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod origin;
pub mod plugin;
pub mod preheat;
pub mod storage;
pub mod task;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;

/// A running gateway's pieces, ready to be served.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: axum::Router,
}

impl Server {
    /// Opens storage, loads the plugins, binds the origins and the listener.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let storage = storage::Storage::open(
            &config.storage.data_dir,
            config.storage.metadata_cache.as_u64(),
        )
        .with_context(|| format!("opening storage in {}", config.storage.data_dir.display()))?;
        let cache_dir = config
            .plugins
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.storage.data_dir.join("plugin-cache"));
        let host = plugin::PluginHost::new(config.plugins.clone(), Some(&cache_dir))
            .context("starting the plugin host")?;
        let plugins = Arc::new(plugin::Registry::load(
            Arc::new(host),
            config.plugins.dir.as_deref(),
        )?);
        for p in plugins.summaries() {
            tracing::info!(plugin = %p.name, builtin = p.builtin, digest = %&p.digest[..16], "plugin ready");
        }
        plugins.spawn_watcher(config.plugins.reload_interval);
        let origins = Arc::new(origin::OriginRouter::new(config, &plugins)?);
        let storage = Arc::new(storage);
        let tasks = task::TaskManager::new(
            storage.clone(),
            config.download.clone(),
            config.storage.clone(),
            config.negative_cache.clone(),
        )
        .context("reconciling storage")?;
        tasks.spawn_gc();
        let jobs = preheat::JobManager::start(
            config.preheat.clone(),
            storage,
            tasks.clone(),
            origins.clone(),
        )
        .context("loading preheat jobs")?;
        let app = gateway::router(gateway::AppState {
            tasks,
            origins,
            plugins,
            jobs,
            token: config.server.resolved_api_token().map(Arc::from),
            token_for_reads: config.server.token_for_reads,
        });
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        Ok(Self { listener, app })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        use axum::serve::ListenerExt;
        // Without TCP_NODELAY a small answer written in two parts (headers,
        // then the body) waits for the client's delayed ACK: +40 ms on a
        // kept-alive connection.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY");
            }
        });
        axum::serve(listener, self.app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving")
    }
}
