//! Object reads: `GET|HEAD /o/{origin}/{key...}` and `/fetch?url=`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::answer::{
    answer, answer_with, is_conditional, not_modified, not_modified_answer, object_headers,
    range_header,
};
use super::range::RangeHeader;
use super::{AppError, AppState};
use crate::error::Error;
use crate::origin::Origin;
use crate::task::ObjectInfo;

pub(super) async fn head_object(
    State(state): State<AppState>,
    Path((origin, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let origin = state.origins.get(&origin)?;
    let url = origin.object_url(&key)?;
    serve_head(&state, &origin, &url, &headers).await
}

/// The request itself rather than a `HeaderMap` extractor, which clones
/// the headers: this runs for every hit.
pub(super) async fn get_object(
    State(state): State<AppState>,
    Path((origin, key)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Response, AppError> {
    let origin = state.origins.get(&origin)?;
    let url = origin.object_url(&key)?;
    let (parts, _) = request.into_parts();
    serve_get(&state, &origin, &url, parts.version, &parts.headers).await
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct FetchQuery {
    url: String,
}

/// The origin a full URL falls under, if that origin allows full URLs.
pub(super) fn full_url_origin(
    state: &AppState,
    q: &FetchQuery,
) -> Result<(Arc<Origin>, url::Url), AppError> {
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

pub(super) async fn fetch_get(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<FetchQuery>,
    version: axum::http::Version,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (origin, url) = full_url_origin(&state, &q)?;
    serve_get(&state, &origin, &url, version, &headers).await
}

pub(super) async fn fetch_head(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<FetchQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (origin, url) = full_url_origin(&state, &q)?;
    serve_head(&state, &origin, &url, &headers).await
}

pub(super) async fn serve_head(
    state: &AppState,
    origin: &Arc<Origin>,
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

pub(super) async fn serve_get(
    state: &AppState,
    origin: &Arc<Origin>,
    url: &url::Url,
    version: axum::http::Version,
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
    let length = object.record.content_length;
    let h = object.answer_headers(|| {
        let mut info = ObjectInfo::from(&*object.record);
        info.cached = object.cached();
        object_headers(&info)
    });
    let (status, h, start, end) = answer_with(range.as_ref(), length, h)?;
    if start < end {
        state.tasks.ready(&object, start).await?;
    }
    let m = &*crate::metrics::METRICS;
    let source = if object.cached() { &m.local } else { &m.origin };
    source.requests.inc();
    if let Some(bytes) = state.tasks.read_small(&object, start, end) {
        source.served.inc_by(bytes.len() as u64);
        return Ok(response(status, h, Body::from(bytes)));
    }
    let served = source.served.clone();
    // HTTP/1 connections send stored pieces with sendfile; HTTP/2 frames
    // are built in memory, so its answers read the bytes.
    let zero_copy = version < axum::http::Version::HTTP_2;
    let stream = state.tasks.read(&object, start, end, zero_copy);
    let body = Body::from_stream(futures_util::StreamExt::inspect(stream, move |chunk| {
        if let Ok(bytes) = chunk {
            served.inc_by(bytes.len() as u64);
        }
    }));
    Ok(response(status, h, body))
}

/// An answer with these headers as they are (building it from a tuple
/// inserts each header again).
fn response(status: axum::http::StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Error bodies of object reads with every URL replaced by `<origin URL>`
/// (`server.expose_origin_urls` off). Error bodies are one short line, so
/// reading one costs nothing; successful answers pass untouched.
pub(super) async fn hide_origin_urls(resp: Response) -> Response {
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
