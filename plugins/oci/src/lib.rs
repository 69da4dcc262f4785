//! seedgate's built-in origin plugin for OCI registries (the CNCF
//! distribution spec: Docker Hub, Harbor, GHCR, `registry:2`).
//!
//! The origin's `base_url` is the registry's API root,
//! `https://registry.example/v2/`, and a key is `NAME/blobs/DIGEST` or
//! `NAME/manifests/REFERENCE` (a tag or a digest), so an object URL is the
//! registry's own URL for it. Blob digests must be `sha256:` and 64 hex
//! digits: the host names the task by it and checks the stored bytes
//! against it.
//!
//! Authentication, as the distribution spec's auth flow:
//! - a forwarded `Authorization` header (a preheat job's `headers`, e.g.
//!   from Harbor) is sent as it is; a `Basic` one also serves as the
//!   credentials for a token;
//! - otherwise `username` and `password` from the config, sent as basic
//!   credentials;
//! - on `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`,
//!   a token is asked from the realm (through the host's allowlisted `http`
//!   import, with the credentials when there are any) and the request is
//!   sent again with it. The token lives in this call only: a plan carries
//!   it with its expiry (`expires_in`, 60 s when the issuer says none), and
//!   the host asks for a new plan before it runs out, as for presigned S3
//!   plans. No token outlives its lifetime anywhere.
//!
//! Blobs are not pinned with `If-Match`: registries redirect blob reads to
//! storage (`307` to S3 or a CDN, followed by the host within the origin's
//! allowlist) whose validators are not the registry's; the digest pins them.
//!
//! Errors: 404 (and `BLOB_UNKNOWN`, `MANIFEST_UNKNOWN`, `NAME_UNKNOWN`) →
//! not-found; 401 after authenticating, 403 → forbidden; 429/5xx →
//! transient; a key that is not a blob or manifest → invalid.
//!
//! Config keys (`[origins.NAME.config]`):
//! - `username`, `password`: registry credentials (use `env:` or `file:`);
//! - `ranges`: `false` when the registry's blob reads do not honour
//!   `Range` (default `true` when it says `Accept-Ranges: bytes`).

use base64::Engine;
use seedgate_plugin_sdk::*;
use serde::Deserialize;

struct OciOrigin;

/// Deadline for a metadata or token request; the host caps it further.
const CALL_TIMEOUT_MS: u32 = 10_000;

/// A token's lifetime when its issuer states none (the spec's default).
const DEFAULT_TOKEN_TTL_S: u64 = 60;

/// Every manifest type a preheat can resolve, most specific first.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// What a key names.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Blob,
    Manifest,
}

/// An object URL taken apart: `ROOT/v2/NAME/(blobs|manifests)/REF`.
#[derive(Debug)]
struct Target<'a> {
    name: &'a str,
    kind: Kind,
    reference: &'a str,
}

fn parse_url(url: &str) -> Result<Target<'_>, OriginError> {
    let bad = |why: &str| {
        OriginError::invalid(format!(
            "'{url}': {why}; OCI keys are NAME/blobs/sha256:HEX or NAME/manifests/TAG"
        ))
    };
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let (_, rest) = path
        .split_once("/v2/")
        .ok_or_else(|| bad("no /v2/ in the URL"))?;
    let (name, kind, reference) = if let Some((name, r)) = rest.rsplit_once("/blobs/") {
        (name, Kind::Blob, r)
    } else if let Some((name, r)) = rest.rsplit_once("/manifests/") {
        (name, Kind::Manifest, r)
    } else {
        return Err(bad("neither a blob nor a manifest"));
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        });
    if !name_ok {
        return Err(bad("the repository name is not a distribution name"));
    }
    match kind {
        Kind::Blob if !is_sha256(reference) => {
            return Err(bad(
                "a blob digest must be sha256: and 64 lowercase hex digits",
            ));
        }
        Kind::Manifest if !(is_sha256(reference) || is_tag(reference)) => {
            return Err(bad(
                "the manifest reference is neither a tag nor a sha256 digest",
            ));
        }
        _ => {}
    }
    Ok(Target {
        name,
        kind,
        reference,
    })
}

fn is_sha256(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, the distribution spec's tag.
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The credentials a request goes with, before any token.
enum Credentials {
    /// A forwarded `Authorization: Bearer …` (or any non-basic scheme):
    /// sent as it is, never exchanged.
    Given(String),
    /// Basic credentials (`Basic base64`), from a forwarded header or the
    /// config: sent to the registry and to its token issuer.
    Basic(String),
    Anonymous,
}

fn credentials(ctx: &RequestContext) -> Result<Credentials, OriginError> {
    if let Some(v) = header(&ctx.headers, "authorization") {
        return Ok(if v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") {
            Credentials::Basic(v.to_owned())
        } else {
            Credentials::Given(v.to_owned())
        });
    }
    match (config::get("username"), config::get("password")) {
        (Some(user), Some(password)) => {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Ok(Credentials::Basic(format!("Basic {encoded}")))
        }
        (None, None) => Ok(Credentials::Anonymous),
        (Some(_), None) => Err(config::invalid(
            "password",
            "'username' is set without 'password'",
        )),
        (None, Some(_)) => Err(config::invalid(
            "username",
            "'password' is set without 'username'",
        )),
    }
}

