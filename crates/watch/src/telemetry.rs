//! Watch's metrics, registered in the node's registry at start.
//!
//! - `lintas_watch_alerts_total{channel, outcome}`: alerts handed to a channel, one per
//!   recipient, `outcome` `sent` or `failed` (after the channel's retries);
//! - `lintas_watch_checks_total{target, result}`: checks run on the targets watch checks
//!   itself, `result` `pass` or `fail`;
//! - `lintas_watch_target_up{target}`: 1 while such a target is up, 0 while it is down (as
//!   the engine sees it, after `rise` and `fall`), read at scrape time.
//!
//! The proxy's backends and the relay's destinations have their own series
//! (`lintas_backend_up`, `lintas_relay_backlog`); watch does not count them again.

use std::fmt;
use std::sync::{Arc, Weak};

use admin::metrics::encode_family;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::Watch;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    target: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

/// Watch's counters; clones share them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Telemetry {
    alerts: Family<AlertLabels, Counter>,
    checks: Family<CheckLabels, Counter>,
}

/// The two counters of one target's checks, taken once when its task starts.
#[derive(Debug, Clone)]
pub(crate) struct CheckCounters {
    passed: Counter,
    failed: Counter,
}

impl CheckCounters {
    /// One check ran.
    pub(crate) fn ran(&self, passed: bool) {
        if passed {
            self.passed.inc();
        } else {
            self.failed.inc();
        }
    }
}

impl Telemetry {
    /// Registers every family in `metrics`; targets' states are read from `watch` at each
    /// scrape (for as long as it runs).
    pub(crate) fn register(&self, metrics: &admin::Metrics, watch: &Arc<Watch>) {
        metrics.register(
            "lintas_watch_alerts",
            "Alerts handed to a channel, one per recipient, by outcome after retries",
            self.alerts.clone(),
        );
        metrics.register(
            "lintas_watch_checks",
            "Checks run on the targets watch checks itself, by result",
            self.checks.clone(),
        );
        metrics.register_collector(Targets(Arc::downgrade(watch)));
    }

    /// An alert sent, or given up on, to one recipient of `channel`.
    pub(crate) fn alert(&self, channel: &'static str, sent: bool) {
        let outcome = if sent { "sent" } else { "failed" };
        self.alerts
            .get_or_create(&AlertLabels { channel, outcome })
            .inc();
    }

    /// The counters of `target`'s checks.
    pub(crate) fn checks_of(&self, target: &str) -> CheckCounters {
        let counter = |result| {
            self.checks
                .get_or_create(&CheckLabels {
                    target: target.to_owned(),
                    result,
                })
                .clone()
        };
        CheckCounters {
            passed: counter("pass"),
            failed: counter("fail"),
        }
    }
}

/// Whether each target watch checks is up, read at scrape time.
struct Targets(Weak<Watch>);

impl fmt::Debug for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("watch::Targets")
    }
}

impl Collector for Targets {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(watch) = self.0.upgrade() else {
            return Ok(());
        };
        let down: Vec<String> = watch.down().into_iter().map(|(name, _)| name).collect();
        let targets = watch.targets();
        encode_family(
            &mut encoder,
            "lintas_watch_target_up",
            "1 while the target is up, 0 while it is down.",
            targets.into_iter().map(|(spec, _)| {
                let up = !down.contains(&spec.name);
                (
                    TargetLabels { target: spec.name },
                    ConstGauge::new(i64::from(up)),
                )
            }),
        )
    }
}
