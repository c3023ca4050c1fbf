//! The admin listener: lintas's authenticated control plane for the load balancer.
//!
//! In the spirit of HAProxy's stats page and runtime API, one HTTP listener (default
//! `127.0.0.1:9000`) shows what the proxy is doing and changes it at run time. It reads and
//! writes the proxy's [`proxy::registry::Registry`] — the same pools the data path picks
//! from — so a drained backend stops getting new traffic on the next request, and nothing
//! here is ever on the data path.
//!
//! Every route is behind HTTP basic auth ([`Auth`]); refusals are `{"error": "..."}` with a
//! status, the same shape everywhere.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | 303 to `/stats` |
//! | `GET /stats` | the HTML stats page (refreshes every 5 s) |
//! | `GET /api/stats` | `{"listeners": [ListenerSnapshot], "pools": [PoolSnapshot]}` |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /api/pools/{pool}` | `PoolSnapshot` |
//! | `GET /api/pools/{pool}/backends/{backend}` | `BackendSnapshot` |
//! | `POST /api/pools/{pool}/backends/{backend}/drain` `/enable` `/disable` | 200, `BackendSnapshot` |
//! | `PUT /api/pools/{pool}/backends/{backend}/weight` `{"weight": 3}` | 200, `BackendSnapshot` |
//! | `POST /api/pools/{pool}/backends` `{"name", "address", "weight"?}` | 201, `BackendSnapshot` |
//! | `DELETE /api/pools/{pool}/backends/{backend}` | 200, `PoolSnapshot` |
//! | `PUT /api/pools/{pool}/strategy` `{"strategy", "hash_key"?}` | 200, `PoolSnapshot` |
//! | `POST /api/reload` | 200, what every service changed; 500 with the [`Control`]'s message |
//!
//! Errors: 401 without valid credentials, 429 with `Retry-After` for a client address that
//! failed too often lately (see [`auth`]), 403 for a cross-site change from a browser, 404 for
//! an unknown pool, backend or route, 405 for a known route with another method, 400 for a
//! body that is not the JSON the call takes, 409 for a duplicate backend name, 413 for a body
//! over 64 KiB, 422 for a value the pool refuses (weight above 256, unknown strategy,
//! `consistent_hash` without `hash_key`).
//!
//! # Layout
//!
//! - [`config`]: the `[admin]` section and its validation.
//! - [`auth`]: basic auth against an argon2 hash, with a keyed cache of verified headers.
//! - `csrf`: refuses changes a browser sends on behalf of another site.
//! - `stats_page`: the HTML page. `metrics`: the Prometheus text. `api`: the JSON API.
//! - `error`: the JSON error every refusal goes through.
//! - [`serve`]: the router, the authentication layer, and the server with graceful shutdown.

mod api;
pub mod auth;
pub mod config;
mod csrf;
mod error;
mod metrics;
mod stats_page;

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
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use auth::{Access, Auth, Throttle};
pub use config::AdminConfig;

use crate::error::ApiError;

/// Largest request body the API reads; its bodies are a few dozen bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the admin service asks of the binary that it cannot do itself.
///
/// Reloading means re-reading and validating the configuration file and applying every
/// section, which only the binary knows how to do; this trait is the seam, so tests can count
/// calls and the binary can share one code path with SIGHUP.
pub trait Control: Send + Sync + 'static {
    /// Re-reads the configuration file and applies it (same as SIGHUP). The error is shown to
    /// the API caller as it is, so it should say what is wrong in the file and that the
    /// running configuration is unchanged, if it is.
    /// The answer is the node's own summary (what each service changed, what needs a
    /// restart), passed through as JSON.
    fn reload(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + '_>>;
}

/// Everything the handlers share; cheap to clone (three `Arc`s).
#[derive(Clone)]
pub struct AdminState {
    /// The proxy's pools and listeners, read for stats and changed by the runtime API.
    pub registry: Arc<proxy::registry::Registry>,
    /// Who may use the listener.
    pub auth: Arc<Auth>,
    /// Reload, provided by the binary.
    pub control: Arc<dyn Control>,
    /// Other services' routes (the relay's `/api/relay/...`), served behind the same
    /// authentication.
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
    let backend = "/api/pools/{pool}/backends/{backend}";
    Router::new()
        .route("/", get(|| async { Redirect::to("/stats") }))
        .route("/stats", get(stats_page::page))
        .route("/metrics", get(metrics::metrics))
        .route("/api/stats", get(api::stats))
        .route("/api/reload", post(api::reload))
        .route("/api/pools/{pool}", get(api::get_pool))
        .route("/api/pools/{pool}/strategy", put(api::set_strategy))
        .route("/api/pools/{pool}/backends", post(api::add_backend))
        .route(backend, get(api::get_backend).delete(api::remove_backend))
        .route(&format!("{backend}/drain"), post(api::drain))
        .route(&format!("{backend}/enable"), post(api::enable))
        .route(&format!("{backend}/disable"), post(api::disable))
        .route(&format!("{backend}/weight"), put(api::set_weight))
        .with_state(state.clone())
        .merge(state.services.clone())
        // After the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Lets a request through only with valid credentials (and, for changes, from no other
/// site); marks every answer uncacheable, since it is live state behind a password.
async fn authenticate(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let access = match req.headers().get(AUTHORIZATION) {
        Some(value) => state.auth.verify(value.as_bytes(), client_ip(&req)).await,
        None => Access::Denied,
    };
    let mut resp = match access {
        Access::Granted => match csrf::check(req.method(), req.headers()) {
            Ok(()) => next.run(req).await,
            Err(e) => e.into_response(),
        },
        Access::Denied => {
            debug!(path = %req.uri().path(), "admin request without valid credentials");
            let mut resp =
                ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"lintas\""),
            );
            resp
        }
        Access::Throttled(throttle) => throttled(throttle),
    };
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The client's address, which [`net::serve_router`] attaches to each request; unspecified
/// when the router is served otherwise (every such client then shares one address's limits).
fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// 429 with `Retry-After` (whole seconds, rounded up) and the reason.
fn throttled(throttle: Throttle) -> Response {
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
