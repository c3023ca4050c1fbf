//! How each destination is doing, for the admin API, the delivery log and alerts.
//!
//! The delivery worker owns the updates; everything else reads a copy from the [`Board`].
//! Transitions between up and down are also sent as [`RelayEvent`]s, which the watch
//! service turns into alerts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::catalog::now_ms;

/// Whether lintas can write to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not yet connected since lintas started.
    Connecting,
    /// Connected; records flow.
    Up,
    /// Unreachable or failing; records are held and retried with backoff.
    Down,
    /// Another node of the cluster holds this destination's lease and delivers to it.
    Standby,
}

/// A destination's delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationStatus {
    /// The destination.
    pub destination: String,
    /// Up, down or connecting.
    pub state: State,
    /// Since when (ms since the Unix epoch).
    pub since_ms: i64,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// The last failure, kept after recovery for the record.
    pub last_error: Option<String>,
    /// The next stream offset it has not applied (known once connected).
    pub next_offset: Option<u64>,
    /// Records written since lintas started.
    pub delivered: u64,
    /// Records dead-lettered since lintas started.
    pub dead: u64,
    /// Delivery latency of the last committed batch: from the arrival of its oldest record
    /// to the commit, in milliseconds (the histogram is in `/metrics`).
    pub last_latency_ms: Option<u64>,
    /// Routes to this destination that do not match its live schema; their records are
    /// dead-lettered (replay them after fixing the table or the route) while the other
    /// routes' records flow.
    pub broken_routes: Vec<BrokenRoute>,
}

/// A route whose table or columns are missing from the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenRoute {
    /// The route, as `application → destination.table`.
    pub route: String,
    /// What is wrong.
    pub error: String,
}

impl DestinationStatus {
    /// A destination not yet connected.
    pub fn new(destination: String) -> Self {
        Self {
            destination,
            state: State::Connecting,
            since_ms: now_ms(),
            attempts: 0,
            last_error: None,
            next_offset: None,
            delivered: 0,
            dead: 0,
            last_latency_ms: None,
            broken_routes: Vec::new(),
        }
    }
}

/// Something the relay reports to whoever listens (the watch service's alerts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RelayEvent {
    /// A destination stopped answering or failing writes.
    DestinationDown {
        /// Its name.
        destination: String,
        /// Why.
        error: String,
    },
    /// A destination answers again.
    DestinationUp {
        /// Its name.
        destination: String,
    },
}

/// Every destination's status, by id, and the events of their changes: written by the
/// delivery workers, read by the admin API, the metrics and alerting.
#[derive(Debug)]
pub(crate) struct Board {
    statuses: Mutex<BTreeMap<i64, DestinationStatus>>,
    /// Up and down transitions; a slow listener loses the oldest, never blocks delivery.
    events: broadcast::Sender<RelayEvent>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            statuses: Mutex::default(),
            events: broadcast::channel(256).0,
        }
    }
}

impl Board {
    fn statuses(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, DestinationStatus>> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every destination's status, by name.
    pub(crate) fn all(&self) -> Vec<DestinationStatus> {
        let mut v: Vec<_> = self.statuses().values().cloned().collect();
        v.sort_by(|a, b| a.destination.cmp(&b.destination));
        v
    }

    /// One destination's status.
    pub(crate) fn get(&self, destination: i64) -> Option<DestinationStatus> {
        self.statuses().get(&destination).cloned()
    }

    /// A worker starts for `destination`: not yet connected.
    pub(crate) fn open(&self, destination: i64, name: String) {
        self.statuses()
            .insert(destination, DestinationStatus::new(name));
    }

    /// `destination` is gone.
    pub(crate) fn close(&self, destination: i64) {
        self.statuses().remove(&destination);
    }

    /// Changes `destination`'s status, if it has one.
    pub(crate) fn update<T>(
        &self,
        destination: i64,
        f: impl FnOnce(&mut DestinationStatus) -> T,
    ) -> Option<T> {
        self.statuses().get_mut(&destination).map(f)
    }

    /// Destination up/down events, for alerting.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<RelayEvent> {
        self.events.subscribe()
    }

    /// Tells whoever listens; nobody listening is fine.
    pub(crate) fn emit(&self, e: RelayEvent) {
        let _ = self.events.send(e);
    }
}
