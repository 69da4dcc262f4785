//! Dragonfly's open API for preheat jobs, so Harbor's Dragonfly preheat
//! provider and scripts written for Dragonfly's manager work unchanged:
//! `POST /oapi/v1/jobs`, `GET /oapi/v1/jobs/{id}`, `GET /oapi/v1/jobs`
//! and `GET /healthy`.
//!
//! The request is Dragonfly's `CreatePreheatJobRequest` (manager
//! `types/job.go`), the answer its `models.Job` row with `result` shaped as
//! its `internal/job` group state. Where seedgate differs, on purpose:
//! - `state` is only `PENDING`, `SUCCESS` or `FAILURE` (what Harbor reads);
//!   any object that was not stored makes the job `FAILURE`, and it is
//!   listed in `failure_tasks` with its reason. Dragonfly's
//!   `single_seed_peer` reports such a job as `SUCCESS`.
//! - `all_peers` is refused (400): seedgate preheats seed peers, it does
//!   not reach into normal peers. `all_seed_peers`, with the built-in
//!   scheduler, also downloads each object on every other seed host it
//!   knows (`DfdaemonUpload.DownloadTask`) and reports each host; without
//!   it the job runs here only.
//! - `object_storage` and `hdfs` are refused: origins are configured.
//! - a body that does not parse gets 400 naming the field (Dragonfly: 422),
//!   and unknown fields are refused rather than ignored, so Dragonfly's
//!   documented `filteredQueryParams` (which its own server silently
//!   drops) is caught.
//! - `username`/`password` and credential headers are used for the job's
//!   registry requests and never stored or answered.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppError, AppState};
use crate::preheat::{ItemState, JobRequest, JobState, JobView, REDACTED};

/// `CreatePreheatJobRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    #[serde(default)]
    bio: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    args: Option<PreheatArgs>,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    scheduler_cluster_ids: Option<Vec<u64>>,
    #[serde(default)]
    seed_peer_cluster_ids: Option<Vec<u64>>,
}

/// `PreheatArgs`, with Harbor's `concurrent_count` (accepted, ignored).
/// Go's zero values (`""`, `0`, `null`) mean "not set".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreheatArgs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    piece_length: Option<u64>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    application: Option<String>,
    #[serde(default)]
    filtered_query_params: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    ips: Option<Vec<String>>,
    #[serde(default)]
    percentage: Option<u32>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    concurrent_task_count: Option<i64>,
    #[serde(default)]
    concurrent_peer_count: Option<i64>,
    /// Harbor sends it; Dragonfly has no such field and ignores it.
    #[serde(default)]
    concurrent_count: Option<i64>,
    /// A Go `time.Duration`: nanoseconds.
    #[serde(default)]
    timeout: Option<i64>,
    #[serde(default)]
    object_storage: Option<Value>,
    #[serde(default)]
    hdfs: Option<Value>,
}

/// Dragonfly's default `filtered_query_params` (`pkg/net/http/header.go`
/// `DefaultFilteredQueryParams`): signature and expiry parameters of S3,
/// GCS, OSS, OBS and COS URLs, and containerd's `ns`.
pub const DEFAULT_FILTERED_QUERY_PARAMS: [&str; 32] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-User-Agent",
    "X-Goog-Algorithm",
    "X-Goog-Credential",
    "X-Goog-Date",
    "X-Goog-Expires",
    "X-Goog-SignedHeaders",
    "X-Goog-Signature",
    "OSSAccessKeyId",
    "Expires",
    "Signature",
    "SecurityToken",
    "AccessKeyId",
    "Signature",
    "Expires",
    "X-Obs-Date",
    "X-Obs-Security-Token",
    "q-sign-algorithm",
    "q-ak",
    "q-sign-time",
    "q-key-time",
    "q-header-list",
    "q-url-param-list",
    "q-signature",
    "x-cos-security-token",
    "ns",
];

/// Dragonfly's default job timeout: 60 minutes.
const DEFAULT_TIMEOUT_NS: i64 = 60 * 60 * 1_000_000_000;

