//! The HTTP gateway (axum).
//!
//! - `GET|HEAD /o/{origin}/{key...}`: an object of a named origin, with
//!   `Content-Length`, `ETag`, `Last-Modified`, `Accept-Ranges` and single
//!   `Range` requests (206, 416). `HEAD` never starts a download.
//! - `DELETE /api/v1/tasks/{id}`: deletes a stored task (409 while it is
//!   being read or downloaded).
//! - `GET /api/v1/origins/{origin}/objects?prefix=P&page_token=T&max=N`:
//!   one page of the origin's objects whose keys start with `P`, through
//!   the plugin's `list-objects`.
//! - `GET /api/v1/plugins`: loaded plugins with digest, limits, call
//!   counts and the last refused reload.
//! - `POST /api/v1/plugins/{name}/reload`: loads the plugin's file again and
//!   swaps it in (calls in flight finish on the old version); a version that
//!   does not load is refused with 422 and the old one stays.
//! - `GET /api/v1/negative-cache`: objects remembered as missing, with
//!   origin, URL, reason, time left and hits; `DELETE` forgets them all,
//!   `DELETE /api/v1/negative-cache/{task_id}` one.
//! - `GET /api/v1/breakers`: each origin authority's circuit breaker
//!   (`origin`, `authority`) and each plugin's own (`plugin`): state,
//!   failures in a row, times opened, time to the next probe.
//! - `GET /api/v1/downloads`: downloads in flight: task, origin, URL,
//!   pieces and bytes landed so far.
//! - `POST /api/v1/preheat` (JSON [`crate::preheat::JobRequest`], optional
//!   `Idempotency-Key`): a preheat job; `GET /api/v1/preheat` lists jobs,
//!   `GET /api/v1/preheat/{id}` shows one with its objects, `DELETE` cancels.
//! - `GET /metrics`: Prometheus metrics (see [`crate::metrics`]).
//! - `GET /openapi.json`: the OpenAPI 3.1 document of all of this
//!   (`src/gateway/openapi.json`, checked against the routes by a test).
//! - `GET /`: a live status page (downloads, jobs, plugins, breakers,
//!   negative cache, disk), refreshed every second from the API.
//! - `GET /healthz`: the process is alive. `GET /readyz`: content can be
//!   written, plugins are loaded and, for a seed peer with schedulers, one
//!   of them has accepted the host (JSON; 503 with the reason if not).
//!
//! With `server.api_token` set, everything but object reads and health
//! needs `Authorization: Bearer TOKEN` (object reads too with
//! `server.token_for_reads`); without it, 401.
//!
//! Errors are mapped from their kind to a status in one place
//! ([`error`]) and carry a one-line reason in the body.

mod error;
pub mod range;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};

pub use error::AppError;
use range::{RangeAsk, RangeHeader};
pub use wire::ReasonedErrors;

use crate::error::Error;
use crate::origin::OriginRouter;
use crate::plugin::{Registry, ReloadOutcome, SlotSummary};
use crate::task::{ObjectInfo, TaskManager};

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub tasks: Arc<TaskManager>,
    pub origins: Arc<OriginRouter>,
    pub plugins: Arc<Registry>,
    pub jobs: Arc<crate::preheat::JobManager>,
    /// The API's bearer token, if one is configured.
    pub token: Option<Arc<str>>,
    /// Object reads need the token too.
    pub token_for_reads: bool,
    /// Error bodies of object reads may show origin URLs
    /// (`server.expose_origin_urls`).
    pub expose_origin_urls: bool,
    /// The seed peer's scheduler registrations, when it runs.
    pub schedulers: Option<Arc<crate::peer::announcer::Announcer>>,
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lets a request through only with `Authorization: Bearer TOKEN`.
async fn require_token(
    State(token): State<Arc<str>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same_secret(t.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        other => {
            let why = if other.is_some() {
                "the bearer token is not the API token\n"
            } else {
                "this endpoint needs Authorization: Bearer TOKEN (server.api_token)\n"
            };
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                why,
            )
                .into_response()
        }
    }
}

/// The live status page: static HTML whose script reads the API once a
/// second. It holds no data itself, so it needs no token (its API calls do).
async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("status.html"),
    )
        .into_response()
}

