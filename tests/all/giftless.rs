//! giftless, a real Git LFS server (Python, from PyPI), spawned under
//! gunicorn from the virtualenv `scripts/setup` creates. Its access log is
//! the count of requests the LFS server saw.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{free_port, sha256, stop, wait_for_port_within};

/// Where `scripts/setup` installs giftless (override: SEEDGATE_GIFTLESS_VENV).
pub fn venv() -> PathBuf {
    if let Ok(v) = std::env::var("SEEDGATE_GIFTLESS_VENV") {
        return PathBuf::from(v);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    Path::new(&home).join(".cache/seedgate/giftless-venv")
}

pub struct Giftless {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
    /// The HS256 key of a JWT-protected server.
    jwt_key: Option<String>,
}

impl Giftless {
    /// Anonymous read/write.
    pub fn start(root: &Path) -> Self {
        Self::spawn(root, None)
    }

    /// Every request needs a JWT signed with `key` (HS256).
    pub fn start_jwt(root: &Path, key: &str) -> Self {
        Self::spawn(root, Some(key.to_string()))
    }

    fn spawn(root: &Path, jwt_key: Option<String>) -> Self {
        let venv = venv();
        let gunicorn = venv.join("bin/gunicorn");
        assert!(
            gunicorn.exists(),
            "giftless is not installed in {}: run scripts/setup (scripts/test does)",
            venv.display()
        );
        std::fs::create_dir_all(root.join("storage")).unwrap();
        let auth = match &jwt_key {
            None => "  - giftless.auth.allow_anon:read_write".to_string(),
            Some(key) => format!(
                "  - factory: giftless.auth.jwt:factory\n    options:\n      algorithm: HS256\n      private_key: {key}"
            ),
        };
        let config = include_str!("../fixtures/giftless.yaml")
            .replace("__ROOT__", root.to_str().unwrap())
            .replace("__AUTH__", &auth);
        std::fs::write(root.join("giftless.yaml"), config).unwrap();
        let port = free_port();
        let mut child = Command::new(gunicorn)
            .current_dir(root)
            .env("GIFTLESS_CONFIG_FILE", root.join("giftless.yaml"))
            .args(["--no-control-socket", "-w", "2", "-b"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--access-logfile")
            .arg(root.join("access.log"))
            .args(["--access-logformat", "%(m)s %(U)s %(s)s"])
            .arg("giftless.wsgi_entrypoint:app")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("gunicorn.log")).unwrap())
            .spawn()
            .expect("spawn gunicorn");
        wait_for_port_within(port, "giftless", &mut child, Duration::from_secs(60));
        Self {
            child,
            port,
            root: root.to_owned(),
            jwt_key,
        }
    }

    /// The LFS endpoint of repository `org/repo`.
    pub fn endpoint(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}/", self.port)
    }

    /// A JWT for this server granting `scopes`, made with the venv's PyJWT.
    pub fn token(&self, scopes: &[&str]) -> String {
        let key = self.jwt_key.as_deref().expect("not a JWT-protected server");
        let out = Command::new(venv().join("bin/python"))
            .args([
                "-c",
                "import jwt, sys, time\n\
                 print(jwt.encode({'sub': 'seedgate-test', 'scopes': sys.argv[2:],\
                 'exp': int(time.time()) + 3600}, sys.argv[1], algorithm='HS256'))",
                key,
            ])
            .args(scopes)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Uploads `bytes` to `repo` as an LFS client does (batch upload, then a
    /// PUT to the href it names) and returns the key `OID/SIZE`.
    pub async fn upload(&self, repo: &str, bytes: &[u8], token: Option<&str>) -> String {
        let oid = sha256(bytes);
        let client = crate::support::client();
        let mut req = client
            .post(format!("{}objects/batch", self.endpoint(repo)))
            .header("accept", "application/vnd.git-lfs+json")
            .header("content-type", "application/vnd.git-lfs+json")
            .body(
                serde_json::json!({
                    "operation": "upload",
                    "transfers": ["basic"],
                    "objects": [{"oid": oid, "size": bytes.len()}],
                })
                .to_string(),
            );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        let answer: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        let upload = &answer["objects"][0]["actions"]["upload"];
        let mut put = client
            .put(upload["href"].as_str().expect("an upload href"))
            .body(bytes.to_vec());
        if let Some(headers) = upload["header"].as_object() {
            for (k, v) in headers {
                put = put.header(k.as_str(), v.as_str().unwrap());
            }
        }
        let resp = put.send().await.unwrap();
        assert!(resp.status().is_success(), "upload PUT: {}", resp.status());
        format!("{oid}/{}", bytes.len())
    }

    /// (method, path, status) of every request so far.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        std::fs::read_to_string(self.root.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                Some((
                    it.next()?.to_string(),
                    it.next()?.to_string(),
                    it.next()?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// Requests with `method` whose path contains `part`.
    /// Waits (up to 2 s) until the access log stops growing: gunicorn logs
    /// a request after it has sent the answer, so a client can see the
    /// answer before its log line.
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut seen = self.requests().len();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let now = self.requests().len();
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p, _)| m == method && p.contains(part))
            .count()
    }
}

impl Drop for Giftless {
    /// SIGTERM first, so gunicorn takes its workers down with it.
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
