//! Images from a real OCI registry (Debian's docker-registry, the CNCF
//! distribution server) through the `oci` plugin: image preheat jobs with
//! basic and bearer-token auth, platforms of an index, a layer shared by
//! two images, blob task ids as Dragonfly's registry mirror names them,
//! and a blob whose bytes do not match its digest.

use std::time::Duration;

use serde_json::{Value, json};

use crate::preheat::finished;
use crate::registry::*;
use crate::support::*;

const MIB: usize = 1 << 20;

/// Two images of one index share `shared`; `single` is an image of its own.
pub struct Images {
    pub single: Image,
    pub amd64: Image,
    pub arm64: Image,
}

impl Images {
    pub fn new() -> Self {
        let layer =
            |mib: usize, seed: u64| Blob::new(LAYER_TYPE, pseudo_random(mib * MIB + 123, seed));
        let shared = layer(5, 10);
        Self {
            single: Image::new("linux", "amd64", vec![layer(6, 1), layer(3, 2)]),
            amd64: Image::new("linux", "amd64", vec![shared.clone(), layer(4, 11)]),
            arm64: Image::new("linux", "arm64", vec![shared, layer(3, 12)]),
        }
    }

    pub async fn push(&self, registry: &Registry) {
        let pusher = Pusher::new(registry);
        pusher.image("team/app", "1.0", &self.single).await;
        pusher
            .index("team/multi", "2.0", &[&self.amd64, &self.arm64])
            .await;
    }
}

pub fn config(registry: &Registry, credentials: Option<(&str, &str)>, extra: &str) -> String {
    let creds = credentials
        .map(|(u, p)| format!("[origins.reg.config]\nusername = \"{u}\"\npassword = \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        "{extra}\n[origins.reg]\nplugin = \"oci\"\nbase_url = \"http://{}/v2/\"\nallowed_hosts = [\"127.0.0.1\"]\nforward_headers = [\"authorization\"]\n{creds}",
        registry.host()
    )
}

async fn preheat(sg: &Seedgate, body: Value) -> Value {
    let (status, job) = create_preheat(sg, body.clone(), None).await;
    assert_eq!(status, 201, "{body}: {job}");
    finished(sg, job["id"].as_str().unwrap(), Duration::from_secs(60)).await
}

/// The digests a finished job stored, checking each item.
fn stored_digests(job: &Value) -> Vec<String> {
    assert_eq!(job["state"], "succeeded", "{job:#}");
    job["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let url = o["url"].as_str().unwrap();
            let digest = url.rsplit_once("/blobs/").unwrap().1.to_owned();
            // The task is named by the digest alone, as dfdaemon's
            // registry mirror names it.
            assert_eq!(
                o["task_id"].as_str().unwrap(),
                digest.strip_prefix("sha256:").unwrap(),
                "{o}"
            );
            digest
        })
        .collect()
}

/// The registry sent each of `blobs` exactly once (in pieces or whole).
fn fetched_once<'a>(registry: &Registry, blobs: impl IntoIterator<Item = &'a Blob>) {
    for blob in blobs {
        assert_eq!(
            registry.blob_bytes_sent(&blob.digest()),
            blob.bytes.len() as u64,
            "{} fetched once",
            blob.digest()
        );
    }
}

pub fn digests(image: &Image) -> Vec<String> {
    image.blobs().iter().map(|b| b.digest()).collect()
}

