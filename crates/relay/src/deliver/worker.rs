//! One destination's worker: reads the stream in order and writes batches.
//!
//! While the destination is down the worker retries with
//! exponential backoff (`retry_min` doubling to `retry_max`); while it is idle it pings every
//! `heartbeat`, so an outage is announced before records pile up. It resumes from the
//! offset the destination itself recorded (see [`crate::destination`]), which is what makes
//! delivery exactly-once in effect.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Delivery;
use crate::batch::{self, Batch, RouteWrite};
use crate::catalog::{Destination, Route};
use crate::deliveries;
use crate::destination::{Applied, ApplyError, Db, Failure};
use crate::status::{BrokenRoute, RelayEvent, State};

/// Why a session with the destination ended.
enum End {
    /// Shutdown, or the destination was removed.
    Stop,
    /// The destination failed; retry after a pause.
    Failed(String),
    /// Another node holds the destination now (the lease could not be renewed in time).
    LeaseLost,
}

/// A worker's retry state, kept across sessions: reconnecting is not a success, so only a
/// commit (or having nothing left to deliver) resets it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Retry {
    /// Failed attempts since the last commit; the backoff doubles with each.
    attempt: u32,
    /// The offset of the batch that keeps failing while its database answers, and how
    /// many times it failed.
    stuck: Option<(u64, u32)>,
}

impl Retry {
    /// Counts a failure; returns the pause before the next attempt: `min · 2^(attempt-1)`,
    /// capped at `max`.
    fn failed(&mut self, min: Duration, max: Duration) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        let factor = 1u32 << self.attempt.saturating_sub(1).min(16);
        min.saturating_mul(factor).min(max)
    }

    /// Counts a failure of the batch at `offset` while its database answered.
    fn batch_failed(&mut self, offset: u64) {
        self.stuck = match self.stuck {
            Some((at, n)) if at == offset => Some((at, n.saturating_add(1))),
            _ => Some((offset, 1)),
        };
    }

    /// Whether the batch at `offset` has failed `max` times while its database answered.
    fn exhausted(&self, offset: u64, max: u32) -> bool {
        self.stuck.is_some_and(|(at, n)| at == offset && n >= max)
    }

    /// A batch committed: the next failure starts the backoff over.
    fn committed(&mut self) {
        *self = Self::default();
    }
}

/// Runs the worker for `dest` until `cancel`. On a shared stream the worker first waits
/// for the destination's lease, so one node of the cluster delivers to it at a time.
pub(super) async fn run(
    delivery: Arc<Delivery>,
    dest: Arc<Destination>,
    cancel: CancellationToken,
) {
    let mut retry = Retry::default();
    loop {
        if let Some(ttl) = delivery.lease
            && !acquire(&delivery, &dest, ttl, &cancel).await
        {
            return;
        }
        let end = match tokio::select! {
            _ = cancel.cancelled() => End::Stop,
            db = connect(&delivery, &dest) => match db {
                Ok(db) => {
                    let end = session(&delivery, &dest, &db, &cancel, &mut retry).await;
                    db.close().await;
                    end
                }
                Err(e) => End::Failed(format!("cannot connect: {e}")),
            },
        } {
            End::Stop => {
                release(&delivery, &dest).await;
                return;
            }
            End::LeaseLost => {
                warn!(destination = %dest.spec.name, "relay destination lease lost; another node delivers");
                continue;
            }
            End::Failed(error) => error,
        };
        let pace = delivery.pace;
        let pause = retry.failed(pace.retry_min, pace.retry_max);
        mark_down(&delivery, &dest, &end, retry.attempt);
        tokio::select! {
            _ = cancel.cancelled() => {
                release(&delivery, &dest).await;
                return;
            }
            _ = sleep(pause) => {}
            // An operator skipped a record: try at once.
            _ = delivery.skips.wait() => {}
        }
    }
}

async fn connect(delivery: &Delivery, dest: &Destination) -> Result<Db, String> {
    let password = delivery
        .objects
        .password_for(&dest.spec, dest.password_enc.as_deref())?;
    Db::connect(&dest.spec, password).await
}

