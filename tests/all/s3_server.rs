//! An in-process S3 server for tests and benchmarks: s3s-fs (a real S3
//! implementation over a directory) with SigV4 checking on, served by hyper
//! on its own runtime thread, with a log of every request it received.
//!
//! Objects are seeded by writing `root/BUCKET/KEY`; s3s-fs computes the
//! ETag (MD5) itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use parking_lot::Mutex;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "AKSEEDGATETEST";
pub const SECRET_KEY: &str = "s3cret-key-for-tests";

pub struct S3Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    log: Arc<Mutex<Vec<(String, String)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Serves `root` (created if missing) on a free loopback port.
    pub fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = {
            let root = root.to_owned();
            let log = log.clone();
            std::thread::Builder::new()
                .name("s3s-fs".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(serve(root, log, addr_tx, stop_rx));
                })
                .unwrap()
        };
        let addr = addr_rx.recv().expect("s3s-fs did not start");
        Self {
            addr,
            root: root.to_owned(),
            log,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Config of an s3 origin `name` on `bucket` of this server, signing
    /// with the test access key and `secret` (a value or an `env:`/`file:`
    /// secret).
    pub fn origin_config(&self, name: &str, bucket: &str, secret: &str) -> String {
        format!(
            r#"
[origins.{name}]
plugin = "s3"
base_url = "s3://{bucket}/"
allowed_hosts = ["127.0.0.1"]
[origins.{name}.config]
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{secret}"
"#,
            endpoint = self.endpoint()
        )
    }

    /// Stores `bytes` as `bucket/key`.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.root.join(bucket).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        self.record_etag(bucket, key, &format!("{:x}", md5::compute(bytes)));
    }

    /// Records an object's ETag (its MD5) where s3s-fs keeps it after a
    /// PutObject. Without it s3s-fs hashes the whole file on every HEAD and
    /// GET, which for a large object costs more than the transfer.
    pub fn record_etag(&self, bucket: &str, key: &str, md5_hex: &str) {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let info = self.root.join(format!(
            ".bucket-{}.object-{}.internal.json",
            enc(bucket),
            enc(key)
        ));
        std::fs::write(info, format!(r#"{{"e_tag":"{md5_hex}"}}"#)).unwrap();
    }

    /// Creates an empty bucket.
    pub fn bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.join(bucket)).unwrap();
    }

    /// (method, path) of every request so far, in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log.lock().clone()
    }

    /// Requests with `method` whose path is `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.log
            .lock()
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    root: PathBuf,
    log: Arc<Mutex<Vec<(String, String)>>>,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let fs = s3s_fs::FileSystem::new(&root).unwrap();
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    addr_tx.send(listener.local_addr().unwrap()).unwrap();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stop => return,
        };
        let service = service.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let logged =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    log.lock()
                        .push((req.method().to_string(), req.uri().path().to_string()));
                    Service::call(&service, req)
                });
            let _ = ConnBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), logged)
                .await;
        });
    }
}
