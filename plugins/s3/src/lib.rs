//! seedgate's built-in origin plugin for S3 and S3-compatible stores.
//!
//! Object URLs are `s3://BUCKET/KEY`. The plugin presigns every request with
//! SigV4 (query-string signing, unsigned payload, only `host` signed), so the
//! host can add its own `Range` and `If-Match` headers and split one plan
//! into piece requests without the plugin seeing a byte. Plans expire with
//! their signatures and the host asks for new ones in time.
//!
//! - `stat`: a presigned `HEAD`. 404 → not-found (a missing bucket too),
//!   401/403 → forbidden (wrong secret, expired signature), 5xx/503 SlowDown
//!   → transient with the Retry-After hint.
//! - `plan-read`: one presigned `GET`, pinned to the ETag.
//! - `list-objects`: ListObjectsV2 under the prefix, one page per call.
//!
//! Config keys (`[origins.NAME.config]`):
//! - `endpoint`: the service URL, e.g. `http://10.0.0.5:9000`. Default
//!   `https://s3.REGION.amazonaws.com`.
//! - `region`: signing region, default `us-east-1`.
//! - `access_key_id`, `secret_access_key`, `session_token`: credentials
//!   (use `env:NAME` or `file:PATH`). Without them requests go unsigned
//!   (public buckets).
//! - `addressing`: `path` (`ENDPOINT/BUCKET/KEY`) or `virtual`
//!   (`BUCKET.ENDPOINT-HOST/KEY`). Default `virtual` for AWS's own endpoint,
//!   `path` when `endpoint` is set.
//! - `presign_ttl_secs`: validity of each presigned URL, default 900.

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use seedgate_plugin_sdk::*;
use url::Url;

struct S3Origin;

/// SigV4's URI encoding: everything but unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Everything the plugin needs from its config, read once per call.
struct Settings {
    endpoint: Url,
    region: String,
    identity: Option<Identity>,
    virtual_host: bool,
    ttl: Duration,
}

impl Settings {
    fn load() -> Result<Self, OriginError> {
        let region = config::get("region").unwrap_or_else(|| "us-east-1".into());
        let configured = config::get("endpoint");
        let endpoint_text = configured
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = Url::parse(&endpoint_text).map_err(|e| {
            config::invalid(
                "endpoint",
                format!("config 'endpoint' = '{endpoint_text}': {e}"),
            )
        })?;
        let virtual_host = match config::get("addressing").as_deref() {
            None => configured.is_none(),
            Some("path") => false,
            Some("virtual") => true,
            Some(other) => {
                return Err(config::invalid(
                    "addressing",
                    format!("config 'addressing' = '{other}': expected 'path' or 'virtual'"),
                ));
            }
        };
        let identity = match (
            config::get("access_key_id"),
            config::get("secret_access_key"),
        ) {
            (Some(ak), Some(sk)) => Some(
                Credentials::new(
                    ak,
                    sk,
                    config::get("session_token"),
                    None,
                    "seedgate-config",
                )
                .into(),
            ),
            (None, None) => None,
            _ => {
                return Err(config::invalid(
                    "secret_access_key",
                    "config sets only one of 'access_key_id' and 'secret_access_key'",
                ));
            }
        };
        let ttl = Duration::from_secs(
            config::parse_or("presign_ttl_secs", 900u64)?.clamp(1, 7 * 24 * 3600),
        );
        Ok(Self {
            endpoint,
            region,
            identity,
            virtual_host,
            ttl,
        })
    }

    /// The HTTP URL of `bucket` plus the already-encoded `key_path` (no
    /// leading slash; empty for the bucket itself).
    fn http_url(&self, bucket: &str, key_path: &str) -> Result<Url, OriginError> {
        let mut url = self.endpoint.clone();
        let base = self.endpoint.path().trim_end_matches('/');
        if self.virtual_host {
            let host = self.endpoint.host_str().unwrap_or_default();
            url.set_host(Some(&format!("{bucket}.{host}")))
                .map_err(|e| {
                    OriginError::invalid(format!("bucket '{bucket}' makes no host name: {e}"))
                })?;
            url.set_path(&format!("{base}/{key_path}"));
        } else {
            url.set_path(&format!("{base}/{bucket}/{key_path}"));
        }
        Ok(url)
    }