/// Waits until this node holds `dest`'s lease; false on shutdown.
async fn acquire(
    delivery: &Delivery,
    dest: &Destination,
    ttl: Duration,
    cancel: &CancellationToken,
) -> bool {
    let mut announced = false;
    loop {
        match delivery
            .backplane
            .acquire(&lease_name(dest), &delivery.node_id, ttl)
            .await
        {
            Ok(true) => return true,
            Ok(false) if !announced => {
                announced = true;
                delivery.board.update(dest.id, |s| {
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

/// The name of `dest`'s lease on the backplane.
fn lease_name(dest: &Destination) -> String {
    format!("relay:{}", dest.spec.name)
}

/// Gives up `dest`'s lease at shutdown, so another node takes over at once.
async fn release(delivery: &Delivery, dest: &Destination) {
    if delivery.lease.is_some() {
        let _ = delivery
            .backplane
            .release(&lease_name(dest), &delivery.node_id)
            .await;
    }
}

fn mark_down(delivery: &Delivery, dest: &Destination, error: &str, attempt: u32) {
    let was = delivery.board.update(dest.id, |s| {
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
        delivery.board.emit(RelayEvent::DestinationDown {
            destination: dest.spec.name.clone(),
            error: error.to_owned(),
        });
    }
}

/// Marks `dest` up (it committed, or has nothing waiting and answers).
fn mark_up(delivery: &Delivery, dest: &Destination, next: u64) {
    let was = delivery.board.update(dest.id, |s| {
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
            delivery.board.emit(RelayEvent::DestinationUp {
                destination: dest.spec.name.clone(),
            });
        }
    }
}

/// A route whose table or columns are not in the destination's live schema.
struct Broken {
    route: Arc<Route>,
    error: String,
}

impl AsRef<Route> for Broken {
    fn as_ref(&self) -> &Route {
        &self.route
    }
}

/// This destination's routes checked against its live schema: those that fit, and those
/// that do not (whose records are dead-lettered rather than holding everyone's).
async fn route_writes(
    delivery: &Delivery,
    dest: &Destination,
    db: &Db,
) -> Result<(Vec<RouteWrite>, Vec<Broken>), String> {
    let catalog = delivery.objects.catalog();
    let mut good = Vec::new();
    let mut broken = Vec::new();
    for route in catalog.routes_to(dest.id) {
        let spec = &route.spec;
        let checked = match db.table(spec.schema.as_deref(), &spec.table).await? {
            Some(table) => RouteWrite::check(route, table),
            None => Err(format!("table `{}` does not exist", spec.table)),
        };
        match checked {
            Ok(w) => good.push(w),
            Err(error) => {
                warn!(destination = %dest.spec.name, route = %spec.label(), %error, "relay route does not match the table; its records are dead-lettered");
                broken.push(Broken {
                    route: route.clone(),
                    error,
                });
            }
        }
    }
    let shown = broken
        .iter()
        .map(|b| BrokenRoute {
            route: b.route.spec.label(),
            error: b.error.clone(),
        })
        .collect();
    delivery.board.update(dest.id, |s| s.broken_routes = shown);
    Ok((good, broken))
}

async fn session(
    delivery: &Arc<Delivery>,
    dest: &Destination,
    db: &Db,
    cancel: &CancellationToken,
    retry: &mut Retry,
) -> End {
    let key = delivery.stream_key(&dest.spec.name);
    let mut next = match db.next_offset(&key).await {
        Ok(n) => n.unwrap_or(dest.start_offset),
        Err(e) => return End::Failed(e),
    };
    let mut generation = delivery.objects.changes();
    let (mut routes, mut broken) = match route_writes(delivery, dest, db).await {
        Ok(r) => r,
        Err(e) => return End::Failed(e),
    };
    let mut feed = match delivery
        .stream
        .feed(&dest.spec.name, &delivery.node_id, next)
        .await
    {
        Ok(f) => f,
        Err(e) => return End::Failed(format!("reading the stream: {e}")),
    };
    // From what the destination itself says it applied, wherever the group stands (a
    // database restored from a backup is behind its group, and no record may be skipped).
    feed.rewind(next);
    if retry.attempt == 0 {
        // Nothing has failed: up from the start. After failures, only a commit (or having
        // nothing to deliver) says so, or one stuck batch would flap the destination up
        // and down on every reconnect.
        mark_up(delivery, dest, next);
    } else {
        delivery
            .board
            .update(dest.id, |s| s.next_offset = Some(next));
    }
    let heartbeat = delivery.pace.heartbeat;
    // Reads wait at most this long, so the lease is renewed and the database pinged in time.
    let wait = delivery.lease.map_or(heartbeat, |l| heartbeat.min(l / 3));
    let mut last_renewal = Instant::now();
    let mut last_contact = Instant::now();
    let mut catalog_changed = false;
    loop {
        if catalog_changed || generation.has_changed().unwrap_or(true) {
            catalog_changed = false;
            generation.borrow_and_update();
            if delivery
                .objects
                .catalog()
                .destination_by_id(dest.id)
                .is_none()
            {
                return End::Stop;
            }
            (routes, broken) = match route_writes(delivery, dest, db).await {
                Ok(r) => r,
                Err(e) => return End::Failed(e),
            };
        }
        if let Some(ttl) = delivery.lease
            && last_renewal.elapsed() >= ttl / 3
        {
            match delivery
                .backplane
                .renew(&lease_name(dest), &delivery.node_id, ttl)
                .await
            {
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
            read = feed.next(delivery.pace.batch_records, wait) => read,
        };
        let mut entries = match read {
            Ok(e) => e,
            Err(e) => return End::Failed(format!("reading the stream: {e}")),
        };
        if let Some(last) = entries.last() {
            delivery.telemetry.saw_end(last.offset + 1);
        }
        // What the destination already has (applied before a crash, or by another node).
        let (old, _) = entries.iter().partition::<Vec<_>, _>(|e| e.offset < next);
        if !old.is_empty() {
            let old: Vec<u64> = old.iter().map(|e| e.offset).collect();
            if let Err(e) = feed.ack(next, &old).await {
                return End::Failed(format!("acknowledging: {e}"));
            }
            entries.retain(|e| e.offset >= next);
        }
        if entries.is_empty() {
            if last_contact.elapsed() >= heartbeat {
                if let Err(e) = db.ping().await {
                    return End::Failed(e);
                }
                last_contact = Instant::now();
            }
            // Caught up and answering: nothing is failing, as after a commit.
            retry.committed();
            mark_up(delivery, dest, next);
            continue;
        }
        // A record tried alone: one an operator skips, or the first of a batch that keeps
        // failing while the database answers.
        let skip = delivery.skips.take(dest.id).filter(|at| *at == next);
        let alone = skip.is_some() || retry.exhausted(next, delivery.pace.max_attempts);
        let truncated = alone && entries.len() > 1;
        if alone {
            entries.truncate(1);
        }
        let to = entries.last().map_or(next, |e| e.offset + 1);
        let written = async {
            let lost = dead_letter_broken(delivery, dest, &broken, &entries).await?;
            let batch = batch::build(&routes, &entries);
            let target = Target {
                key: &key,
                from: next,
                to,
                routes: &routes,
                batch: &batch,
            };
            let applied = if skip.is_some() {
                let error = delivery
                    .board
                    .get(dest.id)
                    .and_then(|s| s.last_error)
                    .unwrap_or_default();
                skip_record(delivery, dest, db, &target, &error).await?
            } else {
                write(delivery, dest, db, &target, alone).await?
            };
            Ok::<_, String>((applied, batch, lost))
        };
        match written.await {
            Ok((Applied::Committed(changed), batch, lost)) => {
                let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
                if let Err(e) = feed.ack(to, &offsets).await {
                    return End::Failed(format!("acknowledging: {e}"));
                }
                if truncated {
                    // What was read behind the record tried alone is read again.
                    feed.rewind(to);
                }
                let (unmatched, missing) = batch::unmatched(&routes, &batch, &changed);
                deliveries::record_batch(&delivery.objects, dest, &routes, &batch, &missing).await;
                deliveries::record_unmatched(&delivery.objects, dest, &routes, &batch, &unmatched)
                    .await;
                count_applied(delivery, dest, &batch);
                let delivered = batch.items.len() as u64;
                delivery.board.update(dest.id, |s| {
                    s.delivered += delivered;
                    s.dead += lost;
                });
                next = to;
                retry.committed();
                mark_up(delivery, dest, next);
                last_contact = Instant::now();
            }
            Ok((Applied::Behind(at), ..)) => {
                next = at;
                feed.rewind(at);
            }
            Err(e) => {
                // Counted against the batch only while the database answers: a dead server
                // never makes a record a dead letter.
                if db.ping().await.is_ok() {
                    retry.batch_failed(next);
                }
                return End::Failed(e);
            }
        }
    }
}

/// Counts the records a committed batch applied (one each, whatever rows its routes
/// wrote), with how long each waited since it arrived.
fn count_applied(delivery: &Delivery, dest: &Destination, batch: &Batch) {
    let mut offsets: Vec<u64> = batch.items.iter().map(|item| item.offset).collect();
    offsets.dedup();
    let received: Vec<u64> = offsets
        .iter()
        .filter_map(|offset| batch.records.get(offset))
        .map(|record| record.received_ms)
        .collect();
    let now = crate::catalog::now_ms() as u64;
    delivery
        .telemetry
        .delivered(&dest.spec.name, &received, now);
    if let Some(oldest) = received.iter().min() {
        let latency = now.saturating_sub(*oldest);
        delivery
            .board
            .update(dest.id, |s| s.last_latency_ms = Some(latency));
    }
}

/// Where a batch goes: the destination's offsets row and the stream range it covers.
struct Target<'a> {
    key: &'a str,
    from: u64,
    to: u64,
    routes: &'a [RouteWrite],
    batch: &'a Batch,
}

/// Dead-letters what `entries` hold for broken routes, with the route's problem; returns
/// how many, counted in the status once the batch commits (a retried batch stores them
/// again, idempotently).
async fn dead_letter_broken(
    delivery: &Delivery,
    dest: &Destination,
    broken: &[Broken],
    entries: &[backplane::Entry],
) -> Result<u64, String> {
    if broken.is_empty() {
        return Ok(0);
    }
    let lost = batch::build(broken, entries);
    let why = |route: usize| {
        let b = &broken[route];
        (
            b.route.id,
            format!("route {}: {}", b.route.spec.label(), b.error),
        )
    };
    let mut refused = Vec::new();
    for (i, item) in lost.items.iter().enumerate() {
        let (route, error) = why(item.route);
        refused.push((item.offset, route, error, Some(i)));
    }
    for r in &lost.rejected {
        let (route, error) = why(r.route);
        refused.push((r.offset, route, error, None));
    }
    if refused.is_empty() {
        return Ok(0);
    }
    deliveries::dead_letters(&delivery.objects, dest, &lost, &refused).await?;
    Ok(refused.len() as u64)
}

/// Dead-letters what `target.batch` was refused before reaching the database.
async fn dead_letter_rejected(
    delivery: &Delivery,
    dest: &Destination,
    target: &Target<'_>,
) -> Result<(), String> {
    if target.batch.rejected.is_empty() {
        return Ok(());
    }
    let refused: Vec<_> = target
        .batch
        .rejected
        .iter()
        .map(|r| {
            (
                r.offset,
                target.routes[r.route].route.id,
                r.reason.clone(),
                None,
            )
        })
        .collect();
    deliveries::dead_letters(&delivery.objects, dest, target.batch, &refused).await
}

/// The failures a live database's refusal makes the record's fault: data errors and other
/// statement errors.
fn refused(f: &Failure) -> bool {
    matches!(f, Failure::Record(_) | Failure::Statement(_))
}

/// Also contention: for a record tried alone after its batch failed `max_attempts` times.
fn refused_alone(f: &Failure) -> bool {
    refused(f) || matches!(f, Failure::Contention(_))
}

/// Writes one batch: first whole; if the database refuses a record (a data error, or
/// another statement error while a ping shows the server alive), again with each row under
/// a savepoint, dead-lettering the refused ones. `alone` (one record, whose batch failed
/// `max_attempts` times) goes straight to isolation and counts contention as refusal.
async fn write(
    delivery: &Arc<Delivery>,
    dest: &Destination,
    db: &Db,
    target: &Target<'_>,
    alone: bool,
) -> Result<Applied, String> {
    dead_letter_rejected(delivery, dest, target).await?;
    if alone {
        return isolate(delivery, dest, db, target, refused_alone).await;
    }
    let execs = batch::statements(db.dialect(), target.routes, target.batch, false)
        .map_err(|e| e.to_string())?;
    match db.apply(target.key, target.from, target.to, &execs).await {
        Ok(applied) => Ok(applied),
        Err(ApplyError::Statement {
            item,
            failure: Failure::Record(message) | Failure::Statement(message),
        }) => {
            // A statement error lintas cannot place is the record's only if the server
            // is alive to have refused it.
            db.ping()
                .await
                .map_err(|e| format!("{message} (and then no answer to a ping: {e})"))?;
            tracing::debug!(destination = %dest.spec.name, offset = target.batch.items[item].offset, %message, "isolating refused records");
            isolate(delivery, dest, db, target, refused).await
        }
        Err(e) => Err(e.message().to_owned()),
    }
}

/// Runs `target` with a savepoint per row; rows failing as `refusal` accepts are
/// dead-lettered before the commit.
async fn isolate(
    delivery: &Arc<Delivery>,
    dest: &Destination,
    db: &Db,
    target: &Target<'_>,
    refusal: fn(&Failure) -> bool,
) -> Result<Applied, String> {
    let (routes, batch) = (target.routes, target.batch);
    let singles =
        batch::statements(db.dialect(), routes, batch, true).map_err(|e| e.to_string())?;
    db.apply_isolating(
        target.key,
        (target.from, target.to),
        &singles,
        refusal,
        |refused| async move {
            let refused: Vec<_> = refused
                .into_iter()
                .map(|(i, message)| {
                    let it = &batch.items[i];
                    (it.offset, routes[it.route].route.id, message, Some(i))
                })
                .collect();
            let n = refused.len() as u64;
            deliveries::dead_letters(&delivery.objects, dest, batch, &refused).await?;
            delivery.board.update(dest.id, |s| s.dead += n);
            Ok(())
        },
    )
    .await
    .map_err(|e| e.message().to_owned())
}

/// Dead-letters the one record of `target` (an operator's skip) and moves the offset past
/// it without writing it.
async fn skip_record(
    delivery: &Delivery,
    dest: &Destination,
    db: &Db,
    target: &Target<'_>,
    last_error: &str,
) -> Result<Applied, String> {
    let error = format!("skipped by an operator; the destination failed with: {last_error}");
    let mut refused: Vec<_> = target
        .batch
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            (
                it.offset,
                target.routes[it.route].route.id,
                error.clone(),
                Some(i),
            )
        })
        .collect();
    refused.extend(target.batch.rejected.iter().map(|r| {
        (
            r.offset,
            target.routes[r.route].route.id,
            r.reason.clone(),
            None,
        )
    }));
    deliveries::dead_letters(&delivery.objects, dest, target.batch, &refused).await?;
    let n = refused.len() as u64;
    delivery.board.update(dest.id, |s| s.dead += n);
    warn!(destination = %dest.spec.name, record = target.from, "relay record skipped by an operator");
    db.apply(target.key, target.from, target.to, &[])
        .await
        .map_err(|e| e.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn backoff_doubles_across_reconnects_and_resets_only_on_commit() {
        let mut r = Retry::default();
        let pauses: Vec<u128> = (0..9).map(|_| r.failed(MIN, MAX).as_millis()).collect();
        assert_eq!(
            pauses,
            [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000]
        );
        r.committed();
        assert_eq!(r.failed(MIN, MAX), MIN);
    }

    #[test]
    fn a_batch_is_exhausted_after_max_failures_at_one_offset() {
        let mut r = Retry::default();
        r.batch_failed(7);
        r.batch_failed(7);
        assert!(!r.exhausted(7, 3));
        r.batch_failed(7);
        assert!(r.exhausted(7, 3));
        assert!(!r.exhausted(8, 3), "another batch starts over");
        r.batch_failed(8);
        assert_eq!(r.stuck, Some((8, 1)));
        r.committed();
        assert!(!r.exhausted(7, 3));
    }
}