/// Ready when content can be written and plugins are loaded.
async fn readyz(State(state): State<AppState>) -> Response {
    let plugins = state.plugins.names().count();
    let storage = match state.tasks.disk_full() {
        Some(full) => Err(crate::error::Error::new(
            crate::error::ErrorKind::DiskFull,
            format!(
                "disk full since {}: {} (new downloads are refused; stored objects are served)",
                httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(full.since_ms)
                ),
                full.reason
            ),
        )),
        None => state.tasks.probe_storage().await,
    };
    let schedulers_ready = state.schedulers.as_ref().is_none_or(|a| a.ready());
    let ready = storage.is_ok() && plugins > 0 && schedulers_ready;
    let mut body = serde_json::json!({
        "ready": ready,
        "storage": match &storage {
            Ok(()) => "writable".to_string(),
            Err(e) => e.to_string(),
        },
        "plugins": plugins,
        "origins": state.origins.names().count(),
    });
    if let Some(a) = &state.schedulers {
        body["schedulers"] = serde_json::json!(a.status());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// The gateway's routes.
pub fn router(state: AppState) -> Router {
    let guard = |r: Router<AppState>, on: bool| match (&state.token, on) {
        (Some(token), true) => r.route_layer(axum::middleware::from_fn_with_state(
            token.clone(),
            require_token,
        )),
        _ => r,
    };
    let health = Router::new()
        .route("/", get(status_page))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    include_str!("openapi.json"),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    let reads = Router::new()
        .route("/o/{origin}/{*key}", get(get_object).head(head_object))
        .route("/fetch", get(fetch_get).head(fetch_head));
    let reads = if state.expose_origin_urls {
        reads
    } else {
        reads.layer(axum::middleware::map_response(hide_origin_urls))
    };
    let reads = guard(reads, state.token_for_reads);
    let api = Router::new()
        .route("/api/v1/tasks/{id}", get(get_task).delete(delete_task))
        .route("/api/v1/origins/{origin}/objects", get(list_objects))
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/breakers", get(list_breakers))
        .route("/api/v1/downloads", get(list_downloads))
        .route("/api/v1/tasks", get(list_tasks))
        .route("/metrics", get(metrics))
        .route("/api/v1/preheat", get(list_jobs).post(create_job))
        .route("/api/v1/preheat/{id}", get(get_job).delete(cancel_job))
        .route(
            "/api/v1/negative-cache",
            get(list_negative).delete(purge_negative),
        )
        .route("/api/v1/negative-cache/{id}", delete(purge_negative_one))
        .route(
            "/api/v1/plugins/{name}/reload",
            axum::routing::post(reload_plugin),
        );
    let api = guard(api, true);
    health
        .merge(reads)
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

/// Error bodies of object reads with every URL replaced by `<origin URL>`
/// (`server.expose_origin_urls` off). Error bodies are one short line, so
/// reading one costs nothing; successful answers pass untouched.
async fn hide_origin_urls(resp: Response) -> Response {
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (parts.status, "the error's reason could not be read\n").into_response();
    };
    let text = redact_urls(&String::from_utf8_lossy(&bytes));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

/// `text` with each `http://` or `https://` URL replaced by `<origin URL>`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&rest[..at]);
        out.push_str("<origin URL>");
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '<' | '>' | ')' | ','))
            .unwrap_or(tail.len());
        // A URL followed by ": reason" keeps the colon for the reason.
        let url = &tail[..end];
        let end = if url.ends_with(':') { end - 1 } else { end };
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// 404 for a path no route serves, with the reason.
async fn no_route(uri: axum::http::Uri) -> AppError {
    let path = uri.path();
    let why = match path.strip_prefix("/o/") {
        Some(rest) => {
            let origin = rest.split('/').next().unwrap_or("");
            if origin.is_empty() {
                format!("'{path}' names no origin: objects are /o/ORIGIN/KEY")
            } else {
                format!(
                    "'{path}' names no object of origin '{origin}': objects are /o/{origin}/KEY"
                )
            }
        }
        None => format!("no such endpoint '{path}' (the API is listed at /openapi.json)"),
    };
    AppError {
        status: StatusCode::NOT_FOUND,
        message: why,
        headers: Vec::new(),
        quiet: false,
    }
}

/// 405 for a method a route does not take, with the reason (axum adds the
/// `Allow` header).
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{method} is not allowed on '{}'", uri.path()),
        headers: Vec::new(),
        quiet: false,
    }
}

