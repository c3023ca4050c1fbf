//! The relay's metrics, registered in the node's registry at start.
//!
//! Counted as things happen (atomics, on the request or the batch, never per row):
//!
//! - `lintas_relay_ingested_total{application}`: records stored (an idempotent replay
//!   stores nothing and counts nothing);
//! - `lintas_relay_ingest_refused_total{reason}`: requests refused, by a fixed set of
//!   reasons ([`Refusal`]);
//! - `lintas_relay_delivered_total{destination}`: records applied (written, or found to
//!   match no row) in a committed batch;
//! - `lintas_relay_delivery_latency_seconds{destination}`: from a record's arrival to the
//!   commit that applied it.
//!
//! Read at scrape time from the destinations' statuses:
//!
//! - `lintas_relay_backlog{destination}`: records stored and not yet applied there — the
//!   stream's end minus the destination's next offset (from when its worker has connected);
//! - `lintas_relay_dead_letters_total{destination}`: records dead-lettered there since start.
//!
//! The stream's end is the highest this node has seen (its own appends, its workers' reads,
//! the end at start), so on a Redis stream shared by nodes a node that ingests nothing
//! learns of others' records when it reads them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use admin::metrics::encode_family;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::status::Board;

/// Why ingest refused a request, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No key, or an unknown one (401).
    Unauthorized,
    /// Not JSON, not objects, an empty array, a bad `Idempotency-Key` (400).
    Malformed,
    /// The body stopped or trickled (408).
    SlowBody,
    /// Over `max_body_bytes` (413).
    TooLarge,
    /// A record lacks a field a route needs as its key (422).
    MissingKey,
    /// An `Idempotency-Key` used before with another body (422).
    KeyReused,
    /// The stream could not store (503).
    NotStored,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Malformed => "malformed",
            Self::SlowBody => "slow_body",
            Self::TooLarge => "too_large",
            Self::MissingKey => "missing_key",
            Self::KeyReused => "idempotency_key_reused",
            Self::NotStored => "not_stored",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByApplication {
    application: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByDestination {
    destination: String,
}

type Latencies = Family<ByDestination, Histogram, fn() -> Histogram>;

/// 5 ms to about 80 s, doubling: a healthy destination applies in tens of milliseconds, a
/// recovering one in seconds to minutes.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The relay's counters; the relay holds one, its tasks update it.
#[derive(Debug)]
pub(crate) struct Telemetry {
    ingested: Family<ByApplication, Counter>,
    refused: Family<ByReason, Counter>,
    delivered: Family<ByDestination, Counter>,
    latency: Latencies,
    /// The highest stream end this node has seen, for the backlog.
    stream_end: AtomicU64,
}

impl Telemetry {
    /// Counters at zero, the stream's end at `end`.
    pub(crate) fn new(end: u64) -> Self {
        Self {
            ingested: Family::default(),
            refused: Family::default(),
            delivered: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            stream_end: AtomicU64::new(end),
        }
    }

    /// Registers every family in `metrics`; the backlog and dead letters are read from
    /// `board` at each scrape (for as long as the relay runs).
    pub(crate) fn register(self: &Arc<Self>, metrics: &admin::Metrics, board: &Arc<Board>) {
        metrics.register(
            "lintas_relay_ingested",
            "Records stored by ingest, by application",
            self.ingested.clone(),
        );
        metrics.register(
            "lintas_relay_ingest_refused",
            "Ingest requests refused, by reason",
            self.refused.clone(),
        );
        metrics.register(
            "lintas_relay_delivered",
            "Records applied to the destination",
            self.delivered.clone(),
        );
        metrics.register(
            "lintas_relay_delivery_latency_seconds",
            "Time from a record's arrival to the commit that applied it at the destination",
            self.latency.clone(),
        );
        metrics.register_collector(Statuses {
            board: Arc::downgrade(board),
            telemetry: Arc::downgrade(self),
        });
    }

    /// `n` records of `application` stored, the last at `end - 1`.
    pub(crate) fn ingested(&self, application: &str, n: u64, end: u64) {
        self.ingested
            .get_or_create(&ByApplication {
                application: application.to_owned(),
            })
            .inc_by(n);
        self.saw_end(end);
    }

    /// A request refused.
    pub(crate) fn refused(&self, why: Refusal) {
        self.refused
            .get_or_create(&ByReason {
                reason: why.label(),
            })
            .inc();
    }

    /// Records applied to `destination` in one commit at `now_ms`, each received at one of
    /// `received_ms`.
    pub(crate) fn delivered(&self, destination: &str, received_ms: &[u64], now_ms: u64) {
        let labels = ByDestination {
            destination: destination.to_owned(),
        };
        self.delivered
            .get_or_create(&labels)
            .inc_by(received_ms.len() as u64);
        let latency = self.latency.get_or_create(&labels);
        for &at in received_ms {
            latency.observe(now_ms.saturating_sub(at) as f64 / 1000.0);
        }
    }

    /// The stream reaches at least `end` (exclusive).
    pub(crate) fn saw_end(&self, end: u64) {
        self.stream_end.fetch_max(end, Ordering::Relaxed);
    }
}

/// Backlog and dead letters, read from the destinations' statuses at scrape time.
struct Statuses {
    board: Weak<Board>,
    /// For the stream's end.
    telemetry: Weak<Telemetry>,
}

impl fmt::Debug for Statuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("relay::Statuses")
    }
}

impl Collector for Statuses {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let (Some(board), Some(telemetry)) = (self.board.upgrade(), self.telemetry.upgrade())
        else {
            return Ok(());
        };
        let statuses = board.all();
        let end = telemetry.stream_end.load(Ordering::Relaxed);
        let label = |destination: &str| ByDestination {
            destination: destination.to_owned(),
        };
        encode_family(
            &mut encoder,
            "lintas_relay_backlog",
            "Records stored and not yet applied to the destination.",
            statuses.iter().filter_map(|s| {
                let next = s.next_offset?;
                let waiting = i64::try_from(end.saturating_sub(next)).unwrap_or(i64::MAX);
                Some((label(&s.destination), ConstGauge::new(waiting)))
            }),
        )?;
        encode_family(
            &mut encoder,
            "lintas_relay_dead_letters",
            "Records dead-lettered at the destination since lintas started.",
            statuses
                .iter()
                .map(|s| (label(&s.destination), ConstCounter::new(s.dead))),
        )
    }
}
