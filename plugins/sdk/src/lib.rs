//! The seedgate plugin SDK: everything an origin plugin needs, in one crate.
//!
//! An origin plugin answers *what to fetch* for an object URL; the seedgate
//! host moves the bytes. Implement [`Origin`] and export it:
//!
//! ```ignore
//! use seedgate_plugin_sdk::*;
//!
//! struct Mine;
//!
//! impl Origin for Mine {
//!     fn schemes() -> Vec<String> { vec!["mine".into()] }
//!     fn stat(ctx: RequestContext) -> Result<ObjectMeta, OriginError> {
//!         let resp = http::head(&ctx.url, &[])?;       // through the host
//!         ok_or_status(&ctx.url, resp).map(|r| r.meta())
//!     }
//!     fn plan_read(ctx: RequestContext, meta: ObjectMeta, range: Option<ByteRange>)
//!         -> Result<Vec<RequestPlan>, OriginError> {
//!         Ok(vec![RequestPlan::get(&ctx.url).ranged(meta.accepts_ranges).range(range)])
//!     }
//!     fn list_objects(ctx: RequestContext, _: String, _: Option<String>, _: u32)
//!         -> Result<ListPage, OriginError> {
//!         Err(OriginError::invalid(format!("{}: cannot list", ctx.url)))
//!     }
//! }
//!
//! seedgate_plugin_sdk::export_origin!(Mine);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` and drop the
//! `.wasm` into the host's `plugins.dir`. `plugins/example-artifact` is a
//! complete plugin written with this crate.

/// The generated bindings of `wit/origin.wit`'s `origin-plugin` world.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "origin-plugin",
        pub_export_macro: true,
        export_macro_name: "export_origin",
        default_bindings_module: "seedgate_plugin_sdk::bindings",
    });
}

/// Exports a type implementing [`Origin`] as the component's `origin`.
pub use bindings::export_origin;
pub use bindings::exports::seedgate::plugin::origin::Guest as Origin;

/// Scheduling-policy plugins (`wit/scheduler.wit`): implement
/// [`scheduler::Scheduling`] and export it with
/// `seedgate_plugin_sdk::export_scheduler!(MyPolicy)`. Such a plugin
/// imports nothing, so it cannot use the origin helpers above.
pub mod scheduler {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "scheduler-plugin",
            pub_export_macro: true,
            export_macro_name: "export_scheduler",
            default_bindings_module: "seedgate_plugin_sdk::scheduler::bindings",
        });
    }

    pub use bindings::exports::seedgate::plugin::scheduling::{
        Guest as Scheduling, Host, HostType, Peer, PeerState, PieceAvailability,
    };
}

pub use bindings::seedgate::plugin::types::{
    ByteRange, ErrorDetail, Header, ListPage, ListedObject, ObjectMeta, OriginError,
    RequestContext, RequestPlan,
};
/// Exports a type implementing [`scheduler::Scheduling`].
pub use scheduler::bindings::export_scheduler;

/// Logging through the host: rate-limited and tagged with the plugin's name.
pub mod log {
    pub use crate::bindings::seedgate::plugin::log::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
}

/// The plugin's own table from the seedgate config (secrets resolved).
pub mod config {
    use crate::OriginError;
    pub use crate::bindings::seedgate::plugin::config::{get, keys, misconfigured};

    /// The error for a wrong `key` of the plugin's config: the host is told
    /// (`misconfigured`), so the client gets a 502 naming the plugin and the
    /// key rather than a 400 for a request that was fine.
    pub fn invalid(key: &str, reason: impl Into<String>) -> OriginError {
        let reason = reason.into();
        misconfigured(key, &reason);
        OriginError::invalid(reason)
    }

    /// The value of `key`, or the error naming the missing key.
    pub fn require(key: &str) -> Result<String, OriginError> {
        get(key).ok_or_else(|| {
            invalid(
                key,
                format!("the plugin's config has no '{key}' (set origins.NAME.config.{key})"),
            )
        })
    }

    /// The value of `key` parsed as `T`, `default` when unset, the error
    /// naming the key when it does not parse.
    pub fn parse_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, OriginError> {
        match get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| invalid(key, format!("config '{key}' = '{v}' does not parse"))),
        }
    }
}

/// Wall-clock time from the host.
pub mod clock {
    pub use crate::bindings::seedgate::plugin::clock::now_ms;
}

/// Small control requests through the host (allowlisted, deadline, body cap).
pub mod http {
    pub use crate::bindings::seedgate::plugin::http::{HttpError, Request, Response, send};
    use crate::{Header, OriginError};

    /// Sends `req`, mapping a transport failure onto the origin taxonomy.
    pub fn exchange(req: Request) -> Result<Response, OriginError> {
        let url = req.url.clone();
        send(&req).map_err(|e| crate::transport_error(&url, e))
    }

    /// `HEAD url` with `headers`.
    pub fn head(url: &str, headers: &[Header]) -> Result<Response, OriginError> {
        exchange(Request {
            method: "HEAD".into(),
            url: url.into(),
            headers: headers.to_vec(),
            body: None,
            timeout_ms: None,
        })
    }

    /// `GET url` with `headers`.
    pub fn get(url: &str, headers: &[Header]) -> Result<Response, OriginError> {
        exchange(Request {
            method: "GET".into(),
            url: url.into(),
            headers: headers.to_vec(),
            body: None,
            timeout_ms: None,
        })
    }

