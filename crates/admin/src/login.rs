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

use std::time::Instant;

use axum::extract::{FromRequest, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::sessions::{COOKIE, LIFETIME, cookie_id};
use crate::extract::Json;
use crate::{Access, AdminState, ApiError};

/// The header a session-authenticated change must carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

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

/// Lets a request carrying a live session cookie through, with its [`SessionId`] attached;
/// `None` when it carries none (basic auth is tried next). A change must also carry the
/// session's CSRF token.
pub(crate) fn session_access(
    state: &AdminState,
    req: &mut Request,
) -> Option<Result<(), ApiError>> {
    let sessions = state.auth.sessions();
    let id = cookie_id(req.headers())?.to_owned();
    if !sessions.touch(&id, Instant::now()) {
        return None;
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let token = req
            .headers()
            .get(CSRF_HEADER)
            .map_or(&b""[..], HeaderValue::as_bytes);
        if !sessions.csrf_matches(&id, token) {
            return Some(Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token: a change made with the console's session must \
                 carry the token GET /api/session gives",
            )));
        }
    }
    req.extensions_mut().insert(SessionId(id));
    Some(Ok(()))
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
