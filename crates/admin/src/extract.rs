//! The extractors every admin route uses, so a request axum cannot read is refused in the
//! API's JSON shape ([`ApiError`]) rather than axum's plain text, the same way on every
//! service's routes.
//!
//! Statuses and messages are axum's: 400 for a body that is not JSON or a path or query
//! value that does not parse, 422 for JSON of the wrong shape (a missing field, an unknown
//! enum value), 413 for a body over the router's limit; the message names the field and the
//! position (`kind: unknown variant `oracle`, expected one of ... at line 1 column 30`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON body, read whatever the `Content-Type` (so `curl -d '{...}'` works). Bodies are
/// capped by the admin router's `DefaultBodyLimit` (413 past it). As a response it is
/// `application/json`, like `axum::Json`, so a handler needs only this one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters (percent-decoded, so any name can be addressed).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

/// A query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

/// Our extractor from axum's of the same name, its rejection turned into an [`ApiError`].
macro_rules! from_parts {
    ($name:ident) => {
        impl<S, T> FromRequestParts<S> for $name<T>
        where
            S: Send + Sync,
            T: DeserializeOwned + Send,
        {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                let axum::extract::$name(value) =
                    axum::extract::$name::<T>::from_request_parts(parts, state).await?;
                Ok(Self(value))
            }
        }
    };
}

from_parts!(Path);
from_parts!(Query);

/// The first value of field `name` in an `application/x-www-form-urlencoded` body, decoded;
/// `None` when the body has no such field. HTML forms post such bodies: the shell reads a
/// form's CSRF token with it, and services their forms' fields.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}
