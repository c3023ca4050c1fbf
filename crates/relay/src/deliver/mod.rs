//! Delivery: one worker per destination, reading the stream in order and writing batches.
//!
//! A worker ([`worker`]) owns its destination's connections and nothing else, so a slow or
//! dead database only ever holds up its own records. [`Delivery`] is what the workers
//! share: the objects, the stream, the status board, the operators' skips and, on a
//! stream shared by nodes, this node's name and its destination leases. [`supervise`]
//! keeps one worker per destination as the objects change; [`housekeeping`] prunes the
//! delivery log and trims the stream.

mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane::{Backplane, Stream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::RelayConfig;
use crate::deliveries;
use crate::objects::Objects;
use crate::status::Board;
use crate::telemetry::Telemetry;

/// How often old delivery-log rows and delivered stream records are cleared.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

/// How delivery paces itself: the `[relay]` settings the workers read, fixed at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Most records in one destination transaction.
    pub batch_records: usize,
    /// First wait after a failure, doubling up to `retry_max`.
    pub retry_min: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// Failures of one batch, while its database answers, before its first record is
    /// tried alone.
    pub max_attempts: u32,
    /// How often an idle destination is pinged.
    pub heartbeat: Duration,
    /// How long delivery-log rows are kept and delivered records stay in the stream.
    pub retention: Duration,
}

impl Pace {
    /// The pace `cfg` sets.
    pub(crate) fn of(cfg: &RelayConfig) -> Self {
        Self {
            batch_records: cfg.batch_records,
            retry_min: cfg.retry_min,
            retry_max: cfg.retry_max,
            max_attempts: cfg.max_attempts,
            heartbeat: cfg.heartbeat,
            retention: cfg.retention,
        }
    }
}

/// What every delivery worker of this node shares.
pub(crate) struct Delivery {
    /// The destinations and routes, and their passwords.
    pub objects: Arc<Objects>,
    /// What is delivered.
    pub stream: Arc<dyn Stream>,
    /// The node's backplane: the destination leases.
    pub backplane: Arc<dyn Backplane>,
    /// How each destination is doing.
    pub board: Arc<Board>,
    /// Delivery counters and latency.
    pub telemetry: Arc<Telemetry>,
    /// Batch size, backoff, heartbeat, retention.
    pub pace: Pace,
    /// This process, as a consumer and lease holder on a shared stream ([`node_id`]).
    pub node_id: String,
    /// How long a destination lease lasts, when the stream is shared by nodes.
    pub lease: Option<Duration>,
    /// Records operators asked to skip.
    pub skips: Skips,
    /// The runtimes ingest is served on; workers are spread over them too, so the node's
    /// threads share the work instead of one thread doing all the delivering. Empty: the
    /// current runtime.
    pub runtimes: Vec<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// The row of `lintas_applied_offsets` for a destination: this stream's id, so two
    /// lintas installations (or a data_dir started afresh) never mistake each other's
    /// offsets, and the destination's name, which every node of a cluster knows it by.
    pub(crate) fn stream_key(&self, destination: &str) -> String {
        format!("{}/{destination}", self.stream.id())
    }
}

/// Records operators asked to skip, by destination id: the offset it was stuck on.
#[derive(Debug, Default)]
pub(crate) struct Skips {
    asked: Mutex<BTreeMap<i64, u64>>,
    /// Wakes workers waiting to retry when a skip is asked for.
    notify: Notify,
}

impl Skips {
    fn asked(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, u64>> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the worker of `destination` to dead-letter the record at `offset`, the one it
    /// is stuck on, and go on with the next.
    pub(crate) fn ask(&self, destination: i64, offset: u64) {
        self.asked().insert(destination, offset);
        self.notify.notify_waiters();
    }

    /// The skip asked for `destination`, if any, taken.
    fn take(&self, destination: i64) -> Option<u64> {
        self.asked().remove(&destination)
    }

    /// Resolves when a skip is asked for (of any destination).
    fn wait(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// Keeps one worker per destination: starts workers for new destinations, stops those of
/// removed ones, and restarts the worker of a destination whose settings changed (an edit
/// through the API, a reload of the file): it reconnects with them and goes on from the
/// offset its database holds.
pub(crate) async fn supervise(
    delivery: Arc<Delivery>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut running: BTreeMap<i64, (CancellationToken, Arc<crate::catalog::Destination>)> =
        BTreeMap::new();
    let mut changes = delivery.objects.changes();
    loop {
        let catalog = delivery.objects.catalog();
        running.retain(|id, (token, was)| {
            let keep = catalog
                .destination_by_id(*id)
                .is_some_and(|now| now.spec == was.spec && now.password_enc == was.password_enc);
            if !keep {
                token.cancel();
                delivery.board.close(*id);
            }
            keep
        });
        for dest in catalog.destinations() {
            if running.contains_key(&dest.id) {
                continue;
            }
            let token = shutdown.child_token();
            running.insert(dest.id, (token.clone(), dest.clone()));
            delivery.board.open(dest.id, dest.spec.name.clone());
            let work = tracker.track_future(worker::run(delivery.clone(), dest.clone(), token));
            match delivery
                .runtimes
                .get(dest.id as usize % delivery.runtimes.len().max(1))
            {
                Some(runtime) => drop(runtime.spawn(work)),
                None => drop(tokio::spawn(work)),
            }
        }
        drop(catalog);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

/// Prunes the delivery log, and trims the stream of records every destination has applied
/// (see [`crate::stream::trim`]).
pub(crate) async fn housekeeping(delivery: Arc<Delivery>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let objects = &delivery.objects;
        if let Err(e) = deliveries::prune(objects.store(), delivery.pace.retention).await {
            warn!(error = %e, "cannot prune the relay delivery log");
        }
        let groups: Vec<String> = objects
            .catalog()
            .destinations()
            .map(|d| d.spec.name.clone())
            .collect();
        if let Err(e) =
            crate::stream::trim(delivery.stream.as_ref(), &groups, delivery.pace.retention).await
        {
            warn!(error = %e, "cannot trim the relay stream");
        }
    }
}