/// Reads every blob back from seedgate's store: each is a hit, named by
/// its digest, and its bytes hash to it.
async fn check_stored(sg: &Seedgate, name: &str, image: &Image) {
    for blob in image.blobs() {
        let resp = get(&sg.url(&format!("/o/reg/{name}/blobs/{}", blob.digest()))).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
        assert_eq!(
            task_of(&resp),
            blob.digest().strip_prefix("sha256:").unwrap()
        );
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(format!("sha256:{}", sha256(&bytes)), blob.digest());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_preheat_with_basic_auth_stores_each_platforms_blobs_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"), Auth::Basic);
    let images = Images::new();
    images.push(&registry).await;
    let sg = Seedgate::start(dir.path(), &config(&registry, Some((USER, PASSWORD)), ""));
    let host = registry.host();

    // A single-platform image: its config and layers, nothing else.
    let job = preheat(&sg, json!({"image": format!("{host}/team/app:1.0")})).await;
    assert_eq!(stored_digests(&job), digests(&images.single));
    assert_eq!(
        job["request"]["origin"], "reg",
        "the registry's origin was found"
    );
    check_stored(&sg, "team/app", &images.single).await;
    fetched_once(&registry, images.single.blobs());

    // Both platforms of the index, one after the other: the shared layer
    // is one task and is fetched once.
    let job = preheat(
        &sg,
        json!({"image": format!("{host}/team/multi:2.0"), "platform": "linux/arm64"}),
    )
    .await;
    assert_eq!(stored_digests(&job), digests(&images.arm64));
    let job = preheat(
        &sg,
        json!({"image": format!("{host}/team/multi:2.0"), "platform": "linux/amd64"}),
    )
    .await;
    assert_eq!(stored_digests(&job), digests(&images.amd64));
    check_stored(&sg, "team/multi", &images.amd64).await;
    check_stored(&sg, "team/multi", &images.arm64).await;
    // Both images hold the shared layer: it too was sent once.
    assert_eq!(
        images.amd64.layers[0].digest(),
        images.arm64.layers[0].digest()
    );
    fetched_once(
        &registry,
        images.amd64.blobs().into_iter().chain(images.arm64.blobs()),
    );

    // `all`: every platform's blobs once in one job (already stored).
    let job = preheat(
        &sg,
        json!({"image": format!("{host}/team/multi:2.0"), "platform": "all"}),
    )
    .await;
    let mut all = stored_digests(&job);
    all.sort();
    let mut want: Vec<String> = digests(&images.amd64)
        .into_iter()
        .chain(digests(&images.arm64))
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(all, want);

    // A second preheat costs the registry manifest requests only.
    let blobs_before = registry.blob_requests();
    let before = registry.requests().len();
    let job = preheat(&sg, json!({"image": format!("{host}/team/app:1.0")})).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        registry.blob_requests(),
        blobs_before,
        "no blob request for stored blobs"
    );
    let later = registry.requests();
    assert!(later.len() > before);
    for (method, path, _, _) in &later[before..] {
        assert!(
            path.contains("/manifests/"),
            "only manifests: {method} {path}"
        );
    }

    // A missing tag fails the job with its reason.
    let job = preheat(&sg, json!({"image": format!("{host}/team/app:9.9")})).await;
    assert_eq!(job["state"], "failed");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("resolving image")
            && error.contains("team/app:9.9")
            && error.contains("404"),
        "{error}"
    );
    assert_eq!(job["status"], 404);

    // A platform the index does not have is named with those it has.
    let job = preheat(
        &sg,
        json!({"image": format!("{host}/team/multi:2.0"), "platform": "linux/s390x"}),
    )
    .await;
    assert_eq!(job["state"], "failed");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("linux/s390x") && error.contains("linux/amd64, linux/arm64"),
        "{error}"
    );

    // The command line: `preheat --image --platform --wait`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .args([
            "preheat",
            "--image",
            &format!("{host}/team/multi:2.0"),
            "--platform",
            "linux/arm64",
            "--wait",
            "--server",
            &sg.url(""),
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("succeeded: 3 of 3 objects done"), "{text}");

    // Bad requests are refused before a job exists, naming the field.
    for (body, says) in [
        (json!({"image": "team/app:1.0"}), "registry"),
        (
            json!({"image": "nowhere.example/app:1.0"}),
            "no origin is the registry",
        ),
        (
            json!({"image": format!("{host}/team/app:1.0"), "platform": "linux"}),
            "platform 'linux'",
        ),
        (
            json!({"image": format!("{host}/team/app:1.0"), "keys": ["x"]}),
            "no urls, keys or prefix",
        ),
        (
            json!({"image": format!("{host}/team/app:1.0"), "platforms": "all"}),
            "platforms",
        ),
    ] {
        let (status, answer) = create_preheat(&sg, body.clone(), None).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.to_string().contains(says), "{body}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_wrong_credentials_and_forwarded_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::start(60);
    let registry = Registry::start(&dir.path().join("registry"), Auth::Token(&issuer));
    let images = Images::new();
    images.push(&registry).await;
    let host = registry.host();

    // Configured credentials: the plugin answers the bearer challenge.
    let sg = Seedgate::start(dir.path(), &config(&registry, Some((USER, PASSWORD)), ""));
    let issued = issuer.issued.load(std::sync::atomic::Ordering::SeqCst);
    let job = preheat(
        &sg,
        json!({"image": format!("{host}/team/multi:2.0"), "platform": "linux/amd64"}),
    )
    .await;
    assert_eq!(stored_digests(&job), digests(&images.amd64));
    check_stored(&sg, "team/multi", &images.amd64).await;
    assert!(
        issuer.issued.load(std::sync::atomic::Ordering::SeqCst) > issued,
        "tokens were asked for"
    );
    drop(sg);

    // Wrong credentials: refused at once (403), not retried.
    let dir2 = tempfile::tempdir().unwrap();
    let sg = Seedgate::start(dir2.path(), &config(&registry, Some((USER, "wrong")), ""));
    let refused = issuer.refused.load(std::sync::atomic::Ordering::SeqCst);
    let job = preheat(&sg, json!({"image": format!("{host}/team/app:1.0")})).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["status"], 403, "{job:#}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("refused the credentials"),
        "{job:#}"
    );
    let asked = issuer.refused.load(std::sync::atomic::Ordering::SeqCst) - refused;
    assert_eq!(asked, 1, "a refusal is final: the issuer was asked once");
    // The same credentials on a job of the image's blobs (no manifest to
    // fail first): every item is 403 with the reason, and the issuer was
    // asked once per blob, not again.
    let refused = issuer.refused.load(std::sync::atomic::Ordering::SeqCst);
    let blobs = digests(&images.single);
    let keys: Vec<String> = blobs
        .iter()
        .map(|d| format!("team/app/blobs/{d}"))
        .collect();
    let job = preheat(&sg, json!({"origin": "reg", "keys": keys})).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    let items = job["objects"].as_array().unwrap();
    assert_eq!(items.len(), blobs.len(), "{job:#}");
    for item in items {
        assert_eq!(item["status"], 403, "{item:#}");
        assert!(
            item["error"]
                .as_str()
                .unwrap()
                .contains("refused the credentials"),
            "{item:#}"
        );
    }
    let asked = issuer.refused.load(std::sync::atomic::Ordering::SeqCst) - refused;
    assert_eq!(
        asked,
        blobs.len(),
        "each blob's refusal is final: one request each"
    );
    drop(sg);

    // Credentials forwarded by the job (as Harbor sends them), never
    // stored or answered: no config credentials on this server.
    let dir3 = tempfile::tempdir().unwrap();
    let sg = Seedgate::start_logged(dir3.path(), &config(&registry, None, ""));
    let secret = basic(USER, PASSWORD);
    let (status, created) = create_preheat(
        &sg,
        json!({"image": format!("{host}/team/app:1.0"), "headers": {"Authorization": secret}}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let job = finished(&sg, id, Duration::from_secs(60)).await;
    assert_eq!(stored_digests(&job), digests(&images.single));
    let b64 = secret.strip_prefix("Basic ").unwrap();
    for answer in [
        created.to_string(),
        job.to_string(),
        get(&sg.url("/api/v1/preheat")).await.text().await.unwrap(),
    ] {
        assert!(
            !answer.contains(b64),
            "the credential is answered: {answer}"
        );
    }
    assert_eq!(job["request"]["headers"]["Authorization"], "[redacted]");
    drop(sg);
    // Neither in the store (sled's records, the job) nor in the debug log.
    let leaked: Vec<_> = files_under(dir3.path())
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(b64.len())
                .any(|w| w == b64.as_bytes())
        })
        .collect();
    assert!(leaked.is_empty(), "the credential is on disk in {leaked:?}");
    let log = std::fs::read_to_string(dir3.path().join("seedgate.log")).unwrap();
    assert!(
        log.contains("image resolved"),
        "the log is the server's debug log"
    );

    // Without any credentials the registry wants some: 403, named.
    let sg = Seedgate::start(dir3.path(), &config(&registry, None, ""));
    let job = preheat(&sg, json!({"image": format!("{host}/team/app:1.0")})).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["status"], 403, "{job:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_does_not_match_its_digest_is_never_complete() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"), Auth::Basic);
    let images = Images::new();
    images.push(&registry).await;
    let sg = Seedgate::start(dir.path(), &config(&registry, Some((USER, PASSWORD)), ""));
    // The registry's storage rots: same length, other bytes.
    let bad = &images.single.layers[0];
    let file = registry.blob_file(&bad.digest());
    flip_byte(&file, MIB);

    // A reader gets a body cut short, never a complete one.
    let url = sg.url(&format!("/o/reg/team/app/blobs/{}", bad.digest()));
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "the body of a blob that fails its digest is cut"
    );
    let head = client().head(&url).send().await.unwrap();
    assert_ne!(
        head.headers()["x-seedgate-cache"],
        "hit",
        "nothing is served as complete"
    );

    // A preheat fails that blob, with the reason, and stores the others.
    let job = preheat(
        &sg,
        json!({"image": format!("{}/team/app:1.0", registry.host())}),
    )
    .await;
    assert_eq!(job["state"], "failed");
    for o in job["objects"].as_array().unwrap() {
        if o["url"].as_str().unwrap().ends_with(&bad.digest()) {
            assert_eq!(o["state"], "failed", "{o}");
            assert!(
                o["error"]
                    .as_str()
                    .unwrap()
                    .contains("not the digest that names it"),
                "{o}"
            );
            assert_eq!(o["status"], 502, "{o}");
        } else {
            assert_eq!(o["state"], "done", "{o}");
        }
    }
}

