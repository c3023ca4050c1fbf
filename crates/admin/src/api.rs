//! The runtime API: read stats, and change pools without a reload (HAProxy's runtime API).
//!
//! Every handler finds the pool by name, asks [`balance::Pool`] for the change, and answers
//! with the new state as JSON, so a script sees the effect of its call without a second
//! request. Refusals are [`ApiError`]s. Changes are logged at `info` (what, not who: there is
//! one admin user) so the log tells why traffic moved.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use balance::{
    AdminState as BackendAdmin, BackendSnapshot, BackendSpec, Pool, PoolError, PoolSnapshot,
    StrategyKind,
};
use proxy::registry::ListenerSnapshot;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::AdminState;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;
type PoolPath = Result<Path<String>, PathRejection>;
type BackendPath = Result<Path<(String, String)>, PathRejection>;

/// `GET /api/stats`: every listener and pool, as the stats page shows them.
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    listeners: Vec<ListenerSnapshot>,
    pools: Vec<PoolSnapshot>,
}

pub(crate) async fn stats(State(state): State<AdminState>) -> Json<Stats> {
    Json(Stats {
        listeners: state.registry.listener_snapshots(),
        pools: state.registry.pool_snapshots(),
    })
}

/// `GET /api/pools/{pool}`.
pub(crate) async fn get_pool(
    State(state): State<AdminState>,
    path: PoolPath,
) -> ApiResult<Json<PoolSnapshot>> {
    let Path(pool) = path?;
    Ok(Json(find_pool(&state, &pool)?.snapshot()))
}

/// `GET /api/pools/{pool}/backends/{backend}`.
pub(crate) async fn get_backend(
    State(state): State<AdminState>,
    path: BackendPath,
) -> ApiResult<Json<BackendSnapshot>> {
    let Path((pool, backend)) = path?;
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
    let Path((pool_name, backend)) = path?;
    let pool = find_pool(&state, &pool_name)?;
    pool.set_admin(&backend, admin)?;
    info!(pool = %pool_name, %backend, ?admin, "backend state changed through the admin API");
    Ok(Json(backend_snapshot(&pool, &backend)?))
}

/// Body of `PUT .../weight`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightBody {
    weight: u32,
}

impl BodyExample for WeightBody {
    const EXAMPLE: &'static str = r#"{"weight": 3}"#;
}

/// `PUT .../weight`.
pub(crate) async fn set_weight(
    State(state): State<AdminState>,
    path: BackendPath,
    JsonBody(body): JsonBody<WeightBody>,
) -> ApiResult<Json<BackendSnapshot>> {
    let Path((pool_name, backend)) = path?;
    let pool = find_pool(&state, &pool_name)?;
    pool.set_weight(&backend, body.weight)?;
    info!(pool = %pool_name, %backend, weight = body.weight, "backend weight changed through the admin API");
    Ok(Json(backend_snapshot(&pool, &backend)?))
}

/// Body of `POST /api/pools/{pool}/backends`; named like the configuration file's entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBackend {
    name: String,
    address: SocketAddr,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

impl BodyExample for NewBackend {
    const EXAMPLE: &'static str = r#"{"name": "app4", "address": "127.0.0.1:8084", "weight": 1}"#;
}

/// `POST /api/pools/{pool}/backends`: 201 with the new backend.
pub(crate) async fn add_backend(
    State(state): State<AdminState>,
    path: PoolPath,
    JsonBody(body): JsonBody<NewBackend>,
) -> ApiResult<(StatusCode, Json<BackendSnapshot>)> {
    let Path(pool_name) = path?;
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
    })?;
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
    let Path((pool_name, backend)) = path?;
    let pool = find_pool(&state, &pool_name)?;
    pool.remove_backend(&backend)?;
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

impl BodyExample for StrategyBody {
    const EXAMPLE: &'static str = r#"{"strategy": "least_connections"} or {"strategy": "consistent_hash", "hash_key": "header:X-User"}"#;
}

/// `PUT /api/pools/{pool}/strategy`: 200 with the pool as it is now.
pub(crate) async fn set_strategy(
    State(state): State<AdminState>,
    path: PoolPath,
    JsonBody(body): JsonBody<StrategyBody>,
) -> ApiResult<Json<PoolSnapshot>> {
    let Path(pool_name) = path?;
    let pool = find_pool(&state, &pool_name)?;
    let kind: StrategyKind = body.strategy.parse().map_err(ApiError::unprocessable)?;
    let hash_key = match (&body.hash_key, kind) {
        (Some(k), _) => Some(proxy::config::parse_hash_key(k).map_err(ApiError::unprocessable)?),
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

/// `POST /api/reload`: re-reads the configuration file like SIGHUP.
pub(crate) async fn reload(State(state): State<AdminState>) -> ApiResult<Json<serde_json::Value>> {
    match state.control.reload().await {
        Ok(summary) => {
            info!("configuration reloaded through the admin API");
            Ok(Json(summary))
        }
        Err(message) => {
            warn!(%message, "reload through the admin API failed");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message))
        }
    }
}

/// The pool by name, or 404 listing the pools there are.
fn find_pool(state: &AdminState, name: &str) -> ApiResult<Arc<Pool>> {
    state.registry.pool(name).ok_or_else(|| {
        let pools = state.registry.pools();
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
            PoolError::NoSuchBackend {
                pool: pool.name().into(),
                backend: name.into(),
            }
            .into()
        })
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::new(e.status(), e.body_text())
    }
}

/// A body type that can show the caller what a correct body looks like.
pub(crate) trait BodyExample {
    /// A correct body, quoted in the error for a wrong one.
    const EXAMPLE: &'static str;
}

/// A JSON body, read whatever the `Content-Type` (so `curl -d '{...}'` works) and refused with
/// our error shape: 400 naming what serde found wrong and quoting a correct body. Bodies are
/// capped by the router's `DefaultBodyLimit` (413 past it).
pub(crate) struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + BodyExample,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not what this call takes: {e}; send JSON like {}",
                T::EXAMPLE
            ))
        })
    }
}
