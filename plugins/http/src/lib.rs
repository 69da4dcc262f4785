//! seedgate's built-in origin plugin for plain HTTP(S) origins.
//!
//! `stat` asks the origin with `HEAD` (falling back to a one-byte ranged
//! `GET` where `HEAD` is refused) through the host's capped, allowlisted
//! `http` import; `plan-read` answers one `GET` plan that the host may split
//! into piece ranges when the origin honours `Range`, pinned to the object's
//! strong ETag with `If-Match`. The plugin never sees object bytes.
//!
//! Config keys (the origin's `[origins.NAME.config]` table):
//! - `authorization`: value of an `Authorization` header sent on every
//!   request (e.g. `Bearer s3cret`; use `env:NAME` to keep it out of the file).

wit_bindgen::generate!({
    path: "../../wit",
    world: "origin-plugin",
});

use exports::seedgate::plugin::origin::Guest;
use seedgate::plugin::http;
use seedgate::plugin::types::{
    ByteRange, ErrorDetail, Header, ListPage, ObjectMeta, OriginError, RequestContext, RequestPlan,
};

struct HttpOrigin;

/// Deadline for a metadata request; the host caps it further.
const STAT_TIMEOUT_MS: u32 = 10_000;

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn detail(message: String, status: Option<u16>, retry_after_ms: Option<u64>) -> ErrorDetail {
    ErrorDetail {
        message,
        upstream_status: status,
        retry_after_ms,
    }
}

/// Headers sent upstream: the forwarded client headers plus the configured
/// `Authorization`, which wins over a forwarded one.
fn upstream_headers(ctx: &RequestContext) -> Vec<Header> {
    let auth = seedgate::plugin::config::get("authorization");
    let mut headers: Vec<Header> = ctx
        .headers
        .iter()
        .filter(|h| auth.is_none() || !h.name.eq_ignore_ascii_case("authorization"))
        .cloned()
        .collect();
    if let Some(value) = auth {
        headers.push(Header {
            name: "authorization".into(),
            value,
        });
    }
    headers
}

/// Maps an upstream status that is not a success onto the error taxonomy.
fn status_error(url: &str, resp: &http::Response) -> OriginError {
    let status = resp.status;
    let retry_after_ms = header(&resp.headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000));
    let d = |what: &str| detail(format!("{what}: {url} answered {status}"), Some(status), retry_after_ms);
    match status {
        404 | 410 => OriginError::NotFound(d("not found")),
        401 | 403 => OriginError::Forbidden(d("access refused")),
        408 | 504 => OriginError::Timeout(d("upstream timed out")),
        429 | 500..=599 => OriginError::Transient(d("upstream failure")),
        _ => OriginError::Invalid(d("unexpected status")),
    }
}

fn transport_error(url: &str, err: http::HttpError) -> OriginError {
    match err {
        http::HttpError::Denied(m) => OriginError::Invalid(detail(format!("{url}: {m}"), None, None)),
        http::HttpError::Timeout(m) => OriginError::Timeout(detail(format!("{url}: {m}"), None, None)),
        http::HttpError::TooLarge(m) => OriginError::Invalid(detail(format!("{url}: {m}"), None, None)),
        http::HttpError::Failed(m) => OriginError::Transient(detail(format!("{url}: {m}"), None, None)),
    }
}

fn send(ctx: &RequestContext, method: &str, extra: Option<Header>) -> Result<http::Response, OriginError> {
    let mut headers = upstream_headers(ctx);
    headers.extend(extra);
    http::send(&http::Request {
        method: method.into(),
        url: ctx.url.clone(),
        headers,
        body: None,
        timeout_ms: Some(STAT_TIMEOUT_MS),
    })
    .map_err(|e| transport_error(&ctx.url, e))
}

/// A strong ETag can pin a version with `If-Match`; a weak one never matches.
fn strong(etag: Option<&str>) -> Option<String> {
    etag.filter(|e| e.starts_with('"')).map(str::to_owned)
}

fn meta_from(resp: &http::Response, content_length: u64, accepts_ranges: bool) -> ObjectMeta {
    ObjectMeta {
        content_length,
        etag: header(&resp.headers, "etag").map(str::to_owned),
        last_modified: header(&resp.headers, "last-modified").map(str::to_owned),
        content_type: header(&resp.headers, "content-type").map(str::to_owned),
        accepts_ranges,
    }
}

impl Guest for HttpOrigin {
    fn schemes() -> Vec<String> {
        vec!["http".into(), "https".into()]
    }

    fn stat(ctx: RequestContext) -> Result<ObjectMeta, OriginError> {
        let resp = send(&ctx, "HEAD", None)?;
        if (200..300).contains(&resp.status) {
            let length = header(&resp.headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
            let ranges = header(&resp.headers, "accept-ranges").is_some_and(|v| v.eq_ignore_ascii_case("bytes"));
            if let Some(length) = length {
                return Ok(meta_from(&resp, length, ranges));
            }
        } else if !matches!(resp.status, 405 | 501) {
            return Err(status_error(&ctx.url, &resp));
        }
        // HEAD refused or without a length: ask for the first byte instead and
        // read the total from Content-Range. The host caps the body it keeps.
        let range = Header {
            name: "range".into(),
            value: "bytes=0-0".into(),
        };
        let resp = send(&ctx, "GET", Some(range))?;
        match resp.status {
            206 => {
                let total = header(&resp.headers, "content-range")
                    .and_then(|v| v.rsplit('/').next())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        OriginError::Invalid(detail(
                            format!("{}: 206 without a total in Content-Range", ctx.url),
                            Some(206),
                            None,
                        ))
                    })?;
                Ok(meta_from(&resp, total, true))
            }
            200 => {
                let length = header(&resp.headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
                match length {
                    Some(length) => Ok(meta_from(&resp, length, false)),
                    None => Err(OriginError::Invalid(detail(
                        format!("{}: the origin tells no object size (no Content-Length)", ctx.url),
                        Some(200),
                        None,
                    ))),
                }
            }
            // A zero-length object answers a one-byte range with 416.
            416 => Ok(meta_from(&resp, 0, true)),
            _ => Err(status_error(&ctx.url, &resp)),
        }
    }

    fn plan_read(ctx: RequestContext, meta: ObjectMeta, range: Option<ByteRange>) -> Result<Vec<RequestPlan>, OriginError> {
        Ok(vec![RequestPlan {
            method: "GET".into(),
            url: ctx.url.clone(),
            headers: upstream_headers(&ctx),
            host_may_set_range: meta.accepts_ranges,
            range,
            expires_at_ms: None,
            if_match: strong(meta.etag.as_deref()),
        }])
    }

    fn list_objects(
        ctx: RequestContext,
        _prefix: String,
        _page_token: Option<String>,
        _max: u32,
    ) -> Result<ListPage, OriginError> {
        Err(OriginError::Invalid(detail(
            format!("{}: plain HTTP origins cannot list objects; preheat a list of URLs instead", ctx.url),
            None,
            None,
        )))
    }
}

export!(HttpOrigin);
