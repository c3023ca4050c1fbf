//! The delivery log: what reached each destination, what is waiting, what was refused.
//!
//! Successes are logged per batch and application (offset range, record and row counts,
//! time), one row per batch however many records it carried, so logging never caps
//! delivery; a record's own status is found by which range holds its offset. Refused
//! records are dead letters, logged in full: the data sent, the row lintas tried to write
//! and the database's error. Both are kept for `retention`.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use tracing::warn;

use crate::batch::{Batch, RouteWrite};
use crate::catalog::{Catalog, Destination, now_ms};
use crate::objects::Objects;

/// Rows of the delivery log written per `INSERT` (5 parameters each, well under SQLite's
/// limit of 32766), so a batch of a thousand records costs a few statements, not thousands.
const ROWS_PER_INSERT: usize = 200;

/// Notes a committed batch: one entry per application, and the row each record wrote
/// through each route, in one transaction of the store. `missing` holds, per application,
/// the rows its updates and deletes did not find. A failure here is logged and otherwise
/// ignored: the rows are in the destination, and the log is a record, not the truth.
pub(crate) async fn record_batch(
    objects: &Objects,
    dest: &Destination,
    routes: &[RouteWrite],
    batch: &Batch,
    missing: &HashMap<String, u64>,
) {
    if let Err(e) = write_batch_log(objects, dest, routes, batch, missing).await {
        warn!(error = %e, "cannot write the relay delivery log");
    }
}

async fn write_batch_log(
    objects: &Objects,
    dest: &Destination,
    routes: &[RouteWrite],
    batch: &Batch,
    missing: &HashMap<String, u64>,
) -> Result<(), sqlx::Error> {
    let mut ranges: HashMap<&str, (u64, u64)> = HashMap::new();
    for (offset, record) in &batch.records {
        let r = ranges
            .entry(record.application.as_str())
            .or_insert((*offset, *offset));
        r.0 = r.0.min(*offset);
        r.1 = r.1.max(*offset);
    }
    let now = now_ms();
    let catalog = objects.catalog();
    let mut tx = objects.store().pool().begin().await?;
    for (app, (records, rows)) in &batch.per_application {
        let (Some((first, last)), Some(app)) = (ranges.get(app.as_str()), catalog.application(app))
        else {
            continue;
        };
        sqlx::query(
            "INSERT INTO relay_batches (destination_id, application_id, first_offset, last_offset, records, rows, at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(dest.id)
        .bind(app.id)
        .bind(*first as i64)
        .bind(*last as i64)
        .bind(*records as i64)
        .bind(rows.saturating_sub(missing.get(app.name.as_str()).copied().unwrap_or(0)) as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for chunk in batch.items.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO relay_rows (destination_id, record_offset, route_id, row_values, at_ms) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?)"
            });
        }
        // A record delivered again (after a crash between the commit and this log) keeps
        // its first entry.
        sql.push_str(" ON CONFLICT (destination_id, record_offset, route_id) DO NOTHING");
        let mut query = sqlx::query(&sql);
        for item in chunk {
            let route = &routes[item.route].route;
            query = query
                .bind(dest.id)
                .bind(item.offset as i64)
                .bind(route.id)
                .bind(Value::Object(item.row(route)).to_string())
                .bind(now);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// The rows `offset` wrote at `destination` as they were written, by route id, with when
/// the destination committed them.
pub(crate) async fn written_rows(
    objects: &Objects,
    destination: i64,
    offset: u64,
) -> Result<HashMap<i64, (Value, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT route_id, row_values, at_ms FROM relay_rows WHERE destination_id = ? AND record_offset = ?",
    )
    .bind(destination)
    .bind(offset as i64)
    .fetch_all(objects.store().pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let text: String = r.get(1);
            (
                r.get::<i64, _>(0),
                (serde_json::from_str(&text).unwrap_or(Value::Null), r.get(2)),
            )
        })
        .collect())
}

