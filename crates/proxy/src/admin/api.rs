//! The runtime API: read stats, and change pools without a reload (HAProxy's runtime API).
//!
//! Every handler finds the pool by name, asks [`balance::Pool`] for the change, and answers
//! with the new state as JSON, so a script sees the effect of its call without a second
//! request. Refusals are `admin::ApiError`s. Changes are logged at `info` (what, not who: there is
//! one admin user) so the log tells why traffic moved.

use std::net::SocketAddr;
use std::sync::Arc;

use admin::ApiError;
use admin::extract::{Json, Path};
use axum::extract::State;
use axum::http::StatusCode;
use balance::{
    AdminState as BackendAdmin, BackendSnapshot, BackendSpec, Pool, PoolError, PoolSnapshot,
    StrategyKind,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::Proxy;
use crate::registry::ListenerSnapshot;

type ApiResult<T> = Result<T, ApiError>;
type PoolPath = Path<String>;
type BackendPath = Path<(String, String)>;
type AdminState = Arc<Proxy>;

/// `GET /api/stats`: every listener and pool, as the stats page shows them.
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    listeners: Vec<ListenerSnapshot>,
    pools: Vec<PoolSnapshot>,
    /// Backends written as host names: what each resolves to now, and its failures.
    dns: Vec<crate::DnsSnapshot>,
}

pub(crate) async fn stats(State(state): State<AdminState>) -> Json<Stats> {
    Json(Stats {
        listeners: state.registry().listener_snapshots(),
        pools: state.registry().pool_snapshots(),
        dns: state.registry().dns_snapshots(),
    })
}

/// `GET /api/pools/{pool}`.
pub(crate) async fn get_pool(
    State(state): State<AdminState>,
    path: PoolPath,
) -> ApiResult<Json<PoolSnapshot>> {
    let Path(pool) = path;
    Ok(Json(find_pool(&state, &pool)?.snapshot()))
}

/// `GET /api/pools/{pool}/backends/{backend}`.
pub(crate) async fn get_backend(
    State(state): State<AdminState>,
    path: BackendPath,
) -> ApiResult<Json<BackendSnapshot>> {
    let Path((pool, backend)) = path;
    let pool = find_pool(&state, &pool)?;
    Ok(Json(backend_snapshot(&pool, &backend)?))
}

/// `POST .../drain`: no new traffic; connections in flight finish; checks go on.
pub(crate) async fn drain(
    state: State<AdminState>,
    path: BackendPath,
) -> ApiResult<Json<BackendSnapshot>> {
    set_admin(state, path, BackendAdmin::Drain).await
}

/// `POST .../enable`: back to taking traffic when healthy.
pub(crate) async fn enable(
    state: State<AdminState>,
    path: BackendPath,
) -> ApiResult<Json<BackendSnapshot>> {
    set_admin(state, path, BackendAdmin::Enabled).await
}

/// `POST .../disable`: maintenance; no traffic and no health checks.
pub(crate) async fn disable(
    state: State<AdminState>,
    path: BackendPath,
) -> ApiResult<Json<BackendSnapshot>> {
    set_admin(state, path, BackendAdmin::Disabled).await
}

async fn set_admin(
    State(state): State<AdminState>,
    path: BackendPath,
    admin: BackendAdmin,
) -> ApiResult<Json<BackendSnapshot>> {
    let Path((pool, backend)) = path;
    change_backend(&state, &pool, &backend, BackendChange::Admin(admin)).map(Json)
}

/// Body of `PUT .../weight`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightBody {
    weight: u32,
}

/// `PUT .../weight`.
pub(crate) async fn set_weight(
    State(state): State<AdminState>,
    path: BackendPath,
    Json(body): Json<WeightBody>,
) -> ApiResult<Json<BackendSnapshot>> {
    let Path((pool, backend)) = path;
    change_backend(&state, &pool, &backend, BackendChange::Weight(body.weight)).map(Json)
}

/// What an operator changes on one backend, through this API or the stats page's forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendChange {
    /// Enable, drain or disable.
    Admin(BackendAdmin),
    /// A new weight (the pool refuses one above `balance::MAX_WEIGHT`).
    Weight(u32),
}

/// Makes `change` to `backend` of pool `pool_name` and answers with the backend as it is now:
/// the one path both the JSON API and the stats page's forms take, so they find, refuse and
/// log alike.
pub(crate) fn change_backend(
    state: &AdminState,
    pool_name: &str,
    backend: &str,
    change: BackendChange,
) -> ApiResult<BackendSnapshot> {
    let pool = find_pool(state, pool_name)?;
    match change {
        BackendChange::Admin(admin) => {
            pool.set_admin(backend, admin).map_err(pool_error)?;
            info!(pool = %pool_name, %backend, ?admin, "backend state changed through the admin API");
        }
        BackendChange::Weight(weight) => {
            pool.set_weight(backend, weight).map_err(pool_error)?;
            info!(pool = %pool_name, %backend, weight, "backend weight changed through the admin API");
        }
    }
    backend_snapshot(&pool, backend)
}