/// A `Range` header of a request, parsed before any origin work so a
/// malformed one costs nothing.
fn range_header(headers: &HeaderMap) -> Result<Option<RangeHeader>, AppError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| AppError::bad_request("Range header is not ASCII"))?;
    RangeHeader::parse(text)
        .map(Some)
        .map_err(|why| AppError::bad_request(format!("malformed Range header '{text}': {why}")))
}

/// [`RangeHeader::resolve`], refusals as 416.
fn resolve_range(range: &RangeHeader, length: u64) -> Result<RangeAsk, AppError> {
    range
        .resolve(length)
        .map_err(|_| AppError::unsatisfiable(range.text(), length))
}

fn object_headers(info: &ObjectInfo) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let etag = info
        .etag
        .clone()
        .unwrap_or_else(|| format!("\"{}\"", &info.task_id[..32.min(info.task_id.len())]));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(v) = info
        .last_modified
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    let ctype = info
        .content_type
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ctype);
    if let Ok(v) = HeaderValue::from_str(&info.task_id) {
        h.insert("x-seedgate-task", v);
    }
    h.insert(
        "x-seedgate-cache",
        HeaderValue::from_static(if info.cached { "hit" } else { "miss" }),
    );
    h
}

/// Status, headers and byte span `start..end` of the answer about `info`
/// to a request for `range`.
fn answer(
    range: Option<&RangeHeader>,
    info: &ObjectInfo,
) -> Result<(StatusCode, HeaderMap, u64, u64), AppError> {
    let length = info.content_length;
    let mut h = object_headers(info);
    let ask = match range {
        Some(r) => resolve_range(r, length)?,
        None => RangeAsk::Whole,
    };
    let (status, start, end) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0, length),
        RangeAsk::Part(start, last) => {
            let range = format!("bytes {start}-{last}/{length}");
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&range).expect("digits are a valid header"),
            );
            (StatusCode::PARTIAL_CONTENT, start, last + 1)
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    Ok((status, h, start, end))
}

/// Whether the client's copy (`If-None-Match`, else `If-Modified-Since`)
/// is the object's current version, so the answer is 304.
fn not_modified(headers: &HeaderMap, info: &ObjectInfo) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return match &info.etag {
            Some(etag) => inm
                .split(',')
                .any(|t| t.trim() == "*" || weak(t) == weak(etag)),
            None => false,
        };
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = info
        .last_modified
        .as_deref()
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::IF_MODIFIED_SINCE)
}

/// 304 with the object's validators.
fn not_modified_answer(info: &ObjectInfo) -> Response {
    let mut h = HeaderMap::new();
    for (k, v) in object_headers(info).iter() {
        if k == header::ETAG || k == header::LAST_MODIFIED || k.as_str().starts_with("x-seedgate") {
            h.insert(k.clone(), v.clone());
        }
    }
    (StatusCode::NOT_MODIFIED, h).into_response()
}

