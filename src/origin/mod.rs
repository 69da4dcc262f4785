//! Origins: routing a name and key to a plugin, and executing the request
//! plans the plugin returns.
//!
//! A plugin decides *what* to fetch; this module moves the bytes with a
//! pooled native HTTP client whose resolver enforces the origin's
//! allowlist, so a plan (or a redirect) can only reach vetted addresses.
//! The engine speaks to an origin only through [`Origin::stat`],
//! [`Origin::planner`] and [`Origin::fetch`] ([`fetch`]).
//!
//! # The guards, in order
//!
//! Every path to an origin passes the same guards. Outermost first:
//!
//! | call | guards |
//! |---|---|
//! | `stat` (a download's start, a HEAD) | authority breaker → retry within the budget → plugin call (bulkhead of calls, deadline, memory cap, plugin breaker) |
//! | `plan` | plugin call (as above) → the whole-object rule → the plan check (URL on the allowlist, an HTTP method, valid headers) → renewal `download.plan_refresh_margin` before `expires-at-ms`, and once when the origin refuses an expiring plan |
//! | a piece or a whole-object fetch (the engine wraps it in [`Origin::guarded`]) | authority breaker → retry within the budget → connection permit (`max_connections`) → first-byte watchdog → status, `Content-Range` and length checks → the version pin (ETag, Last-Modified) → idle watchdog per chunk |
//!
//! The download bulkhead (`max_downloads`, [`Origin::admit_download`]) is
//! taken once per download, before its `stat`. The negative cache sits in
//! front of all of it, in the engine, keyed by task.

mod fetch;
pub mod key;
pub mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use url::Url;

use crate::allowlist::{AllowList, Denied, root_cause};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::METRICS;
use crate::plugin::bindings::seedgate::plugin::types as wit;
use crate::plugin::{CallEnv, PluginSlot, Registry};
use crate::resilience::{breaker, retry};
use policy::PolicyResolver;

pub use fetch::{Body, Meta, Plan, Planner, whole_object_plan};

/// One configured origin.
#[derive(Debug)]
pub struct Origin {
    pub name: String,
    pub base_url: Url,
    pub plugin: Arc<PluginSlot>,
    pub env: Arc<CallEnv>,
    /// Client that executes plans.
    data: reqwest::Client,
    forward_headers: Vec<http::HeaderName>,
    /// Retries of this origin's transient failures, and their budget.
    pub retry: retry::RetryPolicy,
    /// Circuit breakers of the authorities it reaches.
    pub breakers: breaker::Breakers,
    /// Bulkheads: downloads running (refused when full) and piece requests
    /// in flight (waited for).
    downloads: Arc<Semaphore>,
    max_downloads: usize,
    connections: Semaphore,
    /// Objects may be asked for by full URL under `base_url`.
    pub allow_full_urls: bool,
    /// Its OCI blob URLs name their content: their task is the digest and
    /// their bytes are checked against it (`blob_digest_task_ids`).
    pub content_addressed: bool,
    /// Per-request watchdogs: response headers, then each body chunk.
    first_byte_timeout: Duration,
    idle_timeout: Duration,
}

/// Origins by name.
#[derive(Debug, Default)]
pub struct OriginRouter {
    origins: BTreeMap<String, Arc<Origin>>,
}