/// Body of `POST /api/pools/{pool}/backends`; named like the configuration file's entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBackend {
    name: String,
    address: SocketAddr,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    max_connections: u32,
    #[serde(default)]
    backup: bool,
}

fn one() -> u32 {
    1
}

/// `POST /api/pools/{pool}/backends`: 201 with the new backend.
pub(crate) async fn add_backend(
    State(state): State<AdminState>,
    path: PoolPath,
    Json(body): Json<NewBackend>,
) -> ApiResult<(StatusCode, Json<BackendSnapshot>)> {
    let Path(pool_name) = path;
    let pool = find_pool(&state, &pool_name)?;
    if body.name.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "a backend needs a name: it is how the stats page and this API refer to it",
        ));
    }
    pool.add_backend(&BackendSpec {
        name: body.name.clone(),
        addr: body.address,
        weight: body.weight,
        max_connections: body.max_connections,
        backup: body.backup,
    })
    .map_err(pool_error)?;
    info!(pool = %pool_name, backend = %body.name, address = %body.address, weight = body.weight,
        "backend added through the admin API");
    Ok((
        StatusCode::CREATED,
        Json(backend_snapshot(&pool, &body.name)?),
    ))
}

/// `DELETE /api/pools/{pool}/backends/{backend}`: 200 with the pool as it is now.
pub(crate) async fn remove_backend(
    State(state): State<AdminState>,
    path: BackendPath,
) -> ApiResult<Json<PoolSnapshot>> {
    let Path((pool_name, backend)) = path;
    let pool = find_pool(&state, &pool_name)?;
    pool.remove_backend(&backend).map_err(pool_error)?;
    info!(pool = %pool_name, %backend, "backend removed through the admin API");
    Ok(Json(pool.snapshot()))
}

/// Body of `PUT /api/pools/{pool}/strategy`; named like the configuration file's keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StrategyBody {
    strategy: String,
    hash_key: Option<String>,
}

/// `PUT /api/pools/{pool}/strategy`: 200 with the pool as it is now.
pub(crate) async fn set_strategy(
    State(state): State<AdminState>,
    path: PoolPath,
    Json(body): Json<StrategyBody>,
) -> ApiResult<Json<PoolSnapshot>> {
    let Path(pool_name) = path;
    let pool = find_pool(&state, &pool_name)?;
    let kind: StrategyKind = body.strategy.parse().map_err(ApiError::unprocessable)?;
    let hash_key = match (&body.hash_key, kind) {
        (Some(k), _) => Some(crate::config::parse_hash_key(k).map_err(ApiError::unprocessable)?),
        (None, StrategyKind::ConsistentHash) => {
            return Err(ApiError::unprocessable(
                "consistent_hash needs a hash_key: \"client_ip\", \"header:NAME\" or \"cookie:NAME\"",
            ));
        }
        (None, _) => None,
    };
    pool.set_strategy(kind, hash_key);
    info!(pool = %pool_name, strategy = %kind, hash_key = body.hash_key.as_deref().unwrap_or(""),
        "pool strategy changed through the admin API");
    Ok(Json(pool.snapshot()))
}

/// The pool by name, or 404 listing the pools there are.
fn find_pool(state: &AdminState, name: &str) -> ApiResult<Arc<Pool>> {
    state.registry().pool(name).ok_or_else(|| {
        let pools = state.registry().pools();
        let names: Vec<&str> = pools.keys().map(String::as_str).collect();
        let known = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        ApiError::not_found(format!("no pool named `{name}`; pools: {known}"))
    })
}

fn backend_snapshot(pool: &Pool, name: &str) -> ApiResult<BackendSnapshot> {
    pool.snapshot()
        .backends
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| {
            // Removed by a concurrent call between the change and this read.
            pool_error(PoolError::NoSuchBackend {
                pool: pool.name().into(),
                backend: name.into(),
            })
        })
}

/// Maps the pool's refusals to statuses: a missing backend is 404, a duplicate name is 409
/// (the request is fine, the pool's current state conflicts), an out-of-range weight is 422.
fn pool_error(e: PoolError) -> ApiError {
    let status = match e {
        PoolError::NoSuchBackend { .. } => StatusCode::NOT_FOUND,
        PoolError::DuplicateBackend { .. } => StatusCode::CONFLICT,
        PoolError::WeightOutOfRange { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.to_string())
}
