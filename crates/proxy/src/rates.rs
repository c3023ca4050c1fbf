//! The ticker behind every "rate" on the stats page: once a second it hands each backend's
//! and each listener's request counter to its [`RateMeter`].
//!
//! The data path only bumps the counters it already had; turning them into requests per
//! second happens here, off the data path, for whatever pools and listeners the registry
//! holds at that tick (so backends and listeners added by the API or a reload are included
//! from their first second).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use balance::RateMeter;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// How often the counters are sampled: the span a rate is measured over.
const PERIOD: Duration = Duration::from_secs(1);

/// Samples every counter each [`PERIOD`] until `shutdown`.
pub(crate) async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        sample(&registry, Instant::now());
    }
}

/// One tick: every backend of every pool, then every listener.
fn sample(registry: &Registry, now: Instant) {
    let read = |meter: &RateMeter, counter: &std::sync::atomic::AtomicU64| {
        meter.sample(counter.load(Ordering::Relaxed), now);
    };
    for pool in registry.pools().values() {
        for backend in pool.state().backends.iter() {
            read(&backend.stats().rate, &backend.stats().requests);
        }
    }
    for listener in registry.listeners().iter() {
        read(&listener.stats.rate, &listener.stats.requests);
    }
}