/// A registry on object storage answers blob reads with a `307` to a
/// presigned S3 URL: the host follows it only to a destination the
/// origin's allowlist names, and refuses it, naming the rule, otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirects_to_storage_are_followed_within_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = crate::s3_server::S3Server::start(&dir.path().join("s3"));
    let images = Images::new();
    let filled = Registry::start(&dir.path().join("filled"), Auth::Basic);
    Pusher::new(&filled)
        .image("team/app", "1.0", &images.single)
        .await;
    let registry = Registry::start_on_s3(
        &dir.path().join("registry"),
        Auth::Basic,
        &s3,
        "registry",
        &filled,
    );
    drop(filled);
    let image = format!("{}/team/app:1.0", registry.host());

    // The storage's address is allowed: blobs come from S3.
    let allow = format!(
        "[origins.reg]\nallowed_hosts = [\"127.0.0.1\", \"{}\"]\n",
        s3.addr
    );
    let conf = config(&registry, Some((USER, PASSWORD)), "")
        .replace("allowed_hosts = [\"127.0.0.1\"]\n", "");
    let conf = conf.replace("[origins.reg]\n", &allow);
    let sg = Seedgate::start(dir.path(), &conf);
    let s3_gets = s3
        .requests()
        .iter()
        .filter(|(m, p)| m == "GET" && p.ends_with("/data"))
        .count();
    let job = preheat(&sg, json!({"image": image})).await;
    assert_eq!(stored_digests(&job), digests(&images.single), "{job:#}");
    check_stored(&sg, "team/app", &images.single).await;
    let redirects = registry
        .requests()
        .iter()
        .filter(|r| r.0 == "GET" && r.1.contains("/blobs/") && r.2 == 307)
        .count();
    assert!(
        redirects >= images.single.blobs().len(),
        "the registry redirected each blob read ({redirects})"
    );
    assert!(
        s3.requests()
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with("/data"))
            .count()
            > s3_gets,
        "the bytes came from S3"
    );
    drop(sg);

    // Not allowed: refused, with the rule, never fetched.
    let dir2 = tempfile::tempdir().unwrap();
    let sg = Seedgate::start(dir2.path(), &config(&registry, Some((USER, PASSWORD)), ""));
    // Reads of the image's blobs (the registry reads its manifests from
    // the storage itself).
    let hexes: Vec<String> = digests(&images.single)
        .iter()
        .map(|d| d[7..].to_owned())
        .collect();
    let blob_reads = || {
        s3.requests()
            .iter()
            .filter(|(_, p)| hexes.iter().any(|h| p.ends_with(&format!("{h}/data"))))
            .count()
    };
    let before = blob_reads();
    let job = preheat(&sg, json!({"image": image})).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    for o in job["objects"].as_array().unwrap() {
        assert_eq!(o["state"], "failed", "{o}");
        let e = o["error"].as_str().unwrap();
        assert!(
            e.contains("redirect") && e.contains(&s3.addr.port().to_string()),
            "{o}"
        );
    }
    assert_eq!(blob_reads(), before, "no blob was read from the storage");
}

