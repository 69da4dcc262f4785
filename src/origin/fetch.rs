//! The origin protocol the task engine speaks: [`Origin::stat`],
//! [`Origin::planner`] and [`Origin::fetch`], in the spirit of Dragonfly's
//! `Backend` trait. The engine sees metadata, an opaque plan and a body;
//! the plugin's WIT types stay behind this module. The guards each call
//! passes are listed, in order, at the top of [`super`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use tokio::sync::SemaphorePermit;
use url::Url;

use super::{Expect, Origin, check_answer, fetch_error};
use crate::clock::now_ms;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::METRICS;
use crate::plugin::bindings::seedgate::plugin::types as wit;
use crate::resilience::watchdog::Watchdog;

/// What an origin says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub content_length: u64,
    /// Entity tag, verbatim with quotes.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    /// Whether the origin honours byte ranges on the planned requests.
    pub accepts_ranges: bool,
}

impl From<wit::ObjectMeta> for Meta {
    fn from(m: wit::ObjectMeta) -> Self {
        Self {
            content_length: m.content_length,
            etag: m.etag,
            last_modified: m.last_modified,
            content_type: m.content_type,
            accepts_ranges: m.accepts_ranges,
        }
    }
}

impl From<&Meta> for wit::ObjectMeta {
    fn from(m: &Meta) -> Self {
        Self {
            content_length: m.content_length,
            etag: m.etag.clone(),
            last_modified: m.last_modified.clone(),
            content_type: m.content_type.clone(),
            accepts_ranges: m.accepts_ranges,
        }
    }
}

/// A checked plan for the whole object, with the version it is pinned to.
#[derive(Debug, Clone)]
pub struct Plan {
    request: wit::RequestPlan,
    url: Url,
    method: reqwest::Method,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Plan {
    /// Whether the host may split it into ranged piece requests.
    pub fn ranged(&self) -> bool {
        self.request.host_may_set_range
    }

    /// When it stops being valid (Unix ms), if it says.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.request.expires_at_ms
    }

    /// The URL it fetches, for messages (a presigned URL's query included:
    /// the caller decides what to show).
    pub fn url(&self) -> &Url {
        &self.url
    }

    fn expiring(&self, margin: Duration) -> bool {
        self.request
            .expires_at_ms
            .is_some_and(|t| now_ms() + margin.as_millis() as u64 >= t)
    }
}

/// The plan of one download: asked for once, and again shortly before it
/// expires or when the origin refuses it.
#[derive(Debug)]
pub struct Planner {
    ctx: wit::RequestContext,
    meta: Meta,
    margin: Duration,
    current: tokio::sync::Mutex<Option<Plan>>,
    /// Touched when a plan is made: asking the plugin is progress.
    progress: Option<Arc<Watchdog>>,
}

impl Planner {
    /// The plan to fetch with; a fresh one when the current one expires
    /// within the margin, or when `force`d (the origin refused it).
    pub async fn get(&self, origin: &Origin, force: bool) -> Result<Plan> {
        let mut current = self.current.lock().await;
        if let Some(plan) = current.as_ref()
            && !force
            && !plan.expiring(self.margin)
        {
            return Ok(plan.clone());
        }
        let renewed = current.is_some();
        let plans = origin
            .plugin
            .plan_read(
                &origin.env,
                self.ctx.clone(),
                wit::ObjectMeta::from(&self.meta),
                None,
            )
            .await?;
        let request =
            whole_object_plan(&plans, &origin.plugin.name, self.meta.content_length)?.clone();
        let (url, method) = origin.check_plan(&request)?;
        if let Some(w) = &self.progress {
            w.touch();
        }
        if renewed {
            tracing::debug!(origin = %origin.name, "plan renewed");
        }
        let plan = Plan {
            request,
            url,
            method,
            etag: self.meta.etag.clone(),
            last_modified: self.meta.last_modified.clone(),
        };
        *current = Some(plan.clone());
        Ok(plan)
    }
}

/// A response body being read, holding its connection permit; each chunk
/// must come within `download.idle_timeout`.
pub struct Body<'a> {
    origin: &'a Origin,
    url: Url,
    stream: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send + 'a>>,
    _permit: SemaphorePermit<'a>,
}

