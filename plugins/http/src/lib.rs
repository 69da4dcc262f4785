//! seedgate's built-in origin plugin for plain HTTP(S) origins.
//!
//! `stat` asks the origin with `HEAD` (falling back to a one-byte ranged
//! `GET` where `HEAD` is refused) through the host's capped, allowlisted
//! `http` import; `plan-read` answers one `GET` plan that the host may split
//! into piece ranges when the origin honours `Range`, pinned to the object's
//! strong ETag with `If-Match`. The plugin never sees object bytes.
//!
//! Upstream statuses map as: 404/410 not-found, 401/403 forbidden, 408/504
//! timeout, 429/5xx transient (with the Retry-After hint), others invalid.
//!
//! Config keys (the origin's `[origins.NAME.config]` table):
//! - `authorization`: value of an `Authorization` header sent on every
//!   request (e.g. `Bearer s3cret`; use `env:NAME` to keep it out of the
//!   file). It replaces a forwarded client `Authorization`.
//!
//! Client headers reach the plugin only when the origin's `forward_headers`
//! allowlist names them; they are passed on to the origin as they are.

use seedgate_plugin_sdk::*;

struct HttpOrigin;

/// Deadline for a metadata request; the host caps it further.
const STAT_TIMEOUT_MS: u32 = 10_000;

/// Headers sent upstream: the forwarded client headers plus the configured
/// `Authorization`, which wins over a forwarded one.
fn upstream_headers(ctx: &RequestContext) -> Vec<Header> {
    let auth = config::get("authorization");
    let mut headers: Vec<Header> = ctx
        .headers
        .iter()
        .filter(|h| auth.is_none() || !h.name.eq_ignore_ascii_case("authorization"))
        .cloned()
        .collect();
    headers.extend(auth.map(|value| Header::new("authorization", value)));
    headers
}

fn send(
    ctx: &RequestContext,
    method: &str,
    extra: Option<Header>,
) -> Result<http::Response, OriginError> {
    let mut headers = upstream_headers(ctx);
    headers.extend(extra);
    http::exchange(http::Request {
        method: method.into(),
        url: ctx.url.clone(),
        headers,
        body: None,
        timeout_ms: Some(STAT_TIMEOUT_MS),
    })
}

fn meta_from(resp: &http::Response, content_length: u64, accepts_ranges: bool) -> ObjectMeta {
    ObjectMeta {
        content_length,
        etag: resp.header("etag").map(str::to_owned),
        last_modified: resp.header("last-modified").map(str::to_owned),
        content_type: resp.header("content-type").map(str::to_owned),
        accepts_ranges,
    }
}

fn status_error(ctx: &RequestContext, resp: &http::Response) -> OriginError {
    OriginError::from_status(&ctx.url, resp.status, retry_after_ms(&resp.headers))
}

impl Origin for HttpOrigin {
    fn schemes() -> Vec<String> {
        vec!["http".into(), "https".into()]
    }

    fn stat(ctx: RequestContext) -> Result<ObjectMeta, OriginError> {
        let resp = send(&ctx, "HEAD", None)?;
        if resp.is_success() {
            if let Some(meta) = resp.meta() {
                return Ok(meta);
            }
        } else if !matches!(resp.status, 405 | 501) {
            return Err(status_error(&ctx, &resp));
        }
        // HEAD refused or without a length: ask for the first byte instead and
        // read the total from Content-Range. The host caps the body it keeps.
        let resp = send(&ctx, "GET", Some(Header::new("range", "bytes=0-0")))?;
        match resp.status {
            206 => {
                let total = resp
                    .header("content-range")
                    .and_then(|v| v.rsplit('/').next())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        OriginError::invalid(format!(
                            "{}: 206 without a total in Content-Range",
                            ctx.url
                        ))
                        .with_status(206, None)
                    })?;
                Ok(meta_from(&resp, total, true))
            }
            200 => resp.meta().ok_or_else(|| {
                OriginError::invalid(format!(
                    "{}: the origin tells no object size (no Content-Length)",
                    ctx.url
                ))
                .with_status(200, None)
            }),
            // A zero-length object answers a one-byte range with 416.
            416 => Ok(meta_from(&resp, 0, true)),
            _ => Err(status_error(&ctx, &resp)),
        }
    }

    fn plan_read(
        ctx: RequestContext,
        meta: ObjectMeta,
        range: Option<ByteRange>,
    ) -> Result<Vec<RequestPlan>, OriginError> {
        Ok(vec![
            RequestPlan::get(&ctx.url)
                .headers(upstream_headers(&ctx))
                .ranged(meta.accepts_ranges)
                .range(range)
                .pin(meta.etag.as_deref()),
        ])
    }

    fn list_objects(
        ctx: RequestContext,
        _prefix: String,
        _page_token: Option<String>,
        _max: u32,
    ) -> Result<ListPage, OriginError> {
        Err(OriginError::invalid(format!(
            "{}: plain HTTP origins cannot list objects; preheat a list of URLs instead",
            ctx.url
        )))
    }
}

seedgate_plugin_sdk::export_origin!(HttpOrigin);
