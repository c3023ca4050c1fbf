//! Replaying dead letters after a fix (a widened column, a loosened constraint, a corrected
//! route): each is written again through its route as it is now, in its own transaction.
//!
//! A replay does not move the destination's stream offset (the record is already behind
//! it); a dead letter that succeeds is marked `replayed` and keeps its history.

use backplane::Entry;
use bytes::Bytes;

use crate::batch::{self, RouteWrite};
use crate::catalog::{Destination, now_ms};
use crate::deliveries::DeadLetter;
use crate::destination::{ApplyError, Db, Failure};
use crate::objects::Objects;
use crate::record::Record;

/// Replays the dead letters of `record` at `dest`; returns how many were written.
pub(crate) async fn replay(
    objects: &Objects,
    dest: &Destination,
    db: &Db,
    record: u64,
    letters: &[DeadLetter],
) -> Result<usize, String> {
    let mut done = 0;
    for letter in letters.iter().filter(|l| l.status == "dead") {
        let route = objects
            .catalog()
            .route(letter.route_id)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "route {} no longer exists; create a route and replay again",
                    letter.route_id
                )
            })?;
        let table = db
            .table(route.spec.schema.as_deref(), &route.spec.table)
            .await?
            .ok_or_else(|| {
                format!(
                    "route {}: table `{}` does not exist",
                    route.spec.label(),
                    route.spec.table
                )
            })?;
        let rw = RouteWrite::check(&route, table)
            .map_err(|e| format!("route {}: {e}", route.spec.label()))?;
        let entry = Entry {
            offset: record,
            payload: Record {
                application: route.spec.application.clone(),
                received_ms: now_ms() as u64,
                idempotency: None,
                json: Bytes::copy_from_slice(letter.data_sent.get().as_bytes()),
            }
            .encode(),
        };
        let b = batch::build(std::slice::from_ref(&rw), &[entry]);
        if let Some(r) = b.rejected.first() {
            return Err(r.reason.clone());
        }
        let execs = batch::statements(db.dialect(), std::slice::from_ref(&rw), &b, true)
            .map_err(|e| e.to_string())?;
        match db.execute(&execs).await {
            Ok(()) => {}
            Err(ApplyError::Statement {
                failure: Failure::Record(m) | Failure::Statement(m),
                ..
            }) => {
                return Err(format!("the database refused the record again: {m}"));
            }
            Err(e) => return Err(e.message().to_owned()),
        }
        sqlx::query(
            "UPDATE relay_dead_letters SET status = 'replayed', at_ms = ? WHERE destination_id = ? AND record_offset = ? AND route_id = ?",
        )
        .bind(now_ms())
        .bind(dest.id)
        .bind(record as i64)
        .bind(letter.route_id)
        .execute(objects.store().pool())
        .await
        .map_err(|e| format!("written, but the dead letter could not be marked: {e}"))?;
        done += 1;
    }
    Ok(done)
}
