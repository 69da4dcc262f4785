//! Client commands of the `seedgate` binary, talking to a running server
//! over its HTTP API: `get` (a resumable download with a progress bar),
//! `preheat` (a job, optionally followed to its end) and `status` (the
//! live state, printed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Where the server is and how to talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "SEEDGATE_SERVER",
        global = true
    )]
    pub server: String,
    /// The API token (server.api_token), if the server wants one.
    #[arg(long, env = "SEEDGATE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl Remote {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }

    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().context("the token")?,
            );
        }
        Ok(reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .build()?)
    }

    async fn json(&self, client: &reqwest::Client, path: &str) -> anyhow::Result<Value> {
        let resp = client
            .get(self.url(path))
            .send()
            .await
            .with_context(|| format!("asking {}", self.server))?;
        answer(resp).await
    }
}

/// The JSON of a successful answer, or an error with the server's reason.
async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("{status}: {}", text.trim());
    }
    Ok(serde_json::from_str(&text)?)
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// What a partial download was of, kept beside it so a resume only appends
/// to bytes of the same version.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Partial {
    source: String,
    etag: Option<String>,
    length: u64,
}

fn part_paths(out: &Path) -> (PathBuf, PathBuf) {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    (
        out.with_file_name(format!("{name}.part")),
        out.with_file_name(format!("{name}.part.json")),
    )
}

/// The gateway path of `source`: `ORIGIN/KEY`, or a full URL.
fn object_path(source: &str) -> anyhow::Result<String> {
    if source.contains("://") {
        let encoded: String = url::form_urlencoded::byte_serialize(source.as_bytes()).collect();
        return Ok(format!("/fetch?url={encoded}"));
    }
    match source.split_once('/') {
        Some((origin, key)) if !origin.is_empty() && !key.is_empty() => {
            Ok(format!("/o/{origin}/{key}"))
        }
        _ => bail!("'{source}' is neither ORIGIN/KEY nor a full URL"),
    }
}

/// `seedgate get`: downloads `source` into `out` through the gateway. The
/// bytes go to `OUT.part` first; an interrupted download resumes from it
/// when the object is still the same version, and the file is renamed to
/// `out` once whole.
pub async fn get(remote: &Remote, source: &str, out: &Path) -> anyhow::Result<()> {
    let client = remote.client()?;
    let path = object_path(source)?;
    let url = remote.url(&path);
    let head = client
        .head(&url)
        .send()
        .await
        .with_context(|| format!("asking {}", remote.server))?;
    if !head.status().is_success() {
        // HEAD has no body: ask again with GET for the reason.
        let resp = client.get(&url).send().await?;
        let status = resp.status();
        bail!("{source}: {status}: {}", resp.text().await?.trim());
    }
    // The header itself: a HEAD answer's body (and so its size hint) is
    // empty.
    let length: u64 = head
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("the answer has no Content-Length")?;
    let etag = head
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (part, meta) = part_paths(out);
    let want = Partial {
        source: source.to_string(),
        etag: etag.clone(),
        length,
    };
    let have = std::fs::read(&meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<Partial>(&b).ok());
    let mut from = match std::fs::metadata(&part) {
        Ok(m) if have.as_ref() == Some(&want) && want.etag.is_some() => m.len().min(length),
        _ => 0,
    };
    std::fs::write(&meta, serde_json::to_vec(&want)?)
        .with_context(|| format!("writing {}", meta.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(from == 0)
        .open(&part)
        .with_context(|| format!("opening {}", part.display()))?;
    file.set_len(from)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from))?;
    if from > 0 {
        eprintln!("resuming {source} at byte {from} of {length}");
    }
    let bar = bar(
        length,
        "{bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} eta {eta}",
    );
    bar.set_position(from);
    if from < length {
        let mut req = client.get(&url);
        if from > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let resp = req.send().await?;
        let status = resp.status();
        if !(status == 200 && from == 0 || status == 206 && from > 0) {
            bail!("{source}: {status}: {}", resp.text().await?.trim());
        }
        let got = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if got != etag {
            bail!("{source}: the object changed while it was fetched; run get again");
        }
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| {
                format!("{source}: the download broke off at byte {from} (run get again to resume)")
            })?;
            file.write_all(&chunk)?;
            from += chunk.len() as u64;
            bar.set_position(from);
        }
    }
    file.sync_all()?;
    bar.finish_and_clear();
    if from != length {
        bail!("{source}: got {from} of {length} bytes (run get again to resume)");
    }
    std::fs::rename(&part, out).with_context(|| format!("renaming to {}", out.display()))?;
    let _ = std::fs::remove_file(&meta);
    eprintln!("{source}: {length} bytes to {}", out.display());
    Ok(())
}

