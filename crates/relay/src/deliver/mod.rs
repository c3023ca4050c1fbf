//! Delivery: one worker per destination, reading the stream in order and writing batches.
//!
//! A worker owns its destination's connections and nothing else, so a slow or dead database
//! only ever holds up its own records. While the destination is down the worker retries with
//! exponential backoff (`retry_min` doubling to `retry_max`); while it is idle it pings every
//! `heartbeat`, so an outage is announced before records pile up. It resumes from the
//! offset the destination itself recorded (see [`crate::destination`]), which is what makes
//! delivery exactly-once in effect.

pub mod batch;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::Destination;
use crate::deliveries;
use crate::destination::{Applied, ApplyError, Db};
use crate::service::Relay;
use crate::status::{RelayEvent, State};
use batch::{Batch, RouteWrite};

/// Why a session with the destination ended.
enum End {
    /// Shutdown, or the destination was removed.
    Stop,
    /// The destination failed; retry after a pause.
    Failed(String),
    /// Another node holds the destination now (the lease could not be renewed in time).
    LeaseLost,
}

/// Runs the worker for `dest` until `cancel`. On a shared stream the worker first waits
/// for the destination's lease, so one node of the cluster delivers to it at a time.
pub async fn run(relay: Arc<Relay>, dest: Arc<Destination>, cancel: CancellationToken) {
    let mut attempt: u32 = 0;
    loop {
        if let Some(ttl) = relay.lease()
            && !acquire(&relay, &dest, ttl, &cancel).await
        {
            return;
        }
        let end = match tokio::select! {
            _ = cancel.cancelled() => End::Stop,
            db = connect(&relay, &dest) => match db {
                Ok(db) => {
                    let end = session(&relay, &dest, &db, &cancel, &mut attempt).await;
                    db.close().await;
                    end
                }
                Err(e) => End::Failed(format!("cannot connect: {e}")),
            },
        } {
            End::Stop => {
                release(&relay, &dest).await;
                return;
            }
            End::LeaseLost => {
                warn!(destination = %dest.spec.name, "relay destination lease lost; another node delivers");
                continue;
            }
            End::Failed(error) => error,
        };
        attempt = attempt.saturating_add(1);
        mark_down(&relay, &dest, &end, attempt);
        let pause = backoff(&relay, attempt);
        tokio::select! {
            _ = cancel.cancelled() => {
                release(&relay, &dest).await;
                return;
            }
            _ = sleep(pause) => {}
        }
    }
}

async fn connect(relay: &Relay, dest: &Destination) -> Result<Db, String> {
    let password = relay.password_for(&dest.spec, dest.password_enc.as_deref())?;
    Db::connect(&dest.spec, password).await
}

