//! Test harness: real servers spawned as direct children of the test (so a
//! kill is never hidden by a zombie), bound to free loopback ports.
//!
//! - [`Nginx`]: the HTTP origin from `tests/fixtures/nginx-origin.conf`,
//!   with its access log as the count of requests the origin saw.
//! - [`Seedgate`]: the real `seedgate` binary with a config written here.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` accepts connections, failing early if `child` exits.
pub fn wait_for_port_within(port: u16, what: &str, child: &mut Child, timeout: Duration) {
    wait_for_addr("127.0.0.1", port, what, child, timeout)
}

/// Waits until `ip:port` accepts connections, failing early if `child`
/// exits.
pub fn wait_for_addr(ip: &str, port: u16, what: &str, child: &mut Child, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if TcpStream::connect((ip, port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during startup: {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on {port} within {timeout:?}");
}

/// Deterministic pseudo-random bytes (xorshift64*), fast even unoptimised.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed | 1;
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// nginx serving `root/www` with the fixture config.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
    /// The address it listens on (127.0.0.1 unless in a namespace).
    pub ip: String,
}

impl Nginx {
    /// The origin: static files under `root/www`.
    pub fn start(root: &Path) -> Self {
        Self::spawn(
            root,
            include_str!("../fixtures/nginx-origin.conf"),
            &[],
            None,
        )
    }

    /// The origin inside network namespace `netns`, listening on `ip`
    /// (port 8080) only.
    #[allow(dead_code)] // used by benches/cluster.rs
    pub fn start_in(root: &Path, netns: &str, ip: &str) -> Self {
        let conf = include_str!("../fixtures/nginx-origin.conf")
            .lines()
            .filter(|l| !l.contains("listen 127.0.0.2"))
            .map(|l| l.replace("listen 127.0.0.1:", &format!("listen {ip}:")))
            .collect::<Vec<_>>()
            .join("\n");
        Self::spawn(root, &conf, &[], Some((netns, ip)))
    }

    /// A caching reverse proxy (proxy_cache, cache lock) in front of the
    /// origin on `upstream`: what users would run instead of seedgate.
    #[allow(dead_code)] // used by benches/engine.rs
    pub fn start_proxy_cache(root: &Path, upstream: u16) -> Self {
        Self::start_proxy_cache_workers(root, upstream, 2)
    }

    /// [`Nginx::start_proxy_cache`] with `workers` worker processes (the
    /// fixture's 2 otherwise).
    pub fn start_proxy_cache_workers(root: &Path, upstream: u16, workers: usize) -> Self {
        Self::spawn(
            root,
            include_str!("../fixtures/nginx-proxy-cache.conf"),
            &[
                ("__UPSTREAM__", upstream.to_string()),
                ("__WORKERS__", workers.to_string()),
            ],
            None,
        )
    }

    fn spawn(
        root: &Path,
        template: &str,
        vars: &[(&str, String)],
        netns: Option<(&str, &str)>,
    ) -> Self {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed: run scripts/test (it installs it) or apt-get install nginx");
        for dir in ["www", "logs", "tmp", "cache"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let port = if netns.is_some() { 8080 } else { free_port() };
        let mut conf = template
            .replace("__ROOT__", root.to_str().unwrap())
            .replace("__PORT__", &port.to_string());
        for (k, v) in vars {
            conf = conf.replace(k, v);
        }
        std::fs::write(root.join("nginx.conf"), conf).unwrap();
        let mut command = match netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, nginx]);
                c
            }
            None => Command::new(nginx),
        };
        let mut child = command
            .arg("-p")
            .arg(root)
            .args(["-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let ip = netns.map_or("127.0.0.1", |(_, ip)| ip);
        wait_for_addr(ip, port, "nginx", &mut child, Duration::from_secs(5));
        Nginx {
            child,
            port,
            root: root.to_owned(),
            ip: ip.into(),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}:{}/", self.ip, self.port)
    }

    /// The master process's pid (its workers are its children).
    #[allow(dead_code)] // used by benches/gateway.rs
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The same files, throttled to 2 MB/s per connection.
    pub fn slow_base_url(&self) -> String {
        format!("{}slow/", self.base_url())
    }

    /// Writes a file the origin serves.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let path = self.root.join("www").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Requests the origin logged for `path` (e.g. "/a.bin"), as
    /// (method, status) pairs. nginx writes its access log unbuffered.
    pub fn requests(&self, path: &str) -> Vec<(String, u16)> {
        let log =
            std::fs::read_to_string(self.root.join("logs/origin.access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let request = line.split('"').nth(1)?;
                let mut parts = request.split(' ');
                let (method, target) = (parts.next()?, parts.next()?);
                let status = line
                    .split('"')
                    .nth(2)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                (target == path).then(|| (method.to_string(), status))
            })
            .collect()
    }

    /// Requests for `path` once the log holds at least `n` of them (nginx
    /// writes a request's line after sending its answer, so a client can
    /// look before it is there), or as they stand after 2 s.
    #[allow(dead_code)]
    pub async fn requests_at_least(&self, path: &str, n: usize) -> Vec<(String, u16)> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let seen = self.requests(path);
            if seen.len() >= n || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Body bytes the origin sent for `path` over all requests, as logged
    /// (`$body_bytes_sent`, also for connections cut short).
    pub fn bytes_sent(&self, path: &str) -> u64 {
        let log =
            std::fs::read_to_string(self.root.join("logs/origin.access.log")).unwrap_or_default();
        log.lines()
            .filter(|line| line.split('"').nth(1).and_then(|r| r.split(' ').nth(1)) == Some(path))
            .filter_map(|line| {
                line.split('"')
                    .nth(2)?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Piece fetches the origin answered for `path`: ranged GETs (206) with
    /// more than one byte, as opposed to a Dragonfly peer's stat (a GET of
    /// `bytes=0-0`).
    #[allow(dead_code)] // used by the seed-peer tests
    pub fn piece_gets(&self, path: &str) -> usize {
        let log =
            std::fs::read_to_string(self.root.join("logs/origin.access.log")).unwrap_or_default();
        log.lines()
            .filter(|line| {
                let mut request = line.split('"').nth(1).unwrap_or("").split(' ');
                let (method, target) = (request.next(), request.next());
                let mut answer = line.split('"').nth(2).unwrap_or("").split_whitespace();
                let (status, bytes) = (answer.next(), answer.next());
                method == Some("GET")
                    && target == Some(path)
                    && status == Some("206")
                    && bytes
                        .and_then(|b| b.parse::<u64>().ok())
                        .is_some_and(|b| b > 1)
            })
            .count()
    }

    /// GET requests the origin logged for `path`.
    pub fn gets(&self, path: &str) -> usize {
        self.requests(path)
            .iter()
            .filter(|(m, _)| m == "GET")
            .count()
    }
}

impl Drop for Nginx {
    /// SIGTERM first, so the master takes its workers down with it (a
    /// SIGKILLed master can leave workers behind); SIGKILL after 2 s.
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// What a test adds to how seedgate is started.
#[derive(Default)]
pub struct Launch {
    /// `SEEDGATE_LOG`.
    pub level: Option<String>,
    pub env: Vec<(String, String)>,
    /// Started through a shell that sets `WATCHDOG_PID` to the server's
    /// own pid, as systemd does.
    pub watchdog_pid: bool,
}

/// The seedgate binary, serving with a given config and data directory.
pub struct Seedgate {
    child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub data_dir: PathBuf,
}

impl Seedgate {
    /// Writes `config` to `dir/seedgate.toml` and starts seedgate on a free
    /// port with `dir/data` as its data directory.
    pub fn start(dir: &Path, config: &str) -> Self {
        let path = dir.join("seedgate.toml");
        std::fs::write(&path, config).unwrap();
        Self::start_with(&path, &dir.join("data"))
    }

    pub fn start_with(config: &Path, data_dir: &Path) -> Self {
        Self::spawn(config, data_dir, None, &Launch::default())
    }

    /// [`Seedgate::start`] with what `launch` adds, its log (at the level
    /// of `SEEDGATE_LOG`, default info) in `dir/seedgate.log`.
    #[allow(dead_code)]
    pub fn start_launched(dir: &Path, config: &str, launch: &Launch) -> Self {
        let path = dir.join("seedgate.toml");
        std::fs::write(&path, config).unwrap();
        Self::spawn(
            &path,
            &dir.join("data"),
            Some(&dir.join("seedgate.log")),
            launch,
        )
    }

    /// [`Seedgate::start`] logging at debug level into `dir/seedgate.log`
    /// (to look for what must never be logged).
    #[allow(dead_code)] // not every test binary module uses it
    pub fn start_logged(dir: &Path, config: &str) -> Self {
        let path = dir.join("seedgate.toml");
        std::fs::write(&path, config).unwrap();
        Self::spawn(
            &path,
            &dir.join("data"),
            Some(&dir.join("seedgate.log")),
            &Launch {
                level: Some("debug".into()),
                ..Launch::default()
            },
        )
    }

    fn spawn(config: &Path, data_dir: &Path, log: Option<&Path>, launch: &Launch) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::inherit(),
        };
        let level = match (&launch.level, log) {
            (Some(level), _) => level.clone(),
            (None, Some(_)) => "info".to_owned(),
            (None, None) => std::env::var("SEEDGATE_LOG").unwrap_or_else(|_| "warn".into()),
        };
        let mut command = if launch.watchdog_pid {
            // systemd names the pid it wants pings from; a shell that
            // execs keeps its pid, so it can name it.
            let mut c = Command::new("sh");
            c.args([
                "-c",
                r#"WATCHDOG_PID=$$ exec "$0" "$@""#,
                env!("CARGO_BIN_EXE_seedgate"),
            ]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_seedgate"))
        };
        let mut child = command
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            // Compiled plugins are shared by every server the tests start.
            .env(
                "SEEDGATE_PLUGIN_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"),
            )
            .env("SEEDGATE_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn seedgate");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("seedgate listening on http://")
            .unwrap_or_else(|| {
                let logged = log
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|l| l.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default();
                panic!(
                    "seedgate did not start: {line:?} (exit {:?}) {logged}",
                    child.try_wait()
                )
            })
            .parse()
            .unwrap();
        Seedgate {
            child,
            addr,
            config: config.to_owned(),
            data_dir: data_dir.to_owned(),
        }
    }

    /// The process id (for its peak RSS in /proc).
    #[allow(dead_code)] // used by benches/engine.rs
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The content file of a task under this server's data directory.
    pub fn content_file(&self, task_id: &str) -> PathBuf {
        self.data_dir
            .join("content")
            .join(&task_id[..3])
            .join(task_id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the process as an operator does (SIGTERM) and waits up to
    /// `within` for it to exit; its exit status, `None` if it did not.
    #[allow(dead_code)]
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let step = Duration::from_millis(20);
        for _ in 0..=within.as_millis() / step.as_millis() {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(step);
        }
        None
    }

    /// Stops the process at once (SIGKILL) and reaps it.
    pub fn kill(mut self) -> (PathBuf, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.config.clone(), self.data_dir.clone())
    }
}

impl Drop for Seedgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network link of fixed bandwidth in front of a loopback server: a TCP
/// proxy whose connections share one pacing clock for the server → client
/// direction, so parallel connections split the bandwidth as they would on
/// a real link instead of each getting its own.
#[allow(dead_code)] // used by benches/engine.rs
pub struct Link {
    pub port: u16,
    accept: tokio::task::JoinHandle<()>,
}

#[allow(dead_code)] // used by benches/engine.rs
impl Link {
    pub async fn start(upstream: u16, bytes_per_sec: u64) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // When the link is next free to carry a byte.
        let free_at = std::sync::Arc::new(tokio::sync::Mutex::new(tokio::time::Instant::now()));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let free_at = free_at.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // Timers tick in milliseconds, far coarser than one
                        // chunk's time on the link: keep up to 5 ms of credit
                        // so oversleeping is caught up, and only sleep when
                        // the schedule is ahead by more than a tick.
                        let now = tokio::time::Instant::now();
                        let send_at = {
                            let mut free = free_at.lock().await;
                            let start = (*free).max(now - Duration::from_millis(5));
                            *free =
                                start + Duration::from_secs_f64(n as f64 / bytes_per_sec as f64);
                            start
                        };
                        if send_at > now + Duration::from_millis(1) {
                            tokio::time::sleep_until(send_at).await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                    up.abort();
                });
            }
        });
        Link { port, accept }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A temporary directory with an nginx origin in `origin/` under it.
