//! The node's one metrics registry, and `GET /metrics`, which encodes it.
//!
//! Every service registers into the same [`Metrics`] when it starts: plain metrics it
//! updates as things happen (a counter of records ingested, a latency histogram), and
//! [`Collector`]s for state it already keeps and that is read at scrape time (a pool's
//! backends, a destination's backlog), so nothing is counted twice. `GET /metrics` answers
//! in the OpenMetrics text format, which Prometheus reads natively: a counter registered as
//! `x` is exposed as the family `x` with samples `x_total`, and the answer ends with
//! `# EOF`.
//!
//! Labels are low-cardinality by construction: names people configure (pools, backends,
//! listeners, applications, destinations, targets, channels) and small fixed sets (status
//! classes, refusal reasons, outcomes).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::{Metric, Registry};

use crate::{AdminState, ApiError};

/// The content type of the OpenMetrics text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A handle on the node's registry; clones share it.
///
/// Registration takes a lock, so it belongs in a service's start, never on a hot path;
/// the metrics themselves are atomics the service keeps a clone of.
#[derive(Clone, Default)]
pub struct Metrics {
    /// The registry `GET /metrics` encodes.
    registry: Arc<Mutex<Registry>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers a metric the caller keeps a clone of and updates. `name` has no `_total`
    /// (counters get it when encoded); `help` has no final full stop (one is added).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Registers a collector, asked for its samples at every scrape.
    pub fn register_collector(&self, collector: impl Collector) {
        self.lock().register_collector(Box::new(collector));
    }

    /// Every registered metric in the OpenMetrics text format, `# EOF` included.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.lock())?;
        Ok(text)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes one family of samples read from a snapshot, for a [`Collector`]: `# HELP`,
/// `# TYPE`, then one line per label set. Use `ConstGauge` and `ConstCounter` as values; a
/// counter's `name` has no `_total`, and `help` is written as it is.
pub fn encode_family<L, M>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result
where
    L: EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    let mut family = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, value) in samples {
        value.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => Ok(([(CONTENT_TYPE, OPENMETRICS)], text)),
        Err(fmt::Error) => Err(ApiError::internal(
            "a collector failed to encode its metrics; see the log of the service that owns it",
        )),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::{ConstCounter, Counter};
    use prometheus_client::metrics::gauge::ConstGauge;

    use super::*;

    #[derive(Debug)]
    struct Pools;

    impl Collector for Pools {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            encode_family(
                &mut encoder,
                "test_weight",
                "Weight.",
                [([("pool", "a\"b\\c\nd")], ConstGauge::new(3_i64))],
            )?;
            encode_family(
                &mut encoder,
                "test_requests",
                "Requests.",
                [([("pool", "p")], ConstCounter::new(7_u64))],
            )
        }
    }

    #[test]
    fn metrics_and_collectors_encode_as_openmetrics() {
        let metrics = Metrics::default();
        let counter = Counter::<u64>::default();
        metrics.register("test_events", "Events seen", counter.clone());
        metrics.clone().register_collector(Pools);
        counter.inc_by(2);
        assert_eq!(
            metrics.encode().unwrap(),
            "# HELP test_events Events seen.\n\
             # TYPE test_events counter\n\
             test_events_total 2\n\
             # HELP test_weight Weight.\n\
             # TYPE test_weight gauge\n\
             test_weight{pool=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP test_requests Requests.\n\
             # TYPE test_requests counter\n\
             test_requests_total{pool=\"p\"} 7\n\
             # EOF\n"
        );
    }
}