/// Waits until this node holds `dest`'s lease; false on shutdown.
async fn acquire(
    relay: &Relay,
    dest: &Destination,
    ttl: Duration,
    cancel: &CancellationToken,
) -> bool {
    let crate::stream::Stream::Redis { stream, .. } = relay.stream() else {
        return true;
    };
    let mut announced = false;
    loop {
        match stream.acquire(&dest.spec.name, relay.node_id(), ttl).await {
            Ok(true) => return true,
            Ok(false) if !announced => {
                announced = true;
                relay.update_status(dest.id, |s| {
                    s.state = State::Standby;
                    s.since_ms = crate::catalog::now_ms();
                });
            }
            Ok(false) => {}
            Err(e) => {
                warn!(destination = %dest.spec.name, error = %e, "cannot reach Redis for the destination lease")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = sleep(ttl / 3) => {}
        }
    }
}

/// Gives up `dest`'s lease at shutdown, so another node takes over at once.
async fn release(relay: &Relay, dest: &Destination) {
    if let crate::stream::Stream::Redis { stream, .. } = relay.stream() {
        let _ = stream.release(&dest.spec.name, relay.node_id()).await;
    }
}

/// `retry_min · 2^(attempt-1)`, capped at `retry_max`.
fn backoff(relay: &Relay, attempt: u32) -> Duration {
    let cfg = relay.config();
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    cfg.retry_min.saturating_mul(factor).min(cfg.retry_max)
}

fn mark_down(relay: &Relay, dest: &Destination, error: &str, attempt: u32) {
    let was = relay.update_status(dest.id, |s| {
        let was = s.state;
        if was != State::Down {
            s.state = State::Down;
            s.since_ms = crate::catalog::now_ms();
        }
        s.attempts = attempt;
        s.last_error = Some(error.to_owned());
        was
    });
    if was != Some(State::Down) {
        warn!(destination = %dest.spec.name, %error, "relay destination down; holding its records");
        relay.emit(RelayEvent::DestinationDown {
            destination: dest.spec.name.clone(),
            error: error.to_owned(),
        });
    }
}

fn mark_up(relay: &Relay, dest: &Destination, next: u64) {
    let was = relay.update_status(dest.id, |s| {
        let was = s.state;
        if was != State::Up {
            s.state = State::Up;
            s.since_ms = crate::catalog::now_ms();
        }
        s.attempts = 0;
        s.next_offset = Some(next);
        was
    });
    if was != Some(State::Up) {
        info!(destination = %dest.spec.name, next_offset = next, "relay destination up");
        if was == Some(State::Down) {
            relay.emit(RelayEvent::DestinationUp {
                destination: dest.spec.name.clone(),
            });
        }
    }
}

/// Checks this destination's routes against its live schema.
async fn route_writes(
    relay: &Relay,
    dest: &Destination,
    db: &Db,
) -> Result<Vec<RouteWrite>, String> {
    let catalog = relay.catalog();
    let mut out = Vec::new();
    for route in catalog.routes_to(dest.id) {
        let spec = &route.spec;
        let table = db
            .table(spec.schema.as_deref(), &spec.table)
            .await?
            .ok_or_else(|| {
                format!(
                    "route {}: table `{}` does not exist in {}",
                    route.id, spec.table, dest.spec.name
                )
            })?;
        out.push(RouteWrite::check(route, table)?);
    }
    Ok(out)
}

async fn session(
    relay: &Arc<Relay>,
    dest: &Destination,
    db: &Db,
    cancel: &CancellationToken,
    attempt: &mut u32,
) -> End {
    let key = relay.stream_key(&dest.spec.name);
    let mut next = match db.next_offset(&key).await {
        Ok(n) => n.unwrap_or(dest.start_offset),
        Err(e) => return End::Failed(e),
    };
    let mut generation = relay.catalog_generation();
    let mut routes = match route_writes(relay, dest, db).await {
        Ok(r) => r,
        Err(e) => return End::Failed(e),
    };
    let mut feed = match relay
        .stream()
        .feed(&dest.spec.name, relay.node_id(), next)
        .await
    {
        Ok(f) => f,
        Err(e) => return End::Failed(format!("reading the stream: {e}")),
    };
    mark_up(relay, dest, next);
    *attempt = 0;
    let heartbeat = relay.config().heartbeat;
    // Reads wait at most this long, so the lease is renewed and the database pinged in time.
    let wait = relay.lease().map_or(heartbeat, |l| heartbeat.min(l / 3));
    let mut last_renewal = Instant::now();
    let mut last_contact = Instant::now();
    let mut catalog_changed = false;
    loop {
        if catalog_changed || generation.has_changed().unwrap_or(true) {
            catalog_changed = false;
            generation.borrow_and_update();
            if relay.catalog().destination_by_id(dest.id).is_none() {
                return End::Stop;
            }
            routes = match route_writes(relay, dest, db).await {
                Ok(r) => r,
                Err(e) => return End::Failed(e),
            };
        }
        if let (Some(ttl), crate::stream::Stream::Redis { stream, .. }) =
            (relay.lease(), relay.stream())
            && last_renewal.elapsed() >= ttl / 3
        {
            match stream.renew(&dest.spec.name, relay.node_id(), ttl).await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => return End::LeaseLost,
                Err(e) => return End::Failed(format!("renewing the lease: {e}")),
            }
        }
        let read = tokio::select! {
            _ = cancel.cancelled() => return End::Stop,
            _ = generation.changed() => {
                catalog_changed = true;
                feed.rewind(next);
                continue;
            }
            read = feed.next(relay.config().batch_records, wait) => read,
        };
        let mut entries = match read {
            Ok(e) => e,
            Err(e) => return End::Failed(format!("reading the stream: {e}")),
        };
        // What the destination already has (applied before a crash, or by another node).
        let (old, _) = entries.iter().partition::<Vec<_>, _>(|e| e.offset < next);
        if !old.is_empty() {
            let old: Vec<u64> = old.iter().map(|e| e.offset).collect();
            if let Err(e) = feed.done(next, &old).await {
                return End::Failed(format!("acknowledging: {e}"));
            }
            entries.retain(|e| e.offset >= next);
        }
        let Some(last) = entries.last() else {
            if last_contact.elapsed() >= heartbeat {
                if let Err(e) = db.ping().await {
                    return End::Failed(e);
                }
                last_contact = Instant::now();
            }
            continue;
        };
        let to = last.offset + 1;
        let batch = batch::build(db.dialect(), &routes, &entries);
        match write(relay, dest, db, &key, next, to, &routes, &batch).await {
            Ok(Applied::Committed) => {
                let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
                if let Err(e) = feed.done(to, &offsets).await {
                    return End::Failed(format!("acknowledging: {e}"));
                }
                deliveries::record_batch(relay, dest, &batch).await;
                let delivered = batch.items.len() as u64;
                relay.update_status(dest.id, |s| {
                    s.next_offset = Some(to);
                    s.delivered += delivered;
                });
                next = to;
                last_contact = Instant::now();
            }
            Ok(Applied::Behind(at)) => {
                next = at;
                feed.rewind(at);
            }
            Err(e) => return End::Failed(e),
        }
    }
}

