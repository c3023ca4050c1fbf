//! The broker's counters: atomics bumped where things happen, read by the admin API, the
//! `$SYS` topics and `/metrics`.
//!
//! Counted as they happen: connections (now and since start), messages received from
//! clients and sent to them by QoS, messages dropped by cause (a full session queue, a
//! client's Maximum Packet Size, expiry, the retained store's cap), SUBSCRIBE filters
//! refused at a session's `max_subscriptions`, connections closed for a protocol
//! violation, and what the ACL refused. The number of subscriptions and of retained messages is not
//! counted here but read from the broker's indexes when asked, so it is never out of step.
//! In `/metrics` the families are `lintas_mqtt_*` (registered by [`register`]); the `$SYS`
//! topics use Mosquitto's names for the same numbers (`$SYS/broker/clients/connected`,
//! `messages/received`, `messages/sent`, `subscriptions/count`,
//! `retained messages/count`, `uptime`), so dashboards built on Mosquitto keep working.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use admin::metrics::encode_family;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Serialize;

use crate::broker::Broker;
use crate::codec::QoS;

/// Why a message was not delivered to a client it was routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// The session's queue held `max_queued` messages.
    QueueFull,
    /// Larger than the client's Maximum Packet Size.
    TooLarge,
    /// Its Message Expiry Interval passed while it waited.
    Expired,
}

/// The broker's counters.
#[derive(Debug, Default)]
pub struct Stats {
    connections_now: AtomicU64,
    connections_total: AtomicU64,
    received: [AtomicU64; 3],
    sent: [AtomicU64; 3],
    dropped_queue_full: AtomicU64,
    dropped_too_large: AtomicU64,
    dropped_expired: AtomicU64,
    retained_refused: AtomicU64,
    subscriptions_refused: AtomicU64,
    protocol_errors: AtomicU64,
    denied: AtomicU64,
}

/// The counters at one moment, as the admin API shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Clients connected now.
    pub connections: u64,
    /// Clients that completed CONNECT since start.
    pub connections_total: u64,
    /// PUBLISH received from clients, by QoS 0, 1, 2.
    pub received: [u64; 3],
    /// PUBLISH sent to clients, by QoS 0, 1, 2 (re-sends not counted).
    pub sent: [u64; 3],
    /// Messages dropped because a session's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because they exceeded a client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Messages dropped because they expired while queued.
    pub dropped_expired: u64,
    /// Retained messages not stored because `max_retained` was reached.
    pub retained_refused: u64,
    /// SUBSCRIBE filters refused because the session held `max_subscriptions`.
    pub subscriptions_refused: u64,
    /// Connections closed for a malformed packet or a protocol violation.
    pub protocol_errors: u64,
    /// PUBLISH packets and SUBSCRIBE filters the ACL refused.
    pub denied: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// A client completed CONNECT.
    pub fn connected(&self) {
        bump(&self.connections_now);
        bump(&self.connections_total);
    }

    /// A connected client went away.
    pub fn disconnected(&self) {
        self.connections_now.fetch_sub(1, Ordering::Relaxed);
    }

    /// A PUBLISH arrived from a client.
    pub fn received(&self, qos: QoS) {
        bump(&self.received[qos as usize]);
    }

    /// A PUBLISH went to a client for the first time.
    pub fn sent(&self, qos: QoS) {
        bump(&self.sent[qos as usize]);
    }

    /// A message was dropped for one client.
    pub fn dropped(&self, why: Drop) {
        bump(match why {
            Drop::QueueFull => &self.dropped_queue_full,
            Drop::TooLarge => &self.dropped_too_large,
            Drop::Expired => &self.dropped_expired,
        });
    }

    /// A retained message was not stored.
    pub fn retained_refused(&self) {
        bump(&self.retained_refused);
    }

    /// A SUBSCRIBE filter was refused at the session's `max_subscriptions`.
    pub fn subscription_refused(&self) {
        bump(&self.subscriptions_refused);
    }

    /// A connection was closed for a protocol violation.
    pub fn protocol_error(&self) {
        bump(&self.protocol_errors);
    }

    /// The ACL refused a PUBLISH or a SUBSCRIBE filter.
    pub fn denied(&self) {
        bump(&self.denied);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            connections: get(&self.connections_now),
            connections_total: get(&self.connections_total),
            received: self.received.each_ref().map(get),
            sent: self.sent.each_ref().map(get),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_too_large: get(&self.dropped_too_large),
            dropped_expired: get(&self.dropped_expired),
            retained_refused: get(&self.retained_refused),
            subscriptions_refused: get(&self.subscriptions_refused),
            protocol_errors: get(&self.protocol_errors),
            denied: get(&self.denied),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByQos {
    qos: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    reason: &'static str,
}

/// The label set of a family without labels.
const NO_LABELS: [(&str, &str); 0] = [];

const QOS_LABELS: [&str; 3] = ["0", "1", "2"];

/// Reads the broker's counters and indexes at scrape time; holds the broker weakly so a
/// stopped broker does not linger in the registry's memory.
#[derive(Debug)]
struct Scrape(Weak<Broker>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(broker) = self.0.upgrade() else {
            return Ok(());
        };
        let s = broker.stats().snapshot();
        let by_qos = |counts: [u64; 3]| {
            QOS_LABELS
                .iter()
                .zip(counts)
                .map(|(qos, n)| (ByQos { qos }, ConstCounter::new(n)))
                .collect::<Vec<_>>()
        };
        encode_family(
            &mut encoder,
            "lintas_mqtt_connections",
            "Clients connected now",
            [(NO_LABELS, ConstGauge::new(gauge(s.connections)))],
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_connections_accepted",
            "Clients that completed CONNECT",
            [(NO_LABELS, ConstCounter::new(s.connections_total))],
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_messages_received",
            "PUBLISH packets received from clients",
            by_qos(s.received),
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_messages_sent",
            "PUBLISH packets sent to clients (re-sends not counted)",
            by_qos(s.sent),
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_messages_dropped",
            "Messages not delivered to a client they were routed to",
            [
                ("queue_full", s.dropped_queue_full),
                ("too_large", s.dropped_too_large),
                ("expired", s.dropped_expired),
            ]
            .map(|(reason, n)| (ByReason { reason }, ConstCounter::new(n))),
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_retained_refused",
            "Retained messages not stored because max_retained was reached",
            [(NO_LABELS, ConstCounter::new(s.retained_refused))],
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_subscriptions_refused",
            "SUBSCRIBE filters refused because the session held max_subscriptions",
            [(NO_LABELS, ConstCounter::new(s.subscriptions_refused))],
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_protocol_errors",
            "Connections closed for a malformed packet or a protocol violation",
            [(NO_LABELS, ConstCounter::new(s.protocol_errors))],
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_denied",
            "PUBLISH packets and SUBSCRIBE filters the ACL refused",
            [(NO_LABELS, ConstCounter::new(s.denied))],
        )?;
        let (subscriptions, retained) = broker.index_sizes();
        encode_family(
            &mut encoder,
            "lintas_mqtt_subscriptions",
            "Subscriptions on this node",
            [(NO_LABELS, ConstGauge::new(gauge(subscriptions as u64)))],
        )?;
        encode_family(
            &mut encoder,
            "lintas_mqtt_retained",
            "Retained messages on this node",
            [(NO_LABELS, ConstGauge::new(gauge(retained as u64)))],
        )
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Registers the broker's families in the node's registry.
pub fn register(metrics: &admin::Metrics, broker: &Arc<Broker>) {
    metrics.register_collector(Scrape(Arc::downgrade(broker)));
}
