//! Every eligible backend in turn, weights ignored.
//!
//! The counter indexes the *eligible* backends, not all of them, so when one backend is down
//! the others still share traffic exactly evenly (skipping to the next backend would hand the
//! dead one's turn to its neighbour and double its share). A retry (a pick with exclusions)
//! does not take a turn: it reuses the request's position among the remaining backends, so a
//! failing backend does not shift the rotation of the healthy ones.

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
        let turn = if p.exclude.is_empty() {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed)
        };
        p.nth_eligible(turn % count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_util::*;

    #[test]
    fn cycles_in_order() {
        let bs = backends(&[1, 5, 1]);
        let picks = pick_n(&RoundRobin::default(), &bs, 6, 0);
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn retries_do_not_shift_the_rotation() {
        // b1 refuses connections: every pick that lands on it is retried with it excluded.
        let bs = backends(&[1, 1, 1]);
        let rr = RoundRobin::default();
        let mut served = vec![0; 3];
        for _ in 0..30 {
            let p = request(&bs, &[]);
            let mut i = rr.pick(&p).unwrap();
            if i == 1 {
                let retry = Pick {
                    exclude: &bs[1..2],
                    ..p
                };
                i = rr.pick(&retry).unwrap();
            }
            served[i] += 1;
        }
        assert_eq!(served, vec![15, 0, 15]);
    }
}
