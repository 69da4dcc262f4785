//! A real OCI registry for the image tests: Debian's `docker-registry` (the
//! CNCF distribution server 2.8), spawned with htpasswd basic auth or with
//! token auth whose issuer is [`TokenIssuer`], this file's own server of
//! the distribution token spec (ES256 tokens carrying their certificate in
//! `x5c`, the certificate in the registry's `rootcertbundle`). The
//! registry's access log counts the requests it saw.
//!
//! [`Pusher`] pushes images the way `docker push` does, through the
//! registry HTTP API: each blob by a monolithic upload (`POST` then `PUT
//! ?digest=`), then the manifest `PUT`, answering auth challenges.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use parking_lot::Mutex;
use serde_json::json;

use crate::support::{free_port, json, sha256, stop};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret-registry-password";

const SERVICE: &str = "seedgate-test-registry";
const ISSUER: &str = "seedgate-test-issuer";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A token issuer as the distribution token spec describes it:
/// `GET /token?service=S&scope=repository:NAME:ACTIONS` with basic
/// credentials answers `{"token", "expires_in"}`; wrong or missing
/// credentials get 401.
pub struct TokenIssuer {
    pub addr: SocketAddr,
    cert_pem: String,
    /// Tokens issued, and requests refused.
    pub issued: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Signer {
    key: aws_lc_rs::signature::EcdsaKeyPair,
    x5c: String,
    ttl_s: u64,
}

impl Signer {
    fn token(&self, subject: &str, scopes: &[String]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + self.ttl_s, "nbf": now - 10, "iat": now,
            "jti": format!("{:016x}", fastrand::u64(..)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = self.key.sign(&rng, signing_input.as_bytes()).unwrap();
        format!("{signing_input}.{}", b64url(sig.as_ref()))
    }
}

impl TokenIssuer {
    /// Issues tokens that live `ttl_s` seconds to `USER`/`PASSWORD`.
    pub fn start(ttl_s: u64) -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["seedgate-token-issuer".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let signer = Arc::new(Signer {
            key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der())
                .unwrap(),
            x5c: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            ttl_s,
        });
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = {
            let (issued, refused) = (issued.clone(), refused.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let app = axum::Router::new().route(
                        "/token",
                        axum::routing::get(
                            move |headers: http::HeaderMap,
                                  axum::extract::RawQuery(query): axum::extract::RawQuery| {
                                let (signer, issued, refused) =
                                    (signer.clone(), issued.clone(), refused.clone());
                                async move {
                                    let auth = headers
                                        .get("authorization")
                                        .and_then(|v| v.to_str().ok());
                                    if auth != Some(basic(USER, PASSWORD).as_str()) {
                                        refused.fetch_add(1, Ordering::SeqCst);
                                        return (
                                            http::StatusCode::UNAUTHORIZED,
                                            axum::Json(json!({"errors": [{"code": "UNAUTHORIZED", "message": "wrong credentials"}]})),
                                        );
                                    }
                                    let scopes: Vec<String> = url::form_urlencoded::parse(
                                        query.unwrap_or_default().as_bytes(),
                                    )
                                    .filter(|(k, _)| k == "scope")
                                    .map(|(_, v)| v.into_owned())
                                    .collect();
                                    issued.fetch_add(1, Ordering::SeqCst);
                                    let token = signer.token(USER, &scopes);
                                    (
                                        http::StatusCode::OK,
                                        axum::Json(json!({"token": token, "expires_in": signer.ttl_s})),
                                    )
                                }
                            },
                        ),
                    );
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await
                        .unwrap();
                });
            })
        };
        Self {
            addr: addr_rx.recv().unwrap(),
            cert_pem: cert.pem(),
            issued,
            refused,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the registry checks its clients.
pub enum Auth<'a> {
    /// Anyone may pull and push.
    Anonymous,
    /// htpasswd: `USER`/`PASSWORD`.
    Basic,
    /// Tokens from this issuer.
    Token(&'a TokenIssuer),
}

pub struct Registry {
    child: Child,
    /// The address it listens on (127.0.0.1, or its namespace's).
    pub ip: String,
    pub port: u16,
    pub root: PathBuf,
}

/// Where a registry runs and what it serves, besides its auth.
#[derive(Default)]
struct Placement {
    /// The `storage:` section (default: the filesystem under `root/data`).
    storage: Option<String>,
    /// A network namespace and its address to listen on.
    netns: Option<(String, String)>,
}

impl Registry {
    /// Keeps its blobs on the filesystem under `root`.
    pub fn start(root: &Path, auth: Auth<'_>) -> Self {
        Self::spawn(root, auth, Placement::default())
    }

    /// Serves what `filled` stores (its filesystem, shared), from network
    /// namespace `netns` on `ip`: a registry behind a shaped link.
    #[allow(dead_code)] // used by benches/image.rs
    pub fn start_in(root: &Path, auth: Auth<'_>, netns: &str, ip: &str, filled: &Registry) -> Self {
        let storage = format!(
            "  filesystem:\n    rootdirectory: {}\n",
            filled.root.join("data").display()
        );
        Self::spawn(
            root,
            auth,
            Placement {
                storage: Some(storage),
                netns: Some((netns.to_owned(), ip.to_owned())),
            },
        )
    }

    /// Keeps its blobs in `bucket` of an S3 server and answers blob reads
    /// with a `307` to a presigned URL there, as registries on object
    /// storage do. Its content is `filled`'s (s3s-fs lacks the multipart
    /// listing the registry's uploads need, so images are pushed to a
    /// registry on the filesystem and its files copied into the bucket:
    /// the layouts are the same).
    pub fn start_on_s3(
        root: &Path,
        auth: Auth<'_>,
        s3: &crate::s3_server::S3Server,
        bucket: &str,
        filled: &Registry,
    ) -> Self {
        s3.bucket(bucket);
        let data = filled.root.join("data");
        let mut stack = vec![data.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let key = path.strip_prefix(&data).unwrap().to_str().unwrap();
                    s3.put(bucket, &format!("r/{key}"), &std::fs::read(&path).unwrap());
                }
            }
        }
        let storage = format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: us-east-1\n    regionendpoint: {}\n    bucket: {bucket}\n    secure: false\n    v4auth: true\n    rootdirectory: /r\n  redirect:\n    disable: false\n",
            crate::s3_server::ACCESS_KEY,
            crate::s3_server::SECRET_KEY,
            s3.endpoint()
        );
        Self::spawn(
            root,
            auth,
            Placement {
                storage: Some(storage),
                netns: None,
            },
        )
    }

    fn spawn(root: &Path, auth: Auth<'_>, placement: Placement) -> Self {
        let Placement { storage, netns } = placement;
        let ip = netns
            .as_ref()
            .map_or("127.0.0.1".to_owned(), |(_, ip)| ip.clone());
        std::fs::create_dir_all(root).unwrap();
        let auth = match auth {
            Auth::Anonymous => String::new(),
            Auth::Basic => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", USER, PASSWORD])
                    .output()
                    .expect("htpasswd (apache2-utils; scripts/setup installs it)");
                assert!(out.status.success());
                std::fs::write(root.join("htpasswd"), out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: seedgate-test\n    path: {}\n",
                    root.join("htpasswd").display()
                )
            }
            Auth::Token(issuer) => {
                std::fs::write(root.join("issuer.pem"), &issuer.cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    issuer.realm(),
                    root.join("issuer.pem").display()
                )
            }
        };
        let port = free_port();
        let storage = storage.unwrap_or_else(|| {
            format!(
                "  filesystem:\n    rootdirectory: {}\n",
                root.join("data").display()
            )
        });
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n{storage}  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n{auth}"
        );
        std::fs::write(root.join("config.yml"), config).unwrap();
        let mut command = match &netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "docker-registry"]);
                c
            }
            None => Command::new("docker-registry"),
        };
        let mut child = command
            // The s3 driver's AWS SDK fails to start with a custom CA
            // bundle in the environment (this machine sets one).
            .env_remove("AWS_CA_BUNDLE")
            .arg("serve")
            .arg(root.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.join("access.log")).unwrap())
            .stderr(std::fs::File::create(root.join("registry.log")).unwrap())
            .spawn()
            .expect("spawn docker-registry (scripts/setup installs it)");
        crate::support::wait_for_addr(
            &ip,
            port,
            "docker-registry",
            &mut child,
            Duration::from_secs(30),
        );
        Self {
            child,
            ip,
            port,
            root: root.to_owned(),
        }
    }

    /// `127.0.0.1:PORT`, as an image reference names it.
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Every request of the access log: (method, path, status, bytes).
    pub fn requests(&self) -> Vec<(String, String, u16, u64)> {
        let log = std::fs::read_to_string(self.root.join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once(" \"")?;
                let (req, rest) = rest.split_once("\" ")?;
                let mut r = req.split(' ');
                let (method, path) = (r.next()?, r.next()?);
                let mut answer = rest.split(' ');
                let status = answer.next()?.parse().ok()?;
                let bytes = answer.next()?.parse().unwrap_or(0);
                Some((method.to_owned(), path.to_owned(), status, bytes))
            })
            .collect()
    }

    /// Bytes of blob `digest` the registry sent (in pieces or whole).
    pub fn blob_bytes_sent(&self, digest: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|(m, p, s, _)| {
                m == "GET" && p.ends_with(&format!("/blobs/{digest}")) && (200..300).contains(s)
            })
            .map(|r| r.3)
            .sum()
    }

    /// Requests for any blob (any method, any answer).
    pub fn blob_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.1.contains("/blobs/"))
            .count()
    }

    /// The file the registry keeps blob `digest` in.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.root
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A blob as a manifest describes it.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Arc<Vec<u8>>,
}

