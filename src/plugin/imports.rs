//! Host side of the imports a plugin may call: `log`, `config`, `clock` and
//! `http`. Each is a narrow door: logs are rate-limited and tagged, config is
//! the plugin's own table only, http goes only to the origin's allowlist with
//! a deadline and a body cap.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use url::Url;

use super::HostState;
use super::bindings::seedgate::plugin::{clock, config, http, log, types};

use crate::clock::now_ms;

/// A per-plugin log budget: `per_second` lines in each one-second window;
/// the rest are dropped and counted, and the count is reported once the next
/// window opens.
#[derive(Debug)]
pub struct LogLimiter {
    per_second: u32,
    window: AtomicU64,
    used: AtomicU32,
    dropped: AtomicU64,
    dropped_total: AtomicU64,
}

impl LogLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now; `Some(n)` reports `n` lines dropped
    /// in earlier windows that the caller should mention.
    fn admit(&self) -> (bool, u64) {
        let window = now_ms() / 1000;
        let mut reported = 0;
        if self.window.swap(window, Ordering::Relaxed) != window {
            self.used.store(0, Ordering::Relaxed);
            reported = self.dropped.swap(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            (true, reported)
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
            (false, reported)
        }
    }

    /// Lines dropped since the plugin was loaded.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let info = &self.plugin;
        let (admit, dropped) = info.log.admit();
        if dropped > 0 {
            tracing::warn!(plugin = %info.name, dropped, "plugin log lines dropped by the rate limit");
        }
        if !admit {
            return;
        }
        let mut message = message;
        message.truncate(1024);
        let (plugin, origin) = (&info.name, &self.env.origin);
        match level {
            log::Level::Trace => tracing::trace!(plugin = %plugin, origin = %origin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin = %plugin, origin = %origin, "{message}"),
            log::Level::Info => tracing::info!(plugin = %plugin, origin = %origin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin = %plugin, origin = %origin, "{message}"),
            log::Level::Error => tracing::error!(plugin = %plugin, origin = %origin, "{message}"),
        }
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.env.config.get(&key).cloned()
    }

    fn keys(&mut self) -> Vec<String> {
        self.env.config.keys().cloned().collect()
    }

    fn misconfigured(&mut self, key: String, reason: String) {
        self.wait.misconfigured(&key, &reason);
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> u64 {
        now_ms()
    }
}

impl http::Host for HostState {
    async fn send(&mut self, req: http::Request) -> Result<http::Response, http::HttpError> {
        let env = self.env.clone();
        let url = Url::parse(&req.url)
            .map_err(|e| http::HttpError::Failed(format!("'{}' is not a URL: {e}", req.url)))?;
        if let Err(d) = env.allow.check_url(&url) {
            self.wait.deny(&d.0);
            return Err(http::HttpError::Denied(d.0));
        }
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|_| {
            http::HttpError::Failed(format!("'{}' is not an HTTP method", req.method))
        })?;
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or(env.http_timeout)
            .min(env.http_timeout);
        let mut builder = env.http.request(method, url.clone()).timeout(timeout);
        for h in &req.headers {
            builder = builder.header(h.name.as_str(), h.value.as_str());
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        // From here the guest waits on the origin: not its own time.
        let _waiting = self.wait.begin(&url);
        let resp = builder
            .send()
            .await
            .map_err(|e| transport(&url, e, &self.wait))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str().ok().map(|v| types::Header {
                    name: k.as_str().to_string(),
                    value: v.to_string(),
                })
            })
            .collect();
        let cap = env.http_body_limit;
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(&url, e, &self.wait))?;
            if body.len() as u64 + chunk.len() as u64 > cap {
                return Err(http::HttpError::TooLarge(format!(
                    "response from {url} exceeds the plugin's {cap} B body cap"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }
}

fn transport(url: &Url, e: reqwest::Error, trace: &super::CallTrace) -> http::HttpError {
    if e.is_timeout() {
        return http::HttpError::Timeout(format!("{url}: no answer in time"));
    }
    // The resolver's or the redirect policy's refusal travels as the
    // error's source.
    let (text, denied) = crate::allowlist::root_cause(&e);
    if denied {
        trace.deny(&text);
        return http::HttpError::Denied(text);
    }
    http::HttpError::Failed(format!("{url}: {text}"))
}
