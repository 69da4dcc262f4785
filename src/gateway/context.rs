//! What every gateway request carries: its id, taken from `X-Request-Id` or
//! made (a UUID), its span (every log line and exported span of its work,
//! the task it starts, plugin calls and piece fetches, is in it), and the id
//! echoed in the answer.
//!
//! One layer with one future, in place of tower-http's `SetRequestId`,
//! `Trace` and `PropagateRequestId`: three nested futures, a body wrapper
//! that timed every frame, and debug events built per request cost about
//! 2 µs of a 4 KiB hit's 45 µs of CPU (BENCHMARKS.md, issue 15).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, Response};
use tracing::Instrument;
use tracing::instrument::Instrumented;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// [`RequestContext`] around a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContextLayer;

impl<S> tower_layer::Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

/// Gives each request its id and span, and its answer the id.
#[derive(Clone, Debug)]
pub struct RequestContext<S> {
    inner: S,
}

impl<S, B> tower_service::Service<Request<B>> for RequestContext<S>
where
    S: tower_service::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let mut buf = uuid::Uuid::encode_buffer();
                let made = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
                let id = HeaderValue::from_str(made).expect("a UUID is a header value");
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or("(not text)"),
            method = request.method().as_str(),
            path = request.uri().path(),
        );
        let started = tracing::enabled!(tracing::Level::DEBUG).then(tokio::time::Instant::now);
        let inner = {
            let _in = span.enter();
            self.inner.call(request)
        };
        ResponseFuture {
            inner: inner.instrument(span),
            id: Some(id),
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, in the request's span, then given the id.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        id: Option<HeaderValue>,
        started: Option<tokio::time::Instant>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = ready!(this.inner.as_mut().poll(cx))?;
        if let Some(id) = this.id.take() {
            response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
        }
        let span = this.inner.span();
        if let Some(started) = this.started {
            tracing::debug!(
                parent: span,
                status = response.status().as_u16(),
                latency_us = started.elapsed().as_micros() as u64,
                "answered"
            );
        }
        if span.is_disabled() {
            return Poll::Ready(Ok(response));
        }
        // The body's work (a stream that reads, checks and repairs pieces)
        // logs in the request's span too.
        let span = span.clone();
        Poll::Ready(Ok(
            response.map(|body| Body::new(InSpan { inner: body, span }))
        ))
    }
}

pin_project_lite::pin_project! {
    /// A body polled inside a span.
    struct InSpan {
        #[pin]
        inner: Body,
        span: tracing::Span,
    }
}

impl http_body::Body for InSpan {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _in = this.span.enter();
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
