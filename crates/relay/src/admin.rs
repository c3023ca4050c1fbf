//! The relay's part of the admin API, mounted under `/api/relay` behind the admin listener's
//! authentication.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/relay` | applications, destinations (with delivery status and `backlog`: records not yet taken), routes, and `stream_end` |
//! | `POST /api/relay/applications` `{"name"}` | 201 `{"application", "key"}`: the key is shown this once |
//! | `POST /api/relay/applications/{name}/rotate` | 200 `{"application", "key"}`; the old key stops working |
//! | `DELETE /api/relay/applications/{name}` | 204 (and its routes) |
//! | `POST /api/relay/destinations` `DestinationSpec` | 201; 422 if lintas cannot connect with it |
//! | `POST /api/relay/destinations?dry_run=true` `DestinationSpec` | 200 `{"ok", "destination", "tables"}` if lintas can connect with it, saving nothing; 422 otherwise |
//! | `GET /api/relay/destinations/{name}/schema` | its tables and columns, read live |
//! | `PUT /api/relay/destinations/{name}` `DestinationSpec` | 200; checked by connecting (422 if lintas cannot); without `password` the stored one stays; `?dry_run=true` only checks |
//! | `DELETE /api/relay/destinations/{name}` | 204 (and its routes) |
//! | `POST /api/relay/destinations/{name}/skip` `{"record"}` | 202: the worker dead-letters the record it is stuck on and goes on; 409 if it is not stuck on that record |
//! | `POST /api/relay/routes` `RouteSpec` | 201; 422 if the table or a column is not in the live schema |
//! | `DELETE /api/relay/routes/{id}` | 204 |
//! | `GET /api/relay/deliveries?application=&destination=&status=&record=&since_ms=&until_ms=&limit=` | delivered batches, dead letters, destinations retrying |
//! | `GET /api/relay/records/{id}` | per destination: status (`delivered`, `no matching row`, `dead`, `replayed`, `retrying`, `pending`), data sent, the row (`row_is`: `written` as stored when the destination committed it at `committed_ms`, `refused` for a dead letter, `planned` otherwise) |
//! | `POST /api/relay/dead-letters/{destination}/{record}/replay` | 200 replayed; 422 refused again, with the error |
//!
//! Objects declared in the configuration file answer 409 to changes. Refusals are
//! `admin::ApiError`s; bodies, paths and queries are read with `admin::extract`.

use std::collections::BTreeMap;
use std::sync::Arc;

