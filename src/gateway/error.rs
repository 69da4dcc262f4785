//! An error as the gateway answers it: the status decided from its kind
//! and blame (`Error::http_status`), the one-line reason as the body, and
//! `Retry-After` when the origin gave one.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{Error, ErrorKind};

/// An error as the gateway answers it.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// A fast refusal (open breaker, full bulkhead): its cause was logged
    /// once when the breaker opened, so each refusal logs at debug only.
    pub quiet: bool,
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            headers: Vec::new(),
            quiet: false,
        }
    }

    pub fn unsatisfiable(range: &str, length: u64) -> Self {
        Self {
            status: StatusCode::RANGE_NOT_SATISFIABLE,
            message: format!("Range '{range}' is outside the object's {length} bytes"),
            headers: vec![(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{length}"))
                    .expect("digits are a valid header"),
            )],
            quiet: false,
        }
    }

    pub fn from_error(e: Error) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = Vec::new();
        if let Some(after) = e.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            headers.push((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        Self {
            status,
            message: e.to_string(),
            headers,
            quiet: matches!(e.kind, ErrorKind::Overloaded | ErrorKind::CircuitOpen),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && !self.quiet {
            tracing::warn!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        let mut line = self.message.replace(['\n', '\r'], " ");
        line.push('\n');
        let mut resp = (self.status, line).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}
