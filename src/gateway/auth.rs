//! The API token: `Authorization: Bearer TOKEN`, compared in constant
//! time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The API token, replaceable while serving (SIGHUP re-reads
/// `server.api_token`, so a rotated secret file takes effect at once).
#[derive(Debug)]
pub struct ApiToken(parking_lot::RwLock<Arc<str>>);

impl ApiToken {
    pub fn new(token: &str) -> Self {
        Self(parking_lot::RwLock::new(Arc::from(token)))
    }

    pub fn get(&self) -> Arc<str> {
        self.0.read().clone()
    }

    /// Replaces the token; whether it changed.
    pub fn set(&self, token: &str) -> bool {
        let mut t = self.0.write();
        let changed = &**t != token;
        *t = Arc::from(token);
        changed
    }
}

/// Equal bytes, compared in time that does not depend on where they differ.
pub(super) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lets a request through only with `Authorization: Bearer TOKEN`.
pub(super) async fn require_token(
    State(live): State<Arc<ApiToken>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = live.get();
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same_secret(t.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        other => {
            let why = if other.is_some() {
                "the bearer token is not the API token\n"
            } else {
                "this endpoint needs Authorization: Bearer TOKEN (server.api_token)\n"
            };
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                why,
            )
                .into_response()
        }
    }
}

/// [`require_token`], also taking the token as `?access_token=TOKEN`, as
/// Dragonfly's open API does.
pub(super) async fn require_token_or_query(
    State(live): State<Arc<ApiToken>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = live.get();
    let in_query = req.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "access_token" && same_secret(v.trim().as_bytes(), token.as_bytes()))
    });
    if in_query {
        return next.run(req).await;
    }
    require_token(State(live), req, next).await
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert!(!same_secret(b"", b"x"));
        assert!(same_secret(b"", b""));
    }
}