/// A `WWW-Authenticate: Bearer k="v",…` challenge's parameters.
#[derive(Debug, Default, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case("bearer ") {
        return None;
    }
    let mut c = Challenge::default();
    let mut rest = value[7..].trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let after = after.trim_start();
        let (val, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => c.realm = val.to_owned(),
            "service" => c.service = Some(val.to_owned()),
            "scope" => c.scope = Some(val.to_owned()),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    (!c.realm.is_empty()).then_some(c)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenAnswer {
    token: String,
    access_token: String,
    expires_in: u64,
}

/// Encodes a query value (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asks the challenge's realm for a pull token for `name`:
/// `(Authorization value, expiry in Unix ms)`.
fn token(c: &Challenge, name: &str, creds: &Credentials) -> Result<(String, u64), OriginError> {
    let scope = c
        .scope
        .clone()
        .unwrap_or_else(|| format!("repository:{name}:pull"));
    let mut url = c.realm.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    if let Some(service) = &c.service {
        url.push_str(&format!("service={}&", encode(service)));
    }
    url.push_str(&format!("scope={}", encode(&scope)));
    let mut headers = Vec::new();
    if let Credentials::Basic(v) = creds {
        headers.push(Header::new("authorization", v.as_str()));
    }
    let resp = http::exchange(http::Request {
        method: "GET".into(),
        url: url.clone(),
        headers,
        body: None,
        timeout_ms: Some(CALL_TIMEOUT_MS),
    })?;
    if !resp.is_success() {
        let what = format!("the registry's token issuer {}", c.realm);
        // Refused credentials are final, whatever status the issuer uses.
        return Err(match resp.status {
            401 | 403 => OriginError::forbidden(format!(
                "{what} refused the credentials for '{scope}' ({})",
                resp.status
            ))
            .with_status(resp.status, None),
            s => OriginError::from_status(&what, s, retry_after_ms(&resp.headers)),
        });
    }
    let answer: TokenAnswer = serde_json::from_slice(&resp.body).map_err(|e| {
        OriginError::transient(format!("{}: the token answer is not JSON: {e}", c.realm))
    })?;
    let token = if answer.token.is_empty() {
        answer.access_token
    } else {
        answer.token
    };
    if token.is_empty() {
        return Err(OriginError::transient(format!(
            "{}: the token answer holds no token",
            c.realm
        )));
    }
    let ttl = if answer.expires_in > 0 {
        answer.expires_in
    } else {
        DEFAULT_TOKEN_TTL_S
    };
    Ok((format!("Bearer {token}"), clock::now_ms() + ttl * 1000))
}

/// `HEAD` of the object with the credentials the registry takes: the
/// answer, the `Authorization` it took (if any) and when that expires.
fn authorized_head(
    ctx: &RequestContext,
    target: &Target<'_>,
) -> Result<(http::Response, Option<String>, Option<u64>), OriginError> {
    let creds = credentials(ctx)?;
    let mut auth = match &creds {
        Credentials::Given(v) | Credentials::Basic(v) => Some(v.clone()),
        Credentials::Anonymous => None,
    };
    let mut expires = None;
    let head = |auth: &Option<String>| {
        let mut headers = accept(target);
        headers.extend(
            auth.iter()
                .map(|v| Header::new("authorization", v.as_str())),
        );
        http::exchange(http::Request {
            method: "HEAD".into(),
            url: ctx.url.clone(),
            headers,
            body: None,
            timeout_ms: Some(CALL_TIMEOUT_MS),
        })
    };
    let mut resp = head(&auth)?;
    if resp.status == 401
        && !matches!(creds, Credentials::Given(_))
        && let Some(c) = resp.header("www-authenticate").and_then(parse_challenge)
    {
        let (bearer, until) = token(&c, target.name, &creds)?;
        auth = Some(bearer);
        expires = Some(until);
        resp = head(&auth)?;
    }
    if !resp.is_success() {
        return Err(status_error(ctx, target, &resp, auth.is_some()));
    }
    Ok((resp, auth, expires))
}

fn accept(target: &Target<'_>) -> Vec<Header> {
    match target.kind {
        Kind::Manifest => vec![Header::new("accept", MANIFEST_TYPES)],
        Kind::Blob => Vec::new(),
    }
}

fn status_error(
    ctx: &RequestContext,
    target: &Target<'_>,
    resp: &http::Response,
    authenticated: bool,
) -> OriginError {
    let what = match target.kind {
        Kind::Blob => format!("blob {} of {}", target.reference, target.name),
        Kind::Manifest => format!("manifest {}:{}", target.name, target.reference),
    };
    match resp.status {
        401 if authenticated => OriginError::forbidden(format!(
            "{}: the registry refused the credentials for {what} (401)",
            ctx.url
        ))
        .with_status(401, None),
        401 => OriginError::forbidden(format!(
            "{}: the registry wants credentials for {what} (401); set the origin's username and password",
            ctx.url
        ))
        .with_status(401, None),
        404 => OriginError::not_found(format!("{}: no {what} (404)", ctx.url)).with_status(404, None),
        s => OriginError::from_status(&ctx.url, s, retry_after_ms(&resp.headers)),
    }
}

impl Origin for OciOrigin {
    fn schemes() -> Vec<String> {
        vec!["http".into(), "https".into()]
    }

    fn stat(ctx: RequestContext) -> Result<ObjectMeta, OriginError> {
        let target = parse_url(&ctx.url)?;
        let (resp, _, _) = authorized_head(&ctx, &target)?;
        let length = resp
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                OriginError::invalid(format!("{}: the registry tells no size", ctx.url))
                    .with_status(resp.status, None)
            })?;
        if target.kind == Kind::Blob
            && let Some(d) = resp.header("docker-content-digest")
            && d != target.reference
        {
            return Err(OriginError::invalid(format!(
                "{}: the registry says the blob is {d}",
                ctx.url
            )));
        }
        let ranges = resp
            .header("accept-ranges")
            .is_some_and(|v| v.eq_ignore_ascii_case("bytes"));
        Ok(match target.kind {
            // Content-addressed: the digest is the version; the registry's
            // own validators would not survive a redirect to storage.
            Kind::Blob => ObjectMeta {
                content_length: length,
                etag: None,
                last_modified: None,
                content_type: Some("application/octet-stream".into()),
                accepts_ranges: ranges && config::parse_or("ranges", true)?,
            },
            // A tag moves: its digest is its version.
            Kind::Manifest => ObjectMeta {
                content_length: length,
                etag: resp
                    .header("docker-content-digest")
                    .map(|d| format!("\"{d}\""))
                    .or_else(|| resp.header("etag").map(str::to_owned)),
                last_modified: None,
                content_type: resp.header("content-type").map(str::to_owned),
                accepts_ranges: false,
            },
        })
    }

    fn plan_read(
        ctx: RequestContext,
        meta: ObjectMeta,
        range: Option<ByteRange>,
    ) -> Result<Vec<RequestPlan>, OriginError> {
        let target = parse_url(&ctx.url)?;
        let (_, auth, expires) = authorized_head(&ctx, &target)?;
        let mut headers = accept(&target);
        headers.extend(auth.map(|v| Header::new("authorization", v)));
        Ok(vec![
            RequestPlan::get(&ctx.url)
                .headers(headers)
                .ranged(meta.accepts_ranges)
                .range(range)
                .expires_at_ms(expires),
        ])
    }

    fn list_objects(
        ctx: RequestContext,
        _prefix: String,
        _page_token: Option<String>,
        _max: u32,
    ) -> Result<ListPage, OriginError> {
        Err(OriginError::invalid(format!(
            "{}: a registry is not listed by prefix; preheat an image (\"image\": \"REGISTRY/NAME:TAG\") instead",
            ctx.url
        )))
    }
}

seedgate_plugin_sdk::export_origin!(OciOrigin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_blobs_and_manifests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let url = format!("http://r:5000/v2/team/app/blobs/{d}");
        let t = parse_url(&url).unwrap();
        assert_eq!(
            (t.name, t.kind, t.reference),
            ("team/app", Kind::Blob, d.as_str())
        );
        let t = parse_url("http://r/v2/library/ubuntu/manifests/22.04").unwrap();
        assert_eq!((t.name, t.kind), ("library/ubuntu", Kind::Manifest));
        for bad in [
            "http://r/v2/a/blobs/sha256:abc",
            "http://r/v2/a/blobs/md5:8a04994a666b4e4b20a2fd9e5a44f44c",
            "http://r/v2/A/manifests/latest",
            "http://r/v2/a/tags/list",
            "http://r/a/manifests/latest",
            "http://r/v2/a/manifests/-bad",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/ubuntu:pull"));
        let c = parse_challenge("bearer realm=http://t/token").unwrap();
        assert_eq!((c.realm.as_str(), c.service), ("http://t/token", None));
        assert!(parse_challenge(r#"Basic realm="Registry Realm""#).is_none());
        assert!(parse_challenge("Bearer service=x").is_none());
    }
}