/// A client that connects only where `allow` permits, follows redirects
/// only as `redirects` permits (each hop then resolved through the same
/// allowlist), and ignores proxy environment variables (which would bypass
/// it).
fn client(
    allow: &Arc<AllowList>,
    redirects: policy::RedirectRule,
    connect: Duration,
) -> reqwest::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= policy::MAX_REDIRECTS {
            let why = format!(
                "redirect to {} refused: more than {} redirects",
                attempt.url(),
                policy::MAX_REDIRECTS
            );
            attempt.error(Denied(why))
        } else if let Err(denied) = redirects.check(attempt.url()) {
            attempt.error(denied)
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(PolicyResolver::new(allow.clone())))
        .no_proxy()
        .redirect(policy)
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("seedgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl OriginRouter {
    /// Binds every configured origin to its loaded plugin.
    pub fn new(config: &Config, plugins: &Registry) -> anyhow::Result<Self> {
        let mut origins = BTreeMap::new();
        for (name, oc) in &config.origins {
            let plugin = plugins.get(&oc.plugin).ok_or_else(|| {
                anyhow::anyhow!(
                    "origins.{name}.plugin: no plugin named '{}' is loaded (have: {})",
                    oc.plugin,
                    plugins.names().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            let mut base_url = Url::parse(&oc.base_url)?;
            if !base_url.path().ends_with('/') {
                let path = format!("{}/", base_url.path());
                base_url.set_path(&path);
            }
            let mut allow =
                AllowList::new(&base_url, &oc.allowed_hosts).map_err(anyhow::Error::msg)?;
            if let Some(limit) = config.plugins.limits_for(&oc.plugin).allowed_hosts {
                allow = allow
                    .restricted_to(AllowList::from_entries(&limit).map_err(anyhow::Error::msg)?);
            }
            let allow = Arc::new(allow);
            let redirects = policy::RedirectRule::new(base_url.clone(), allow.clone());
            let d = &config.download;
            let env = Arc::new(CallEnv {
                origin: name.clone(),
                config: oc.resolved_plugin_config(),
                http: client(&allow, redirects.clone(), d.connect_timeout)?,
                allow: allow.clone(),
                http_timeout: config
                    .plugins
                    .http_timeout
                    .min(config.plugins.limits_for(&oc.plugin).call_timeout),
                http_body_limit: config.plugins.http_body_limit.as_u64(),
            });
            let forward_headers = oc
                .forward_headers
                .iter()
                .map(|h| http::HeaderName::from_bytes(h.as_bytes()))
                .collect::<Result<_, _>>()?;
            let origin = Origin {
                name: name.clone(),
                base_url,
                plugin,
                env,
                data: client(&allow, redirects, d.connect_timeout)?,
                forward_headers,
                retry: retry::RetryPolicy::new(name, config.retry.clone()),
                breakers: breaker::Breakers::new(name, config.breaker.clone()),
                downloads: Arc::new(Semaphore::new(oc.max_downloads)),
                max_downloads: oc.max_downloads,
                connections: Semaphore::new(oc.max_connections),
                allow_full_urls: oc.allow_full_urls,
                content_addressed: oc.blob_digest_task_ids.unwrap_or(oc.plugin == "oci"),
                first_byte_timeout: d.first_byte_timeout,
                idle_timeout: d.idle_timeout,
            };
            origins.insert(name.clone(), Arc::new(origin));
        }
        Ok(Self { origins })
    }

    /// The origin called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Origin>> {
        self.origins.get(name).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "unknown origin '{name}' (configured: {})",
                    self.origins.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.origins.keys()
    }

    /// The origin whose `base_url` holds `url` (the longest one when
    /// several do): a full URL is fetched only through the origin it falls
    /// under, with that origin's plugin, allowlist and limits.
    pub fn owner(&self, url: &Url) -> Option<&Arc<Origin>> {
        self.origins
            .values()
            .filter(|o| {
                url.as_str().starts_with(o.base_url.as_str())
                    && url.as_str().len() > o.base_url.as_str().len()
            })
            .max_by_key(|o| o.base_url.as_str().len())
    }

    /// The origin a full URL is fetched through, with its key checked as
    /// `/o/` checks keys (no `..` climbing out of the base URL). A URL under
    /// no origin is refused (`Forbidden`): nothing reaches an address no
    /// operator declared.
    pub fn resolve_url(&self, url: &Url) -> Result<Arc<Origin>> {
        let origin = self.owner(url).ok_or_else(|| {
            Error::new(
                ErrorKind::Forbidden,
                format!("'{url}' is not under the base_url of any configured origin"),
            )
        })?;
        let key = &url.as_str()[origin.base_url.as_str().len()..];
        origin.object_url(key.split(['?', '#']).next().unwrap_or(""))?;
        Ok(origin.clone())
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.origins.values()
    }
}

/// What a plan request yields, checked against what was asked.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Object offset of the first byte.
    pub offset: u64,
    pub length: u64,
    pub total: u64,
}

impl Origin {
    /// A place among this origin's running downloads, or 503 when they
    /// are all taken (a bulkhead: refused, never queued).
    pub fn admit_download(&self) -> Result<OwnedSemaphorePermit> {
        self.downloads.clone().try_acquire_owned().map_err(|_| {
            METRICS.refused("origin", &self.name, "bulkhead");
            let mut e = Error::new(
                ErrorKind::Overloaded,
                format!(
                    "origin '{}' already runs its limit of {} downloads (origins.{}.max_downloads)",
                    self.name, self.max_downloads, self.name
                ),
            );
            e.retry_after = Some(Duration::from_secs(1));
            e
        })
    }

    /// The counter of piece bytes received from this origin.
    pub fn received_counter(&self) -> prometheus_client::metrics::counter::Counter {
        METRICS
            .origin_bytes
            .get_or_create(&crate::metrics::OriginLabels {
                origin: self.name.clone(),
            })
            .clone()
    }

    /// Downloads from this origin running now.
    pub fn downloads_running(&self) -> usize {
        self.max_downloads - self.downloads.available_permits()
    }

    /// Ranged piece requests one download keeps in flight, of at most
    /// `most` (`download.piece_concurrency`): its share when several
    /// downloads read this origin, and at least one. Parallel ranges are
    /// there to fill a link that one stream cannot; downloads running side
    /// by side already do, and more requests only add connections and
    /// writers contending for the content files (an image preheat of 8
    /// blobs: 1.20x of direct pulls with 4 requests per blob, 1.04x with
    /// one; BENCHMARKS.md).
    pub fn piece_workers(&self, most: usize) -> usize {
        (most / self.downloads_running().max(1)).clamp(1, most)
    }

    /// A place among the piece requests in flight to this origin, waited
    /// for (the waiters are bounded by the running downloads).
    async fn connection(&self) -> SemaphorePermit<'_> {
        self.connections
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// Runs origin work for `url` behind its authority's circuit breaker,
    /// retrying what may pass within the retry budget. An open breaker
    /// fails at once and is not retried.
    pub async fn guarded<T, F, Fut>(&self, url: &Url, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let authority = breaker::authority(url);
        self.retry
            .run(what, || {
                let ticket = self.breakers.admit(&authority);
                let call = ticket.map(|t| (t, op()));
                async move {
                    let (ticket, call) = call?;
                    let r = call.await;
                    self.breakers.record(ticket, &r);
                    r
                }
            })
            .await
    }

    /// Whether this origin passes any client header on to its plugin
    /// (`origins.NAME.forward_headers`).
    pub fn forwards_headers(&self) -> bool {
        !self.forward_headers.is_empty()
    }

    /// The client headers this origin passes on to its plugin, copied:
    /// all a task's request needs to keep of them (an empty map, which
    /// allocates nothing, for an origin that forwards none).
    pub fn forwarded(&self, headers: &HeaderMap) -> HeaderMap {
        let mut kept = HeaderMap::new();
        for name in &self.forward_headers {
            for value in headers.get_all(name) {
                kept.append(name.clone(), value.clone());
            }
        }
        kept
    }

    /// The object URL of `key`. Keys are paths relative to `base_url`,
    /// checked as the origin will decode them ([`key`]): no segment may
    /// climb out of the base path, plainly or percent-encoded.
    pub fn object_url(&self, key: &str) -> Result<Url> {
        key::object_url(&self.base_url, key).map_err(|e| {
            Error::new(
                ErrorKind::Invalid,
                format!("key '{key}' for origin '{}': {}", self.name, e.reason()),
            )
        })
    }

    /// One page of the objects whose keys start with `prefix` (which may
    /// be empty or end mid-segment), through the plugin's `list-objects`.
    pub async fn list(
        &self,
        prefix: &str,
        page_token: Option<String>,
        max: u32,
    ) -> Result<wit::ListPage> {
        if let Err(e) = key::check_prefix(prefix) {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "prefix '{prefix}' for origin '{}': {}",
                    self.name,
                    e.reason()
                ),
            ));
        }
        // A prefix is a key fragment, never a query or a fragment.
        let escaped = prefix
            .trim_start_matches('/')
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        let prefix_url = self.base_url.join(&escaped).map_err(|e| {
            Error::new(
                ErrorKind::Invalid,
                format!("prefix '{prefix}' for origin '{}': {e}", self.name),
            )
        })?;
        let ctx = wit::RequestContext {
            url: self.base_url.to_string(),
            headers: Vec::new(),
        };
        let max = max.clamp(1, 1000);
        self.plugin
            .list_objects(&self.env, ctx, prefix_url.to_string(), page_token, max)
            .await
    }

    /// The context a plugin sees: the URL and the forwardable client headers.
    fn context(&self, url: &Url, headers: &HeaderMap) -> wit::RequestContext {
        let headers = self
            .forward_headers
            .iter()
            .flat_map(|name| {
                headers.get_all(name).iter().filter_map(|v| {
                    v.to_str().ok().map(|v| wit::Header {
                        name: name.as_str().to_string(),
                        value: v.to_string(),
                    })
                })
            })
            .collect();
        wit::RequestContext {
            url: url.to_string(),
            headers,
        }
    }

    /// Checks a plan before executing it ([`validate_plan`]).
    fn check_plan(&self, plan: &wit::RequestPlan) -> Result<(Url, reqwest::Method)> {
        validate_plan(&self.env.allow, &self.plugin.name, &self.name, plan)
    }
}