/// Writes one batch: first whole; if the database refuses a record, again with each row
/// under a savepoint, dead-lettering the refused ones.
#[allow(clippy::too_many_arguments)]
async fn write(
    relay: &Arc<Relay>,
    dest: &Destination,
    db: &Db,
    key: &str,
    from: u64,
    to: u64,
    routes: &[RouteWrite],
    batch: &Batch,
) -> Result<Applied, String> {
    let dialect = db.dialect();
    if !batch.rejected.is_empty() {
        let refused: Vec<_> = batch
            .rejected
            .iter()
            .map(|r| (r.offset, routes[r.route].route.id, r.reason.clone(), None))
            .collect();
        deliveries::dead_letters(relay, dest, batch, &refused).await?;
    }
    let execs = batch::statements(dialect, routes, batch, false).map_err(|e| e.to_string())?;
    match db.apply(key, from, to, &execs).await {
        Ok(applied) => Ok(applied),
        Err(ApplyError::Destination(e)) => Err(e),
        Err(ApplyError::Record { item, message }) => {
            tracing::debug!(destination = %dest.spec.name, offset = batch.items[item].offset, %message, "isolating refused records");
            let singles =
                batch::statements(dialect, routes, batch, true).map_err(|e| e.to_string())?;
            let result = db
                .apply_isolating(key, from, to, &singles, |refused| async move {
                    let refused: Vec<_> = refused
                        .into_iter()
                        .map(|(i, message)| {
                            let it = &batch.items[i];
                            (it.offset, routes[it.route].route.id, message, Some(i))
                        })
                        .collect();
                    let n = refused.len() as u64;
                    deliveries::dead_letters(relay, dest, batch, &refused).await?;
                    relay.update_status(dest.id, |s| s.dead += n);
                    Ok(())
                })
                .await;
            match result {
                Ok(a) => Ok(a),
                Err(ApplyError::Destination(e)) => Err(e),
                Err(ApplyError::Record { message, .. }) => Err(message),
            }
        }
    }
}