fn bad(field: &str, why: impl std::fmt::Display) -> AppError {
    AppError::bad_request(format!("{field}: {why}"))
}

fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `POST /oapi/v1/jobs`.
pub(super) async fn create_job(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let create: CreateJob = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        bad(if path == "." { "body" } else { &path }, e.into_inner())
    })?;
    if create.kind != "preheat" {
        return Err(bad(
            "type",
            format!(
                "'{}' is not served: this server runs preheat jobs",
                create.kind
            ),
        ));
    }
    let args = create.args.unwrap_or_default();
    let (request, echo) = request_of(&state, &args)?;
    let _ = (
        &create.user_id,
        &create.scheduler_cluster_ids,
        &create.seed_peer_cluster_ids,
    );
    let view = state.jobs.create_dragonfly(request, echo).await?;
    let mut row = row(&state, &view);
    row["bio"] = json!(create.bio);
    row["user_id"] = json!(create.user_id.unwrap_or(0));
    Ok((StatusCode::OK, axum::Json(row)).into_response())
}

/// Dragonfly's arguments as a seedgate job, and the arguments to echo
/// (defaults filled as Dragonfly fills them, credentials redacted).
fn request_of(state: &AppState, a: &PreheatArgs) -> Result<(JobRequest, Value), AppError> {
    let scope = set(&a.scope).unwrap_or("single_seed_peer");
    match scope {
        "single_seed_peer" | "all_seed_peers" => {}
        "all_peers" => {
            return Err(bad(
                "args.scope",
                "all_peers is not supported: seedgate preheats seed peers (use single_seed_peer or all_seed_peers)",
            ));
        }
        other => {
            return Err(bad(
                "args.scope",
                format!("'{other}' is not single_seed_peer, all_seed_peers or all_peers"),
            ));
        }
    }
    if a.object_storage.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(bad(
            "args.object_storage",
            "not supported: configure the bucket as an s3 origin and preheat its URLs",
        ));
    }
    if a.hdfs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(bad("args.hdfs", "not supported"));
    }
    if let Some(len) = a.piece_length {
        crate::piece::check_piece_length(len).map_err(|e| bad("args.piece_length", e))?;
    }
    let concurrency = match a.concurrent_task_count.unwrap_or(0) {
        0 => 8,
        n @ 1..=100 => n as usize,
        n => {
            return Err(bad(
                "args.concurrent_task_count",
                format!("{n} is outside 1..=100"),
            ));
        }
    };
    let timeout_ns = match a.timeout.unwrap_or(0) {
        0 => DEFAULT_TIMEOUT_NS,
        n if n < 0 => {
            return Err(bad(
                "args.timeout",
                format!("{n} is negative (nanoseconds)"),
            ));
        }
        n => n,
    };
    let filtered: Vec<String> = match set(&a.filtered_query_params) {
        Some(raw) => raw
            .split('&')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => DEFAULT_FILTERED_QUERY_PARAMS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let mut headers = a.headers.clone().unwrap_or_default();
    match (set(&a.username), set(&a.password)) {
        (Some(user), Some(password)) => {
            if !headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("authorization"))
            {
                use base64::Engine;
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                headers.insert("Authorization".into(), format!("Basic {basic}"));
            }
        }
        (None, None) => {}
        (Some(_), None) => return Err(bad("args.password", "username is set without password")),
        (None, Some(_)) => return Err(bad("args.username", "password is set without username")),
    }
    let mut request = JobRequest {
        all_seed_peers: scope == "all_seed_peers",
        piece_length: a.piece_length,
        tag: set(&a.tag).map(str::to_owned),
        application: set(&a.application).map(str::to_owned),
        headers,
        concurrency: Some(concurrency.min(state.jobs.max_concurrency())),
        filtered_query_params: filtered.clone(),
        timeout_ms: Some((timeout_ns / 1_000_000).max(1) as u64),
        ..JobRequest::default()
    };
    match a.kind.as_str() {
        "image" => {
            let url = set(&a.url).ok_or_else(|| {
                bad(
                    "args.url",
                    "an image job needs the manifest URL (…/v2/NAME/manifests/REF)",
                )
            })?;
            if a.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                return Err(bad("args.urls", "only file jobs take urls"));
            }
            let (origin, image) = image_of(state, url)?;
            request.origin = Some(origin);
            request.image = Some(image);
            request.platform = set(&a.platform).map(str::to_owned);
        }
        "file" => {
            let mut urls: Vec<String> = a.urls.clone().unwrap_or_default();
            if let Some(u) = set(&a.url) {
                urls.insert(0, u.to_owned());
            }
            if urls.is_empty() {
                return Err(bad("args.url", "a file job needs url or urls"));
            }
            for u in &urls {
                let field = if Some(u.as_str()) == set(&a.url) {
                    "args.url"
                } else {
                    "args.urls"
                };
                let parsed = url::Url::parse(u)
                    .map_err(|e| bad(field, format!("'{u}' is not a URL: {e}")))?;
                state
                    .origins
                    .resolve_url(&parsed)
                    .map_err(|e| bad(field, e.message))?;
            }
            if set(&a.platform).is_some() {
                return Err(bad("args.platform", "only image jobs take a platform"));
            }
            request.urls = urls;
        }
        other => {
            return Err(bad(
                "args.type",
                format!("'{other}' is neither image nor file"),
            ));
        }
    }
    // The arguments as Dragonfly's manager stores them (defaults filled),
    // without credentials.
    let mut shown_headers = a.headers.clone().unwrap_or_default();
    for (k, v) in shown_headers.iter_mut() {
        if crate::preheat::is_secret_header(k) {
            *v = REDACTED.to_owned();
        }
    }
    let echo = json!({
        "type": a.kind,
        "url": a.url.clone().unwrap_or_default(),
        "urls": a.urls.clone(),
        "piece_length": a.piece_length,
        "tag": a.tag.clone().unwrap_or_default(),
        "application": a.application.clone().unwrap_or_default(),
        "filtered_query_params": filtered.join("&"),
        "headers": shown_headers,
        "username": a.username.clone().unwrap_or_default(),
        "password": if set(&a.password).is_some() { REDACTED } else { "" },
        "platform": a.platform.clone().unwrap_or_default(),
        "scope": scope,
        "ips": a.ips.clone(),
        "percentage": a.percentage,
        "count": a.count,
        "concurrent_task_count": concurrency,
        "concurrent_peer_count": a.concurrent_peer_count.filter(|n| *n != 0).unwrap_or(500),
        "timeout": timeout_ns,
    });
    let _ = a.concurrent_count;
    Ok((request, echo))
}

