//! Response helpers: every answer, error or not, is JSON with a clear message.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// Every response body: a whole one ([`full`]), or the stream of an SSE
/// response (`http/sse.rs`). Boxed once per response.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A body sent at once.
pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    with_type(status, body, "application/json")
}

pub fn with_type(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

/// `{"error":{"code":...,"message":...}}` with `status`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    with_type(status, error_body(code, message), "application/json")
}

/// The body of [`error`].
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        error: ErrorDetail { code, message },
    })
    .unwrap_or_default()
}