pub fn origin() -> (tempfile::TempDir, Nginx) {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&dir.path().join("origin"));
    (dir, nginx)
}

pub async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.unwrap()
}

/// The task id seedgate answered with.
pub fn task_of(resp: &reqwest::Response) -> String {
    resp.headers()["x-seedgate-task"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Polls `done` every 50 ms; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies the hostile test component into `dir/plugins.d` (a custom-plugin
/// directory for `[plugins] dir`) and returns that directory.
pub fn install_hostile(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        seedgate::plugin::test_components::HOSTILE,
        plugins.join("hostile.wasm"),
    )
    .unwrap();
    plugins
}

/// A config with one http origin named `www` pointing at `base_url`.
pub fn http_origin_config(base_url: &str) -> String {
    format!(
        r#"
[origins.www]
plugin = "http"
base_url = "{base_url}"
"#
    )
}

/// Flips every bit of byte `at` of `file` in place (rot on disk: same
/// length, other bytes).
pub fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(file, &bytes).unwrap();
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The value of one sample of seedgate's `/metrics`, e.g.
/// `seedgate_refusals_total{scope="origin",name="www",reason="bulkhead"}`;
/// 0 when the sample is absent.
pub async fn metric(sg: &Seedgate, sample: &str) -> f64 {
    let text = get(&sg.url("/metrics")).await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Waits (up to 10 s) until seedgate says the object at `url` (a `/o/` or
/// `/fetch` URL) is stored: a reader gets every byte as the pieces land,
/// and the task is recorded complete, durably, a moment later.
pub async fn wait_stored(url: &str) {
    let t = tokio::time::Instant::now();
    loop {
        let resp = client().head(url).send().await.unwrap();
        if resp
            .headers()
            .get("x-seedgate-cache")
            .is_some_and(|v| v == "hit")
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{url} stored within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A number from the environment (benchmark knobs), or `default`.
#[allow(dead_code)] // used by the benches
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The answer to a piece request: the piece's metadata and bytes, or the
/// error packet's code and message.
pub type PieceAnswer = Result<
    (vortex_protocol::tlv::piece_metadata::PieceMetadata, Vec<u8>),
    (vortex_protocol::tlv::error::Code, String),
>;

/// One piece over the TCP piece protocol on `conn`: its metadata and
/// bytes, or the error packet's code and message.
pub async fn fetch_piece(conn: &mut tokio::net::TcpStream, task_id: &str, n: u32) -> PieceAnswer {
    use tokio::io::AsyncWriteExt;
    use vortex_protocol::Message;
    let mut req = bytes::BytesMut::new();
    vortex_protocol::tlv::download_piece::DownloadPiece::new(task_id.into(), n)
        .encode_packet(&mut req);
    conn.write_all(&req).await.unwrap();
    read_answer(conn).await
}

pub async fn read_answer(conn: &mut tokio::net::TcpStream) -> PieceAnswer {
    use tokio::io::AsyncReadExt;
    use vortex_protocol::Message;
    use vortex_protocol::tlv::Tag;
    let mut head = [0u8; vortex_protocol::HEADER_SIZE];
    conn.read_exact(&mut head).await.unwrap();
    let header = vortex_protocol::Header::decode(&head).unwrap();
    let mut value = vec![0u8; header.length() as usize];
    conn.read_exact(&mut value).await.unwrap();
    match header.tag() {
        Tag::PieceContent => {
            let metadata = vortex_protocol::tlv::piece_content::PieceContent::decode(&value)
                .unwrap()
                .metadata;
            let mut bytes = vec![0u8; metadata.length as usize];
            conn.read_exact(&mut bytes).await.unwrap();
            Ok((metadata, bytes))
        }
        Tag::Error => {
            let e = vortex_protocol::tlv::error::Error::decode(&value).unwrap();
            Err((e.code, e.message))
        }
        tag => panic!("unexpected tag {tag:?}"),
    }
}

/// GETs `url` and reads the body to the end without keeping it; its length.
#[allow(dead_code)] // used by the benches
pub async fn drain(client: &reqwest::Client, url: &str) -> u64 {
    use futures_util::StreamExt;
    let resp = client.get(url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut n = 0;
    while let Some(c) = body.next().await {
        n += c.unwrap().len() as u64;
    }
    n
}

/// Stops a server process: SIGTERM first, so a master process (nginx,
/// gunicorn) takes its workers down with it (a SIGKILLed master can leave
/// workers behind); SIGKILL after 2 s.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `POST /api/v1/preheat` with `body` (and an idempotency key): the status
/// and the answer (JSON, or the text of a refusal).
pub async fn create_preheat(
    sg: &Seedgate,
    body: serde_json::Value,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = client()
        .post(sg.url("/api/v1/preheat"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

/// A response's JSON body.
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// `sg`'s `/fetch` URL for `url`.
pub fn fetch_url(sg: &Seedgate, url: &str) -> String {
    format!(
        "{}?url={}",
        sg.url("/fetch"),
        url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    )
}

/// Sends `raw` bytes on a new connection to `sg` and reads the answer to
/// the end (the request should say `Connection: close`): status, head and
/// body. For what an HTTP client library would normalise away (`%2e%2e`).
pub async fn raw_request(sg: &Seedgate, raw: &[u8]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(sg.addr).await.unwrap();
    conn.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, head.to_string(), body.to_string())
}

/// Every file under `dir`, recursively.
#[allow(dead_code)] // not every bench uses it
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Polls preheat job `id` until it leaves queued, listing and running.
#[allow(dead_code)] // used by the benches
pub async fn preheat_ended(sg: &Seedgate, id: &str) -> serde_json::Value {
    let client = client();
    loop {
        let j = json(
            client
                .get(sg.url(&format!("/api/v1/preheat/{id}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if !matches!(j["state"].as_str(), Some("running" | "queued" | "listing")) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `requests`, `concurrency` at a time, and writes each answer's
/// body to a file under `dir`, as a pipeline of `curl -o` would; with
/// `durable`, each file is synced once whole, as containerd's content
/// store commits a pulled blob. Returns the bytes written.
#[allow(dead_code)] // used by the benches
pub async fn download_to_files(
    requests: Vec<reqwest::RequestBuilder>,
    dir: &Path,
    concurrency: usize,
    durable: bool,
) -> u64 {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    std::fs::create_dir_all(dir).unwrap();
    futures_util::stream::iter(requests.into_iter().enumerate())
        .map(|(i, req)| {
            let path = dir.join(format!("{i}.bin"));
            async move {
                let resp = req.send().await.unwrap();
                assert!(
                    resp.status().is_success(),
                    "{}: {}",
                    resp.url(),
                    resp.status()
                );
                let mut file = tokio::fs::File::create(&path).await.unwrap();
                let mut body = resp.bytes_stream();
                let mut n = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.unwrap();
                    n += chunk.len() as u64;
                    file.write_all(&chunk).await.unwrap();
                }
                file.flush().await.unwrap();
                if durable {
                    file.sync_all().await.unwrap();
                }
                n
            }
        })
        .buffer_unordered(concurrency)
        .fold(0, |a, n| async move { a + n })
        .await
}

/// Creates a preheat job from `body` and waits for its end; how long it
/// took and its bytes done. It must succeed.
#[allow(dead_code)] // used by the benches
pub async fn timed_preheat(sg: &Seedgate, body: serde_json::Value) -> (Duration, u64) {
    let t = tokio::time::Instant::now();
    let (status, job) = create_preheat(sg, body, None).await;
    assert_eq!(status, 201, "{job}");
    let job = preheat_ended(sg, job["id"].as_str().unwrap()).await;
    let took = t.elapsed();
    assert_eq!(job["state"], "succeeded", "{job}");
    (took, job["progress"]["bytes_done"].as_u64().unwrap())
}
