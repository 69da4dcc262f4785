//! Real Dragonfly peers: `dfdaemon` and `dfget` 1.5.10 from crates.io
//! (`dragonfly-client`), built once by `scripts/setup` into
//! `$SEEDGATE_DFDAEMON_DIR` (default `~/.cache/seedgate/dfdaemon-1.5.10`).
//! Each daemon gets its own hostname, ports, socket, storage and log file,
//! and a local dynconfig naming one scheduler (no manager).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::free_port;

pub const VERSION: &str = "1.5.10";

/// Where the binaries are.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SEEDGATE_DFDAEMON_DIR").map_or_else(
        || {
            Path::new(&std::env::var_os("HOME").expect("HOME"))
                .join(format!(".cache/seedgate/dfdaemon-{VERSION}"))
        },
        PathBuf::from,
    );
    let path = dir.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (it builds dragonfly-client {VERSION})",
        path.display()
    );
    path
}

/// A running dfdaemon.
pub struct Dfdaemon {
    child: Child,
    pub dir: tempfile::TempDir,
    pub hostname: String,
    /// `{ip}-{hostname}`, or with `-seed` for a seed peer.
    pub host_id: String,
    pub upload_port: u16,
    /// Its HTTP proxy (`proxy.server.port`), which sends OCI blob reads
    /// (`blobs/sha256.*`) through P2P as a registry mirror does.
    pub proxy_port: u16,
    /// The TCP piece port (`storage.server.tcpPort`).
    pub piece_port: u16,
}

/// Where and how a dfdaemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub hostname: String,
    /// Every scheduler of its dynconfig (`ip:port`): it announces its
    /// host to all of them and sends each task to one, by its own
    /// consistent-hash ring.
    pub schedulers: Vec<String>,
    /// A super seed peer.
    pub seed: bool,
    /// `scheduler.announceInterval`.
    pub interval: String,
    /// The address it binds and tells schedulers.
    pub ip: std::net::IpAddr,
    /// A network namespace to run in (`ip netns exec`).
    pub netns: Option<String>,
    /// Where its directory is made (storage, cache, logs); unset: the
    /// system's temporary directory.
    pub dir_in: Option<PathBuf>,
}

impl Options {
    /// A normal peer on loopback whose scheduler is `127.0.0.1:port`.
    pub fn new(hostname: &str, scheduler_port: u16) -> Self {
        Self {
            hostname: hostname.into(),
            schedulers: vec![format!("127.0.0.1:{scheduler_port}")],
            seed: false,
            interval: "300s".into(),
            ip: [127, 0, 0, 1].into(),
            netns: None,
            dir_in: None,
        }
    }
}

impl Dfdaemon {
    /// Starts a dfdaemon (a super seed peer when `seed`) whose scheduler is
    /// `127.0.0.1:scheduler_port`, and waits until its socket answers.
    pub async fn start(hostname: &str, scheduler_port: u16, seed: bool) -> Self {
        Self::start_opts(Options {
            seed,
            ..Options::new(hostname, scheduler_port)
        })
        .await
    }

    /// [`Self::start`] with `scheduler.announceInterval` set to `interval`.
    pub async fn start_announcing(
        hostname: &str,
        scheduler_port: u16,
        seed: bool,
        interval: &str,
    ) -> Self {
        Self::start_opts(Options {
            seed,
            interval: interval.into(),
            ..Options::new(hostname, scheduler_port)
        })
        .await
    }

    /// A normal peer whose dynconfig lists every scheduler in
    /// `scheduler_ports` (on loopback).
    pub async fn start_with(hostname: &str, scheduler_ports: &[u16]) -> Self {
        Self::start_opts(Options {
            schedulers: scheduler_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            ..Options::new(hostname, 0)
        })
        .await
    }

    /// Starts a dfdaemon as `opts` say. Its eight ports are picked free,
    /// but another test may take one before dfdaemon binds it: a daemon
    /// that exits at start is tried again with fresh ports (three times at
    /// most).
    pub async fn start_opts(opts: Options) -> Self {
        let mut logs = String::new();
        for attempt in 1..=3 {
            match Self::try_start(&opts).await {
                Ok(me) => return me,
                Err(log) => {
                    logs.push_str(&format!("--- attempt {attempt} ---\n{}\n", tail(&log, 30)));
                }
            }
        }
        panic!("dfdaemon {} did not start:\n{logs}", opts.hostname);
    }