/// The origin and image of a manifest URL `…/v2/NAME/manifests/REF`.
fn image_of(state: &AppState, url: &str) -> Result<(String, String), AppError> {
    let parsed =
        url::Url::parse(url).map_err(|e| bad("args.url", format!("'{url}' is not a URL: {e}")))?;
    let origin = state
        .origins
        .resolve_url(&parsed)
        .map_err(|e| bad("args.url", e.message))?;
    let path = parsed.path();
    let (_, rest) = path.split_once("/v2/").ok_or_else(|| {
        bad(
            "args.url",
            format!("'{url}' is not a registry URL (…/v2/NAME/manifests/REF)"),
        )
    })?;
    let (name, reference) = rest.rsplit_once("/manifests/").ok_or_else(|| {
        bad(
            "args.url",
            format!("'{url}' is not a manifest URL (…/v2/NAME/manifests/REF)"),
        )
    })?;
    let host = &parsed[url::Position::BeforeHost..url::Position::AfterPort];
    let sep = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    Ok((
        origin.name.clone(),
        format!("{host}/{name}{sep}{reference}"),
    ))
}

/// `GET /oapi/v1/jobs/{id}`.
pub(super) async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, AppError> {
    let number: u64 = id
        .parse()
        .map_err(|_| bad("id", format!("'{id}' is not a job id (an integer)")))?;
    let view = state.jobs.get_by_number(number).ok_or_else(|| {
        AppError::from_error(crate::error::Error::new(
            crate::error::ErrorKind::NotFound,
            format!("no job {number}"),
        ))
    })?;
    Ok(axum::Json(row(&state, &view)))
}