impl Blob {
    pub fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Self {
            media_type,
            bytes: Arc::new(bytes),
        }
    }

    pub fn digest(&self) -> String {
        format!("sha256:{}", sha256(&self.bytes))
    }

    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest(), "size": self.bytes.len()})
    }
}

pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// An image: a config and layers, for one platform.
pub struct Image {
    pub os: &'static str,
    pub arch: &'static str,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl Image {
    pub fn new(os: &'static str, arch: &'static str, layers: Vec<Blob>) -> Self {
        let config = json!({
            "architecture": arch, "os": os,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(Blob::digest).collect::<Vec<_>>()},
            "config": {}
        });
        Self {
            os,
            arch,
            config: Blob::new(CONFIG_TYPE, config.to_string().into_bytes()),
            layers,
        }
    }

    pub fn manifest(&self) -> Vec<u8> {
        json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": self.config.descriptor(),
            "layers": self.layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    /// Config and layers, in the manifest's order.
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }
}

/// Pushes through the registry API as `USER`, answering challenges.
pub struct Pusher {
    client: reqwest::Client,
    base: String,
    token: Mutex<Option<String>>,
}

impl Pusher {
    pub fn new(registry: &Registry) -> Self {
        Self {
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: format!("http://{}", registry.host()),
            token: Mutex::new(None),
        }
    }

