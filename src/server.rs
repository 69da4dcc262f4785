//! The process's front: binds storage, plugins, origins, the task
//! engine, preheat, the seed peer and the gateway's listeners
//! ([`Server::bind`]), then runs the accept loop until shutdown
//! ([`Server::run`]).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::{gateway, origin, peer, plugin, preheat, storage, task};

/// A running gateway's pieces, ready to be served.
pub struct Server {
    listener: tokio::net::TcpListener,
    /// The same API on a unix socket, for local clients.
    unix: Option<(tokio::net::UnixListener, std::path::PathBuf)>,
    app: axum::Router,
    limits: ServerLimits,
    /// The Dragonfly seed peer, when `[seed_peer]` is configured.
    peer: Option<peer::SeedPeer>,
    /// `server.connection_threads` resolved: 0 serves TCP on the main
    /// runtime.
    connection_threads: usize,
    control: Arc<Control>,
}

/// What is done to a running server besides serving it: readiness for the
/// service manager, reload (SIGHUP), and the drain the API starts.
pub struct Control {
    state: gateway::AppState,
    /// The config the server started with.
    started: Config,
}

impl Control {
    /// Whether `/readyz` would say ready now.
    pub async fn ready(&self) -> bool {
        gateway::readiness(&self.state).await.0
    }

    /// Applies what can change while serving from `new`, a config just
    /// read (with the command line's overrides applied), and says what
    /// changed, one line each:
    /// - plugin files replaced in `plugins.dir` are compiled and swapped in
    ///   (a file that fails keeps the plugin it replaces, with its error in
    ///   `/api/v1/plugins`);
    /// - `server.api_token` takes its new value (a rotated `file:` or
    ///   `env:` secret too), when the server started with a token.
    ///
    /// Every other change is reported as waiting for a restart. Compiling
    /// is CPU work: call it off the async workers.
    pub fn reload(&self, new: &Config) -> Vec<String> {
        let mut said = Vec::new();
        let before: std::collections::BTreeMap<String, String> = self
            .state
            .plugins
            .summaries()
            .into_iter()
            .map(|p| (p.name, p.digest))
            .collect();
        self.state.plugins.reload_changed();
        for p in self.state.plugins.summaries() {
            if before.get(&p.name).is_some_and(|d| *d != p.digest) {
                said.push(format!(
                    "plugin '{}' reloaded ({})",
                    p.name,
                    &p.digest[..16]
                ));
            }
        }
        match (&self.state.token, new.server.resolved_api_token()) {
            (Some(live), Some(token)) => {
                if live.set(&token) {
                    said.push("server.api_token replaced".into());
                }
            }
            (None, None) => {}
            _ => said.push(
                "server.api_token: adding or removing the token takes effect at restart".into(),
            ),
        }
        let masked = |c: &Config| {
            let mut server = c.server.clone();
            server.api_token = None;
            server
        };
        let sections: [(&str, String, String); 12] = [
            (
                "server",
                format!("{:?}", masked(&self.started)),
                format!("{:?}", masked(new)),
            ),
            (
                "storage",
                format!("{:?}", self.started.storage),
                format!("{:?}", new.storage),
            ),
            (
                "download",
                format!("{:?}", self.started.download),
                format!("{:?}", new.download),
            ),
            (
                "plugins",
                format!("{:?}", self.started.plugins),
                format!("{:?}", new.plugins),
            ),
            (
                "negative_cache",
                format!("{:?}", self.started.negative_cache),
                format!("{:?}", new.negative_cache),
            ),
            (
                "retry",
                format!("{:?}", self.started.retry),
                format!("{:?}", new.retry),
            ),
            (
                "breaker",
                format!("{:?}", self.started.breaker),
                format!("{:?}", new.breaker),
            ),
            (
                "preheat",
                format!("{:?}", self.started.preheat),
                format!("{:?}", new.preheat),
            ),
            (
                "seed_peer",
                format!("{:?}", self.started.seed_peer),
                format!("{:?}", new.seed_peer),
            ),
            (
                "scheduler",
                format!("{:?}", self.started.scheduler),
                format!("{:?}", new.scheduler),
            ),
            (
                "origins",
                format!("{:?}", self.started.origins),
                format!("{:?}", new.origins),
            ),
            (
                "telemetry",
                format!("{:?}", self.started.telemetry),
                format!("{:?}", new.telemetry),
            ),
        ];
        for (name, was, now) in sections {
            if was != now {
                said.push(format!("[{name}] changed: takes effect at restart"));
            }
        }
        said
    }
}

