//! Fewest in-flight requests or connections relative to weight.
//!
//! The in-flight count is the [`crate::Lease`] count: taken at pick, given back when the
//! request or connection ends, so a backend stuck on long jobs stops receiving short ones and
//! the count never only grows. Ties rotate so equally loaded backends share traffic evenly.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Pick, Strategy};

/// Weighted least-connections.
#[derive(Debug, Default)]
pub struct LeastConnections {
    next: AtomicUsize,
}

impl Strategy for LeastConnections {
    fn pick(&self, p: &Pick<'_>) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // in_flight / weight, compared as a float; weights are 1..=256 so this is exact
        // enough to order any realistic counts.
        p.min_by_cost(start, |b| {
            b.in_flight() as f64 / f64::from(b.weight().max(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_util::*;

    #[test]
    fn held_leases_balance_by_weight() {
        let bs = backends(&[2, 1]);
        let s = LeastConnections::default();
        let mut held = Vec::new();
        for _ in 0..30 {
            let i = pick_n(&s, &bs, 1, 0)[0];
            held.push(bs[i].lease());
        }
        assert_eq!((bs[0].in_flight(), bs[1].in_flight()), (20, 10));
        drop(held);
        assert_eq!((bs[0].in_flight(), bs[1].in_flight()), (0, 0));
    }
}
