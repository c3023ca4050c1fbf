//! The console's login, logout and session routes, and what a request authenticated by a
//! session cookie must also carry (see [`crate::auth::sessions`]).
//!
//! | route | answer |
//! |---|---|
//! | `POST /login` `{"user", "password"}` | 200 `{"user", "csrf"}` and the session cookie; 401 for a wrong user or password; 429 like basic auth |
//! | `POST /logout` | 204, the session closed and its cookie cleared |
//! | `GET /api/session` | 200 `{"user", "csrf"}`: `csrf` is null for basic auth |
//!
//! `GET /login` (the page) and `GET /assets/...` are served by the console without
//! authentication; they hold no state.
//!
//! **Form posts.** A page without scripts (the proxy's stats page) cannot set
//! [`CSRF_HEADER`]. So a `POST` under [`FORM_PREFIX`] with an
//! `application/x-www-form-urlencoded` body and no header may carry the token in the form
//! field [`CSRF_FIELD`] instead, compared in constant time like the header; the page renders
//! it from the request's [`FormToken`]. Every other route takes the header only, so a form
//! cannot reach the JSON API with a session.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::sessions::{COOKIE, LIFETIME, cookie_id};
use crate::extract::Json;
use crate::{Access, AdminState, ApiError};

/// The header a session-authenticated change must carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Where HTML forms post changes: the only routes whose session token may come in the form
/// field [`CSRF_FIELD`] rather than [`CSRF_HEADER`] (see the module doc).
pub const FORM_PREFIX: &str = "/forms/";

/// The form field a form under [`FORM_PREFIX`] carries the session's CSRF token in.
pub const CSRF_FIELD: &str = "csrf";

/// The CSRF token of the session a request came with, attached to every request a session
/// authenticated, so a page can put it in its forms' hidden [`CSRF_FIELD`]; absent with basic
/// auth, whose changes need no token (a cross-site page cannot make a browser send them
/// without also sending an `Origin` the cross-site guard refuses).
#[derive(Debug, Clone)]
pub struct FormToken(pub String);

/// The session a request was authenticated by, for the handlers that need it.
#[derive(Debug, Clone)]
pub(crate) struct SessionId(pub(crate) String);

/// Paths served to anyone: the login itself and the console's static files.
pub(crate) fn is_public(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => path == "/login" || path.starts_with("/assets/"),
        Method::POST => path == "/login",
        _ => false,
    }
}

/// Lets a request carrying a live session cookie through, with its [`SessionId`] and
/// [`FormToken`] attached; `None` when it carries none (basic auth is tried next). A change
/// must also carry the session's CSRF token (see [`csrf_token_matches`]). The request is
/// handed back because reading a form's token reads its body, which is put back in it.
pub(crate) async fn session_access(
    state: &AdminState,
    mut req: Request,
) -> (Request, Option<Result<(), ApiError>>) {
    let sessions = state.auth.sessions();
    let Some(id) = cookie_id(req.headers()).map(str::to_owned) else {
        return (req, None);
    };
    if !sessions.touch(&id, Instant::now()) {
        return (req, None);
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let checked;
        (req, checked) = csrf_token_matches(state, &id, req).await;
        if let Err(refusal) = checked {
            return (req, Some(Err(refusal)));
        }
    }
    req.extensions_mut()
        .insert(FormToken(sessions.csrf_token(&id)));
    req.extensions_mut().insert(SessionId(id));
    (req, Some(Ok(())))
}

/// Whether a change carries session `id`'s CSRF token: in [`CSRF_HEADER`], or, for a form
/// post under [`FORM_PREFIX`] without that header, in the body's [`CSRF_FIELD`]. Both are
/// compared by [`Sessions::csrf_matches`](crate::auth::Sessions::csrf_matches).
async fn csrf_token_matches(
    state: &AdminState,
    id: &str,
    req: Request,
) -> (Request, Result<(), ApiError>) {
    let sessions = state.auth.sessions();
    if let Some(token) = req.headers().get(CSRF_HEADER) {
        let ok = sessions.csrf_matches(id, token.as_bytes());
        return (req, if ok { Ok(()) } else { Err(header_refused()) });
    }
    if !is_form_post(&req) {
        return (req, Err(header_refused()));
    }
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > crate::MAX_BODY_BYTES) {
        let refusal = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a form's body is at most 64 KiB",
        );
        return (Request::from_parts(parts, Body::empty()), Err(refusal));
    }
    let bytes = match axum::body::to_bytes(body, crate::MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let refusal = ApiError::bad_request(
                "the form's body could not be read: cut short or over 64 KiB",
            );
            return (Request::from_parts(parts, Body::empty()), Err(refusal));
        }
    };
    let token = crate::extract::form_field(&bytes, CSRF_FIELD).unwrap_or_default();
    let checked = if sessions.csrf_matches(id, token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing or wrong csrf form field: a form posted with the console's session must \
             carry the token of the page it came from; reload the page and post again",
        ))
    };
    (Request::from_parts(parts, Body::from(bytes)), checked)
}

/// A `POST` of an HTML form to a form route.
fn is_form_post(req: &Request) -> bool {
    let form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    form && req.method() == Method::POST && req.uri().path().starts_with(FORM_PREFIX)
}

fn header_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "missing or wrong X-CSRF-Token: a change made with the console's session must \
         carry the token GET /api/session gives",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Credentials {
    user: String,
    password: String,
}

/// `POST /login`: opens a session for the right user and password.
pub(crate) async fn login(State(state): State<AdminState>, req: Request) -> Response {
    let client = crate::client_ip(&req);
    let credentials = match Json::<Credentials>::from_request(req, &state).await {
        Ok(Json(credentials)) => credentials,
        Err(e) => return e.into_response(),
    };
    match state
        .auth
        .verify_password(&credentials.user, credentials.password, client)
        .await
    {
        Access::Granted => {
            let sessions = state.auth.sessions();
            let id = sessions.open(Instant::now());
            let cookie = format!(
                "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                LIFETIME.as_secs()
            );
            let body = json!({"user": state.auth.user(), "csrf": sessions.csrf_token(&id)});
            let mut resp = axum::Json(body).into_response();
            resp.headers_mut().insert(
                SET_COOKIE,
                HeaderValue::from_str(&cookie).expect("a session cookie is ASCII"),
            );
            resp
        }
        Access::Denied => {
            ApiError::new(StatusCode::UNAUTHORIZED, "wrong user name or password").into_response()
        }
        Access::Throttled(throttle) => crate::throttled(throttle),
    }
}

/// `POST /logout`: closes the request's session and clears its cookie.
pub(crate) async fn logout(State(state): State<AdminState>, req: Request) -> Response {
    if let Some(SessionId(id)) = req.extensions().get::<SessionId>() {
        state.auth.sessions().close(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
        .expect("ASCII"),
    );
    resp
}

/// `GET /api/session`: who is logged in and the token changes need.
pub(crate) async fn session(
    State(state): State<AdminState>,
    req: Request,
) -> Json<serde_json::Value> {
    let csrf = req
        .extensions()
        .get::<SessionId>()
        .map(|SessionId(id)| state.auth.sessions().csrf_token(id));
    Json(json!({"user": state.auth.user(), "csrf": csrf}))
}