use admin::ApiError;
use admin::extract::{Json, Path, Query};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::batch::{self, RouteWrite};
use crate::catalog::{CatalogError, edit};
use crate::config::{DestinationSpec, RouteSpec};
use crate::deliver::Delivery;
use crate::deliveries::{self, Filter, Ids};
use crate::destination::Db;
use crate::objects::Objects;
use crate::record::Record;
use crate::status::State as DestState;

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        let status = match &e {
            CatalogError::NotFound(_) => StatusCode::NOT_FOUND,
            CatalogError::Conflict(_) | CatalogError::Declared(_) => StatusCode::CONFLICT,
            CatalogError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CatalogError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

/// The store failed: lintas's fault, not the caller's.
fn store(e: sqlx::Error) -> ApiError {
    ApiError::internal(format!("store: {e}"))
}

/// The stream cannot be read now; the caller may retry.
fn stream(e: backplane::BackplaneError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

type Answer = Result<Response, ApiError>;

fn find_application(
    relay: &Handles,
    name: &str,
) -> Result<Arc<crate::catalog::Application>, ApiError> {
    relay
        .objects
        .catalog()
        .application(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no application `{name}`")))
}

fn find_destination(
    relay: &Handles,
    name: &str,
) -> Result<Arc<crate::catalog::Destination>, ApiError> {
    relay
        .objects
        .catalog()
        .destination(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no destination `{name}`")))
}

/// What the admin routes reach: the objects they manage and the delivery side they report
/// on and steer (skips).
#[derive(Debug)]
pub(crate) struct Handles {
    /// Applications, destinations, routes; the store.
    pub objects: Arc<Objects>,
    /// Statuses, skips, the stream.
    pub delivery: Arc<Delivery>,
}

/// The routes; the admin listener adds authentication.
pub(crate) fn router(relay: Handles) -> Router {
    Router::new()
        .route("/api/relay", get(overview))
        .route("/api/relay/applications", post(create_application))
        .route("/api/relay/applications/{name}", delete(delete_application))
        .route("/api/relay/applications/{name}/rotate", post(rotate))
        .route("/api/relay/destinations", post(create_destination))
        .route(
            "/api/relay/destinations/{name}",
            delete(delete_destination).put(update_destination),
        )
        .route("/api/relay/destinations/{name}/schema", get(schema))
        .route("/api/relay/destinations/{name}/skip", post(skip))
        .route("/api/relay/routes", post(create_route))
        .route("/api/relay/routes/{id}", delete(delete_route))
        .route("/api/relay/deliveries", get(deliveries))
        .route("/api/relay/records/{id}", get(record))
        .route(
            "/api/relay/dead-letters/{destination}/{record}/replay",
            post(replay),
        )
        .with_state(Arc::new(relay))
}

async fn overview(State(relay): State<Arc<Handles>>) -> Answer {
    let catalog = relay.objects.catalog();
    let end = relay.delivery.stream.end().await.map_err(stream)?;
    let destinations: Vec<Value> = catalog
        .destinations()
        .map(|d| {
            let mut v = serde_json::to_value(d.as_ref()).unwrap_or_default();
            let status = relay.delivery.board.get(d.id);
            // Records on the stream this destination has not yet taken (delivered, skipped
            // or dead-lettered); unknown until its worker has read its position.
            v["backlog"] = json!(
                status
                    .as_ref()
                    .and_then(|s| s.next_offset)
                    .map(|next| end.saturating_sub(next))
            );
            v["status"] = serde_json::to_value(status).unwrap_or_default();
            v
        })
        .collect();
    Ok(Json(json!({
        "stream_end": end,
        "applications": catalog.applications().map(|a| a.as_ref()).collect::<Vec<_>>(),
        "destinations": destinations,
        "routes": catalog.routes().map(|r| r.as_ref()).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApplication {
    name: String,
}

async fn create_application(
    State(relay): State<Arc<Handles>>,
    Json(body): Json<NewApplication>,
) -> Answer {
    let key = edit::create_application(relay.objects.store().pool(), &body.name).await?;
    relay.objects.refresh().await.map_err(store)?;
    let app = relay.objects.catalog().application(&body.name).cloned();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "application": app, "key": key })),
    )
        .into_response())
}

async fn rotate(State(relay): State<Arc<Handles>>, Path(name): Path<String>) -> Answer {
    let app = find_application(&relay, &name)?;
    let key = edit::rotate_key(relay.objects.store().pool(), &app).await?;
    relay.objects.refresh().await.map_err(store)?;
    let app = relay.objects.catalog().application(&name).cloned();
    Ok(Json(json!({ "application": app, "key": key })).into_response())
}

async fn delete_application(State(relay): State<Arc<Handles>>, Path(name): Path<String>) -> Answer {
    let app = find_application(&relay, &name)?;
    edit::delete(
        relay.objects.store().pool(),
        "relay_applications",
        app.id,
        format!("application `{name}`"),
        app.declared,
    )
    .await?;
    relay.objects.refresh().await.map_err(store)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Connects to a destination and pings, or says why not.
async fn connect(
    relay: &Handles,
    spec: &DestinationSpec,
    stored: Option<&str>,
) -> Result<Db, ApiError> {
    let password = relay
        .objects
        .password_for(spec, stored)
        .map_err(|e| ApiError::unprocessable(format!("`{}`: {e}", spec.name)))?;
    let db = Db::connect(spec, password)
        .await
        .map_err(|e| ApiError::unprocessable(format!("cannot connect to `{}`: {e}", spec.name)))?;
    if let Err(e) = db.ping().await {
        db.close().await;
        return Err(ApiError::unprocessable(format!(
            "`{}` does not answer: {e}",
            spec.name
        )));
    }
    Ok(db)
}

/// The query of `POST /api/relay/destinations`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOptions {
    /// Check the spec and connect with it, save nothing: the console's "Test connection".
    #[serde(default)]
    dry_run: bool,
}

async fn create_destination(
    State(relay): State<Arc<Handles>>,
    Query(options): Query<CreateOptions>,
    Json(spec): Json<DestinationSpec>,
) -> Answer {
    if let Some((field, message)) = spec.problems().into_iter().next() {
        return Err(ApiError::unprocessable(format!("{field}: {message}")));
    }
    if options.dry_run {
        return test_destination(&relay, &spec).await;
    }
    if relay.objects.catalog().destination(&spec.name).is_some() {
        return Err(ApiError::conflict(format!(
            "destination `{}` exists",
            spec.name
        )));
    }
    refuse_password_env(&spec)?;
    connect(&relay, &spec, None).await?.close().await;
    let sealed = match &spec.password {
        Some(p) => Some(relay.objects.seal(p).map_err(ApiError::internal)?),
        None => None,
    };
    let start = relay.delivery.stream.end().await.map_err(stream)?;
    edit::create_destination(relay.objects.store().pool(), &spec, start, sealed).await?;
    relay.objects.refresh().await.map_err(store)?;
    let d = relay.objects.catalog().destination(&spec.name).cloned();
    Ok((StatusCode::CREATED, Json(json!(d))).into_response())
}

/// A destination sent to the API names its password, never an environment variable: whoever
/// holds the API need not be allowed to read this process's environment.
fn refuse_password_env(spec: &DestinationSpec) -> Result<(), ApiError> {
    match spec.password_env {
        Some(_) => Err(ApiError::unprocessable(
            "password_env: the admin API does not read environment variables; send the \
             password itself in password (it is stored encrypted)",
        )),
        None => Ok(()),
    }
}

/// `PUT /api/relay/destinations/{name}`: a new kind, URL, connection count or password
/// (without `password`, the stored one is kept, so the console never needs to show it).
/// Checked by connecting first, like a creation; `?dry_run=true` only checks. Its worker
/// reconnects with the new settings and goes on from the offset the database holds.
async fn update_destination(
    State(relay): State<Arc<Handles>>,
    Path(name): Path<String>,
    Query(options): Query<CreateOptions>,
    Json(spec): Json<DestinationSpec>,
) -> Answer {
    let d = find_destination(&relay, &name)?;
    if spec.name != name {
        return Err(ApiError::unprocessable(format!(
            "name: `{}` is not `{name}`; a destination cannot be renamed (create another)",
            spec.name
        )));
    }
    if let Some((field, message)) = spec.problems().into_iter().next() {
        return Err(ApiError::unprocessable(format!("{field}: {message}")));
    }
    if d.declared {
        return Err(CatalogError::Declared(format!("destination `{name}`")).into());
    }
    refuse_password_env(&spec)?;
    let stored = if spec.password.is_some() {
        None
    } else {
        d.password_enc.as_deref()
    };
    let db = connect(&relay, &spec, stored).await?;
    if options.dry_run {
        let tables = db.tables().await;
        db.close().await;
        return tested(&spec, tables);
    }
    db.close().await;
    let sealed = match &spec.password {
        Some(p) => Some(relay.objects.seal(p).map_err(ApiError::internal)?),
        None => None,
    };
    edit::update_destination(relay.objects.store().pool(), &d, &spec, sealed).await?;
    relay.objects.refresh().await.map_err(store)?;
    let d = relay.objects.catalog().destination(&name).cloned();
    Ok(Json(json!(d)).into_response())
}

/// `?dry_run=true`: connects as the destination would and lists the tables lintas can
/// see there, so a person can tell the connection works before saving it.
async fn test_destination(relay: &Handles, spec: &DestinationSpec) -> Answer {
    if spec.password_env.is_some() {
        return Err(ApiError::unprocessable(
            "password_env: the admin API does not read environment variables; send the \
             password itself in password",
        ));
    }
    let db = connect(relay, spec, None).await?;
    let tables = db.tables().await;
    db.close().await;
    tested(spec, tables)
}

/// The answer to a passing connection test: the tables lintas sees there.
fn tested(
    spec: &DestinationSpec,
    tables: Result<Vec<crate::destination::Table>, String>,
) -> Answer {
    let tables = tables.map_err(|e| {
        ApiError::unprocessable(format!(
            "`{}` answers but its tables cannot be read: {e}",
            spec.name
        ))
    })?;
    let names: Vec<String> = tables
        .iter()
        .map(|t| match &t.schema {
            Some(schema) => format!("{schema}.{}", t.name),
            None => t.name.clone(),
        })
        .collect();
    Ok(Json(json!({"ok": true, "destination": spec.name, "tables": names})).into_response())
}

async fn delete_destination(State(relay): State<Arc<Handles>>, Path(name): Path<String>) -> Answer {
    let d = find_destination(&relay, &name)?;
    edit::delete(
        relay.objects.store().pool(),
        "relay_destinations",
        d.id,
        format!("destination `{name}`"),
        d.declared,
    )
    .await?;
    relay.objects.refresh().await.map_err(store)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Skip {
    /// The record the caller saw the destination stuck on, so a skip asked for after it
    /// moved on does not drop the next record.
    record: u64,
}

async fn skip(
    State(relay): State<Arc<Handles>>,
    Path(name): Path<String>,
    Json(body): Json<Skip>,
) -> Answer {
    let d = find_destination(&relay, &name)?;
    let status = relay.delivery.board.get(d.id);
    let stuck = status
        .as_ref()
        .filter(|s| s.state == DestState::Down)
        .and_then(|s| s.next_offset);
    match stuck {
        Some(at) if at == body.record => {
            relay.delivery.skips.ask(d.id, at);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "destination": name, "record": at })),
            )
                .into_response())
        }
        Some(at) => Err(ApiError::conflict(format!(
            "destination `{name}` is stuck on record {at}, not {}",
            body.record
        ))),
        None => Err(ApiError::conflict(format!(
            "destination `{name}` is not stuck on a record (it is not down); nothing to skip"
        ))),
    }
}