    /// Sends the request `make` builds, with credentials; on a bearer
    /// challenge, gets a token for its scope and sends it again.
    async fn send(&self, make: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
        let auth = self
            .token
            .lock()
            .clone()
            .unwrap_or_else(|| basic(USER, PASSWORD));
        let resp = make().header("authorization", auth).send().await.unwrap();
        if resp.status() != 401 {
            return resp;
        }
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let param = |k: &str| {
            challenge
                .split(&format!("{k}=\""))
                .nth(1)
                .map(|r| r.split('"').next().unwrap().to_owned())
        };
        let realm = param("realm").unwrap_or_else(|| panic!("no realm in {challenge}"));
        let mut url = url::Url::parse(&realm).unwrap();
        url.query_pairs_mut()
            .append_pair("service", &param("service").unwrap_or_default())
            .append_pair("scope", &param("scope").unwrap_or_default());
        let answer = json(
            self.client
                .get(url)
                .header("authorization", basic(USER, PASSWORD))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let token = format!("Bearer {}", answer["token"].as_str().unwrap());
        *self.token.lock() = Some(token.clone());
        make().header("authorization", token).send().await.unwrap()
    }

    /// A monolithic blob upload.
    pub async fn blob(&self, name: &str, blob: &Blob) {
        let start = self
            .send(|| {
                self.client
                    .post(format!("{}/v2/{name}/blobs/uploads/", self.base))
            })
            .await;
        assert_eq!(start.status(), 202, "{:?}", start.text().await);
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", blob.digest());
        let done = self
            .send(|| {
                self.client
                    .put(&url)
                    .header("content-type", "application/octet-stream")
                    .body(blob.bytes.to_vec())
            })
            .await;
        assert_eq!(done.status(), 201, "{:?}", done.text().await);
    }

    /// A manifest (or index) under `reference`; returns its digest.
    pub async fn manifest(
        &self,
        name: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let url = format!("{}/v2/{name}/manifests/{reference}", self.base);
        let resp = self
            .send(|| {
                self.client
                    .put(&url)
                    .header("content-type", media_type)
                    .body(body.to_vec())
            })
            .await;
        assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
        format!("sha256:{}", sha256(body))
    }

    /// Pushes an image's blobs and manifest under `reference`.
    pub async fn image(&self, name: &str, reference: &str, image: &Image) -> String {
        for blob in image.blobs() {
            self.blob(name, blob).await;
        }
        self.manifest(name, reference, MANIFEST_TYPE, &image.manifest())
            .await
    }

    /// Pushes each image by digest, then an index of them under `tag`.
    pub async fn index(&self, name: &str, tag: &str, images: &[&Image]) -> String {
        let mut manifests = Vec::new();
        for image in images {
            let body = image.manifest();
            let digest = format!("sha256:{}", sha256(&body));
            for blob in image.blobs() {
                self.blob(name, blob).await;
            }
            self.manifest(name, &digest, MANIFEST_TYPE, &body).await;
            manifests.push(json!({
                "mediaType": MANIFEST_TYPE, "digest": digest, "size": body.len(),
                "platform": {"os": image.os, "architecture": image.arch},
            }));
        }
        let index = json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests})
            .to_string()
            .into_bytes();
        self.manifest(name, tag, INDEX_TYPE, &index).await
    }
}
