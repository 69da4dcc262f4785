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
//! - `GET /api/v1/cluster/hosts`, `/api/v1/cluster/tasks`,
//!   `/api/v1/cluster/tasks/{id}`: the built-in scheduler's hosts, tasks
//!   and (for one task) its peers with state, parents, pieces and traffic,
//!   read live; 404 when `[scheduler]` is off.
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

//!
//! One file per audience: [`objects`] (clients reading objects, with the
//! pure answer rules in [`answer`] and [`range`]), [`admin`] (operators
//! and pipelines), [`health`] (probers and the status page), [`auth`]
//! (the token), and the wire: [`error`] (error bodies) and [`wire`]
//! (reasons for requests hyper refuses before routing).

mod admin;
mod answer;
mod auth;
mod context;
mod error;
mod health;
mod oapi;
mod objects;
pub mod range;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};

pub use auth::ApiToken;
pub use error::AppError;
pub use health::readiness;
pub use objects::redact_urls;
pub use wire::ReasonedErrors;

use crate::error::Error;
use crate::origin::OriginRouter;
use crate::plugin::Registry;
use crate::task::TaskManager;

/// Shared state of the handlers: one reference count, as axum clones it
/// several times for every request.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    pub tasks: Arc<TaskManager>,
    pub origins: Arc<OriginRouter>,
    pub plugins: Arc<Registry>,
    pub jobs: Arc<crate::preheat::JobManager>,
    /// The API's bearer token, if one is configured.
    pub token: Option<Arc<auth::ApiToken>>,
    /// Object reads need the token too.
    pub token_for_reads: bool,
    /// Error bodies of object reads may show origin URLs
    /// (`server.expose_origin_urls`).
    pub expose_origin_urls: bool,
    /// The seed peer's scheduler registrations, when it runs.
    pub schedulers: Option<Arc<crate::peer::announcer::Announcer>>,
    /// The built-in scheduler, when it runs.
    pub scheduler: Option<Arc<crate::scheduler::Scheduler>>,
    /// This host's name and address, as job results name it.
    pub host: (String, String),
}

/// The gateway's routes.
pub fn router(state: AppState) -> Router {
    let guard = |r: Router<AppState>, on: bool| match (&state.token, on) {
        (Some(token), true) => r.route_layer(axum::middleware::from_fn_with_state(
            token.clone(),
            auth::require_token,
        )),
        _ => r,
    };
    let health = Router::new()
        .route("/", get(health::status_page))
        .route("/openapi.json", get(health::openapi))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    let reads = Router::new()
        .route(
            "/o/{origin}/{*key}",
            get(objects::get_object).head(objects::head_object),
        )
        .route("/fetch", get(objects::fetch_get).head(objects::fetch_head));
    let reads = if state.expose_origin_urls {
        reads
    } else {
        reads.layer(axum::middleware::map_response(objects::hide_origin_urls))
    };
    let reads = guard(reads, state.token_for_reads);
    let api = {
        use admin::*;
        Router::new()
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
            .route("/api/v1/plugins/{name}/reload", post(reload_plugin))
            .route("/api/v1/drain", get(drain_status).post(drain))
            .route("/api/v1/cluster/hosts", get(cluster_hosts))
            .route("/api/v1/cluster/tasks", get(cluster_tasks))
            .route("/api/v1/cluster/tasks/{id}", get(cluster_task))
    };
    let api = guard(api, true);
    let dragonfly = Router::new()
        .route("/oapi/v1/jobs", get(oapi::list_jobs).post(oapi::create_job))
        .route("/oapi/v1/jobs/{id}", get(oapi::get_job));
    let dragonfly = match &state.token {
        Some(token) => dragonfly.route_layer(axum::middleware::from_fn_with_state(
            token.clone(),
            auth::require_token_or_query,
        )),
        None => dragonfly,
    };
    let health = health.route("/healthy", get(oapi::healthy));
    health
        .merge(reads)
        .merge(api)
        .merge(dragonfly)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
        // The request's id and span, outermost: every layer and handler
        // runs in the span.
        .layer(context::RequestContextLayer)
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

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::from_error(e)
    }
}