async fn schema(State(relay): State<Arc<Handles>>, Path(name): Path<String>) -> Answer {
    let d = find_destination(&relay, &name)?;
    let db = connect(&relay, &d.spec, d.password_enc.as_deref()).await?;
    let tables = db.tables().await;
    db.close().await;
    let tables = tables.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("reading the schema of `{name}`: {e}"),
        )
    })?;
    Ok(Json(json!({ "destination": name, "tables": tables })).into_response())
}

async fn create_route(State(relay): State<Arc<Handles>>, Json(spec): Json<RouteSpec>) -> Answer {
    if let Some((field, message)) = spec.problems().into_iter().next() {
        return Err(ApiError::unprocessable(format!("{field}: {message}")));
    }
    let catalog = relay.objects.catalog();
    let app = catalog
        .application(&spec.application)
        .cloned()
        .ok_or_else(|| ApiError::unprocessable(format!("no application `{}`", spec.application)))?;
    let dest = catalog
        .destination(&spec.destination)
        .cloned()
        .ok_or_else(|| ApiError::unprocessable(format!("no destination `{}`", spec.destination)))?;
    drop(catalog);
    let db = connect(&relay, &dest.spec, dest.password_enc.as_deref()).await?;
    let table = db.table(spec.schema.as_deref(), &spec.table).await;
    db.close().await;
    let table = table
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("reading the schema: {e}")))?
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "`{}` has no table `{}`",
                dest.spec.name, spec.table
            ))
        })?;
    let probe = Arc::new(crate::catalog::Route {
        id: 0,
        application_id: app.id,
        destination_id: dest.id,
        key_fields: spec.key_fields(),
        spec: spec.clone(),
        declared: false,
    });
    RouteWrite::check(&probe, table)
        .map_err(|e| ApiError::unprocessable(format!("route {}: {e}", spec.label())))?;
    let id = edit::create_route(relay.objects.store().pool(), &app, &dest, &spec).await?;
    relay.objects.refresh().await.map_err(store)?;
    let route = relay.objects.catalog().route(id).cloned();
    Ok((StatusCode::CREATED, Json(json!(route))).into_response())
}

