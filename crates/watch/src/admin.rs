//! Watch's part of the admin API, behind the admin listener's authentication; its pages
//! are the console's (`crates/console`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /dashboard` | 303 to the console's host page (`/console#/watch/host`), where the graphs moved |
//! | `GET /api/watch` | targets down, pauses, targets watch checks, host info |
//! | `GET /api/watch/metrics?since_ms=` | host samples (default: the last hour): stored per-minute and quarter-hour means before the raw samples in memory |
//! | `GET /api/watch/top?n=` | the busiest processes (default 10) |
//! | `GET /api/watch/alerts?limit=` | the alert log, newest first |
//! | `GET /api/watch/history?target=&limit=` | state changes, newest first |
//! | `POST /api/watch/targets` `TargetConfig` | 201; 422 for an invalid target, 409 for a taken name |
//! | `GET /api/watch/targets/{name}/checks` | its latest checks (`at_ms`, `ms`, `ok`), oldest first, for the response-time graph; 404 for a target watch does not check |
//! | `DELETE /api/watch/targets/{name}` | 204; 409 for a target declared in the file |
//! | `POST /api/watch/silences` `{"pattern", "duration"}` | 201 |
//! | `DELETE /api/watch/silences?pattern=` | 204; 404 when no silence has that pattern |
//! | `GET /api/watch/people` | everyone who talked to the bot: registration, access, admin |
//! | `POST /api/watch/people/{chat}/approve` | 200: they get alerts (told through the bot, like `/approve`); 404, 409 when not registered |
//! | `POST /api/watch/people/{chat}/revoke` | 200: turned away (told, like `/deny`); 409 for an admin of the file |
//!
//! Refusals are `admin::ApiError`s; bodies, paths and queries are read with
//! `admin::extract`, so an unknown target `kind` is a 422 in the JSON error shape.

use std::sync::Arc;

use admin::ApiError;
use admin::extract::{Json, Path, Query};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::bot::users::{self, Access, User};
use crate::engine::Pause;
use crate::{TargetConfig, TargetError, Watch, now_ms};

/// The routes, with the watch as state.
pub fn router(watch: Arc<Watch>) -> Router {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::to("/console#/watch/host") }),
        )
        .route("/api/watch", get(overview))
        .route("/api/watch/metrics", get(metrics))
        .route("/api/watch/top", get(top))
        .route("/api/watch/alerts", get(alerts))
        .route("/api/watch/history", get(history))
        .route("/api/watch/targets", post(add_target))
        .route("/api/watch/targets/{name}", delete(remove_target))
        .route("/api/watch/targets/{name}/checks", get(check_times))
        .route("/api/watch/silences", post(silence).delete(unsilence))
        .route("/api/watch/people", get(people))
        .route("/api/watch/people/{chat}/approve", post(approve))
        .route("/api/watch/people/{chat}/revoke", post(revoke))
        .with_state(watch)
}

async fn overview(State(w): State<Arc<Watch>>) -> Json<Value> {
    let down: Vec<Value> = w
        .down()
        .into_iter()
        .map(|(target, since_ms)| json!({"target": target, "since_ms": since_ms}))
        .collect();
    let targets: Vec<Value> = w
        .targets()
        .into_iter()
        .map(|(t, declared)| {
            let mut v = serde_json::to_value(t).unwrap_or_default();
            v["declared"] = json!(declared);
            v
        })
        .collect();
    Json(json!({
        "down": down,
        "pauses": w.pauses(),
        "targets": targets,
        "host": w.metrics().info(),
    }))
}

#[derive(Deserialize)]
struct Since {
    since_ms: Option<i64>,
}

async fn metrics(State(w): State<Arc<Watch>>, Query(q): Query<Since>) -> Json<Value> {
    let since = q.since_ms.unwrap_or_else(|| now_ms() - 3_600_000);
    Json(json!({"host": w.metrics().info(), "samples": w.metrics().since(since)}))
}

