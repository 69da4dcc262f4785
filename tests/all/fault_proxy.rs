//! A fault-injecting HTTP proxy in front of a real origin server.
//!
//! There is no `tc netem` or toxiproxy here (TESTING.md), so the tests put
//! this between seedgate and nginx (or s3s-fs). It relays each request to
//! the upstream and answers with the upstream's answer, unless a fault rule
//! matches the request; then it breaks that answer in one of the ways
//! origins break: it is down, it delays, it answers 5xx, it accepts and
//! never answers, it resets the connection, it stalls or cuts the body
//! after N bytes, or it lies about the Content-Length.
//!
//! It counts connections (seen and open now) and requests, so tests can
//! assert what the origin saw and that nothing leaked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;

/// One way of breaking an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relay the answer after this delay.
    Delay(Duration),
    /// Answer this status without asking the upstream.
    Status(u16),
    /// Read the request and never answer (the connection stays open).
    Silent,
    /// Send the headers and this many body bytes, then nothing, forever.
    StallAfter(u64),
    /// Send the headers and this many body bytes, then close the
    /// connection (a truncated body).
    TruncateAfter(u64),
    /// Send the true body under a Content-Length off by this many bytes.
    LieLength(i64),
    /// Read the request, then reset the connection (RST, no answer).
    Reset,
}

/// A fault, which requests it applies to, and how many more times.
#[derive(Debug, Clone)]
struct Rule {
    fault: Fault,
    /// Only requests with this method (e.g. GET: piece fetches, not stats).
    method: Option<http::Method>,
    remaining: usize,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
    faulted: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// When the first broken answer since the last `heal` was asked for.
    first_fault: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

pub struct FaultProxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    rules: Arc<parking_lot::Mutex<Vec<Rule>>>,
    counters: Arc<Counters>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port relaying to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let rules = Arc::new(parking_lot::Mutex::new(Vec::<Rule>::new()));
        let counters = Arc::new(Counters::default());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let (d, r, c) = (down.clone(), rules.clone(), counters.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.connections.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let (r, c2, client) = (r.clone(), c.clone(), client.clone());
                c.open.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (r, c, client) = (r.clone(), c2.clone(), client.clone());
                        async move {
                            match relay(req, upstream, &r, &c, &client).await {
                                Some(resp) => Ok(resp),
                                None => {
                                    // SO_LINGER 0: closing sends RST. The
                                    // socket lives as long as this
                                    // connection's service.
                                    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                                    let _ = rustix::net::sockopt::set_socket_linger(
                                        fd,
                                        Some(Duration::ZERO),
                                    );
                                    Err(std::io::Error::other("fault proxy: reset"))
                                }
                            }
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    c.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            down,
            rules,
            counters,
            accept,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// While `down`, every connection is accepted and closed at once.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Breaks the next `times` answers to requests of `method` (any method
    /// when `None`) with `fault`. Rules apply in the order they were added.
    pub fn inject(&self, fault: Fault, method: Option<http::Method>, times: usize) {
        self.rules.lock().push(Rule {
            fault,
            method,
            remaining: times,
        });
    }

    /// Drops every rule: answers are relayed as they are.
    pub fn heal(&self) {
        self.rules.lock().clear();
        *self.counters.first_fault.lock() = None;
    }

    /// When the first request given a fault since the last `heal` arrived:
    /// the point from which a client's watchdog can first see no progress.
    pub fn first_fault_at(&self) -> Option<tokio::time::Instant> {
        *self.counters.first_fault.lock()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Connections open now (a client that never closes shows here).
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// The most GET requests (piece fetches) that were in flight at once,
    /// until their answer's headers.
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// Answers broken so far.
    pub fn faulted(&self) -> usize {
        self.counters.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The fault for a request, consuming one use of its rule.
fn take_fault(rules: &parking_lot::Mutex<Vec<Rule>>, method: &http::Method) -> Option<Fault> {
    let mut rules = rules.lock();
    let i = rules
        .iter()
        .position(|r| r.remaining > 0 && r.method.as_ref().is_none_or(|m| m == method))?;
    rules[i].remaining -= 1;
    let fault = rules[i].fault;
    if rules[i].remaining == 0 {
        rules.remove(i);
    }
    Some(fault)
}

async fn relay(
    req: http::Request<hyper::body::Incoming>,
    upstream: u16,
    rules: &parking_lot::Mutex<Vec<Rule>>,
    counters: &Counters,
    client: &reqwest::Client,
) -> Option<http::Response<Body>> {
    counters.requests.fetch_add(1, Ordering::SeqCst);
    struct Leave<'a>(&'a AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = (req.method() == http::Method::GET).then(|| {
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Leave(&counters.in_flight)
    });
    let fault = take_fault(rules, req.method());
    if fault.is_some() {
        counters.faulted.fetch_add(1, Ordering::SeqCst);
        counters
            .first_fault
            .lock()
            .get_or_insert_with(tokio::time::Instant::now);
    }
    match fault {
        Some(Fault::Status(status)) => {
            return Some(
                http::Response::builder()
                    .status(status)
                    .body(Body::from(format!("fault proxy: injected {status}\n")))
                    .unwrap(),
            );
        }
        Some(Fault::Reset) => return None,
        Some(Fault::Silent) => std::future::pending::<()>().await,
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut ask = client.request(
        req.method().clone(),
        format!("http://127.0.0.1:{upstream}{path}"),
    );
    for (name, value) in req.headers() {
        if name != http::header::HOST && name != http::header::CONNECTION {
            ask = ask.header(name, value);
        }
    }
    let resp = match ask.send().await {
        Ok(r) => r,
        Err(e) => {
            return Some(
                http::Response::builder()
                    .status(502)
                    .body(Body::from(format!("fault proxy: upstream: {e}\n")))
                    .unwrap(),
            );
        }
    };
    let mut out = http::Response::builder().status(resp.status());
    let true_length = resp.content_length();
    for (name, value) in resp.headers() {
        if name == http::header::TRANSFER_ENCODING || name == http::header::CONNECTION {
            continue;
        }
        if name == http::header::CONTENT_LENGTH
            && let (Some(Fault::LieLength(delta)), Some(len)) = (fault, true_length)
        {
            out = out.header(name, (len as i64 + delta).max(0).to_string());
            continue;
        }
        out = out.header(name, value);
    }
    let body = resp.bytes_stream();
    let body = match fault {
        Some(Fault::StallAfter(n)) => Body::from_stream(
            cut(body, n).chain(futures_util::stream::pending::<Result<Bytes, std::io::Error>>()),
        ),
        Some(Fault::TruncateAfter(n)) => {
            Body::from_stream(cut(body, n).chain(futures_util::stream::once(async {
                Err(std::io::Error::other("fault proxy: truncated"))
            })))
        }
        _ => Body::from_stream(body.map(|c| c.map_err(std::io::Error::other))),
    };
    Some(out.body(body).unwrap())
}

/// The first `n` bytes of a body.
fn cut(
    body: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    n: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    body.scan(n, |left, c| {
        if *left == 0 {
            return futures_util::future::ready(None);
        }
        let c = c.map_err(std::io::Error::other).map(|mut bytes| {
            if bytes.len() as u64 > *left {
                bytes.truncate(*left as usize);
            }
            *left -= bytes.len() as u64;
            bytes
        });
        futures_util::future::ready(Some(c))
    })
}
