//! Every eligible backend in turn, weights ignored.
//!
//! The counter indexes the *eligible* backends, not all of them, so when one backend is down
//! the others still share traffic exactly evenly (skipping to the next backend would hand the
//! dead one's turn to its neighbour and double its share).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Pick, Strategy};

/// Plain round-robin.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Strategy for RoundRobin {
    fn pick(&self, p: &Pick<'_>) -> Option<usize> {
        let count = p.eligible_count();
        if count == 0 {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % count;
        p.nth_eligible(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use crate::strategy::test_util::*;

    #[test]
    fn cycles_in_order() {
        let bs = backends(&[1, 5, 1]);
        let picks = pick_n(&RoundRobin::default(), &bs, 6, 0);
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn down_backend_shares_evenly_among_the_rest() {
        let bs = backends(&[1, 1, 1, 1]);
        bs[1].refresh_available(Health::Down);
        let picks = pick_n(&RoundRobin::default(), &bs, 300, 0);
        assert_eq!(counts(&picks, 4), vec![100, 0, 100, 100]);
    }

    #[test]
    fn none_when_all_unavailable() {
        let bs = backends(&[1, 1]);
        for b in &bs {
            b.refresh_available(Health::Down);
        }
        let p = Pick {
            backends: &bs,
            key: None,
            exclude: &[],
            now: std::time::Instant::now(),
            generation: 0,
        };
        assert_eq!(RoundRobin::default().pick(&p), None);
    }

    #[test]
    fn excluded_backend_is_skipped() {
        let bs = backends(&[1, 1]);
        let p = Pick {
            backends: &bs,
            key: None,
            exclude: &bs[..1],
            now: std::time::Instant::now(),
            generation: 0,
        };
        let rr = RoundRobin::default();
        for _ in 0..5 {
            assert_eq!(rr.pick(&p), Some(1));
        }
    }
}
