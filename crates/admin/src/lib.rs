//! The admin listener: the shell every service of a lintas node mounts its control plane in.
//!
//! In the spirit of HAProxy's stats page and runtime API, one HTTP listener (default
//! `127.0.0.1:9000`) shows what the node is doing and changes it at run time. This crate owns
//! what every service's routes share and none of what they do:
//!
//! - who may come in: HTTP basic auth ([`Auth`]) with guess throttling, or a console
//!   session opened by `POST /login` (see `login`), whose changes carry its CSRF token (in
//!   the `X-CSRF-Token` header, or for HTML forms under [`FORM_PREFIX`] in a form field),
//!   and a cross-site guard on changes;
//! - how a refusal looks: one [`ApiError`] (`{"error": "..."}` and a status) and one set of
//!   [`extract`]ors that turn every unreadable body, path or query into it;
//! - one metrics registry ([`Metrics`]) that services register into at start and that
//!   `GET /metrics` encodes;
//! - the listener's limits (connections, head deadline, idle timeout, 64 KiB bodies) and
//!   graceful shutdown ([`serve`]).
//!
//! Services bring their routes as an `axum::Router` ([`AdminState::services`]):
//! `proxy::admin`, `relay::admin` and `watch::admin`. The shell's own routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | 303 to `/console` (the admin console) |
//! | `POST /login`, `POST /logout`, `GET /api/session` | console sessions (see `login`) |
//! | `GET /metrics` | every service's metrics, OpenMetrics text format |
//! | `POST /api/reload` | 200, the node's reload summary; 422 for an invalid file, 500 when a service refused a valid one ([`ReloadError`]) |
//!
//! | service | routes |
//! |---|---|
//! | proxy | `GET /stats`, `GET /api/stats`, `/api/pools/{pool}/...`, the stats page's `POST /forms/pools/{pool}/...` (see `proxy::admin`) |
//! | relay | `/api/relay/...` (see `relay::admin`) |
//! | watch | `/api/watch/...` (see `watch::admin`) |
//! | console | `GET /console`, `GET /login`, `/assets/...` (see `console`) |
//!
//! Errors common to every route: 401 without valid credentials (a browser opening a page is
//! sent to `/login` instead), 429 with `Retry-After` for a
//! client address that failed too often lately (see [`auth`]), 403 for a cross-site change
//! from a browser, 404 for an unknown route, 405 for a known route with another method, 413
//! for a body over 64 KiB; 400 and 422 for bodies, paths and queries that do not parse (see
//! [`extract`]).
//!
//! # Layout
//!
//! - [`config`]: the `[admin]` section and its validation.
//! - [`auth`]: basic auth against an argon2 hash, with a keyed cache of verified headers.
//! - `csrf`: refuses changes a browser sends on behalf of another site.
//! - `login`: the console's login, logout and session routes; the CSRF token a session's
//!   changes carry.
//! - `error` ([`ApiError`]) and [`extract`]: the JSON error every refusal goes through.
//! - [`metrics`]: the registry and `GET /metrics`.
//! - [`serve`]: the router, the authentication layer, and the server with graceful shutdown.

pub mod auth;
pub mod config;
mod csrf;
mod error;
pub mod extract;
mod login;
pub mod metrics;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use auth::{Access, Auth, Throttle};
pub use config::AdminConfig;
pub use error::ApiError;
pub use login::{CSRF_FIELD, CSRF_HEADER, FORM_PREFIX, FormToken};
pub use metrics::Metrics;

/// Largest request body the API reads; its bodies are a few dozen bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the admin service asks of the binary that it cannot do itself.
///
/// Reloading means re-reading and validating the configuration file and applying every
/// section, which only the binary knows how to do; this trait is the seam, so tests can count
/// calls and the binary can share one code path with SIGHUP.
pub trait Control: Send + Sync + 'static {
    /// Re-reads the configuration file and applies it (same as SIGHUP). The error's message is
    /// shown to the API caller as it is, so it should say what is wrong in the file; its
    /// variant picks the status.
    ///
    /// The summary is the node's, one member per service (`{"proxy": .., "relay": ..,
    /// "watch": .., "restart_needed": [..]}`); the admin crate passes it on as it is, so it
    /// knows no service.
    fn reload(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, ReloadError>> + Send + '_>>;
}