#[derive(Deserialize)]
struct Count {
    n: Option<usize>,
}

async fn top(State(w): State<Arc<Watch>>, Query(q): Query<Count>) -> Json<Value> {
    Json(json!({"processes": w.metrics().top(q.n.unwrap_or(10).min(100)).await}))
}

#[derive(Deserialize)]
struct Log {
    target: Option<String>,
    limit: Option<u32>,
}

async fn alerts(State(w): State<Arc<Watch>>, Query(q): Query<Log>) -> Response {
    log_query(
        &w,
        &q,
        "alerts",
        "SELECT at_ms, target, kind, channel, recipient, text, status, attempts, error FROM watch_alerts
         WHERE (?1 IS NULL OR target = ?1) ORDER BY rowid DESC LIMIT ?2",
        |r| {
            json!({
                "at_ms": r.get::<i64, _>(0), "target": r.get::<String, _>(1),
                "kind": r.get::<Option<String>, _>(2), "channel": r.get::<String, _>(3),
                "recipient": r.get::<String, _>(4), "text": r.get::<String, _>(5),
                "status": r.get::<String, _>(6), "attempts": r.get::<i64, _>(7),
                "error": r.get::<Option<String>, _>(8),
            })
        },
    )
    .await
}

async fn history(State(w): State<Arc<Watch>>, Query(q): Query<Log>) -> Response {
    log_query(
        &w,
        &q,
        "history",
        "SELECT at_ms, target, detail, up, reason FROM watch_transitions
         WHERE (?1 IS NULL OR target = ?1) ORDER BY rowid DESC LIMIT ?2",
        |r| {
            json!({
                "at_ms": r.get::<i64, _>(0), "target": r.get::<String, _>(1),
                "detail": r.get::<String, _>(2), "up": r.get::<bool, _>(3),
                "reason": r.get::<String, _>(4),
            })
        },
    )
    .await
}

/// Runs a log query taking (target, limit) and answers `{key: [rows as JSON]}`.
async fn log_query(
    w: &Watch,
    q: &Log,
    key: &str,
    sql: &str,
    row: impl Fn(&sqlx::sqlite::SqliteRow) -> Value,
) -> Response {
    let rows = sqlx::query(sql)
        .bind(&q.target)
        .bind(i64::from(q.limit.unwrap_or(100).min(1000)))
        .fetch_all(w.store().pool())
        .await;
    match rows {
        Ok(rows) => {
            let list: Vec<Value> = rows.iter().map(row).collect();
            Json(json!({ key: list })).into_response()
        }
        Err(e) => ApiError::internal(format!("store: {e}")).into_response(),
    }
}

fn target_error(e: TargetError) -> Response {
    let status = match e {
        TargetError::Invalid(..) => StatusCode::UNPROCESSABLE_ENTITY,
        TargetError::Exists(_) | TargetError::Declared(_) => StatusCode::CONFLICT,
        TargetError::NotFound(_) => StatusCode::NOT_FOUND,
        TargetError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string()).into_response()
}

/// Reads the target from the JSON value rather than the body text, so a refusal is the
/// target's own message (`address: a tcp target needs …`), not serde's position in the body.
async fn add_target(State(w): State<Arc<Watch>>, Json(v): Json<Value>) -> Response {
    let t = match serde_json::from_value::<TargetConfig>(v) {
        Ok(t) => t,
        Err(e) => return ApiError::unprocessable(e.to_string()).into_response(),
    };
    match w.add_target(t.clone()).await {
        Ok(()) => (StatusCode::CREATED, Json(json!(t))).into_response(),
        Err(e) => target_error(e),
    }
}