/// Bearer tokens that expire while a blob downloads: the plan carries the
/// token's expiry and the host asks for a new plan (a new token) before it
/// runs out, as it renews presigned S3 plans. The registry is behind a
/// slow link and pieces are fetched one at a time, so one layer takes
/// several token lifetimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_expire_mid_download_are_renewed_with_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::start(2);
    let registry = Registry::start(&dir.path().join("registry"), Auth::Token(&issuer));
    let layer = Blob::new(LAYER_TYPE, pseudo_random(16 * MIB, 99));
    let image = Image::new("linux", "amd64", vec![layer.clone()]);
    Pusher::new(&registry).image("team/slow", "1", &image).await;
    let link = Link::start(registry.port, 3 * MIB as u64).await;
    let conf = config(
        &registry,
        Some((USER, PASSWORD)),
        "[download]\npiece_concurrency = 1\nplan_refresh_margin = \"1s\"\n",
    )
    .replace(&registry.host(), &format!("127.0.0.1:{}", link.port));
    let sg = Seedgate::start(dir.path(), &conf);
    let issued = issuer.issued.load(std::sync::atomic::Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let job = preheat(
        &sg,
        json!({"image": format!("127.0.0.1:{}/team/slow:1", link.port)}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(stored_digests(&job), digests(&image), "{job:#}");
    let resp = get(&sg.url(&format!("/o/reg/team/slow/blobs/{}", layer.digest()))).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), layer.digest()[7..]);
    let tokens = issuer.issued.load(std::sync::atomic::Ordering::SeqCst) - issued;
    // Each of the manifest, the config and the layer costs two tokens (its
    // stat, its plan): six. Every further one renewed a plan within the
    // layer's download (four pieces over 5 s, 2 s tokens renewed 1 s
    // before they expire).
    assert!(
        took > Duration::from_secs(4),
        "the download outlived its tokens ({took:?})"
    );
    assert!(
        tokens >= 8,
        "tokens were renewed during the download: {tokens} in {took:?}"
    );
}