/// Why a reload did not happen, told apart because the caller's remedy differs: an invalid
/// file is the caller's to fix (422, like any request whose content is wrong), a valid file
/// that a service could not apply (an address in use) is the node's trouble (500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The file does not parse or does not validate; nothing was changed. The message names
    /// the file, line and key.
    Invalid(String),
    /// The file is valid but a service refused it; services reloaded before it keep the new
    /// configuration.
    Refused(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(message) | Self::Refused(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ReloadError {}

/// Everything the shell's handlers share; cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    /// Who may use the listener.
    pub auth: Arc<Auth>,
    /// Reload, provided by the binary.
    pub control: Arc<dyn Control>,
    /// The node's registry, encoded by `GET /metrics`.
    pub metrics: Metrics,
    /// Every service's routes (`proxy::admin`, `relay::admin`, `watch::admin`), served
    /// behind the same authentication and limits.
    pub services: Router,
}

/// Serves the admin API on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets requests in progress finish (idle keep-alive connections are closed).
///
/// Served with [`net::Limits::ADMIN`]: at most 1024 connections at once (more wait in the
/// kernel's accept queue), a request head must arrive within 5 s of its first byte, and a
/// connection idle for 60 s is closed.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        // The binary announces the address at `info`; this is for tracing the service itself.
        debug!(%addr, "admin serving");
    }
    net::serve_router(listener, router(state), net::Limits::ADMIN, shutdown).await
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/metrics", get(metrics::metrics))
        .route("/api/reload", post(reload))
        .route("/login", post(login::login))
        .route("/logout", post(login::logout))
        .route("/api/session", get(login::session))
        .with_state(state.clone())
        .merge(state.services.clone())
        // After the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// `POST /api/reload`: re-reads the configuration file like SIGHUP.
async fn reload(
    State(state): State<AdminState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    match state.control.reload().await {
        Ok(summary) => {
            info!("configuration reloaded through the admin API");
            Ok(axum::Json(summary))
        }
        Err(e) => {
            warn!(message = %e, "reload through the admin API failed");
            Err(match e {
                ReloadError::Invalid(message) => ApiError::unprocessable(message),
                ReloadError::Refused(message) => ApiError::internal(message),
            })
        }
    }
}

/// Lets a request through only with valid credentials — a console session (whose changes
/// also carry its CSRF token) or basic auth — and, for changes, from no other site; the login
/// and the console's static files are open to anyone. Marks every answer uncacheable unless
/// its handler said otherwise, since it is live state behind a password.
async fn authenticate(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let public = login::is_public(req.method(), req.uri().path());
    let mut session = None;
    if !public {
        (req, session) = login::session_access(&state, req).await;
    }
    let refusal = if public {
        None
    } else if let Some(session) = session {
        session.err().map(IntoResponse::into_response)
    } else {
        let access = match req.headers().get(AUTHORIZATION) {
            Some(value) => state.auth.verify(value.as_bytes(), client_ip(&req)).await,
            None => Access::Denied,
        };
        match access {
            Access::Granted => None,
            Access::Denied => Some(denied(&req)),
            Access::Throttled(throttle) => Some(throttled(throttle)),
        }
    };
    let refusal = refusal.or_else(|| {
        csrf::check(req.method(), req.headers())
            .err()
            .map(IntoResponse::into_response)
    });
    let mut resp = match refusal {
        Some(resp) => resp,
        None => next.run(req).await,
    };
    if !resp.headers().contains_key(CACHE_CONTROL) {
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The answer to a request without valid credentials. A person's browser opening a page is
/// sent to the login page (and back after it); a page's script gets a 401 without a basic-auth
/// challenge, so the browser shows no password dialog over the console; tools get the
/// challenge.
fn denied(req: &Request) -> Response {
    debug!(path = %req.uri().path(), "admin request without valid credentials");
    let fetch_mode = req
        .headers()
        .get("sec-fetch-mode")
        .map(HeaderValue::as_bytes);
    let wants_page = req
        .headers()
        .get(axum::http::header::ACCEPT)
        .is_some_and(|accept| accept.as_bytes().starts_with(b"text/html"));
    if req.method() == Method::GET && (fetch_mode == Some(b"navigate") || wants_page) {
        let back = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let target = format!(
            "/login?next={}",
            percent_encoding::utf8_percent_encode(back, percent_encoding::NON_ALPHANUMERIC)
        );
        return Redirect::to(&target).into_response();
    }
    let mut resp =
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
    if fetch_mode.is_none() {
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"lintas\""),
        );
    }
    resp
}

/// The client's address, which [`net::serve_router`] attaches to each request; unspecified
/// when the router is served otherwise (every such client then shares one address's limits).
pub(crate) fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// 429 with `Retry-After` (whole seconds, rounded up) and the reason.
pub(crate) fn throttled(throttle: Throttle) -> Response {
    let (wait, message) = match throttle {
        Throttle::Backoff(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            (
                secs,
                format!("too many failed logins from this address; try again in {secs} s"),
            )
        }
        Throttle::Busy => (
            1,
            "a login from this address is already being checked; try again in 1 s".to_owned(),
        ),
    };
    let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response();
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(wait));
    resp
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}; see /stats, /metrics, /api/stats and /api/pools/{{pool}}/...",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method}; the Allow header lists what it takes",
            uri.path()
        ),
    )
}