async fn delete_route(State(relay): State<Arc<Handles>>, Path(id): Path<i64>) -> Answer {
    let r = relay
        .objects
        .catalog()
        .route(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no route {id}")))?;
    edit::delete(
        relay.objects.store().pool(),
        "relay_routes",
        id,
        format!("route {id}"),
        r.declared,
    )
    .await?;
    relay.objects.refresh().await.map_err(store)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn ids(relay: &Handles, f: &Filter) -> Result<Ids, ApiError> {
    let application = match &f.application {
        Some(n) => Some(find_application(relay, n)?.id),
        None => None,
    };
    let destination = match &f.destination {
        Some(n) => Some(find_destination(relay, n)?.id),
        None => None,
    };
    Ok(Ids {
        application,
        destination,
    })
}

/// `v` as JSON text, kept as it is when put into a larger answer.
fn raw<T: serde::Serialize + ?Sized>(v: &T) -> Result<Box<RawValue>, ApiError> {
    serde_json::value::to_raw_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

async fn deliveries(State(relay): State<Arc<Handles>>, Query(f): Query<Filter>) -> Answer {
    let ids = ids(&relay, &f)?;
    let status = f.status.as_deref();
    if let Some(s) = status
        && !matches!(s, "delivered" | "retrying" | "dead")
    {
        return Err(ApiError::bad_request(format!(
            "status `{s}`: expected delivered, retrying or dead"
        )));
    }
    // Each part serialized as it is: a dead letter's `data_sent` is the record's own JSON
    // text, which a round trip through `Value` could change (decimals beyond `f64`).
    let mut out: BTreeMap<&str, Box<RawValue>> = BTreeMap::new();
    if status.is_none_or(|s| s == "delivered") {
        let batches = deliveries::batches(&relay.objects, &ids, &f)
            .await
            .map_err(store)?;
        out.insert("delivered", raw(&batches)?);
    }
    if status.is_none_or(|s| s == "dead") {
        let dead = deliveries::dead(&relay.objects, &ids, &f)
            .await
            .map_err(store)?;
        out.insert("dead", raw(&dead)?);
    }
    if status.is_none_or(|s| s == "retrying") {
        let end = relay.delivery.stream.end().await.map_err(stream)?;
        let retrying: Vec<Value> = relay
            .delivery
            .board
            .all()
            .into_iter()
            .filter(|s| s.state != DestState::Up)
            .filter(|s| f.destination.as_ref().is_none_or(|d| *d == s.destination))
            .map(|s| {
                json!({
                    "destination": s.destination,
                    "from_id": s.next_offset,
                    "waiting": s.next_offset.map(|n| end.saturating_sub(n)),
                    "attempts": s.attempts,
                    "last_error": s.last_error,
                    "since_ms": s.since_ms,
                })
            })
            .collect();
        out.insert("retrying", raw(&retrying)?);
    }
    Ok(Json(out).into_response())
}

async fn record(State(relay): State<Arc<Handles>>, Path(id): Path<u64>) -> Answer {
    let entries = relay
        .delivery
        .stream
        .read(id, 1)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let entry = entries
        .into_iter()
        .find(|e| e.offset == id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no record {id} in the stream (never stored, or trimmed after delivery)"
            ))
        })?;
    let rec = Record::decode(&entry.payload).map_err(|e| ApiError::internal(e.to_string()))?;
    // As sent, byte for byte: through `Value`, decimals beyond `f64` would be rounded.
    let data: &RawValue =
        serde_json::from_slice(&rec.json).map_err(|e| ApiError::internal(e.to_string()))?;
    let catalog = relay.objects.catalog();
    let filter = Filter {
        record: Some(id),
        ..Filter::default()
    };
    let dead = deliveries::dead(
        &relay.objects,
        &Ids {
            application: catalog.application(&rec.application).map(|a| a.id),
            destination: None,
        },
        &filter,
    )
    .await
    .map_err(store)?;
    let mut per_destination = Vec::new();
    let app_id = catalog.application(&rec.application).map_or(-1, |a| a.id);
    let mut written: BTreeMap<i64, std::collections::HashMap<i64, (Value, i64)>> = BTreeMap::new();
    for dest in catalog.destinations() {
        let rows = deliveries::written_rows(&relay.objects, dest.id, id)
            .await
            .map_err(store)?;
        written.insert(dest.id, rows);
    }
    for route in catalog.routes_from(app_id) {
        let status = relay.delivery.board.get(route.destination_id);
        let dead_letter = dead
            .iter()
            .find(|d| d.route_id == route.id && d.record_id == id);
        let state = match (&dead_letter, &status) {
            (Some(d), _) => d.status.clone(),
            (None, Some(s)) if s.next_offset.is_some_and(|n| n > id) => {
                if deliveries::was_unmatched(&relay.objects, route.destination_id, id, route.id)
                    .await
                    .map_err(store)?
                {
                    "no matching row".into()
                } else {
                    "delivered".into()
                }
            }
            (None, Some(s)) if s.state == DestState::Down => "retrying".into(),
            _ => "pending".into(),
        };
        let stored = written
            .get(&route.destination_id)
            .and_then(|rows| rows.get(&route.id));
        // The row as written and when its destination committed it, from the delivery log;
        // a dead letter's row as lintas tried to write it; otherwise (pending, or delivered
        // before the log kept rows) the row today's route makes of the record.
        let (row, row_is, committed_ms) = match (dead_letter, stored) {
            (Some(d), _) => (Some(d.row.clone()), "refused", None),
            (None, Some((row, at))) if state == "delivered" => {
                (Some(row.clone()), "written", Some(*at))
            }
            _ => {
                let b = batch::build(std::slice::from_ref(route), std::slice::from_ref(&entry));
                (
                    b.items.first().map(|item| Value::Object(item.row(route))),
                    "planned",
                    None,
                )
            }
        };
        per_destination.push(json!({
            "destination": route.spec.destination,
            "route_id": route.id,
            "table": route.spec.table,
            "operation": crate::config::operation::name(route.spec.operation),
            "status": state,
            "row": row,
            "row_is": row_is,
            "committed_ms": committed_ms,
            "error": dead_letter.map(|d| d.error.clone()),
            "attempts": status.as_ref().filter(|_| state == "retrying").map(|s| s.attempts),
            "last_error": status.as_ref().filter(|_| state == "retrying").and_then(|s| s.last_error.clone()),
        }));
    }
    // Rows written through routes deleted since: what the destination got, all the same.
    for (destination_id, rows) in &written {
        for (route_id, (row, at)) in rows {
            if catalog.route(*route_id).is_none() {
                per_destination.push(json!({
                    "destination": catalog.destination_by_id(*destination_id).map(|d| d.spec.name.clone()),
                    "route_id": route_id,
                    "table": null,
                    "operation": null,
                    "status": "delivered",
                    "row": row,
                    "row_is": "written",
                    "committed_ms": at,
                    "error": null,
                    "attempts": null,
                    "last_error": null,
                }));
            }
        }
    }
    Ok(Json(RecordView {
        id,
        application: &rec.application,
        received_ms: rec.received_ms,
        data_sent: data,
        deliveries: per_destination,
    })
    .into_response())
}

/// `GET /api/relay/records/{id}`.
#[derive(serde::Serialize)]
struct RecordView<'a> {
    id: u64,
    application: &'a str,
    received_ms: u64,
    data_sent: &'a RawValue,
    deliveries: Vec<Value>,
}

async fn replay(
    State(relay): State<Arc<Handles>>,
    Path((destination, record)): Path<(String, u64)>,
) -> Answer {
    let dest = find_destination(&relay, &destination)?;
    let filter = Filter {
        record: Some(record),
        ..Filter::default()
    };
    let letters = deliveries::dead(
        &relay.objects,
        &Ids {
            application: None,
            destination: Some(dest.id),
        },
        &filter,
    )
    .await
    .map_err(store)?;
    if letters.is_empty() {
        return Err(ApiError::not_found(format!(
            "no dead letter for record {record} at `{destination}`"
        )));
    }
    let db = connect(&relay, &dest.spec, dest.password_enc.as_deref()).await?;
    let result = crate::replay::replay(&relay.objects, &dest, &db, record, &letters).await;
    db.close().await;
    match result {
        Ok(replayed) => Ok(Json(json!({ "replayed": replayed })).into_response()),
        Err(e) => Err(ApiError::unprocessable(e)),
    }
}
