//! A plugin that misbehaves on purpose; the host's tests use it to prove the
//! sandbox holds. What `stat` does depends on the last path segment:
//!
//! - `loop`: spins forever (the epoch deadline must stop it);
//! - `bomb`: allocates until memory runs out (the memory cap must trap);
//! - `panic`: panics (a trap; the next call must work);
//! - `exfiltrate`: asks the host's http for a cloud metadata address (the
//!   allowlist must deny it) and reports what the host said;
//! - `plan-elsewhere`: answers metadata, then plans a read from a host that
//!   is not on the allowlist (the host must refuse to execute it);
//! - `expiring`: an honest origin whose plans expire 1.5 s after they are
//!   made: the object is `config.expiring-url`, `config.expiring-length`
//!   bytes long, and each plan's URL carries `?plan=<ms>` so the origin's
//!   log shows when the host asked for a new one;
//! - `slow`: spins for `config.slow-ms` (default 800) ms of wall time, then
//!   answers not-found "slow call finished" (a call in flight across a
//!   reload);
//! - `flood`: logs 10 000 lines, then answers not-found (the log budget
//!   must hold);
//! - `private`: asks the host's http for `config.private-url`, a name on the
//!   allowlist that resolves to a private address nobody listed;
//! - `hoard`: asks the host's http for `config.big-url`, a response larger
//!   than the plugin's body cap, and reports what the host said;
//! - `liar`: says the object at `config.liar-url` is `config.liar-length`
//!   bytes long, which it is not (the host must notice from the answers);
//! - anything else: not-found, so a test can see the plugin still answers.

wit_bindgen::generate!({
    path: "../../wit",
    world: "origin-plugin",
});

use exports::seedgate::plugin::origin::Guest;
use seedgate::plugin::types::{
    ByteRange, ErrorDetail, ListPage, ObjectMeta, OriginError, RequestContext, RequestPlan,
};
use seedgate::plugin::{clock, config, http, log};

struct Hostile;

fn err(message: String) -> ErrorDetail {
    ErrorDetail {
        message,
        upstream_status: None,
        retry_after_ms: None,
    }
}

fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or("")
}

impl Guest for Hostile {
    fn schemes() -> Vec<String> {
        vec!["http".into()]
    }

    fn stat(ctx: RequestContext) -> Result<ObjectMeta, OriginError> {
        match last_segment(&ctx.url) {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = core::hint::black_box(x.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(core::hint::black_box(vec![7u8; 1 << 20]));
                }
            }
            "panic" => panic!("hostile plugin panics on purpose"),
            "exfiltrate" => {
                let answer = http::send(&http::Request {
                    method: "GET".into(),
                    url: "http://169.254.169.254/latest/meta-data/".into(),
                    headers: vec![],
                    body: None,
                    timeout_ms: Some(1000),
                });
                let said = match answer {
                    Ok(resp) => format!("reached it: status {}", resp.status),
                    Err(http::HttpError::Denied(m)) => format!("denied: {m}"),
                    Err(e) => format!("other error: {e:?}"),
                };
                Err(OriginError::Invalid(err(said)))
            }
            "slow" => {
                let ms: u64 = config::get("slow-ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(800);
                let until = clock::now_ms() + ms;
                while clock::now_ms() < until {
                    core::hint::spin_loop();
                }
                Err(OriginError::NotFound(err("slow call finished".into())))
            }
            "flood" => {
                for i in 0..10_000 {
                    log::log(log::Level::Warn, &format!("flood line {i}"));
                }
                Err(OriginError::NotFound(err("flooded".into())))
            }
            "private" | "hoard" => {
                let key = if last_segment(&ctx.url) == "private" {
                    "private-url"
                } else {
                    "big-url"
                };
                let url = config::get(key).unwrap_or_default();
                let said = match http::send(&http::Request {
                    method: "GET".into(),
                    url,
                    headers: vec![],
                    body: None,
                    timeout_ms: Some(1000),
                }) {
                    Ok(resp) => format!("reached it: status {}", resp.status),
                    Err(http::HttpError::Denied(m)) => format!("denied: {m}"),
                    Err(http::HttpError::TooLarge(m)) => format!("too large: {m}"),
                    Err(e) => format!("other error: {e:?}"),
                };
                Err(OriginError::Invalid(err(said)))
            }
            "liar" => Ok(ObjectMeta {
                content_length: config::get("liar-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| OriginError::Invalid(err("liar-length is not set".into())))?,
                etag: None,
                last_modified: None,
                content_type: None,
                accepts_ranges: true,
            }),
            "expiring" => Ok(ObjectMeta {
                content_length: config::get("expiring-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        OriginError::Invalid(err("expiring-length is not set".into()))
                    })?,
                etag: None,
                last_modified: None,
                content_type: None,
                accepts_ranges: true,
            }),
            "plan-elsewhere" => Ok(ObjectMeta {
                content_length: 10,
                etag: None,
                last_modified: None,
                content_type: None,
                accepts_ranges: true,
            }),
            _ => Err(OriginError::NotFound(err(
                "hostile plugin: nothing here".into()
            ))),
        }
    }

    fn plan_read(
        ctx: RequestContext,
        _meta: ObjectMeta,
        _range: Option<ByteRange>,
    ) -> Result<Vec<RequestPlan>, OriginError> {
        if last_segment(&ctx.url) == "liar" {
            return Ok(vec![RequestPlan {
                method: "GET".into(),
                url: config::get("liar-url").unwrap_or_default(),
                headers: vec![],
                host_may_set_range: true,
                range: None,
                expires_at_ms: None,
                if_match: None,
            }]);
        }
        if last_segment(&ctx.url) == "expiring" {
            let now = clock::now_ms();
            let url = config::get("expiring-url")
                .ok_or_else(|| OriginError::Invalid(err("expiring-url is not set".into())))?;
            return Ok(vec![RequestPlan {
                method: "GET".into(),
                url: format!("{url}?plan={now}"),
                headers: vec![],
                host_may_set_range: true,
                range: None,
                expires_at_ms: Some(now + 1500),
                if_match: None,
            }]);
        }
        Ok(vec![RequestPlan {
            method: "GET".into(),
            url: "http://10.255.255.1:9/secret".into(),
            headers: vec![],
            host_may_set_range: true,
            range: None,
            expires_at_ms: None,
            if_match: None,
        }])
    }

    fn list_objects(
        _: RequestContext,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<ListPage, OriginError> {
        Err(OriginError::Invalid(err("no listing".into())))
    }
}

export!(Hostile);
