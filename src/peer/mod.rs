//! seedgate as a Dragonfly v2 seed peer.
//!
//! - [`upload`]: `DfdaemonUpload` over gRPC (with `grpc.health.v1`), the
//!   service a scheduler triggers seed downloads and preheats through;
//! - [`piece_server`]: Dragonfly's TCP piece protocol, the bytes peers
//!   fetch, from the same content files the HTTP gateway serves;
//! - [`announcer`]: registration with schedulers as a super seed, and a
//!   report of each back-to-source download;
//! - [`host`]: this host's ids and live load figures;
//! - [`convert`]: engine types as Dragonfly's messages.
//!
//! Every path goes through the same [`TaskManager`]: an object fetched by
//! the gateway and by a Dragonfly peer is one task, stored once.

pub mod announcer;
pub mod convert;
pub mod host;
pub mod piece_server;
pub mod upload;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use dragonfly_api::dfdaemon::v2::dfdaemon_upload_server::DfdaemonUploadServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::SeedPeerConfig;
use crate::origin::OriginRouter;
use crate::task::TaskManager;

/// Whether `id` looks like a Dragonfly task id (64 hex digits: sha256).
pub fn is_task_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The seed peer, bound and ready to run.
pub struct SeedPeer {
    config: SeedPeerConfig,
    upload_listener: TcpListener,
    piece_listener: TcpListener,
    host: Arc<host::HostProbe>,
    pub announcer: Arc<announcer::Announcer>,
    /// The built-in scheduler, when `[scheduler]` is configured.
    pub scheduler: Option<Arc<crate::scheduler::Scheduler>>,
    tasks: Arc<TaskManager>,
    origins: Arc<OriginRouter>,
}

/// What the built-in scheduler needs besides the seed peer.
pub struct SchedulerParts<'a> {
    pub config: &'a crate::config::SchedulerConfig,
    pub plugins: &'a crate::plugin::PluginHost,
    pub plugins_dir: Option<&'a std::path::Path>,
}

impl SeedPeer {
    /// Who this seed peer is, as schedulers know it.
    pub fn identity(&self) -> &host::Identity {
        &self.host.identity
    }

    /// Binds both listeners (so a taken port fails the start, not later)
    /// and hooks the announcer to back-to-source downloads.
    pub async fn bind(
        config: &SeedPeerConfig,
        data_dir: PathBuf,
        tasks: Arc<TaskManager>,
        origins: Arc<OriginRouter>,
        scheduler: Option<SchedulerParts<'_>>,
    ) -> anyhow::Result<Self> {
        let upload_listener = TcpListener::bind(config.upload_listen)
            .await
            .with_context(|| format!("binding seed_peer.upload_listen {}", config.upload_listen))?;
        let piece_listener = TcpListener::bind(config.piece_listen)
            .await
            .with_context(|| format!("binding seed_peer.piece_listen {}", config.piece_listen))?;
        let identity = host::Identity::new(
            config,
            upload_listener.local_addr()?,
            piece_listener.local_addr()?,
        );
        tracing::info!(
            host_id = %identity.host_id,
            upload = %upload_listener.local_addr()?,
            pieces = %piece_listener.local_addr()?,
            schedulers = config.schedulers.len(),
            "seed peer ready"
        );
        let host = Arc::new(host::HostProbe::new(identity, config.clone(), data_dir));
        let announcer = Arc::new(announcer::Announcer::new(
            config,
            host.clone(),
            tasks.piece_concurrency() as u32,
        )?);
        let hook = announcer.clone();
        tasks.on_back_to_source(move |task| hook.report(task));
        let hook = announcer.clone();
        tasks.on_removed(move |task_id| hook.removed(task_id));
        let upload = upload::Upload {
            tasks: tasks.clone(),
            origins: origins.clone(),
            host: host.clone(),
            announcer: announcer.clone(),
            sync_host_interval: config.sync_host_interval,
        };
        let scheduler = match scheduler {
            Some(s) => Some(
                crate::scheduler::Scheduler::bind(s.config, s.plugins, s.plugins_dir, upload)
                    .await?,
            ),
            None => None,
        };
        Ok(Self {
            config: config.clone(),
            upload_listener,
            piece_listener,
            host,
            announcer,
            scheduler,
            tasks,
            origins,
        })
    }

    /// Serves until `cancel`, then deletes the host from its schedulers.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<DfdaemonUploadServer<upload::Upload>>()
            .await;
        let upload = upload::Upload {
            tasks: self.tasks.clone(),
            origins: self.origins.clone(),
            host: self.host.clone(),
            announcer: self.announcer.clone(),
            sync_host_interval: self.config.sync_host_interval,
        };
        let grpc = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(DfdaemonUploadServer::new(upload))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(self.upload_listener),
                cancel.clone().cancelled_owned(),
            );
        let pieces = piece_server::PieceServer::new(
            self.piece_listener,
            self.tasks.clone(),
            self.host.uploads.clone(),
            self.config.max_piece_connections,
            self.config.upload_rate_limit.map(|r| r.as_u64()),
            self.config.piece_write_timeout,
        )
        .run(cancel.clone());
        let announce = self.announcer.clone().run(cancel.clone());
        let scheduler = async {
            match self.scheduler.clone() {
                Some(s) => s.run(cancel.clone()).await,
                None => Ok(()),
            }
        };
        let (grpc, (), (), scheduler) = tokio::join!(grpc, pieces, announce, scheduler);
        scheduler?;
        grpc.context("the DfdaemonUpload server")
    }
}