/// The task a real dfdaemon's proxy asks the scheduler for when a client
/// pulls a blob through it is the task seedgate preheated: dfdaemon names
/// blob tasks by digest (`enableTaskIDBasedBlobDigest`, on by default),
/// and so does seedgate, so the pull is served from seedgate's seed peer
/// and the registry sends the blob no second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_preheated_here_is_the_task_a_dfdaemon_proxy_pulls() {
    let dir = tempfile::tempdir().unwrap();
    // Anonymous: the third way a registry is reached.
    let registry = Registry::start(&dir.path().join("registry"), Auth::Anonymous);
    let images = Images::new();
    images.push(&registry).await;
    let scheduler_port = free_port();
    let seed_peer = format!(
        "[seed_peer]\nupload_listen = \"127.0.0.1:{}\"\npiece_listen = \"127.0.0.1:{}\"\nhostname = \"sg-oci\"\n[scheduler]\nlisten = \"127.0.0.1:{scheduler_port}\"\n",
        free_port(),
        free_port()
    );
    let sg = Seedgate::start(dir.path(), &config(&registry, None, &seed_peer));
    let job = preheat(
        &sg,
        json!({"image": format!("{}/team/app:1.0", registry.host())}),
    )
    .await;
    assert_eq!(stored_digests(&job), digests(&images.single));
    let layer = &images.single.layers[0];
    let sent = registry.blob_bytes_sent(&layer.digest());
    assert_eq!(sent, layer.bytes.len() as u64);

    let peer = crate::dfdaemon::Dfdaemon::start("oci-dfpeer", scheduler_port, false).await;
    let proxied = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://127.0.0.1:{}", peer.proxy_port)).unwrap())
        .build()
        .unwrap();
    let url = format!(
        "http://{}/v2/team/app/blobs/{}",
        registry.host(),
        layer.digest()
    );
    let resp = proxied.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(
        format!("sha256:{}", sha256(&bytes)),
        layer.digest(),
        "the bytes"
    );
    // (dfdaemon asks the origin for one byte to learn the length.)
    let again = registry.blob_bytes_sent(&layer.digest()) - sent;
    assert!(
        again < 4096,
        "the registry sent {again} more bytes: the proxy's task was not seedgate's"
    );
    let task =
        json(get(&sg.url(&format!("/api/v1/cluster/tasks/{}", &layer.digest()[7..]))).await).await;
    assert!(
        task["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["host_id"] == peer.host_id.as_str() && p["state"] == "Succeeded"),
        "the dfdaemon's peer of the digest task: {task:#}"
    );
}
