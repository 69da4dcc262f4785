//! The admin API under `/api/v1` and `/metrics`: tasks, listings,
//! plugins, the negative cache, preheat jobs, breakers, downloads.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppError, AppState};
use crate::error::Error;
use crate::plugin::{ReloadOutcome, SlotSummary};

/// Deletes a stored task and frees its space at once; 409 while it is read
/// or downloaded.
pub(super) async fn delete_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let tasks = state.tasks.clone();
    let freed = tokio::task::spawn_blocking(move || tasks.delete(&id))
        .await
        .map_err(|e| Error::internal(format!("delete: {e}")))??;
    Ok(axum::Json(serde_json::json!({ "freed_bytes": freed })).into_response())
}

/// Query of a listing.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    prefix: String,
    page_token: Option<String>,
    max: Option<u32>,
}

/// One page of a listing, as JSON.
#[derive(Debug, serde::Serialize)]
pub(super) struct ListAnswer {
    objects: Vec<ListedObject>,
    next_page_token: Option<String>,
}

#[derive(Debug, serde::Serialize)]
pub(super) struct ListedObject {
    key: String,
    url: String,
    size: Option<u64>,
}

/// Objects per page when the caller does not say, and at most.
pub(super) const LIST_PAGE_DEFAULT: u32 = 1000;

pub(super) async fn list_objects(
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

pub(super) async fn list_plugins(State(state): State<AppState>) -> axum::Json<Vec<SlotSummary>> {
    axum::Json(state.plugins.summaries())
}

pub(super) async fn reload_plugin(
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

pub(super) async fn list_negative(
    State(state): State<AppState>,
) -> axum::Json<Vec<crate::resilience::negative::NegativeEntry>> {
    axum::Json(state.tasks.negative.list())
}

pub(super) async fn purge_negative(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "purged": state.tasks.negative.purge_all() }))
}

pub(super) async fn purge_negative_one(
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
pub(super) async fn create_job(
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

pub(super) async fn list_jobs(
    State(state): State<AppState>,
) -> axum::Json<Vec<crate::preheat::JobView>> {
    axum::Json(state.jobs.list())
}

pub(super) async fn get_job(
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

pub(super) async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::preheat::JobView>, AppError> {
    Ok(axum::Json(state.jobs.cancel(&id)?))
}

/// Prometheus scrape: counters as they are, states read live now.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
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
    if let Some(s) = &state.scheduler {
        s.export_metrics();
    }
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
pub(super) struct TaskQuery {
    limit: Option<usize>,
}

/// Stored and downloading tasks, most recently read first.
pub(super) async fn list_tasks(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<TaskQuery>,
) -> Result<axum::Json<Vec<crate::task::TaskView>>, AppError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(axum::Json(state.tasks.tasks(limit).await?))
}

pub(super) async fn get_task(
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

pub(super) async fn list_downloads(
    State(state): State<AppState>,
) -> axum::Json<Vec<crate::task::DownloadView>> {
    axum::Json(state.tasks.downloads().await)
}

pub(super) async fn list_breakers(
    State(state): State<AppState>,
) -> axum::Json<Vec<crate::resilience::breaker::BreakerView>> {
    axum::Json(
        state
            .origins
            .all()
            .flat_map(|o| o.breakers.list())
            .chain(state.plugins.breakers())
            .chain(state.scheduler.iter().flat_map(|s| s.policy_breakers()))
            .collect(),
    )
}

fn scheduler(state: &AppState) -> Result<&std::sync::Arc<crate::scheduler::Scheduler>, AppError> {
    state.scheduler.as_ref().ok_or_else(|| {
        AppError::from_error(Error::new(
            crate::error::ErrorKind::NotFound,
            "the built-in scheduler is off (no [scheduler] section in the config)",
        ))
    })
}

/// The built-in scheduler's hosts.
pub(super) async fn cluster_hosts(
    State(state): State<AppState>,
) -> Result<axum::Json<Vec<crate::scheduler::cluster::HostView>>, AppError> {
    Ok(axum::Json(scheduler(&state)?.hosts()))
}

/// The built-in scheduler's tasks, newest first.
pub(super) async fn cluster_tasks(
    State(state): State<AppState>,
) -> Result<axum::Json<Vec<crate::scheduler::cluster::TaskView>>, AppError> {
    Ok(axum::Json(scheduler(&state)?.task_list()))
}

/// One task of the built-in scheduler, with its peers.
pub(super) async fn cluster_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::scheduler::cluster::TaskView>, AppError> {
    scheduler(&state)?.task(&id).map(axum::Json).ok_or_else(|| {
        AppError::from_error(Error::new(
            crate::error::ErrorKind::NotFound,
            format!("the scheduler knows no task {id}"),
        ))
    })
}

/// Where a drain stands: `done` once no upload or download is in flight
/// and the schedulers were left.
#[derive(Debug, serde::Serialize)]
pub(super) struct DrainView {
    draining: bool,
    /// Whether every scheduler was told this host left; null without a
    /// seed peer.
    schedulers_left: Option<bool>,
    uploads_in_flight: u64,
    downloads_running: usize,
    done: bool,
}

async fn drain_view(state: &AppState) -> DrainView {
    let draining = state.tasks.draining();
    let schedulers_left = state.schedulers.as_ref().map(|a| a.left());
    let uploads_in_flight = state
        .schedulers
        .as_ref()
        .map_or(0, |a| a.uploads_in_flight());
    let downloads_running = state.tasks.downloads().await.len();
    DrainView {
        draining,
        schedulers_left,
        uploads_in_flight,
        downloads_running,
        done: draining
            && schedulers_left != Some(false)
            && uploads_in_flight == 0
            && downloads_running == 0,
    }
}

/// `POST /api/v1/drain`: stop taking new tasks and preheat jobs, leave the
/// schedulers, keep serving what is stored and what is in flight. Idempotent;
/// only a restart undoes it.
pub(super) async fn drain(State(state): State<AppState>) -> axum::Json<DrainView> {
    state.tasks.drain();
    if let Some(a) = &state.schedulers {
        a.leave();
    }
    axum::Json(drain_view(&state).await)
}

pub(super) async fn drain_status(State(state): State<AppState>) -> axum::Json<DrainView> {
    axum::Json(drain_view(&state).await)
}