/// Notes the batch items (`items`) whose update or delete matched no row, so the record
/// shows "no matching row"; like [`record_batch`], a failure is only logged.
pub(crate) async fn record_unmatched(
    objects: &Objects,
    dest: &Destination,
    routes: &[RouteWrite],
    batch: &Batch,
    items: &[usize],
) {
    let now = now_ms();
    for &i in items {
        let item = &batch.items[i];
        let r = sqlx::query(
            "INSERT INTO relay_unmatched (destination_id, record_offset, route_id, at_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (destination_id, record_offset, route_id) DO UPDATE SET at_ms = excluded.at_ms",
        )
        .bind(dest.id)
        .bind(item.offset as i64)
        .bind(routes[item.route].route.id)
        .bind(now)
        .execute(objects.store().pool())
        .await;
        if let Err(e) = r {
            warn!(error = %e, "cannot write the relay delivery log");
        }
    }
}

/// Whether the record at `offset` matched no row through `route` at `destination`.
pub(crate) async fn was_unmatched(
    objects: &Objects,
    destination: i64,
    offset: u64,
    route: i64,
) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM relay_unmatched WHERE destination_id = ? AND record_offset = ? AND route_id = ?",
    )
    .bind(destination)
    .bind(offset as i64)
    .bind(route)
    .fetch_optional(objects.store().pool())
    .await?;
    Ok(found.is_some())
}

/// Stores dead letters `(offset, route id, error, batch item)`; durable before it returns.
pub(crate) async fn dead_letters(
    objects: &Objects,
    dest: &Destination,
    batch: &Batch,
    refused: &[(u64, i64, String, Option<usize>)],
) -> Result<(), String> {
    let catalog = objects.catalog();
    let mut tx = objects
        .store()
        .pool()
        .begin()
        .await
        .map_err(|e| e.to_string())?;
    for (offset, route_id, error, item) in refused {
        let Some(record) = batch.records.get(offset) else {
            continue;
        };
        let row = match (item, catalog.route(*route_id)) {
            (Some(i), Some(route)) => batch.items[*i].row(route),
            _ => Map::new(),
        };
        warn!(destination = %dest.spec.name, offset, route = route_id, %error, "record dead-lettered");
        sqlx::query(
            "INSERT INTO relay_dead_letters (destination_id, record_offset, application_id, route_id, error, data_sent, row_values, status, at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'dead', ?)
             ON CONFLICT (destination_id, record_offset, route_id) DO UPDATE SET error = excluded.error, status = 'dead', at_ms = excluded.at_ms",
        )
        .bind(dest.id)
        .bind(*offset as i64)
        .bind(catalog.application(&record.application).map_or(0, |a| a.id))
        .bind(route_id)
        .bind(error)
        .bind(String::from_utf8_lossy(&record.json).into_owned())
        .bind(Value::Object(row).to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// A logged batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchEntry {
    /// Destination name.
    pub destination: String,
    /// Application name.
    pub application: String,
    /// First record offset.
    pub first_id: u64,
    /// Last record offset.
    pub last_id: u64,
    /// Records of the application in the batch.
    pub records: u64,
    /// Rows written for them.
    pub rows: u64,
    /// When it committed (ms since the Unix epoch).
    pub at_ms: i64,
}

/// A dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Destination name.
    pub destination: String,
    /// Application name.
    pub application: String,
    /// The record's id (stream offset).
    pub record_id: u64,
    /// The route that tried to write it.
    pub route_id: i64,
    /// The database's error.
    pub error: String,
    /// The record as the application sent it, byte for byte: replay writes it again, so it
    /// must not pass through `Value` (which rounds decimals beyond `f64`).
    pub data_sent: Box<serde_json::value::RawValue>,
    /// The row lintas tried to write.
    pub row: Value,
    /// `dead` or `replayed`.
    pub status: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
}

/// Filters of a delivery-log query; all optional.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Application name.
    pub application: Option<String>,
    /// Destination name.
    pub destination: Option<String>,
    /// delivered, retrying or dead.
    pub status: Option<String>,
    /// A record id.
    pub record: Option<u64>,
    /// From this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Until this time.
    pub until_ms: Option<i64>,
    /// Most rows returned (default 100, at most 1000).
    pub limit: Option<u32>,
}

pub(crate) struct Ids {
    pub application: Option<i64>,
    pub destination: Option<i64>,
}