/// Checks a plan a plugin returned before it is executed: a well-formed
/// URL on the origin's allowlist and an HTTP method. Pure, for the fuzzer.
pub fn validate_plan(
    allow: &AllowList,
    plugin: &str,
    origin: &str,
    plan: &wit::RequestPlan,
) -> Result<(Url, reqwest::Method)> {
    let url = Url::parse(&plan.url).map_err(|e| {
        Error::new(
            ErrorKind::PluginFailed,
            format!(
                "plugin '{plugin}' planned a malformed URL '{}': {e}",
                plan.url
            ),
        )
    })?;
    allow.check_url(&url).map_err(|d| {
        Error::new(
            ErrorKind::PluginFailed,
            format!("plan of plugin '{plugin}' for origin '{origin}' denied: {d}"),
        )
    })?;
    let method = reqwest::Method::from_bytes(plan.method.as_bytes()).map_err(|_| {
        Error::new(
            ErrorKind::PluginFailed,
            format!(
                "plugin '{plugin}' planned method '{}', which is not HTTP",
                plan.method
            ),
        )
    })?;
    for h in &plan.headers {
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
            || http::HeaderValue::from_str(&h.value).is_err()
        {
            return Err(Error::new(
                ErrorKind::PluginFailed,
                format!(
                    "plugin '{plugin}' planned header '{}', which is not a valid header",
                    h.name.escape_debug()
                ),
            ));
        }
    }
    Ok((url, method))
}