/// `GET /oapi/v1/jobs`: the jobs created through this API, newest first.
pub(super) async fn list_jobs(State(state): State<AppState>) -> axum::Json<Vec<Value>> {
    let rows = state
        .jobs
        .list()
        .iter()
        .filter_map(|v| v.record.number)
        .filter_map(|n| state.jobs.get_by_number(n))
        .map(|v| row(&state, &v))
        .collect();
    axum::Json(rows)
}

/// `GET /healthy`, Harbor's probe.
pub(super) async fn healthy() -> &'static str {
    "OK"
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A 32-hex job id as a UUID (`8-4-4-4-12`), as Dragonfly's group ids are.
fn uuid_of(id: &str) -> String {
    if id.len() != 32 {
        return id.to_owned();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    )
}

/// A job as Dragonfly's `models.Job` row.
fn row(state: &AppState, view: &JobView) -> Value {
    let r = &view.record;
    let dragonfly_state = match r.state {
        JobState::Succeeded => "SUCCESS",
        JobState::Failed | JobState::Cancelled => "FAILURE",
        JobState::Queued | JobState::Listing | JobState::Running => "PENDING",
    };
    let (hostname, ip) = state.host.clone();
    let mut success = Vec::new();
    let mut failure = Vec::new();
    for item in view.objects.iter().flatten() {
        let i = &item.record;
        for h in &i.hosts {
            match &h.error {
                None => success.push(json!({"url": i.url, "hostname": h.hostname, "ip": h.ip})),
                Some(e) => failure.push(
                    json!({"url": i.url, "hostname": h.hostname, "ip": h.ip, "description": e}),
                ),
            }
        }
        let local_failed = i
            .error
            .as_deref()
            .is_some_and(|e| !e.starts_with("on seed host "));
        match i.state {
            ItemState::Done => success.push(json!({"url": i.url, "hostname": hostname, "ip": ip})),
            ItemState::Failed if !local_failed => success.push(json!({"url": i.url, "hostname": hostname, "ip": ip})),
            ItemState::Missing | ItemState::Failed | ItemState::Cancelled => failure.push(json!({
                "url": i.url, "hostname": hostname, "ip": ip,
                "description": i.error.clone().unwrap_or_else(|| format!("{:?}", i.state).to_lowercase()),
            })),
            ItemState::Pending | ItemState::Running => {}
        }
    }
    let group = format!("group_{}", uuid_of(&r.id));
    let created = rfc3339(r.created_at_ms);
    let updated = rfc3339(r.updated_at_ms);
    let error = r.error.clone().unwrap_or_else(|| {
        if dragonfly_state == "FAILURE" {
            format!(
                "{} of {} objects were not stored",
                failure.len(),
                view.progress.total
            )
        } else {
            String::new()
        }
    });
    json!({
        "id": r.number.unwrap_or(0),
        "created_at": created,
        "updated_at": updated,
        "is_del": 0,
        "task_id": group,
        "bio": "",
        "type": "preheat",
        "state": dragonfly_state,
        "args": r.dragonfly_args.clone().unwrap_or(Value::Null),
        "result": {
            "group_uuid": group,
            "state": dragonfly_state,
            "created_at": created,
            "updated_at": updated,
            "job_states": [{
                "task_uuid": format!("task_{}", uuid_of(&r.id)),
                "task_name": "preheat",
                "state": dragonfly_state,
                "error": error,
                "ttl": 0,
                "created_at": created,
                "results": [{
                    "success_tasks": success,
                    "failure_tasks": failure,
                    "scheduler_cluster_id": 1,
                }],
            }],
        },
        "user_id": 0,
        "seed_peer_clusters": [],
        "scheduler_clusters": [],
        "seedgate_job": r.id,
    })
}
