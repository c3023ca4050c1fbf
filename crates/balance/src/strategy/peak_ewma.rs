//! Lowest latency × load: peak-EWMA as in Finagle and Linkerd.
//!
//! Each backend keeps an exponentially weighted moving average of its response time that
//! jumps straight to any slower sample (the *peak*) and decays back otherwise. Failures count
//! as a sample of at least one second, so a backend that fails fast looks slow rather than
//! attractive. Cost = latency × (in-flight + 1) ÷ weight; the cheapest eligible backend wins,
//! ties rotating.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Pick, Strategy};

/// Latency-aware strategy.
#[derive(Debug, Default)]
pub struct PeakEwma {
    next: AtomicUsize,
}

impl Strategy for PeakEwma {
    fn pick(&self, p: &Pick<'_>) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        p.min_by_cost(start, |b| {
            b.latency_ns(p.now) * (b.in_flight() + 1) as f64 / f64::from(b.weight().max(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use crate::strategy::test_util::*;
    use std::time::{Duration, Instant};

    #[test]
    fn prefers_the_faster_backend() {
        let bs = backends(&[1, 1]);
        let now = Instant::now();
        bs[0].observe_latency(Duration::from_millis(200), now);
        bs[1].observe_latency(Duration::from_millis(5), now);
        let picks = pick_n(&PeakEwma::default(), &bs, 10, 0);
        assert_eq!(counts(&picks, 2), vec![0, 10]);
    }

    #[test]
    fn fast_failing_backend_does_not_attract_traffic() {
        let bs = backends(&[1, 1]);
        let now = Instant::now();
        bs[1].observe_latency(Duration::from_millis(50), now);
        // b0 fails instantly: without the penalty its latency would look like 0.
        bs[0].lease().record(Outcome::Failure);
        let p = request(&bs, &[]);
        assert_eq!(PeakEwma::default().pick(&p), Some(1));
    }

    #[test]
    fn load_counts_against_a_fast_backend() {
        let bs = backends(&[1, 1]);
        let now = Instant::now();
        bs[0].observe_latency(Duration::from_millis(10), now);
        bs[1].observe_latency(Duration::from_millis(30), now);
        let _held: Vec<_> = (0..5).map(|_| bs[0].lease()).collect();
        let picks = pick_n(&PeakEwma::default(), &bs, 4, 0);
        assert_eq!(picks, vec![1, 1, 1, 1]);
    }
}
