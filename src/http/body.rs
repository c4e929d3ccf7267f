//! Reading a request body: bounded in size and in time, each failure mapped
//! to its own status.
//!
//! hyper's `header_read_timeout` ends at the blank line after the head; a
//! client that then trickles its body (or sends less than its
//! `Content-Length` and waits) would hold the connection for as long as it
//! likes. The deadline here covers the body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Response, StatusCode};

use super::response::{error, Body};

/// Why a body could not be read. Each is counted by its status in
/// `pulsegate_http_requests_total{route,status}`.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body must be at most {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {0:?}")]
    Timeout(Duration),
    /// Bad framing, such as a malformed chunk size, or a connection cut mid-body.
    #[error("the body is malformed: {0}")]
    Malformed(String),
}

impl BodyError {
    /// 413, 408 or 400, each with a JSON body. The connection is closed after
    /// the answer: the rest of the body is unread, so the next bytes on it
    /// are not a request.
    pub fn response(&self) -> Response<Body> {
        let (status, code) = match self {
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
        };
        let mut res = error(status, code, &self.to_string());
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        res
    }
}

/// Collects `body`, refusing more than `limit` bytes or a body not complete
/// within `timeout`.
pub async fn read(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(BodyError::Timeout(timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge { limit })
        }
        Ok(Err(e)) => Err(BodyError::Malformed(e.to_string())),
    }
}