/// What `seedgate preheat` asks for.
#[derive(Debug, clap::Args)]
pub struct PreheatArgs {
    /// Full object URLs (under a configured origin's base_url).
    pub urls: Vec<String>,
    /// The origin of --key and --prefix.
    #[arg(long)]
    pub origin: Option<String>,
    /// A key of --origin (repeatable).
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// Every object of --origin whose key starts with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// An image, `REGISTRY/NAME:TAG` or `REGISTRY/NAME@sha256:HEX`: its
    /// config and layers (through --origin, or the registry origin whose
    /// base_url is `…REGISTRY/v2/`).
    #[arg(long, conflicts_with_all = ["urls", "keys", "prefix"])]
    pub image: Option<String>,
    /// The image of an index to take: OS/ARCH[/VARIANT] or all (default:
    /// the server's own).
    #[arg(long, requires = "image")]
    pub platform: Option<String>,
    /// Objects downloaded at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// The same key for the same request makes one job (safe to retry).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the job with a progress bar until it ends; exit 1 unless it
    /// succeeds.
    #[arg(long)]
    pub wait: bool,
}

/// `seedgate preheat`: creates a job, and with `--wait` follows it.
pub async fn preheat(remote: &Remote, args: &PreheatArgs) -> anyhow::Result<bool> {
    let client = remote.client()?;
    let mut body = serde_json::json!({});
    if !args.urls.is_empty() {
        body["urls"] = args.urls.clone().into();
    }
    if let Some(o) = &args.origin {
        body["origin"] = o.clone().into();
    }
    if !args.keys.is_empty() {
        body["keys"] = args.keys.clone().into();
    }
    if let Some(p) = &args.prefix {
        body["prefix"] = p.clone().into();
    }
    if let Some(i) = &args.image {
        body["image"] = i.clone().into();
    }
    if let Some(p) = &args.platform {
        body["platform"] = p.clone().into();
    }
    if let Some(c) = args.concurrency {
        body["concurrency"] = c.into();
    }
    let mut req = client
        .post(remote.url("/api/v1/preheat"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(k) = &args.idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let job = answer(
        req.send()
            .await
            .with_context(|| format!("asking {}", remote.server))?,
    )
    .await?;
    let id = job["id"]
        .as_str()
        .context("the answer has no job id")?
        .to_string();
    println!("preheat job {id}");
    if !args.wait {
        return Ok(true);
    }
    let bar = bar(0, "{msg} [{wide_bar}] {bytes}/{total_bytes}");
    let job = loop {
        let job = remote
            .json(&client, &format!("/api/v1/preheat/{id}"))
            .await?;
        let p = &job["progress"];
        bar.set_length(p["bytes_total"].as_u64().unwrap_or(0));
        bar.set_position(p["bytes_done"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "{} {}/{} objects",
            job["state"].as_str().unwrap_or("?"),
            p["done"],
            p["total"]
        ));
        if matches!(
            job["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    bar.finish_and_clear();
    let p = &job["progress"];
    println!(
        "{}: {} of {} objects done, {} missing, {} failed, {} bytes",
        job["state"].as_str().unwrap_or("?"),
        p["done"],
        p["total"],
        p["missing"],
        p["failed"],
        p["bytes_done"]
    );
    for o in job["objects"].as_array().into_iter().flatten() {
        if let Some(e) = o["error"].as_str() {
            println!(
                "  {} {}: {e}",
                o["state"].as_str().unwrap_or("?"),
                o["url"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(job["state"] == "succeeded")
}

fn mib(v: &Value) -> String {
    format!("{:.1} MiB", v.as_f64().unwrap_or(0.0) / (1 << 20) as f64)
}

/// `seedgate status`: the server's live state, printed.
pub async fn status(remote: &Remote) -> anyhow::Result<()> {
    let client = remote.client()?;
    let ready = client
        .get(remote.url("/readyz"))
        .send()
        .await
        .with_context(|| format!("asking {}", remote.server))?;
    let ready: Value = serde_json::from_slice(&ready.bytes().await?)?;
    println!(
        "server {}: {}, storage {}, {} plugins, {} origins",
        remote.server,
        if ready["ready"] == true {
            "ready"
        } else {
            "NOT ready"
        },
        ready["storage"].as_str().unwrap_or("?"),
        ready["plugins"],
        ready["origins"]
    );
    let downloads = remote.json(&client, "/api/v1/downloads").await?;
    println!(
        "\ndownloads in flight: {}",
        downloads.as_array().map_or(0, Vec::len)
    );
    for d in downloads.as_array().into_iter().flatten() {
        let len = d["content_length"].as_f64().unwrap_or(0.0).max(1.0);
        let done = d["bytes_landed"].as_f64().unwrap_or(0.0);
        println!(
            "  {:>5.1}%  {}/{} pieces  {}  {}",
            100.0 * done / len,
            d["pieces_landed"],
            d["pieces"],
            mib(&d["content_length"]),
            d["url"].as_str().unwrap_or("?")
        );
    }
    let jobs = remote.json(&client, "/api/v1/preheat").await?;
    println!("\npreheat jobs: {}", jobs.as_array().map_or(0, Vec::len));
    for j in jobs.as_array().into_iter().flatten().take(10) {
        let p = &j["progress"];
        println!(
            "  {}  {:<9}  {}/{} objects  {} of {}",
            j["id"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
            p["done"],
            p["total"],
            mib(&p["bytes_done"]),
            mib(&p["bytes_total"])
        );
    }
    let plugins = remote.json(&client, "/api/v1/plugins").await?;
    println!("\nplugins:");
    for p in plugins.as_array().into_iter().flatten() {
        println!(
            "  {:<12} {} {} calls, {} failures, {} refused, p50 {} µs, p99 {} µs, {} in flight",
            p["name"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or("-"),
            p["calls"],
            p["failures"],
            p["rejected"],
            p["p50_call_us"],
            p["p99_call_us"],
            p["in_flight"]
        );
    }
    let breakers = remote.json(&client, "/api/v1/breakers").await?;
    let open: Vec<&Value> = breakers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["state"] != "closed")
        .collect();
    println!(
        "\nbreakers: {} known, {} not closed",
        breakers.as_array().map_or(0, Vec::len),
        open.len()
    );
    for b in open {
        let what = b["authority"]
            .as_str()
            .or(b["plugin"].as_str())
            .unwrap_or("?");
        println!(
            "  {what}: {} (next try in {} ms)",
            b["state"].as_str().unwrap_or("?"),
            b["retry_in_ms"]
        );
    }
    let negative = remote.json(&client, "/api/v1/negative-cache").await?;
    println!(
        "\nnegative cache: {} objects remembered as missing",
        negative.as_array().map_or(0, Vec::len)
    );
    // The built-in scheduler's cluster, when it runs.
    if let Ok(hosts) = remote.json(&client, "/api/v1/cluster/hosts").await {
        let tasks = remote.json(&client, "/api/v1/cluster/tasks").await?;
        let hosts: Vec<&Value> = hosts.as_array().into_iter().flatten().collect();
        println!(
            "\ncluster: {} hosts, {} tasks",
            hosts.len(),
            tasks.as_array().map_or(0, Vec::len)
        );
        for h in hosts {
            println!(
                "  {:<40} {:<7} {} peers, last announce {} s ago{}",
                h["id"].as_str().unwrap_or("?"),
                h["type"].as_str().unwrap_or("?"),
                h["peers"],
                h["last_announce_ms_ago"].as_u64().unwrap_or(0) / 1000,
                if h["local"] == true {
                    " (this seedgate)"
                } else {
                    ""
                }
            );
        }
    }
    let tasks = remote.json(&client, "/api/v1/tasks?limit=10000").await?;
    let stored: f64 = tasks
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["bytes_stored"].as_f64().unwrap_or(0.0))
        .sum();
    println!(
        "tasks: {} ({} stored)",
        tasks.as_array().map_or(0, Vec::len),
        mib(&Value::from(stored))
    );
    Ok(())
}

/// `seedgate drain`: what to wait for.
#[derive(clap::Args)]
pub struct DrainArgs {
    /// How long to wait for uploads and downloads in flight to end; past
    /// it, exits 1 saying what is still running.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Start the drain and return at once.
    #[arg(long)]
    pub no_wait: bool,
}

/// Drains a running server before maintenance: it stops taking new tasks
/// and preheat jobs, leaves its schedulers, and this waits until no upload
/// or download is in flight. True when the drain is done.
pub async fn drain(remote: &Remote, args: &DrainArgs) -> anyhow::Result<bool> {
    let client = remote.client()?;
    let resp = client
        .post(remote.url("/api/v1/drain"))
        .send()
        .await
        .with_context(|| format!("asking {}", remote.server))?;
    let mut view = answer(resp).await?;
    eprintln!(
        "{}: draining; no new tasks or preheat jobs, stored objects still served",
        remote.server
    );
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut said = String::new();
    loop {
        let line = format!(
            "uploads in flight {}, downloads running {}, schedulers left: {}",
            view["uploads_in_flight"],
            view["downloads_running"],
            match view["schedulers_left"].as_bool() {
                Some(true) => "yes",
                Some(false) => "not yet",
                None => "none (no seed peer)",
            }
        );
        if line != said {
            eprintln!("{line}");
            said = line;
        }
        if view["done"] == true {
            println!("drained: safe to stop {}", remote.server);
            return Ok(true);
        }
        if args.no_wait {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "not drained within {}: {said}",
                humantime::format_duration(args.timeout)
            );
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        view = remote.json(&client, "/api/v1/drain").await?;
    }
}
