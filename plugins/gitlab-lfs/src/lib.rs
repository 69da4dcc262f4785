//! seedgate's built-in origin plugin for Git LFS servers (GitLab, giftless,
//! anything speaking the LFS batch API).
//!
//! The origin's `base_url` is the repository's LFS endpoint (GitLab:
//! `https://gitlab.example/GROUP/PROJECT.git/info/lfs/`; giftless:
//! `http://host/ORG/REPO/`), and a key is `OID/SIZE` as in an LFS pointer
//! file, so the object URL is `BASE/OID/SIZE`.
//!
//! `stat` and `plan-read` both ask `BASE/objects/batch` for a `download`
//! with the `basic` transfer; the answer's `href`, `header` and expiry become
//! the plan the host executes. LFS objects are content-addressed, so the
//! ETag is the oid and never changes.
//!
//! Errors: a per-object error 404/410 and a whole-response 404 → not-found;
//! 422 → invalid (wrong size); 401/403 → forbidden; 429/5xx → transient.
//!
//! Config keys (`[origins.NAME.config]`):
//! - `auth`: `none` (default), `bearer` (`Authorization: Bearer TOKEN`),
//!   `basic` (`USERNAME:PASSWORD`) or `token` (a GitLab personal, project or
//!   deploy token sent as basic auth `USERNAME:TOKEN`, USERNAME defaulting
//!   to `oauth2`);
//! - `token`, `username`, `password`: the credentials (use `env:` or `file:`);
//! - `ref`: the Git ref sent with the batch request (`refs/heads/main`);
//! - `ranges`: `true` when the download hrefs honour `Range` (GitLab with
//!   object storage), so the host fetches pieces in parallel; default
//!   `false` (giftless answers every range with the whole object).

use base64::Engine;
use seedgate_plugin_sdk::*;
use serde::{Deserialize, Serialize};

struct LfsOrigin;

const MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

/// Expiry assumed for an action that states none: plans are renewed this
/// often, so a short-lived href without an expiry is not held for long.
const DEFAULT_ACTION_TTL_MS: u64 = 600_000;