impl Body<'_> {
    /// The next chunk, `None` at the end, or a timeout when none comes
    /// within `download.idle_timeout`. `at` is the object offset reached,
    /// for the message.
    pub async fn next_chunk(&mut self, at: u64) -> Result<Option<Bytes>> {
        let origin = self.origin;
        match tokio::time::timeout(origin.idle_timeout, self.stream.next()).await {
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            Ok(Some(Err(e))) => Err(fetch_error(&origin.name, &self.url, e)),
            Ok(None) => Ok(None),
            Err(_) => {
                METRICS.watchdog(&origin.name, "idle");
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "origin '{}': {}: no byte for {} at byte {at} (download.idle_timeout)",
                        origin.name,
                        self.url,
                        humantime::format_duration(origin.idle_timeout)
                    ),
                ))
            }
        }
    }
}

impl Origin {
    /// The object's metadata from the plugin's `stat`, behind the
    /// authority's breaker and within the retry budget: the same guards
    /// whether a download or a HEAD asks.
    pub async fn stat(&self, url: &Url, headers: &HeaderMap) -> Result<Meta> {
        let ctx = self.context(url, headers);
        self.guarded(url, "stat", || self.plugin.stat(&self.env, ctx.clone()))
            .await
            .map(Meta::from)
    }

    /// The planner of one download of `meta`'s version of `url`, renewing
    /// `margin` before a plan expires and touching `progress` when it asks.
    pub fn planner(
        &self,
        url: &Url,
        headers: &HeaderMap,
        meta: &Meta,
        margin: Duration,
        progress: Option<Arc<Watchdog>>,
    ) -> Planner {
        Planner {
            ctx: self.context(url, headers),
            meta: meta.clone(),
            margin,
            current: tokio::sync::Mutex::new(None),
            progress,
        }
    }

    /// The whole of a small object (a manifest) in memory, through the
    /// same guards as a download: `stat`, one plan, one checked answer of
    /// exactly the length `stat` gave, at most `cap` bytes. Not stored.
    pub async fn fetch_small(
        &self,
        url: &Url,
        headers: &HeaderMap,
        cap: u64,
    ) -> Result<(Meta, Bytes)> {
        let meta = self.stat(url, headers).await?;
        let length = meta.content_length;
        if length > cap {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "origin '{}': {url}: {length} bytes is more than the {cap} read into memory",
                    self.name
                ),
            )
            .blamed(crate::error::Blame::Origin));
        }
        let plan = self
            .planner(url, headers, &meta, Duration::ZERO, None)
            .get(self, false)
            .await?;
        let expect = Expect {
            offset: 0,
            length,
            total: length,
        };
        let mut body = self.fetch(&plan, expect, false).await?;
        let mut buf = bytes::BytesMut::with_capacity(length as usize);
        while let Some(chunk) = body.next_chunk(buf.len() as u64).await? {
            if (buf.len() + chunk.len()) as u64 > length {
                break;
            }
            buf.extend_from_slice(&chunk);
        }
        if buf.len() as u64 != length {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "origin '{}': {url}: {} bytes came, {length} were announced",
                    self.name,
                    buf.len()
                ),
            ));
        }
        Ok((meta, buf.freeze()))
    }

    /// Sends a plan for `expect`'s bytes and checks the answer: with
    /// `ranged` a `Range` header goes out and the status and `Content-Range`
    /// must match it; the answer must carry the pinned version. Waits for a
    /// connection permit first; the body holds it until it is dropped.
    pub async fn fetch(&self, plan: &Plan, expect: Expect, ranged: bool) -> Result<Body<'_>> {
        let permit = self.connection().await;
        let resp = self.send(plan, expect, ranged).await?;
        check_version(&self.name, plan, resp.headers())?;
        Ok(Body {
            origin: self,
            url: plan.url.clone(),
            stream: Box::pin(resp.bytes_stream()),
            _permit: permit,
        })
    }

    /// Executes a plan; the answer's status and ranges are checked
    /// ([`check_answer`]).
    async fn send(&self, plan: &Plan, expect: Expect, ranged: bool) -> Result<reqwest::Response> {
        let url = &plan.url;
        let mut req = self.data.request(plan.method.clone(), url.clone());
        for h in &plan.request.headers {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        if ranged {
            let last = expect.offset + expect.length - 1;
            req = req.header(
                http::header::RANGE,
                format!("bytes={}-{last}", expect.offset),
            );
        }
        if let Some(tag) = &plan.request.if_match {
            req = req.header(http::header::IF_MATCH, tag.as_str());
        }
        let resp = match tokio::time::timeout(self.first_byte_timeout, req.send()).await {
            Ok(r) => r.map_err(|e| fetch_error(&self.name, url, e))?,
            Err(_) => {
                METRICS.watchdog(&self.name, "first_byte");
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "origin '{}': {url}: no response within {} (download.first_byte_timeout)",
                        self.name,
                        humantime::format_duration(self.first_byte_timeout)
                    ),
                ));
            }
        };
        let content_range = resp
            .headers()
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok());
        check_answer(
            &self.name,
            url,
            resp.status().as_u16(),
            resp.content_length(),
            content_range,
            expect,
            ranged,
        )?;
        Ok(resp)
    }
}

