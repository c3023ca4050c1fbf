//! How long a backend's real answers take, for people: HAProxy's `rtime`.
//!
//! The balancer keeps its own latency estimate (peak-EWMA in [`crate::Backend`]): it jumps to
//! a slow sample, charges failures a penalty and decays toward a default while idle, which is
//! right for choosing a backend and misleading on a stats page (an idle backend would look
//! like it answers in 30 ms). This is the other number: the mean of measured response times
//! of successful requests only, over about the last [`WINDOW`] of them, that never decays and
//! is absent until the first answer.
//!
//! One update is a `fetch_add` and a load and store of the mean (relaxed): two responses
//! recorded at the same instant may lose one of the two samples, which a mean over hundreds
//! does not notice, and the data path takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Responses the mean spans, about: the first ones are averaged exactly, later ones move the
/// mean by 1/WINDOW of their difference. Large enough that one slow answer does not swing
/// it, small enough that a busy backend's number reflects the last seconds.
pub const WINDOW: u64 = 256;

/// The mean response time of one backend.
#[derive(Debug, Default)]
pub struct ResponseTime {
    /// The mean in nanoseconds as `f64` bits; 0 until the first sample.
    mean_ns: AtomicU64,
    /// Samples taken, which sets the weight of the next one until it reaches [`WINDOW`].
    samples: AtomicU64,
}

impl ResponseTime {
    /// Folds in one measured response time.
    pub fn observe(&self, took: Duration) {
        let n = self.samples.fetch_add(1, Ordering::Relaxed) + 1;
        let sample = took.as_nanos() as f64;
        let mean = f64::from_bits(self.mean_ns.load(Ordering::Relaxed));
        let next = mean + (sample - mean) / n.min(WINDOW) as f64;
        // A zero mean means "no sample" to readers; a 0 ns answer is 1 ns here.
        self.mean_ns
            .store(next.max(1.0).to_bits(), Ordering::Relaxed);
    }

    /// The mean in milliseconds; `None` before the first response.
    pub fn mean_ms(&self) -> Option<f64> {
        let bits = self.mean_ns.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits) / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_until_the_first_answer_then_the_mean() {
        let r = ResponseTime::default();
        assert_eq!(r.mean_ms(), None);
        r.observe(Duration::from_millis(50));
        assert_eq!(r.mean_ms(), Some(50.0));
        r.observe(Duration::from_millis(70));
        r.observe(Duration::from_millis(90));
        assert_eq!(r.mean_ms(), Some(70.0));
    }

    #[test]
    fn past_the_window_a_sample_moves_the_mean_by_a_window_share() {
        let r = ResponseTime::default();
        for _ in 0..WINDOW * 4 {
            r.observe(Duration::from_millis(10));
        }
        r.observe(Duration::from_millis(10 + WINDOW));
        let mean = r.mean_ms().unwrap();
        assert!((mean - 11.0).abs() < 1e-6, "{mean}");
    }
}
