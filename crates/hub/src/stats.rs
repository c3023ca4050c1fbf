//! The hub's counters: atomics bumped where things happen, read by the admin API
//! (`GET /api/hub`) and by `/metrics` (families `lintas_hub_*`, registered by
//! [`register`]). Rooms and their members are not counted here but read from the node's
//! table when asked, so they are never out of step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use admin::metrics::encode_family;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Serialize;

use crate::hub::Hub;

/// Why the hub closed a connection, where it was the hub's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Its queue reached `max_queued` (4008).
    SlowConsumer,
    /// No pong within `pong_timeout` (4002).
    NoPong,
    /// `connect` refused or missing (4001).
    Unauthorized,
    /// A frame over `max_message` (1009), a binary frame (1003), or `max_errors` bad
    /// frames in a row (1008).
    BadInput,
}

/// The hub's counters.
#[derive(Debug, Default)]
pub struct Stats {
    connections_now: AtomicU64,
    connections_total: AtomicU64,
    published: AtomicU64,
    direct: AtomicU64,
    refused: AtomicU64,
    slow_consumers: AtomicU64,
    no_pong: AtomicU64,
    unauthorized: AtomicU64,
    bad_input: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Connections that passed `connect` and are open.
    pub connections: u64,
    /// Connections that passed `connect` since start.
    pub connections_total: u64,
    /// Messages published to rooms through this node (WebSocket and HTTP).
    pub published: u64,
    /// Direct messages sent through this node.
    pub direct: u64,
    /// Requests answered with an `error` frame.
    pub refused: u64,
    /// Connections closed because their queue filled (4008).
    pub slow_consumers: u64,
    /// Connections closed for not answering a ping (4002).
    pub no_pong: u64,
    /// Connections closed at `connect` (4001).
    pub unauthorized: u64,
    /// Connections closed for what they sent (1003, 1008, 1009).
    pub bad_input: u64,
}

fn bump(n: &AtomicU64) {
    n.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn connected(&self) {
        bump(&self.connections_now);
        bump(&self.connections_total);
    }

    pub(crate) fn disconnected(&self) {
        self.connections_now.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn published(&self) {
        bump(&self.published);
    }

    pub(crate) fn direct(&self) {
        bump(&self.direct);
    }

    pub(crate) fn refused(&self) {
        bump(&self.refused);
    }

    pub(crate) fn closed(&self, why: Closed) {
        bump(match why {
            Closed::SlowConsumer => &self.slow_consumers,
            Closed::NoPong => &self.no_pong,
            Closed::Unauthorized => &self.unauthorized,
            Closed::BadInput => &self.bad_input,
        });
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Snapshot {
            connections: get(&self.connections_now),
            connections_total: get(&self.connections_total),
            published: get(&self.published),
            direct: get(&self.direct),
            refused: get(&self.refused),
            slow_consumers: get(&self.slow_consumers),
            no_pong: get(&self.no_pong),
            unauthorized: get(&self.unauthorized),
            bad_input: get(&self.bad_input),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    reason: &'static str,
}

/// The label set of a family without labels.
const NO_LABELS: [(&str, &str); 0] = [];

/// Reads the hub's counters at scrape time; holds the hub weakly so a stopped hub does not
/// linger in the registry.
#[derive(Debug)]
struct Scrape(Weak<Hub>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(hub) = self.0.upgrade() else {
            return Ok(());
        };
        let s = hub.stats.snapshot();
        let gauge = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        encode_family(
            &mut encoder,
            "lintas_hub_connections",
            "WebSocket connections that passed connect and are open",
            [(NO_LABELS, gauge(s.connections))],
        )?;
        encode_family(
            &mut encoder,
            "lintas_hub_rooms",
            "Rooms this node holds",
            [(NO_LABELS, gauge(hub.rooms_here().len() as u64))],
        )?;
        for (name, help, n) in [
            (
                "lintas_hub_connections_accepted",
                "Connections that passed connect",
                s.connections_total,
            ),
            (
                "lintas_hub_messages_published",
                "Messages published to rooms through this node",
                s.published,
            ),
            (
                "lintas_hub_direct_messages",
                "Direct messages sent through this node",
                s.direct,
            ),
            (
                "lintas_hub_requests_refused",
                "Requests answered with an error frame",
                s.refused,
            ),
        ] {
            encode_family(
                &mut encoder,
                name,
                help,
                [(NO_LABELS, ConstCounter::new(n))],
            )?;
        }
        encode_family(
            &mut encoder,
            "lintas_hub_connections_closed",
            "Connections the hub closed, by reason",
            [
                ("slow_consumer", s.slow_consumers),
                ("no_pong", s.no_pong),
                ("unauthorized", s.unauthorized),
                ("bad_input", s.bad_input),
            ]
            .map(|(reason, n)| (ByReason { reason }, ConstCounter::new(n))),
        )
    }
}

/// Registers the hub's families in the node's registry.
pub fn register(metrics: &admin::Metrics, hub: &Arc<Hub>) {
    metrics.register_collector(Scrape(Arc::downgrade(hub)));
}