async fn head_object(
    State(state): State<AppState>,
    Path((origin, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let origin = state.origins.get(&origin)?;
    let url = origin.object_url(&key)?;
    serve_head(&state, &origin, &url, &headers).await
}

async fn get_object(
    State(state): State<AppState>,
    Path((origin, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let origin = state.origins.get(&origin)?;
    let url = origin.object_url(&key)?;
    serve_get(&state, &origin, &url, &headers).await
}

#[derive(Debug, serde::Deserialize)]
struct FetchQuery {
    url: String,
}

/// The origin a full URL falls under, if that origin allows full URLs.
fn full_url_origin(
    state: &AppState,
    q: &FetchQuery,
) -> Result<(Arc<crate::origin::Origin>, url::Url), AppError> {
    let url = url::Url::parse(&q.url)
        .map_err(|e| AppError::bad_request(format!("'{}' is not a URL: {e}", q.url)))?;
    let origin = state.origins.resolve_url(&url)?;
    if !origin.allow_full_urls {
        return Err(AppError::from_error(Error::new(
            crate::error::ErrorKind::Forbidden,
            format!(
                "origin '{}' does not take full URLs (origins.{}.allow_full_urls); use /o/{}/KEY",
                origin.name, origin.name, origin.name
            ),
        )));
    }
    Ok((origin, url))
}

async fn fetch_get(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<FetchQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (origin, url) = full_url_origin(&state, &q)?;
    serve_get(&state, &origin, &url, &headers).await
}

async fn fetch_head(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<FetchQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (origin, url) = full_url_origin(&state, &q)?;
    serve_head(&state, &origin, &url, &headers).await
}

async fn serve_head(
    state: &AppState,
    origin: &Arc<crate::origin::Origin>,
    url: &url::Url,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let range = range_header(headers)?;
    let info = state.tasks.head(origin, url, headers).await?;
    if is_conditional(headers) && not_modified(headers, &info) {
        return Ok(not_modified_answer(&info));
    }
    let (status, h, _, _) = answer(range.as_ref(), &info)?;
    Ok((status, h).into_response())
}

async fn serve_get(
    state: &AppState,
    origin: &Arc<crate::origin::Origin>,
    url: &url::Url,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let range = range_header(headers)?;
    // A client holding the current version gets 304 from the metadata
    // alone: no download starts.
    if is_conditional(headers) {
        let info = state.tasks.head(origin, url, headers).await?;
        if not_modified(headers, &info) {
            return Ok(not_modified_answer(&info));
        }
    }
    let first_byte = range.as_ref().map_or(0, RangeHeader::first_byte);
    let object = state.tasks.open(origin, url, headers, first_byte).await?;
    let mut info = ObjectInfo::from(&object.record);
    info.cached = object.cached();
    let (status, h, start, end) = answer(range.as_ref(), &info)?;
    if start < end {
        state.tasks.ready(&object, start).await?;
    }
    let m = &*crate::metrics::METRICS;
    let source = if object.cached() { &m.local } else { &m.origin };
    source.requests.inc();
    let served = source.served.clone();
    let stream = state.tasks.read(&object, start, end);
    let body = Body::from_stream(futures_util::StreamExt::inspect(stream, move |chunk| {
        if let Ok(bytes) = chunk {
            served.inc_by(bytes.len() as u64);
        }
    }));
    Ok((status, h, body).into_response())
}

/// Deletes a stored task and frees its space at once; 409 while it is read
/// or downloaded.
async fn delete_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let tasks = state.tasks.clone();
    let freed = tokio::task::spawn_blocking(move || tasks.delete(&id))
        .await
        .map_err(|e| Error::internal(format!("delete: {e}")))??;
    Ok(axum::Json(serde_json::json!({ "freed_bytes": freed })).into_response())
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::from_error(e)
    }
}

/// Query of a listing.
#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    page_token: Option<String>,
    max: Option<u32>,
}

/// One page of a listing, as JSON.
#[derive(Debug, serde::Serialize)]
struct ListAnswer {
    objects: Vec<ListedObject>,
    next_page_token: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct ListedObject {
    key: String,
    url: String,
    size: Option<u64>,
}

/// Objects per page when the caller does not say, and at most.
const LIST_PAGE_DEFAULT: u32 = 1000;

async fn list_objects(
    State(state): State<AppState>,
    Path(origin): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<ListAnswer>, AppError> {
    let origin = state.origins.get(&origin).map_err(AppError::from_error)?;
    let page = origin
        .list(&q.prefix, q.page_token, q.max.unwrap_or(LIST_PAGE_DEFAULT))
        .await
        .map_err(AppError::from_error)?;
    Ok(axum::Json(ListAnswer {
        objects: page
            .objects
            .into_iter()
            .map(|o| ListedObject {
                key: o.key,
                url: o.url,
                size: o.size,
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

async fn list_plugins(State(state): State<AppState>) -> axum::Json<Vec<SlotSummary>> {
    axum::Json(state.plugins.summaries())
}

async fn reload_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ReloadOutcome>, AppError> {
    let plugins = state.plugins.clone();
    // Compiling is CPU work: keep it off the async workers.
    let outcome = tokio::task::spawn_blocking(move || plugins.reload(&name))
        .await
        .map_err(|e| AppError::from_error(Error::internal(e.to_string())))?;
    match outcome {
        Ok(o) => Ok(axum::Json(o)),
        Err(e) if e.kind == crate::error::ErrorKind::Invalid => Err(AppError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: e.to_string(),
            headers: Vec::new(),
            quiet: false,
        }),
        Err(e) => Err(AppError::from_error(e)),
    }
}

async fn list_negative(
    State(state): State<AppState>,
) -> axum::Json<Vec<crate::resilience::negative::NegativeEntry>> {
    axum::Json(state.tasks.negative.list())
}

async fn purge_negative(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "purged": state.tasks.negative.purge_all() }))
}

async fn purge_negative_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, AppError> {
    if state.tasks.negative.purge(&id) {
        Ok(axum::Json(serde_json::json!({ "purged": 1 })))
    } else {
        Err(AppError::from_error(Error::new(
            crate::error::ErrorKind::NotFound,
            format!("no negative-cache entry for task {id}"),
        )))
    }
}

/// Creates a preheat job: 201 with the job, or 200 with the job an earlier
/// request with the same `Idempotency-Key` made.
async fn create_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::Json<crate::preheat::JobRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AppError> {
    let axum::Json(request) =
        body.map_err(|e| AppError::bad_request(format!("preheat request: {}", e.body_text())))?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 256)
                .ok_or_else(|| {
                    AppError::bad_request("Idempotency-Key must be 1 to 256 visible characters")
                })?
                .to_string(),
        ),
        None => None,
    };
    let (job, created) = state.jobs.create(request, key).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/api/v1/preheat/{}", job.record.id);
    Ok((status, [(header::LOCATION, location)], axum::Json(job)).into_response())
}

async fn list_jobs(State(state): State<AppState>) -> axum::Json<Vec<crate::preheat::JobView>> {
    axum::Json(state.jobs.list())
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::preheat::JobView>, AppError> {
    state.jobs.get(&id, true).map(axum::Json).ok_or_else(|| {
        AppError::from_error(Error::new(
            crate::error::ErrorKind::NotFound,
            format!("no preheat job {id}"),
        ))
    })
}

async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::preheat::JobView>, AppError> {
    Ok(axum::Json(state.jobs.cancel(&id)?))
}

/// Prometheus scrape: counters as they are, states read live now.
async fn metrics(State(state): State<AppState>) -> Response {
    use crate::metrics::{METRICS, OriginLabels};
    let m = &*METRICS;
    m.breaker_state.clear();
    for origin in state.origins.all() {
        origin.breakers.export_states();
        m.downloads_running
            .get_or_create(&OriginLabels {
                origin: origin.name.clone(),
            })
            .set(origin.downloads_running() as i64);
    }
    state.plugins.export_breaker_states();
    m.negative_entries.set(state.tasks.negative.len() as i64);
    let (hits, misses) = (m.local.requests.get(), m.origin.requests.get());
    if hits + misses > 0 {
        m.hit_ratio.set(hits as f64 / (hits + misses) as f64);
    }
    if let Ok((limit, used)) = state.tasks.usage() {
        let stored = state.tasks.stored_bytes();
        for (kind, v) in [("limit", limit), ("used", used), ("stored", stored)] {
            m.storage_bytes
                .get_or_create(&crate::metrics::StorageLabels { kind: kind.into() })
                .set(v as i64);
        }
    }
    m.jobs.clear();
    for (job_state, n) in state.jobs.count_by_state() {
        let name = serde_json::to_value(job_state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        m.jobs
            .get_or_create(&crate::metrics::JobLabels { state: name })
            .set(n as i64);
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        m.encode(),
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct TaskQuery {
    limit: Option<usize>,
}

/// Stored and downloading tasks, most recently read first.
async fn list_tasks(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<TaskQuery>,
) -> Result<axum::Json<Vec<crate::task::TaskView>>, AppError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(axum::Json(state.tasks.tasks(limit).await?))
}

async fn get_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::task::TaskView>, AppError> {
    state.tasks.task(&id).await?.map(axum::Json).ok_or_else(|| {
        AppError::from_error(Error::new(
            crate::error::ErrorKind::NotFound,
            format!("no task {id}"),
        ))
    })
}

async fn list_downloads(
    State(state): State<AppState>,
) -> axum::Json<Vec<crate::task::DownloadView>> {
    axum::Json(state.tasks.downloads().await)
}

async fn list_breakers(
    State(state): State<AppState>,
) -> axum::Json<Vec<crate::resilience::breaker::BreakerView>> {
    axum::Json(
        state
            .origins
            .all()
            .flat_map(|o| o.breakers.list())
            .chain(state.plugins.breakers())
            .collect(),
    )
}
