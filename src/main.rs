//! The `seedgate` command: `serve` runs the gateway; `config check` reports
//! every problem of a config file; `plugin check` examines a plugin file;
//! `get`, `preheat` and `status` talk to a running server.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use seedgate::config::{Config, ConfigError};

#[derive(Parser)]
#[command(
    name = "seedgate",
    version,
    about = "Seed peer and origin gateway with WebAssembly origin plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(
            short,
            long,
            default_value = "config/seedgate.toml",
            env = "SEEDGATE_CONFIG"
        )]
        config: PathBuf,
        /// Listen address, overriding `server.listen` (port 0 picks one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory, overriding `storage.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Compiled-plugin cache, overriding `plugins.cache_dir`.
        #[arg(long, env = "SEEDGATE_PLUGIN_CACHE_DIR")]
        plugin_cache_dir: Option<PathBuf>,
    },
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with plugin files.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Download an object through a running server into a file, with a
    /// progress bar; an interrupted download resumes where it stopped.
    Get {
        /// ORIGIN/KEY, or a full URL (of an origin with allow_full_urls).
        source: String,
        /// The file to write.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        remote: cli::Remote,
    },
    /// Create a preheat job on a running server (and follow it with --wait).
    Preheat {
        #[command(flatten)]
        args: cli::PreheatArgs,
        #[command(flatten)]
        remote: cli::Remote,
    },
    /// Print a running server's live state: downloads, jobs, plugins,
    /// breakers, negative cache, storage.
    Status {
        #[command(flatten)]
        remote: cli::Remote,
    },
    /// Drain a running server before maintenance: it stops taking new
    /// tasks and preheat jobs, leaves its schedulers and keeps serving what
    /// it stores; this waits until no upload or download is in flight.
    Drain {
        #[command(flatten)]
        args: cli::DrainArgs,
        #[command(flatten)]
        remote: cli::Remote,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Report the world a plugin file implements, its imports and exports,
    /// and what is wrong with it. Exits 1 when it cannot be used.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Report every problem of a config file, each with its key path.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        seedgate::telemetry::Telemetry::init_plain();
        // A command whose output goes into `| head` ends quietly when the
        // reader is gone, as command-line tools do, rather than panicking
        // in println!. (The server keeps SIGPIPE ignored: a peer closing
        // its socket is an error to handle, not a signal.)
        // SAFETY: set once, before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let client = |work: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<bool>>>>| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        match rt.block_on(work) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("seedgate: {e:#}");
                ExitCode::FAILURE
            }
        }
    };
    match cli.command {
        Command::Get {
            source,
            output,
            remote,
        } => client(Box::pin(async move {
            cli::get(&remote, &source, &output).await.map(|()| true)
        })),
        Command::Preheat { args, remote } => {
            client(Box::pin(async move { cli::preheat(&remote, &args).await }))
        }
        Command::Drain { args, remote } => {
            client(Box::pin(async move { cli::drain(&remote, &args).await }))
        }
        Command::Status { remote } => client(Box::pin(async move {
            cli::status(&remote).await.map(|()| true)
        })),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => {
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            let host = match seedgate::plugin::PluginHost::new(Default::default(), None) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("seedgate: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            let report = host.check(&bytes);
            print!("{}", report.render(&file.display().to_string()));
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Serve {
            config,
            listen,
            data_dir,
            plugin_cache_dir,
        } => {
            // The command line's overrides apply to every read of the file,
            // the first and each reload's.
            let load = move || {
                let mut cfg = Config::load(&config)?;
                if let Some(listen) = listen {
                    cfg.server.listen = listen;
                }
                if let Some(dir) = &data_dir {
                    cfg.storage.data_dir = dir.clone();
                }
                if let Some(dir) = &plugin_cache_dir {
                    cfg.plugins.cache_dir = Some(dir.clone());
                }
                Ok::<_, ConfigError>(cfg)
            };
            let cfg = match load() {
                Ok(c) => c,
                Err(
                    e @ (ConfigError::Read { .. }
                    | ConfigError::Parse { .. }
                    | ConfigError::Invalid { .. }),
                ) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            // Inside the runtime: the trace exporter's channel lives there.
            let telemetry = {
                let _in = rt.enter();
                match seedgate::telemetry::Telemetry::init(&cfg.telemetry) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("seedgate: {e:#}");
                        return ExitCode::FAILURE;
                    }
                }
            };
            raise_descriptor_limit();
            let served = rt.block_on(serve(cfg, load));
            drop(telemetry);
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("seedgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(
    config: Config,
    load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let server = seedgate::Server::bind(&config).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, data_dir = %config.storage.data_dir.display(), origins = config.origins.len(), "seedgate serving");
    // A stable line on stdout for scripts and tests to wait on.
    println!("seedgate listening on http://{addr}");
    let control = server.control();
    let status = format!("serving on http://{addr}");
    // READY=1 once /readyz would say so (storage writable, plugins
    // loaded, a scheduler reached when that is required).
    {
        let (control, status) = (control.clone(), status.clone());
        tokio::spawn(async move {
            while !control.ready().await {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            tracing::info!("ready");
            seedgate::service::ready(&status);
        });
    }
    tokio::spawn(reload_on_hangup(control, load, status));
    server.run(shutdown_signal()).await
}

/// SIGHUP: the config file is read again and what can change live is
/// applied ([`seedgate::server::Control::reload`]); a file that does not
/// load is reported and the running config kept.
async fn reload_on_hangup(
    control: std::sync::Arc<seedgate::server::Control>,
    load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
    status: String,
) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("no SIGHUP handler: reload is off");
        return;
    };
    let load = std::sync::Arc::new(load);
    while hangups.recv().await.is_some() {
        seedgate::service::reloading();
        let (control, load) = (control.clone(), load.clone());
        let control_after = control.clone();
        let done = tokio::task::spawn_blocking(move || match load() {
            Ok(new) => {
                let said = control.reload(&new);
                for line in &said {
                    tracing::info!("reload: {line}");
                }
                tracing::info!(changes = said.len(), "reloaded on SIGHUP");
            }
            Err(e) => {
                tracing::error!("reload on SIGHUP refused; the running config stays: {e}")
            }
        })
        .await;
        if done.is_err() {
            tracing::error!("the reload panicked; the running config stays");
        }
        // Before the first READY, the start's own notice ends the reload.
        if control_after.ready().await {
            seedgate::service::ready(&status);
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

/// Raises the soft limit on open descriptors to the hard one, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do: a seed peer holds a
/// descriptor per connection, per download and per stored task it keeps
/// open for hits, and the soft default (often 1,024) would refuse accepts
/// and downloads long before the machine's limit.
fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current < limit.maximum.or(Some(u64::MAX)) {
        let was = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => {
                tracing::debug!(?was, now = ?limit.current, "raised the open-descriptor limit")
            }
            Err(e) => tracing::warn!(error = %e, "could not raise the open-descriptor limit"),
        }
    }
}