    /// `url` presigned for `method`, and when it expires (Unix ms). Anonymous
    /// settings return it as it is, without expiry.
    fn presign(&self, method: &str, mut url: Url) -> Result<(String, Option<u64>), OriginError> {
        let Some(identity) = &self.identity else {
            return Ok((url.to_string(), None));
        };
        let now_ms = clock::now_ms();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(self.ttl);
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name("s3")
            .time(UNIX_EPOCH + Duration::from_millis(now_ms))
            .settings(settings)
            .build()
            .map_err(|e| OriginError::invalid(format!("cannot sign: {e}")))?
            .into();
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            std::iter::empty(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| OriginError::invalid(format!("cannot sign {url}: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| OriginError::invalid(format!("cannot sign {url}: {e}")))?
            .into_parts();
        let mut query = url.query().map(str::to_owned).unwrap_or_default();
        for (name, value) in instructions.params() {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(name);
            query.push('=');
            query.extend(utf8_percent_encode(value, QUERY));
        }
        url.set_query(Some(&query));
        let expires = now_ms + self.ttl.as_millis() as u64;
        Ok((url.to_string(), Some(expires)))
    }
}

/// `s3://BUCKET/KEY` → (bucket, encoded key path).
fn split(url: &str) -> Result<(String, String), OriginError> {
    let parsed =
        Url::parse(url).map_err(|e| OriginError::invalid(format!("'{url}' is not a URL: {e}")))?;
    if parsed.scheme() != "s3" {
        return Err(OriginError::invalid(format!("'{url}' is not an s3:// URL")));
    }
    let bucket = parsed
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| OriginError::invalid(format!("'{url}' names no bucket")))?;
    Ok((
        bucket.to_string(),
        parsed.path().trim_start_matches('/').to_string(),
    ))
}

/// S3's error document: `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct S3Error {
    code: String,
    message: String,
}

/// Maps an S3 failure onto the taxonomy, keeping S3's own code.
fn s3_error(what: &str, resp: &http::Response) -> OriginError {
    let doc: S3Error =
        quick_xml::de::from_str(&String::from_utf8_lossy(&resp.body)).unwrap_or_default();
    let retry = retry_after_ms(&resp.headers);
    let text = if doc.code.is_empty() {
        format!("{what} answered {}", resp.status)
    } else {
        format!(
            "{what} answered {} {}: {}",
            resp.status, doc.code, doc.message
        )
    };
    let e = match (resp.status, doc.code.as_str()) {
        (_, "NoSuchKey" | "NoSuchBucket") | (404, _) => OriginError::not_found(text),
        (_, "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout") => {
            OriginError::transient(text)
        }
        (401 | 403, _) => OriginError::forbidden(text),
        (400, _) => OriginError::invalid(text),
        _ => return OriginError::from_status(what, resp.status, retry),
    };
    e.with_status(resp.status, retry)
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ListBucketResult {
    contents: Vec<Contents>,
    is_truncated: bool,
    next_continuation_token: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Contents {
    key: String,
    size: Option<u64>,
}

impl Origin for S3Origin {
    fn schemes() -> Vec<String> {
        vec!["s3".into()]
    }

    fn stat(ctx: RequestContext) -> Result<ObjectMeta, OriginError> {
        let s = Settings::load()?;
        let (bucket, key) = split(&ctx.url)?;
        if key.is_empty() {
            return Err(OriginError::invalid(format!(
                "'{}' names a bucket, not an object",
                ctx.url
            )));
        }
        let (url, _) = s.presign("HEAD", s.http_url(&bucket, &key)?)?;
        let resp = http::head(&url, &[])?;
        if !resp.is_success() {
            return Err(s3_error(&ctx.url, &resp));
        }
        let mut meta = resp.meta().ok_or_else(|| {
            OriginError::invalid(format!("{}: HEAD answered without Content-Length", ctx.url))
        })?;
        // S3 honours Range on every GET, whether or not it says so.
        meta.accepts_ranges = true;
        Ok(meta)
    }

    fn plan_read(
        ctx: RequestContext,
        meta: ObjectMeta,
        range: Option<ByteRange>,
    ) -> Result<Vec<RequestPlan>, OriginError> {
        let s = Settings::load()?;
        let (bucket, key) = split(&ctx.url)?;
        let (url, expires) = s.presign("GET", s.http_url(&bucket, &key)?)?;
        Ok(vec![
            RequestPlan::get(&url)
                .ranged(true)
                .range(range)
                .expires_at_ms(expires)
                .pin(meta.etag.as_deref()),
        ])
    }

    fn list_objects(
        ctx: RequestContext,
        prefix: String,
        page_token: Option<String>,
        max: u32,
    ) -> Result<ListPage, OriginError> {
        let s = Settings::load()?;
        let (base_bucket, base_path) = split(&ctx.url)?;
        let (bucket, prefix_path) = split(&prefix)?;
        if bucket != base_bucket || !prefix_path.starts_with(&base_path) {
            return Err(OriginError::invalid(format!(
                "prefix '{prefix}' is not under the origin's '{}'",
                ctx.url
            )));
        }
        let decode = |p: &str| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        };
        let key_prefix = decode(&prefix_path);
        let mut url = s.http_url(&bucket, "")?;
        let mut query = format!(
            "list-type=2&max-keys={}&prefix={}",
            max.clamp(1, 1000),
            utf8_percent_encode(&key_prefix, QUERY)
        );
        if let Some(token) = &page_token {
            query.push_str("&continuation-token=");
            query.extend(utf8_percent_encode(token, QUERY));
        }
        url.set_query(Some(&query));
        let (url, _) = s.presign("GET", url)?;
        let resp = http::get(&url, &[])?;
        if !resp.is_success() {
            return Err(s3_error(&prefix, &resp));
        }
        let doc: ListBucketResult = quick_xml::de::from_str(&String::from_utf8_lossy(&resp.body))
            .map_err(|e| {
            OriginError::transient(format!("{prefix}: unreadable ListObjectsV2 answer: {e}"))
        })?;
        let base_key = decode(&base_path);
        let objects = doc
            .contents
            .into_iter()
            .filter(|c| !c.key.ends_with('/'))
            .map(|c| {
                let encoded: String = c
                    .key
                    .split('/')
                    .map(|seg| utf8_percent_encode(seg, QUERY).to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                ListedObject {
                    key: c.key.strip_prefix(&base_key).unwrap_or(&c.key).to_string(),
                    url: format!("s3://{bucket}/{encoded}"),
                    size: c.size,
                }
            })
            .collect();
        Ok(ListPage {
            objects,
            next_page_token: if doc.is_truncated {
                doc.next_continuation_token
            } else {
                None
            },
        })
    }
}

seedgate_plugin_sdk::export_origin!(S3Origin);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str, virtual_host: bool) -> Settings {
        Settings {
            endpoint: Url::parse(endpoint).unwrap(),
            region: "eu-west-1".into(),
            identity: None,
            virtual_host,
            ttl: Duration::from_secs(900),
        }
    }

    #[test]
    fn path_and_virtual_host_addressing() {
        let path = settings("http://10.0.0.5:9000", false);
        assert_eq!(
            path.http_url("bucket", "a/b%20c.bin").unwrap().as_str(),
            "http://10.0.0.5:9000/bucket/a/b%20c.bin"
        );
        let under = settings("https://gw.example/s3/", false);
        assert_eq!(
            under.http_url("bucket", "k").unwrap().as_str(),
            "https://gw.example/s3/bucket/k"
        );
        let virt = settings("https://s3.eu-west-1.amazonaws.com", true);
        assert_eq!(
            virt.http_url("bucket", "a/b.bin").unwrap().as_str(),
            "https://bucket.s3.eu-west-1.amazonaws.com/a/b.bin"
        );
        assert_eq!(
            virt.http_url("bucket", "").unwrap().as_str(),
            "https://bucket.s3.eu-west-1.amazonaws.com/"
        );
    }

    #[test]
    fn object_urls_split_into_bucket_and_key() {
        assert_eq!(
            split("s3://b/x/y%20z").unwrap(),
            ("b".to_string(), "x/y%20z".to_string())
        );
        assert!(split("http://b/x").is_err());
        assert!(split("s3:///x").is_err());
    }

    /// Anonymous settings leave URLs unsigned and without expiry.
    #[test]
    fn anonymous_requests_are_not_signed() {
        let s = settings("http://h", false);
        let (url, expires) = s
            .presign("GET", Url::parse("http://h/b/k").unwrap())
            .unwrap();
        assert_eq!((url.as_str(), expires), ("http://h/b/k", None));
    }
}