/// Fails with [`ErrorKind::Changed`] when an answer carries another version
/// than the one the plan is pinned to.
fn check_version(origin: &str, plan: &Plan, headers: &HeaderMap) -> Result<()> {
    let differs = |name: http::HeaderName, pinned: &Option<String>| {
        let got = headers.get(&name).and_then(|v| v.to_str().ok());
        match (pinned, got) {
            (Some(want), Some(got)) if want != got => {
                Some(format!("{name} '{got}', pinned '{want}'"))
            }
            _ => None,
        }
    };
    let changed = differs(http::header::ETAG, &plan.etag)
        .or_else(|| differs(http::header::LAST_MODIFIED, &plan.last_modified));
    match changed {
        Some(what) => Err(Error::new(
            ErrorKind::Changed,
            format!(
                "origin '{origin}': {}: the object changed during the download ({what})",
                plan.url
            ),
        )),
        None => Ok(()),
    }
}

/// The plan that yields the whole object. Plans covering parts of it are a
/// later extension of the contract; refuse them clearly until then.
pub fn whole_object_plan<'a>(
    plans: &'a [wit::RequestPlan],
    plugin: &str,
    length: u64,
) -> Result<&'a wit::RequestPlan> {
    match plans {
        [plan]
            if plan.range.is_none()
                || plan
                    .range
                    .is_some_and(|r| r.start == 0 && r.length == length) =>
        {
            Ok(plan)
        }
        [] => Err(Error::new(
            ErrorKind::PluginFailed,
            format!("plugin '{plugin}' returned no request plan"),
        )),
        _ => Err(Error::new(
            ErrorKind::PluginFailed,
            format!(
                "plugin '{plugin}' returned {} partial plans; this host executes one whole-object plan",
                plans.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(range: Option<(u64, u64)>) -> wit::RequestPlan {
        wit::RequestPlan {
            method: "GET".into(),
            url: "http://127.0.0.1:1/x".into(),
            headers: Vec::new(),
            host_may_set_range: true,
            range: range.map(|(start, length)| wit::ByteRange { start, length }),
            expires_at_ms: None,
            if_match: None,
        }
    }

    #[test]
    fn only_one_whole_object_plan_is_executed() {
        assert!(whole_object_plan(&[plan(None)], "p", 10).is_ok());
        assert!(whole_object_plan(&[plan(Some((0, 10)))], "p", 10).is_ok());
        let e = whole_object_plan(&[plan(Some((0, 5)))], "p", 10).unwrap_err();
        assert!(e.message.contains("1 partial plans"), "{e}");
        let e = whole_object_plan(&[], "p", 10).unwrap_err();
        assert!(e.message.contains("no request plan"), "{e}");
        assert_eq!(e.kind, ErrorKind::PluginFailed);
        let two = [plan(Some((0, 5))), plan(Some((5, 5)))];
        assert!(whole_object_plan(&two, "p", 10).is_err());
    }

    #[test]
    fn a_pinned_version_catches_a_changed_object() {
        let p = Plan {
            request: plan(None),
            url: Url::parse("http://127.0.0.1:1/x").unwrap(),
            method: reqwest::Method::GET,
            etag: Some("\"a\"".into()),
            last_modified: None,
        };
        let mut h = HeaderMap::new();
        assert!(check_version("o", &p, &h).is_ok(), "no validator: no claim");
        h.insert(http::header::ETAG, "\"a\"".parse().unwrap());
        assert!(check_version("o", &p, &h).is_ok());
        h.insert(http::header::ETAG, "\"b\"".parse().unwrap());
        let e = check_version("o", &p, &h).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Changed);
        assert!(e.message.contains("pinned '\"a\"'"), "{e}");
        h.remove(http::header::ETAG);
        h.insert(
            http::header::LAST_MODIFIED,
            "Tue, 01 Dec 2026 00:00:00 GMT".parse().unwrap(),
        );
        assert!(
            check_version("o", &p, &h).is_ok(),
            "nothing pinned to compare"
        );
    }
}