/// Checks an origin's answer to a plan request for `expect`'s bytes: with
/// `ranged`, a 206 whose `Content-Range` is exactly the range asked; without,
/// a 200 of the expected length. An origin that ignores or misreports
/// ranges, or lies about the length, is caught here. Pure, for the fuzzer.
pub fn check_answer(
    origin: &str,
    url: &Url,
    status: u16,
    content_length: Option<u64>,
    content_range: Option<&str>,
    expect: Expect,
    ranged: bool,
) -> Result<()> {
    let fail = |kind, what: String| {
        let mut e = Error::new(kind, format!("origin '{origin}': {url}: {what}"));
        e.upstream_status = Some(status);
        Err(e)
    };
    // A Content-Length, when given, must be the length asked for.
    let length = |verb: &str| match content_length {
        Some(len) if len != expect.length => fail(
            ErrorKind::Transient,
            format!(
                "Content-Length {len} where {} bytes were {verb}",
                expect.length
            ),
        ),
        _ => Ok(()),
    };
    match status {
        200 if !ranged || expect.length == expect.total => length("expected"),
        200 => fail(
            ErrorKind::Transient,
            "the origin ignored the Range header".into(),
        ),
        206 if ranged => {
            let want = format!(
                "bytes {}-{}/{}",
                expect.offset,
                (expect.offset + expect.length).saturating_sub(1),
                expect.total
            );
            let got = content_range.unwrap_or("");
            if got != want {
                return fail(
                    ErrorKind::Transient,
                    format!("Content-Range '{got}' where '{want}' was asked"),
                );
            }
            length("asked")
        }
        412 => fail(
            ErrorKind::Changed,
            "the object changed during the download (If-Match failed)".into(),
        ),
        404 | 410 => fail(ErrorKind::NotFound, "object not found".into()),
        401 | 403 => fail(ErrorKind::Forbidden, "access refused".into()),
        408 | 504 => fail(ErrorKind::Timeout, "upstream timed out".into()),
        429 | 500..=599 => fail(ErrorKind::Transient, "upstream failure".into()),
        _ => fail(ErrorKind::Transient, format!("unexpected status {status}")),
    }
}

/// Maps a transport failure onto an error kind, keeping the deepest cause.
pub fn fetch_error(origin: &str, url: &Url, e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Transient
    };
    let (cause, denied) = root_cause(&e);
    let kind = if denied {
        ErrorKind::PolicyDenied
    } else {
        kind
    };
    Error::new(kind, format!("origin '{origin}': {url}: {cause}"))
}