    /// `POST url` with a JSON (or any) body.
    pub fn post(url: &str, headers: &[Header], body: Vec<u8>) -> Result<Response, OriginError> {
        exchange(Request {
            method: "POST".into(),
            url: url.into(),
            headers: headers.to_vec(),
            body: Some(body),
            timeout_ms: None,
        })
    }

    impl Response {
        /// The first value of header `name` (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            crate::header(&self.headers, name)
        }

        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }

        /// Metadata from a response to `HEAD` or `GET` of the whole object:
        /// Content-Length, ETag, Last-Modified, Content-Type, Accept-Ranges.
        pub fn meta(&self) -> Option<crate::ObjectMeta> {
            let length = self.header("content-length")?.trim().parse().ok()?;
            Some(crate::ObjectMeta {
                content_length: length,
                etag: self.header("etag").map(str::to_owned),
                last_modified: self.header("last-modified").map(str::to_owned),
                content_type: self.header("content-type").map(str::to_owned),
                accepts_ranges: self
                    .header("accept-ranges")
                    .is_some_and(|v| v.eq_ignore_ascii_case("bytes")),
            })
        }
    }
}

/// The first value of header `name` in `headers` (case-insensitive).
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl ErrorDetail {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            upstream_status: None,
            retry_after_ms: None,
        }
    }
}

impl OriginError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(ErrorDetail::new(message))
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(ErrorDetail::new(message))
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(ErrorDetail::new(message))
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::Timeout(ErrorDetail::new(message))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(ErrorDetail::new(message))
    }

    /// The detail every case carries.
    pub fn detail_mut(&mut self) -> &mut ErrorDetail {
        match self {
            Self::NotFound(d)
            | Self::Forbidden(d)
            | Self::Transient(d)
            | Self::Timeout(d)
            | Self::Invalid(d) => d,
        }
    }

    /// Records the upstream status and its Retry-After hint.
    pub fn with_status(mut self, status: u16, retry_after_ms: Option<u64>) -> Self {
        let d = self.detail_mut();
        d.upstream_status = Some(status);
        d.retry_after_ms = retry_after_ms;
        self
    }

    /// The usual meaning of an HTTP status that is not a success:
    /// 404/410 not-found, 401/403 forbidden, 408/504 timeout, 429/5xx
    /// transient, anything else invalid. `what` leads the message.
    pub fn from_status(what: &str, status: u16, retry_after_ms: Option<u64>) -> Self {
        let message = format!("{what} answered {status}");
        let e = match status {
            404 | 410 => Self::not_found(message),
            401 | 403 => Self::forbidden(message),
            408 | 504 => Self::timeout(message),
            429 | 500..=599 => Self::transient(message),
            _ => Self::invalid(message),
        };
        e.with_status(status, retry_after_ms)
    }
}

/// A `Retry-After` in seconds, as milliseconds. (HTTP-date forms are not
/// understood and give none.)
pub fn retry_after_ms(headers: &[Header]) -> Option<u64> {
    header(headers, "retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

/// `resp` if it is a success, else the error its status means.
pub fn ok_or_status(url: &str, resp: http::Response) -> Result<http::Response, OriginError> {
    if resp.is_success() {
        Ok(resp)
    } else {
        Err(OriginError::from_status(
            url,
            resp.status,
            retry_after_ms(&resp.headers),
        ))
    }
}

/// How a failure of the host's http maps onto the origin taxonomy: a denied
/// destination or an oversized answer is invalid (not worth a retry), a
/// timeout is a timeout, a failed connection is transient.
pub fn transport_error(url: &str, e: http::HttpError) -> OriginError {
    // The host's message usually names the URL already.
    let named = |m: String| {
        if m.contains(url) {
            m
        } else {
            format!("{url}: {m}")
        }
    };
    match e {
        http::HttpError::Denied(m) => OriginError::invalid(named(m)),
        http::HttpError::Timeout(m) => OriginError::timeout(named(m)),
        http::HttpError::TooLarge(m) => OriginError::invalid(named(m)),
        http::HttpError::Failed(m) => OriginError::transient(named(m)),
    }
}

impl RequestPlan {
    /// A `GET` of `url` for the whole object: no headers, not splittable,
    /// no expiry, no version pin. Refine it with the builder methods.
    pub fn get(url: &str) -> Self {
        Self {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            host_may_set_range: false,
            range: None,
            expires_at_ms: None,
            if_match: None,
        }
    }

    /// Whether the host may split this plan into ranged piece requests.
    pub fn ranged(mut self, yes: bool) -> Self {
        self.host_may_set_range = yes;
        self
    }

    pub fn headers(mut self, headers: Vec<Header>) -> Self {
        self.headers = headers;
        self
    }

    pub fn range(mut self, range: Option<ByteRange>) -> Self {
        self.range = range;
        self
    }

    pub fn expires_at_ms(mut self, at: Option<u64>) -> Self {
        self.expires_at_ms = at;
        self
    }

    /// Pins the object's version with `If-Match` when `etag` is strong (a
    /// weak tag never matches and would fail every request).
    pub fn pin(mut self, etag: Option<&str>) -> Self {
        self.if_match = etag.filter(|e| e.starts_with('"')).map(str::to_owned);
        self
    }
}
