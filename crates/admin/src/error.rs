//! The one error shape of the admin API: a status and `{"error": "..."}`.
//!
//! Every refusal — authentication, unknown pool, bad body, a change the pool will not make —
//! goes through [`ApiError`], so scripts parse one shape and people read one sentence that
//! says what was wrong and what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use balance::PoolError;

/// A refused request: the status to answer and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// What was wrong and what to do, sent as `{"error": message}`.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request itself is malformed (unparsable body, bad path).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: the pool, backend or route does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 422: well-formed, but the value is refused (weight out of range, unknown strategy).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl From<PoolError> for ApiError {
    /// Maps the pool's refusals to statuses: a missing backend is 404, a duplicate name is 409
    /// (the request is fine, the pool's current state conflicts), an out-of-range weight is 422.
    fn from(e: PoolError) -> Self {
        let status = match e {
            PoolError::NoSuchBackend { .. } => StatusCode::NOT_FOUND,
            PoolError::DuplicateBackend { .. } => StatusCode::CONFLICT,
            PoolError::WeightOutOfRange { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}