async fn remove_target(State(w): State<Arc<Watch>>, Path(name): Path<String>) -> Response {
    match w.remove_target(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => target_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Silence {
    pattern: String,
    duration: String,
}

async fn silence(State(w): State<Arc<Watch>>, Json(s): Json<Silence>) -> Response {
    let d = match configkit::parse_duration(&s.duration) {
        Ok(d) => d,
        Err(e) => return ApiError::unprocessable(format!("duration: {e}")).into_response(),
    };
    let now = now_ms();
    let pause = Pause {
        pattern: s.pattern,
        from_ms: now,
        until_ms: now + d.as_millis() as i64,
        reason: "silence from the admin API".into(),
    };
    w.pause(pause.clone());
    (StatusCode::CREATED, Json(json!(pause))).into_response()
}

#[derive(Deserialize)]
struct Pattern {
    pattern: String,
}

async fn unsilence(State(w): State<Arc<Watch>>, Query(p): Query<Pattern>) -> Response {
    match w.unpause(&p.pattern) {
        0 => ApiError::not_found(format!("no silence for `{}`", p.pattern)).into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// A person as the admin API shows them (their email is the operator's to see: alerts go
/// there).
fn person(u: &User, file_admins: &[i64]) -> Value {
    json!({
        "chat_id": u.chat_id,
        "name": u.name,
        "email": u.email,
        "email_confirmed": u.email_confirmed,
        "registered": u.registered(),
        "access": u.access.as_str(),
        "admin": u.admin || file_admins.contains(&u.chat_id),
        "admin_in_file": file_admins.contains(&u.chat_id),
        "muted_until_ms": u.muted_until_ms,
    })
}

async fn people(State(w): State<Arc<Watch>>) -> Response {
    match users::all(w.store()).await {
        Ok(list) => {
            let list: Vec<Value> = list.iter().map(|u| person(u, w.file_admins())).collect();
            Json(json!({ "people": list })).into_response()
        }
        Err(e) => ApiError::internal(format!("store: {e}")).into_response(),
    }
}

/// The person with `chat`, or the API's 404.
async fn find_person(w: &Watch, chat: i64) -> Result<User, ApiError> {
    users::get(w.store(), chat)
        .await
        .map_err(|e| ApiError::internal(format!("store: {e}")))?
        .ok_or_else(|| ApiError::not_found(format!("nobody with chat id {chat} talked to the bot")))
}

/// Sets a person's access and tells them; answers the person as they are now.
async fn set_access(w: &Watch, u: &User, access: Access, told: &str) -> Response {
    if let Err(e) = users::set_access(w.store(), u.chat_id, access).await {
        return ApiError::internal(format!("store: {e}")).into_response();
    }
    let notified = w.tell(u.chat_id, told).await;
    match find_person(w, u.chat_id).await {
        Ok(now) => Json(json!({"person": person(&now, w.file_admins()), "notified": notified}))
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn approve(State(w): State<Arc<Watch>>, Path(chat): Path<i64>) -> Response {
    let u = match find_person(&w, chat).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    if !u.registered() {
        return ApiError::conflict(format!(
            "{} has not finished registering (name and email); approve them once they have",
            u.label()
        ))
        .into_response();
    }
    set_access(
        &w,
        &u,
        Access::Approved,
        "An admin approved you in the console: you get alerts now. /help lists what you can ask.",
    )
    .await
}

async fn revoke(State(w): State<Arc<Watch>>, Path(chat): Path<i64>) -> Response {
    if w.file_admins().contains(&chat) {
        return ApiError::conflict(format!(
            "{chat} is an admin in the configuration file (watch.telegram.admins); remove it there"
        ))
        .into_response();
    }
    let u = match find_person(&w, chat).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    set_access(&w, &u, Access::Denied, crate::bot::DENIED).await
}

async fn check_times(State(w): State<Arc<Watch>>, Path(name): Path<String>) -> Response {
    match w.check_times(&name) {
        Some(checks) => Json(json!({"target": name, "checks": checks})).into_response(),
        None => ApiError::not_found(format!(
            "watch checks no target `{name}` itself (pool backends are checked by the proxy)"
        ))
        .into_response(),
    }
}