/// Binds the unix socket at `path`. A socket file left by a process that
/// died (kill -9, OOM) is removed, but only after a connect finds nobody
/// listening on it: a live seedgate's socket is never taken over, and a
/// path that is not a socket is never removed.
pub fn bind_unix(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match tokio::net::UnixListener::bind(path) {
        Ok(l) => return Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(e) => return Err(e).with_context(|| format!("binding unix socket {}", path.display())),
    }
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("unix socket {}", path.display()))?;
    if !meta.file_type().is_socket() {
        anyhow::bail!(
            "unix socket {}: the path exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => anyhow::bail!(
            "unix socket {}: another process is listening on it (a seedgate already running?); refusing to take it over",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::warn!(path = %path.display(), "removing a stale unix socket (nobody listens on it)");
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale unix socket {}", path.display()))?;
            tokio::net::UnixListener::bind(path)
                .with_context(|| format!("binding unix socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("probing unix socket {}", path.display())),
    }
}

/// A connection accepted on either listener.
enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// What the connection loop enforces.
#[derive(Debug, Clone, Copy)]
struct ServerLimits {
    header_read_timeout: std::time::Duration,
    max_header_bytes: usize,
    sendfile: crate::config::SendStored,
}

impl Server {
    /// Opens storage, loads the plugins, binds the origins and the listener.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        // First, so a second instance is told about the socket it would
        // steal rather than about a locked store.
        let unix = match &config.server.unix_socket {
            Some(path) => Some((bind_unix(path)?, path.clone())),
            None => None,
        };
        let storage = storage::Storage::open(
            &config.storage.data_dir,
            config.storage.metadata_cache.as_u64(),
            config.storage.metadata_reserve.as_u64(),
        )
        .with_context(|| format!("opening storage in {}", config.storage.data_dir.display()))?;
        let cache_dir = config
            .plugins
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.storage.data_dir.join("plugin-cache"));
        let host = Arc::new(
            plugin::PluginHost::new(config.plugins.clone(), Some(&cache_dir))
                .context("starting the plugin host")?,
        );
        let plugins = Arc::new(plugin::Registry::load(
            host.clone(),
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
        tasks.spawn_scrub();
        let jobs = preheat::JobManager::start(
            config.preheat.clone(),
            storage,
            tasks.clone(),
            origins.clone(),
        )
        .context("loading preheat jobs")?;
        let peer = match &config.seed_peer {
            Some(sp) => Some(
                peer::SeedPeer::bind(
                    sp,
                    config.storage.data_dir.clone(),
                    tasks.clone(),
                    origins.clone(),
                    config.scheduler.as_ref().map(|s| peer::SchedulerParts {
                        config: s,
                        plugins: &host,
                        plugins_dir: config.plugins.dir.as_deref(),
                    }),
                )
                .await?,
            ),
            None => None,
        };
        if let Some(scheduler) = peer.as_ref().and_then(|p| p.scheduler.clone()) {
            jobs.set_fanout(scheduler);
        }
        let state = gateway::AppState::new(gateway::Shared {
            tasks,
            origins,
            plugins,
            jobs,
            token: config
                .server
                .resolved_api_token()
                .map(|t| Arc::new(gateway::ApiToken::new(&t))),
            token_for_reads: config.server.token_for_reads,
            expose_origin_urls: config.server.exposes_origin_urls(),
            schedulers: peer.as_ref().map(|p| p.announcer.clone()),
            scheduler: peer.as_ref().and_then(|p| p.scheduler.clone()),
            host: match &peer {
                Some(p) => (p.identity().hostname.clone(), p.identity().ip.to_string()),
                None => (
                    sysinfo::System::host_name().unwrap_or_else(|| "localhost".into()),
                    config.server.listen.ip().to_string(),
                ),
            },
        });
        let control = Arc::new(Control {
            state: state.clone(),
            started: config.clone(),
        });
        let app = gateway::router(state);
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let limits = ServerLimits {
            header_read_timeout: config.server.header_read_timeout,
            max_header_bytes: config.server.max_header_bytes.as_u64() as usize,
            sendfile: config.server.sendfile,
        };
        Ok(Self {
            listener,
            unix,
            app,
            limits,
            peer,
            connection_threads: config.server.connection_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            control,
        })
    }

    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets requests in flight
    /// finish (for up to 30 s).
    ///
    /// hyper directly rather than `axum::serve`, for the limits a gateway
    /// facing many clients needs: a client must send its request head
    /// within `server.header_read_timeout` (a slow client cannot hold a
    /// connection), and a head over `server.max_header_bytes` is refused.
    ///
    /// Each accepted TCP connection is handed to the one of the
    /// `server.connection_threads` threads serving the fewest, and stays
    /// there: each thread has its own single-threaded event loop, as
    /// nginx's workers have, so a request is read, answered and sent on one
    /// thread, without the wake-ups between worker threads that a shared
    /// scheduler costs on small answers. Accepting, downloads, the seed
    /// peer and everything else stay on the main runtime.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let conns = Arc::new(Connections::new(self.app.clone(), self.limits));
        let stop_peer = tokio_util::sync::CancellationToken::new();
        let peer = self.peer.map(|p| {
            let cancel = stop_peer.clone();
            tokio::spawn(async move {
                if let Err(e) = p.run(cancel).await {
                    tracing::error!(error = %format!("{e:#}"), "seed peer stopped");
                }
            })
        });
        let stop_threads = tokio_util::sync::CancellationToken::new();
        let mut threads = Vec::new();
        let mut workers = Vec::new();
        let mut serving = Vec::new();
        let mut beats = Vec::new();
        for n in 0..self.connection_threads {
            let beat = Arc::new(std::sync::atomic::AtomicU64::new(crate::clock::now_ms()));
            beats.push(beat.clone());
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
            let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            workers.push(Worker {
                streams: tx,
                live: live.clone(),
            });
            let (conns, finish) = (conns.clone(), stop_threads.clone());
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            serving.push(done_rx);
            let thread = std::thread::Builder::new()
                .name(format!("seedgate-conn-{n}"))
                .spawn(move || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("a connection thread's event loop")?;
                    rt.block_on(async move {
                        // Proof this event loop runs, for the watchdog.
                        tokio::spawn(async move {
                            loop {
                                beat.store(
                                    crate::clock::now_ms(),
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                                tokio::time::sleep(HEARTBEAT).await;
                            }
                        });
                        while let Some(stream) = rx.recv().await {
                            let stream = tokio::net::TcpStream::from_std(stream);
                            let live = live.clone();
                            conns
                                .spawn(stream.map(Accepted::Tcp), move || {
                                    live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                                })
                                .await;
                        }
                        drop(conns);
                        let _ = done_tx.send(());
                        // Connections in flight run on this thread until
                        // the main loop's graceful wait is over.
                        finish.cancelled().await;
                        anyhow::Ok(())
                    })
                })
                .context("starting a connection thread")?;
            threads.push(thread);
        }
        let watchdog = crate::service::watchdog_interval().map(|every| {
            tracing::info!(every = ?every, "pinging the service manager's watchdog");
            tokio::spawn(watchdog(every, beats))
        });
        let mut shutdown = std::pin::pin!(shutdown);
        let unix_path = self.unix.as_ref().map(|(_, p)| p.clone());
        let unix = self.unix.map(|(l, _)| l);
        let main_tcp = self.listener;
        loop {
            let accepted = tokio::select! {
                a = async { unix.as_ref().expect("guarded").accept().await }, if unix.is_some() => {
                    a.map(|(s, _)| Accepted::Unix(s))
                }
                a = main_tcp.accept() => a.map(|(s, _)| Accepted::Tcp(s)),
                () = &mut shutdown => break,
            };
            // A TCP connection goes to the thread serving the fewest.
            let accepted = match (accepted, workers.iter().min_by_key(|w| w.load())) {
                (Ok(Accepted::Tcp(stream)), Some(w)) => match stream.into_std() {
                    Ok(stream) => {
                        w.live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if w.streams.send(stream).is_err() {
                            w.live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::error!("a connection thread is gone; connection dropped");
                        }
                        continue;
                    }
                    Err(e) => Err(e),
                },
                (accepted, _) => accepted,
            };
            conns.spawn(accepted, || {}).await;
        }
        crate::service::stopping();
        if let Some(w) = watchdog {
            w.abort();
        }
        // The connection threads take no more connections.
        drop(workers);
        for done in serving {
            let _ = done.await;
        }
        drop(main_tcp);
        drop(unix);
        // The seed peer stops first: it tells its schedulers this host is
        // leaving (DeleteHost) while requests in flight finish.
        stop_peer.cancel();
        if let Some(peer) = peer
            && tokio::time::timeout(std::time::Duration::from_secs(10), peer)
                .await
                .is_err()
        {
            tracing::warn!("the seed peer did not stop within 10 s");
        }
        if let Some(path) = unix_path {
            let _ = std::fs::remove_file(path);
        }
        let graceful = Arc::into_inner(conns)
            .expect("the accept loops have ended")
            .graceful;
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(30)) => {
                tracing::warn!("requests still running 30 s after shutdown began; stopping");
            }
        }
        stop_threads.cancel();
        for t in threads {
            match tokio::task::spawn_blocking(move || t.join()).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = %format!("{e:#}"), "an accept thread failed")
                }
                _ => tracing::error!("an accept thread panicked"),
            }
        }
        Ok(())
    }
}

