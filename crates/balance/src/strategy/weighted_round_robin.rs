//! Round-robin in proportion to weight, smoothly interleaved.
//!
//! The order is nginx's smooth weighted round-robin: each round every backend's current value
//! grows by its weight, the largest is chosen and pays back the total. Weights 5/1/1 give
//! `a a b a c a a`, not `a a a a a b c`, so a heavy backend never takes a burst. The order is
//! computed once per availability generation over the eligible backends (so a down backend's
//! share goes to the others in proportion to their weights) and then walked with an atomic
//! counter: the hot path takes no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use super::{Pick, Strategy};

/// Smooth weighted round-robin.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    next: AtomicUsize,
    /// The order for one availability generation.
    order: ArcSwap<Order>,
}

#[derive(Debug)]
struct Order {
    generation: Option<u64>,
    sequence: Vec<u32>,
}

impl Default for WeightedRoundRobin {
    fn default() -> Self {
        Self {
            next: AtomicUsize::new(0),
            order: ArcSwap::from_pointee(Order {
                generation: None,
                sequence: Vec::new(),
            }),
        }
    }
}

/// The smooth interleaving of `weights` (index, weight), one full cycle.
fn smooth_sequence(weights: &[(usize, u32)]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&(_, w)| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (j, &(_, w)) in weights.iter().enumerate() {
            current[j] += i64::from(w);
            if current[j] > current[best] {
                best = j;
            }
        }
        current[best] -= total;
        seq.push(weights[best].0 as u32);
    }
    seq
}

impl WeightedRoundRobin {
    fn order_for(&self, p: &Pick<'_>) -> Arc<Order> {
        let order = self.order.load_full();
        if order.generation == Some(p.generation) {
            return order;
        }
        let weights: Vec<(usize, u32)> = p
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_available())
            .map(|(i, b)| (i, b.weight()))
            .collect();
        let fresh = Arc::new(Order {
            generation: Some(p.generation),
            sequence: smooth_sequence(&weights),
        });
        self.order.store(fresh.clone());
        fresh
    }
}

impl Strategy for WeightedRoundRobin {
    fn pick(&self, p: &Pick<'_>) -> Option<usize> {
        let order = self.order_for(p);
        let len = order.sequence.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|off| order.sequence[(start + off) % len] as usize)
            .find(|&i| i < p.backends.len() && p.eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_util::*;

    #[test]
    fn smooth_order_has_no_bursts() {
        let bs = backends(&[5, 1, 1]);
        let picks = pick_n(&WeightedRoundRobin::default(), &bs, 7, 0);
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }
}
