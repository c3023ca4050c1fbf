//! The proxy's part of the admin listener: the stats page, the runtime API (HAProxy's
//! runtime API: drain, weight, add and remove backends, change a pool's strategy without a
//! reload) and the proxy's metrics.
//!
//! Everything here reads and writes the proxy's [`Registry`](crate::registry::Registry) —
//! the same pools the data path picks from — so a drained backend stops getting new traffic
//! on the next request, and nothing here is ever on the data path. Mounted behind the admin
//! listener's authentication; refusals are `admin::ApiError`s.
//!
//! | route | answer |
//! |---|---|
//! | `GET /stats` | the HTML stats page (refreshes every 5 s) |
//! | `GET /api/stats` | `{"listeners": [ListenerSnapshot], "pools": [PoolSnapshot]}` |
//! | `GET /api/pools/{pool}` | `PoolSnapshot` |
//! | `GET /api/pools/{pool}/backends/{backend}` | `BackendSnapshot` |
//! | `POST /api/pools/{pool}/backends/{backend}/drain` `/enable` `/disable` | 200, `BackendSnapshot` |
//! | `PUT /api/pools/{pool}/backends/{backend}/weight` `{"weight": 3}` | 200, `BackendSnapshot` |
//! | `POST /api/pools/{pool}/backends` `{"name", "address", "weight"?, "max_connections"?}` | 201, `BackendSnapshot` |
//! | `DELETE /api/pools/{pool}/backends/{backend}` | 200, `PoolSnapshot` |
//! | `PUT /api/pools/{pool}/strategy` `{"strategy", "hash_key"?}` | 200, `PoolSnapshot` |
//! | `POST /forms/pools/{pool}/backends/{backend}/drain` `/enable` `/disable` `/weight` (form: `csrf` with a session, `weight`) | 303 to `/stats?done=...` or `/stats?error=...` (the stats page's buttons) |
//!
//! `GET /stats` shows `?done=` and `?error=` (what a form did) above the tables. The form
//! routes are admitted by the shell like the API (credentials, no cross-site post) but take
//! a session's CSRF token from the form (see `forms`); their pool refusals come back as
//! `?error=` with the API's message, an unknown action is 404.
//!
//! Errors: 404 for an unknown pool or backend, 409 for a duplicate backend name, 422 for a
//! value the pool refuses (weight above 256, unknown strategy, `consistent_hash` without
//! `hash_key`, a backend without a name); bodies that do not parse as the call's JSON are
//! 400 or 422 as `admin::extract` says.
//!
//! # Layout
//!
//! - `api`: the JSON API. `stats_page`: the HTML page; `forms`: its buttons, which change
//!   backends through `api`'s own path. [`metrics`]: the `lintas_backend_*`,
//!   `lintas_pool_*` and `lintas_listener_*` families, read from the registry at scrape time.

mod api;
mod forms;
pub mod metrics;
mod stats_page;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post, put};

use crate::Proxy;

/// The proxy's admin routes, with the proxy as state; the admin listener adds
/// authentication, limits and the common error fallbacks.
pub fn router(proxy: Arc<Proxy>) -> Router {
    let backend = "/api/pools/{pool}/backends/{backend}";
    Router::new()
        .route("/stats", get(stats_page::page))
        .route("/api/stats", get(api::stats))
        .route("/api/pools/{pool}", get(api::get_pool))
        .route("/api/pools/{pool}/strategy", put(api::set_strategy))
        .route("/api/pools/{pool}/backends", post(api::add_backend))
        .route(backend, get(api::get_backend).delete(api::remove_backend))
        .route(&format!("{backend}/drain"), post(api::drain))
        .route(&format!("{backend}/enable"), post(api::enable))
        .route(&format!("{backend}/disable"), post(api::disable))
        .route(&format!("{backend}/weight"), put(api::set_weight))
        .route(forms::ROUTE, post(forms::post))
        .with_state(proxy)
}