/// How often each connection thread proves its event loop runs.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(500);

/// Pings the service manager twice per `every` (`WatchdogSec`), from the
/// main runtime, while every connection thread's heartbeat is fresh: a
/// wedged runtime or connection thread stops the pings, and systemd
/// restarts the process.
async fn watchdog(every: std::time::Duration, beats: Vec<Arc<std::sync::atomic::AtomicU64>>) {
    let stale_after = (every / 2).max(HEARTBEAT * 4).as_millis() as u64;
    let mut tick = tokio::time::interval(every / 2);
    loop {
        tick.tick().await;
        let now = crate::clock::now_ms();
        let stuck: Vec<usize> = beats
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                now.saturating_sub(b.load(std::sync::atomic::Ordering::Relaxed)) > stale_after
            })
            .map(|(n, _)| n)
            .collect();
        if stuck.is_empty() {
            crate::service::watchdog();
        } else {
            tracing::error!(threads = ?stuck, "connection threads have not run for {stale_after} ms; withholding the watchdog ping");
        }
    }
}

/// How accepted connections are served: hyper's builder with the
/// gateway's limits, and the graceful-shutdown watch over all of them.
struct Connections {
    builder: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    app: axum::Router,
    limits: ServerLimits,
}

impl Connections {
    fn new(app: axum::Router, limits: ServerLimits) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioTimer};
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        builder.http2().timer(TokioTimer::new());
        Self {
            builder,
            graceful: hyper_util::server::graceful::GracefulShutdown::new(),
            app,
            limits,
        }
    }

    /// Serves an accepted connection on a task of the current runtime,
    /// calling `ended` when it is over; after a failed accept (out of
    /// descriptors and the like), pauses.
    async fn spawn(
        &self,
        accepted: std::io::Result<Accepted>,
        ended: impl FnOnce() + Send + 'static,
    ) {
        let conn = match accepted {
            Ok(Accepted::Tcp(stream)) => {
                // Without TCP_NODELAY a small answer written in two parts
                // (headers, then the body) waits for the client's delayed
                // ACK: +40 ms on a kept-alive connection.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY");
                }
                let peer = stream.peer_addr().ok().map(|a| a.ip());
                let sendfile = self.limits.sendfile.sendfile_to(peer);
                self.serve(stream, sendfile)
            }
            Ok(Accepted::Unix(stream)) => {
                self.serve(stream, self.limits.sendfile.sendfile_to(None))
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                return;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
            ended();
        });
    }

    /// One connection's HTTP (1 or 2, by what the client speaks), watched
    /// for graceful shutdown, its refusals answered with their reasons,
    /// its stored bytes sent with `sendfile` or not.
    fn serve<S>(
        &self,
        stream: S,
        sendfile: bool,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<(), Box<dyn std::error::Error + Send + Sync>>,
    >
    where
        S: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + crate::zerocopy::SendFile
            + Unpin
            + Send
            + 'static,
    {
        use futures_util::FutureExt;
        use hyper_util::rt::TokioIo;
        use hyper_util::service::TowerToHyperService;
        let io = gateway::ReasonedErrors::new(stream, self.limits.max_header_bytes, sendfile);
        let service = TowerToHyperService::new(self.app.clone());
        self.graceful
            .watch(
                self.builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .into_owned(),
            )
            .boxed()
    }
}

/// A connection thread: where its connections are sent, and how many it
/// serves now.
struct Worker {
    streams: tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>,
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl Worker {
    fn load(&self) -> usize {
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }
}