    async fn try_start(opts: &Options) -> Result<Self, String> {
        let Options {
            hostname,
            seed,
            interval,
            ip,
            ..
        } = opts;
        let dir = match &opts.dir_in {
            Some(parent) => tempfile::tempdir_in(parent).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let d = dir.path();
        let upload_port = free_port();
        let piece_port = free_port();
        let proxy = free_port();
        let config = format!(
            r#"host:
  hostname: {hostname}
  ip: {ip}
server:
  pluginDir: {d}/plugins
  cacheDir: {d}/cache
download:
  server:
    socketPath: {d}/dfdaemon.sock
  protocol: tcp
upload:
  server:
    ip: {ip}
    port: {upload_port}
scheduler:
  announceInterval: {interval}
seedPeer:
  enable: {seed}
  type: super
storage:
  dir: {d}/storage
  server:
    ip: {ip}
    tcpPort: {piece_port}
    quicPort: {quic}
health:
  server:
    ip: 127.0.0.1
    port: {health}
metrics:
  server:
    ip: 127.0.0.1
    port: {metrics}
stats:
  server:
    ip: 127.0.0.1
    port: {stats}
proxy:
  server:
    ip: 127.0.0.1
    port: {proxy}
  rules:
    - regex: 'blobs/sha256.*'
"#,
            d = d.display(),
            quic = free_port(),
            health = free_port(),
            metrics = free_port(),
            stats = free_port(),
        );
        std::fs::write(d.join("dfdaemon.yaml"), config).unwrap();
        std::fs::write(
            d.join("dynconfig.yaml"),
            format!(
                "scheduler:\n  addrs: [{}]\n",
                opts.schedulers
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("dfdaemon.log")).unwrap();
        let mut command = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("dfdaemon"));
                c
            }
            None => Command::new(bin("dfdaemon")),
        };
        let child = command
            .arg("--config")
            .arg(d.join("dfdaemon.yaml"))
            .arg("--dynconfig")
            .arg(d.join("dynconfig.yaml"))
            .arg("--log-dir")
            .arg(d.join("log"))
            .arg("--console")
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dfdaemon");
        let mut me = Self {
            child,
            hostname: hostname.clone(),
            host_id: if *seed {
                format!("{ip}-{hostname}-seed")
            } else {
                format!("{ip}-{hostname}")
            },
            upload_port,
            piece_port,
            proxy_port: proxy,
            dir,
        };
        let socket = me.socket();
        let t = tokio::time::Instant::now();
        while !(socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok()) {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(format!("exited ({status}):\n{}", me.log()));
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "dfdaemon {hostname} did not open its socket:\n{}",
                me.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The socket is one of its servers; the others (stats, health,
        // metrics, proxy, the piece ports) bind beside it, and one whose
        // port another test took in the meantime panics and takes the
        // daemon down a moment later ("stats server failed ... Address
        // already in use", seen in CI): wait that moment out, so that such
        // a daemon is started again with fresh ports too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Some(status)) = me.child.try_wait() {
            return Err(format!(
                "exited after opening its socket ({status}):\n{}",
                me.log()
            ));
        }
        Ok(me)
    }

    /// Kills the daemon at once (SIGKILL): no DeleteHost, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the daemon as an operator does (SIGTERM): it leaves its
    /// scheduler (`DeleteHost`) and exits.
    pub async fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = tokio::time::Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("dfdaemon.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dfdaemon.log")).unwrap_or_default()
    }

    /// `dfget URL -O out` through this daemon; the output on failure.
    pub async fn dfget(&self, url: &str, out: &Path) -> Result<(), String> {
        self.dfget_within(url, out, "120s").await
    }

    /// [`Self::dfget`] with dfget's `--timeout` set to `timeout`.
    pub async fn dfget_within(&self, url: &str, out: &Path, timeout: &str) -> Result<(), String> {
        let output = tokio::process::Command::new(bin("dfget"))
            .arg(url)
            .arg("-O")
            .arg(out)
            .arg("--endpoint")
            .arg(self.socket())
            .args(["--no-progress", "--console", "--timeout", timeout])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("spawn dfget");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "dfget {url} failed ({}):\n{}{}\n--- dfdaemon {} log (tail) ---\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.hostname,
                tail(&self.log(), 40)
            ))
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Dfdaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
