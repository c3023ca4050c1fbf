//! Requests per second, now and at most: HAProxy's `rate` and `rate_max`.
//!
//! The data path already counts every request (or TCP session) in a plain atomic counter;
//! the meter never touches it, so counting costs nothing more. A ticker off the data path
//! hands the meter that counter's value about once a second ([`RateMeter::sample`]); the
//! meter turns the growth since the previous sample into a rate, keeps it, and raises the
//! highest rate seen. Readers (the stats page, the API, `/metrics`) load two relaxed atomics.
//!
//! The backends' counters ([`crate::BackendStats`]) and the proxy's listeners use the same
//! meter, so "rate" means the same on every row of the stats page.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A sample closer than this to the previous one is ignored, so a rate always spans about a
/// second even if two tickers sample the same meter (half of the ticker's one second, so a
/// tick that comes a little early still counts).
const MIN_SPAN: Duration = Duration::from_millis(500);

/// The rate of one counter, updated by a ticker and read by anyone.
#[derive(Debug, Default)]
pub struct RateMeter {
    /// Per second over the span between the last two samples, rounded.
    current: AtomicU64,
    /// Highest `current` since the meter was made.
    max: AtomicU64,
    /// The counter and when it was read at the last sample; only the sampler locks it.
    last: Mutex<Option<(u64, Instant)>>,
}

impl RateMeter {
    /// Reads the counter's value `total` at `now`: the rate becomes the growth since the
    /// previous sample per second. The first sample only sets the starting point.
    pub fn sample(&self, total: u64, now: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((before, at)) = *last {
            let span = now.saturating_duration_since(at);
            if span < MIN_SPAN {
                return;
            }
            let per_second = total.saturating_sub(before) as f64 / span.as_secs_f64();
            let rate = per_second.round() as u64;
            self.current.store(rate, Ordering::Relaxed);
            self.max.fetch_max(rate, Ordering::Relaxed);
        }
        *last = Some((total, now));
    }

    /// Per second over the last sampled span (about the last second).
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }

    /// The highest rate sampled since the meter was made.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_growth_per_second_and_max_holds() {
        let m = RateMeter::default();
        let t0 = Instant::now();
        m.sample(100, t0);
        assert_eq!(
            (m.current(), m.max()),
            (0, 0),
            "the first sample is the start"
        );
        m.sample(130, t0 + Duration::from_secs(1));
        assert_eq!((m.current(), m.max()), (30, 30));
        m.sample(150, t0 + Duration::from_secs(3));
        assert_eq!((m.current(), m.max()), (10, 30));
        m.sample(150, t0 + Duration::from_secs(4));
        assert_eq!((m.current(), m.max()), (0, 30));
    }

    #[test]
    fn a_sample_too_soon_is_ignored() {
        let m = RateMeter::default();
        let t0 = Instant::now();
        m.sample(0, t0);
        m.sample(10, t0 + Duration::from_millis(100));
        assert_eq!(m.current(), 0);
        m.sample(20, t0 + Duration::from_secs(2));
        assert_eq!(m.current(), 10, "spans from the first sample");
    }
}
