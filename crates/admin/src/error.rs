//! The one error shape of the admin API: a status and `{"error": "..."}`.
//!
//! Every refusal of every service's admin routes — authentication, an unknown pool or
//! destination, a body that is not the JSON a call takes, a change refused — goes through
//! [`ApiError`], so scripts parse one shape and people read one sentence that says what was
//! wrong and what to do. axum's own rejections (plain text) are turned into it by the
//! extractors in [`crate::extract`], keeping axum's status and message.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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

    /// 400: the request itself is malformed (a bad query value, an unknown filter).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: the object named in the path does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request is fine, but the current state conflicts (a duplicate name, an
    /// object declared in the configuration file).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 422: well-formed, but the value is refused (weight out of range, unknown strategy).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 500: lintas failed (its store, its stream), not the caller.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
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

/// axum's rejections keep their status and message, in our shape.
macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(e: $rejection) -> Self {
                Self::new(e.status(), e.body_text())
            }
        }
    )*};
}

from_rejection!(BytesRejection, JsonRejection, PathRejection, QueryRejection);