#[derive(Serialize)]
struct BatchRequest<'a> {
    operation: &'a str,
    transfers: [&'a str; 1],
    objects: [Pointer<'a>; 1],
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    git_ref: Option<GitRef>,
    hash_algo: &'a str,
}

#[derive(Serialize)]
struct GitRef {
    name: String,
}

#[derive(Serialize)]
struct Pointer<'a> {
    oid: &'a str,
    size: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BatchResponse {
    objects: Vec<BatchObject>,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BatchObject {
    oid: String,
    size: u64,
    actions: Option<Actions>,
    error: Option<ObjectError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Actions {
    download: Option<Action>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Action {
    href: String,
    header: std::collections::BTreeMap<String, String>,
    expires_in: Option<i64>,
    expires_at: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ObjectError {
    code: u16,
    message: String,
}

/// `BASE/OID/SIZE` → (batch URL, oid, size).
fn parse_object_url(url: &str) -> Result<(String, String, u64), OriginError> {
    let bad = |why: &str| OriginError::invalid(format!("'{url}': {why}; LFS keys are OID/SIZE"));
    let trimmed = url.split(['?', '#']).next().unwrap_or(url);
    let mut parts = trimmed.rsplitn(3, '/');
    let size = parts.next().ok_or_else(|| bad("no size"))?;
    let oid = parts.next().ok_or_else(|| bad("no oid"))?;
    let base = parts.next().ok_or_else(|| bad("no LFS endpoint"))?;
    let size = size
        .parse::<u64>()
        .map_err(|_| bad("the size is not a number"))?;
    if oid.len() != 64 || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the oid is not 64 hex digits (sha256)"));
    }
    Ok((
        format!("{base}/objects/batch"),
        oid.to_ascii_lowercase(),
        size,
    ))
}

/// The `Authorization` header the config asks for, if any.
fn authorization() -> Result<Option<Header>, OriginError> {
    let basic = |user: &str, secret: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        Some(Header::new("authorization", format!("Basic {encoded}")))
    };
    match config::get("auth").as_deref().unwrap_or("none") {
        "none" => Ok(None),
        "bearer" => Ok(Some(Header::new(
            "authorization",
            format!("Bearer {}", config::require("token")?),
        ))),
        "basic" => Ok(basic(
            &config::require("username")?,
            &config::require("password")?,
        )),
        "token" => {
            let user = config::get("username").unwrap_or_else(|| "oauth2".into());
            Ok(basic(&user, &config::require("token")?))
        }
        other => Err(config::invalid(
            "auth",
            format!("config 'auth' = '{other}': expected none, bearer, basic or token"),
        )),
    }
}

/// Asks the batch API for the download action of the object at `url`.
fn batch(url: &str) -> Result<(BatchObject, Action), OriginError> {
    let (batch_url, oid, size) = parse_object_url(url)?;
    let body = BatchRequest {
        operation: "download",
        transfers: ["basic"],
        objects: [Pointer { oid: &oid, size }],
        git_ref: config::get("ref").map(|name| GitRef { name }),
        hash_algo: "sha256",
    };
    let mut headers = vec![
        Header::new("accept", MEDIA_TYPE),
        Header::new("content-type", MEDIA_TYPE),
    ];
    headers.extend(authorization()?);
    let body =
        serde_json::to_vec(&body).map_err(|e| OriginError::invalid(format!("{url}: {e}")))?;
    let resp = http::post(&batch_url, &headers, body)?;
    interpret(
        &batch_url,
        &oid,
        size,
        resp.status,
        &resp.body,
        retry_after_ms(&resp.headers),
    )
}

/// Reads a batch answer for `oid` of `size` bytes: the object and its
/// download action, or the error the answer means.
fn interpret(
    batch_url: &str,
    oid: &str,
    size: u64,
    status: u16,
    body: &[u8],
    retry_after: Option<u64>,
) -> Result<(BatchObject, Action), OriginError> {
    let parsed: Option<BatchResponse> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let why = parsed
            .and_then(|p| p.message)
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let what = format!("LFS batch {batch_url} for {oid}");
        let e = match status {
            // Every requested object is missing (or the repository is).
            404 | 410 => OriginError::not_found(format!("{what} answered {status}{why}")),
            422 => OriginError::invalid(format!(
                "{what} answered 422{why} (does the size {size} match?)"
            )),
            status => OriginError::from_status(&format!("{what}{why}"), status, None),
        };
        return Err(e.with_status(status, retry_after));
    }
    let parsed = parsed
        .ok_or_else(|| OriginError::transient(format!("{batch_url}: unreadable batch answer")))?;
    let mut object = parsed
        .objects
        .into_iter()
        .find(|o| o.oid.eq_ignore_ascii_case(oid))
        .ok_or_else(|| {
            OriginError::transient(format!("{batch_url}: the answer does not mention {oid}"))
        })?;
    if let Some(err) = &object.error {
        let what = format!("LFS object {oid}: {} {}", err.code, err.message);
        return Err(match err.code {
            404 | 410 => OriginError::not_found(what),
            422 => OriginError::invalid(what),
            401 | 403 => OriginError::forbidden(what),
            _ => OriginError::transient(what),
        }
        .with_status(err.code, None));
    }
    let action = object
        .actions
        .as_mut()
        .and_then(|a| a.download.take())
        .ok_or_else(|| {
            OriginError::transient(format!(
                "LFS object {oid}: the answer has no download action"
            ))
        })?;
    if object.size != size {
        return Err(OriginError::invalid(format!(
            "LFS object {oid}: the server says {} bytes, the key says {size}",
            object.size
        )));
    }
    Ok((object, action))
}

/// Unix ms of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)`.
fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset_secs = match rest {
        "Z" | "z" | "+00:00" | "-00:00" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// When the action stops being valid, in Unix ms.
fn expiry(action: &Action) -> u64 {
    let now = clock::now_ms();
    if let Some(secs) = action.expires_in.filter(|s| *s > 0) {
        return now + secs as u64 * 1000;
    }
    action
        .expires_at
        .as_deref()
        .and_then(parse_rfc3339_utc)
        .unwrap_or(now + DEFAULT_ACTION_TTL_MS)
}

impl Origin for LfsOrigin {
    fn schemes() -> Vec<String> {
        vec!["http".into(), "https".into()]
    }

    fn stat(ctx: RequestContext) -> Result<ObjectMeta, OriginError> {
        let (object, _) = batch(&ctx.url)?;
        Ok(ObjectMeta {
            content_length: object.size,
            // Content-addressed: the oid names exactly one content.
            etag: Some(format!("\"{}\"", object.oid.to_ascii_lowercase())),
            last_modified: None,
            content_type: Some("application/octet-stream".into()),
            accepts_ranges: config::parse_or("ranges", false)?,
        })
    }

    fn plan_read(
        ctx: RequestContext,
        meta: ObjectMeta,
        range: Option<ByteRange>,
    ) -> Result<Vec<RequestPlan>, OriginError> {
        let (_, action) = batch(&ctx.url)?;
        let expires = expiry(&action);
        let headers = action
            .header
            .iter()
            .map(|(k, v)| Header::new(k.as_str(), v.as_str()))
            .collect();
        Ok(vec![
            RequestPlan::get(&action.href)
                .headers(headers)
                .ranged(meta.accepts_ranges)
                .range(range)
                .expires_at_ms(Some(expires)),
        ])
    }

    fn list_objects(
        ctx: RequestContext,
        _prefix: String,
        _page_token: Option<String>,
        _max: u32,
    ) -> Result<ListPage, OriginError> {
        Err(OriginError::invalid(format!(
            "{}: Git LFS has no object listing; preheat a list of OID/SIZE keys instead",
            ctx.url
        )))
    }
}

seedgate_plugin_sdk::export_origin!(LfsOrigin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_split_into_batch_oid_and_size() {
        let oid = "a".repeat(64);
        let (batch, got, size) = parse_object_url(&format!("http://h/org/repo/{oid}/12")).unwrap();
        assert_eq!(
            (batch.as_str(), got.as_str(), size),
            ("http://h/org/repo/objects/batch", oid.as_str(), 12)
        );
        assert!(parse_object_url("http://h/org/repo/abc/12").is_err());
        assert!(parse_object_url(&format!("http://h/org/repo/{oid}/x")).is_err());
    }

    fn kind(e: &OriginError) -> &'static str {
        match e {
            OriginError::NotFound(_) => "not-found",
            OriginError::Forbidden(_) => "forbidden",
            OriginError::Transient(_) => "transient",
            OriginError::Timeout(_) => "timeout",
            OriginError::Invalid(_) => "invalid",
        }
    }

    /// The answers a server gives when it knows some of the objects asked:
    /// an error inside a 200 per object (giftless answers a whole-response
    /// 404 only when every object is missing, which the integration tests
    /// cover).
    #[test]
    fn per_object_errors_map_onto_the_taxonomy() {
        let oid = "b".repeat(64);
        let answer = |code: u16| {
            format!(
                r#"{{"objects":[{{"oid":"{oid}","size":5,"error":{{"code":{code},"message":"m"}}}}]}}"#
            )
        };
        let run = |code| {
            kind(
                &interpret("u", &oid, 5, 200, answer(code).as_bytes(), None)
                    .err()
                    .unwrap(),
            )
        };
        assert_eq!(run(404), "not-found");
        assert_eq!(run(410), "not-found");
        assert_eq!(run(422), "invalid");
        assert_eq!(run(403), "forbidden");
        assert_eq!(run(500), "transient");
        let whole =
            |status: u16| kind(&interpret("u", &oid, 5, status, b"{}", None).err().unwrap());
        assert_eq!(whole(404), "not-found");
        assert_eq!(whole(422), "invalid");
        assert_eq!(whole(401), "forbidden");
        assert_eq!(whole(503), "transient");
        assert_eq!(whole(429), "transient");
        let ok = format!(
            r#"{{"objects":[{{"oid":"{oid}","size":5,"actions":{{"download":{{"href":"http://x/y","header":{{"Authorization":"Basic z"}},"expires_in":900}}}}}}]}}"#
        );
        let (object, action) = interpret("u", &oid, 5, 200, ok.as_bytes(), None)
            .ok()
            .unwrap();
        assert_eq!(
            (object.size, action.href.as_str(), action.expires_in),
            (5, "http://x/y", Some(900))
        );
        assert_eq!(action.header["Authorization"], "Basic z");
        // A server that reports another size for the oid is not believed.
        let wrong = ok.replace(r#""size":5"#, r#""size":6"#);
        assert_eq!(
            kind(
                &interpret("u", &oid, 5, 200, wrong.as_bytes(), None)
                    .err()
                    .unwrap()
            ),
            "invalid"
        );
    }

    #[test]
    fn rfc3339_times_parse_in_utc() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2026-11-21T16:40:10Z"),
            Some(1_795_279_210_000)
        );
        assert_eq!(
            parse_rfc3339_utc("2026-11-21T18:40:10.123+02:00"),
            Some(1_795_279_210_000)
        );
        assert_eq!(parse_rfc3339_utc("yesterday"), None);
    }
}
