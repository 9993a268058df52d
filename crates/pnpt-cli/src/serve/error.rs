//! The JSON error answers of the service.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::render;

/// A JSON error answer, `{"error": message, "code": code}`.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// The known categories, for `unknown_category`.
    pub(super) categories: Option<Vec<String>>,
    /// Seconds for `Retry-After` (503).
    pub(super) retry_after: Option<u32>,
    /// Answer with `Connection: close`: the body was not read to its end, so the connection
    /// cannot carry another request.
    pub(super) close: bool,
}

/// The body of an error answer.
#[derive(Serialize)]
struct ErrorBody {
    error: String,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    categories: Option<Vec<String>>,
}

pub(super) fn error(status: StatusCode, code: &'static str, message: String) -> ApiError {
    ApiError { status, code, message, categories: None, retry_after: None, close: false }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.message, code: self.code, categories: self.categories };
        let mut r = (self.status, Json(render::sorted_json(&body))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.close {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}