/// Delivered batches matching `f`, newest first.
pub(crate) async fn batches(
    objects: &Objects,
    ids: &Ids,
    f: &Filter,
) -> Result<Vec<BatchEntry>, sqlx::Error> {
    let rows = filtered(
        objects,
        ids,
        f,
        "SELECT destination_id, application_id, first_offset, last_offset, records, rows, at_ms FROM relay_batches
         WHERE (?1 IS NULL OR application_id = ?1) AND (?2 IS NULL OR destination_id = ?2)
           AND (?3 IS NULL OR (first_offset <= ?3 AND last_offset >= ?3))
           AND (?4 IS NULL OR at_ms >= ?4) AND (?5 IS NULL OR at_ms <= ?5)
         ORDER BY at_ms DESC, first_offset DESC LIMIT ?6",
    )
    .await?;
    let catalog = objects.catalog();
    Ok(rows
        .iter()
        .map(|r| BatchEntry {
            destination: destination_name(&catalog, r.get(0)),
            application: application_name(&catalog, r.get(1)),
            first_id: r.get::<i64, _>(2) as u64,
            last_id: r.get::<i64, _>(3) as u64,
            records: r.get::<i64, _>(4) as u64,
            rows: r.get::<i64, _>(5) as u64,
            at_ms: r.get(6),
        })
        .collect())
}

/// Dead letters matching `f`, newest first.
pub(crate) async fn dead(
    objects: &Objects,
    ids: &Ids,
    f: &Filter,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows = filtered(
        objects,
        ids,
        f,
        "SELECT destination_id, application_id, record_offset, route_id, error, data_sent, row_values, status, at_ms
         FROM relay_dead_letters
         WHERE (?1 IS NULL OR application_id = ?1) AND (?2 IS NULL OR destination_id = ?2)
           AND (?3 IS NULL OR record_offset = ?3)
           AND (?4 IS NULL OR at_ms >= ?4) AND (?5 IS NULL OR at_ms <= ?5)
         ORDER BY at_ms DESC, record_offset DESC LIMIT ?6",
    )
    .await?;
    let catalog = objects.catalog();
    Ok(rows
        .iter()
        .map(|r| {
            let json = |s: String| serde_json::from_str(&s).unwrap_or(Value::String(s));
            let raw = |s: String| {
                serde_json::value::RawValue::from_string(s.clone()).unwrap_or_else(|_| {
                    serde_json::value::to_raw_value(&s).unwrap_or_else(|_| Default::default())
                })
            };
            DeadLetter {
                destination: destination_name(&catalog, r.get(0)),
                application: application_name(&catalog, r.get(1)),
                record_id: r.get::<i64, _>(2) as u64,
                route_id: r.get(3),
                error: r.get(4),
                data_sent: raw(r.get(5)),
                row: json(r.get(6)),
                status: r.get(7),
                at_ms: r.get(8),
            }
        })
        .collect())
}

/// Runs a log query whose parameters are, in order: application id, destination id,
/// record id, since, until, limit.
async fn filtered(
    objects: &Objects,
    ids: &Ids,
    f: &Filter,
    sql: &str,
) -> Result<Vec<sqlx::sqlite::SqliteRow>, sqlx::Error> {
    sqlx::query(sql)
        .bind(ids.application)
        .bind(ids.destination)
        .bind(f.record.map(|r| r as i64))
        .bind(f.since_ms)
        .bind(f.until_ms)
        .bind(i64::from(f.limit.unwrap_or(100).min(1000)))
        .fetch_all(objects.store().pool())
        .await
}

/// A destination's name, or `#id` once it is deleted.
fn destination_name(catalog: &Catalog, id: i64) -> String {
    catalog
        .destination_by_id(id)
        .map_or_else(|| format!("#{id}"), |d| d.spec.name.clone())
}

/// An application's name, or `#id` once it is deleted.
fn application_name(catalog: &Catalog, id: i64) -> String {
    catalog
        .application_by_id(id)
        .map_or_else(|| format!("#{id}"), |a| a.name.clone())
}

/// Deletes log rows and dead letters older than `retention`.
pub(crate) async fn prune(store: &store::Store, retention: Duration) -> Result<(), sqlx::Error> {
    let cutoff = now_ms() - retention.as_millis() as i64;
    for table in [
        "relay_batches",
        "relay_dead_letters",
        "relay_unmatched",
        "relay_rows",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE at_ms < ?"))
            .bind(cutoff)
            .execute(store.pool())
            .await?;
    }
    Ok(())
}
