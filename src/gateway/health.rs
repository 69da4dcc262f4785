//! What a prober or a person looks at: `/healthz`, `/readyz`, the live
//! status page and the OpenAPI document.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The live status page: static HTML whose script reads the API once a
/// second. It holds no data itself, so it needs no token (its API calls do).
pub(super) async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("status.html"),
    )
        .into_response()
}

/// The OpenAPI 3.1 document of the gateway (checked against the routes by
/// `tests/all/openapi.rs`).
pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// The process is alive.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when content can be written and plugins are loaded.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, body) = readiness(&state).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// What `/readyz` answers: whether content can be written, plugins are
/// loaded, a scheduler accepted this host (when that is required) and no
/// drain began; and the body saying each.
pub async fn readiness(state: &AppState) -> (bool, serde_json::Value) {
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
    let draining = state.tasks.draining();
    let ready = storage.is_ok() && plugins > 0 && schedulers_ready && !draining;
    let mut body = serde_json::json!({
        "ready": ready,
        "draining": draining,
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
    (ready, body)
}
