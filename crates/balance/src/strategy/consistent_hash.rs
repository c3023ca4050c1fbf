//! A hash ring: a key always lands on the same backend while that backend is up.
//!
//! Each backend places `POINTS_PER_WEIGHT × weight` points on a 64-bit ring, at hashes of its
//! *name* (not its position), so adding or removing one backend moves only the keys whose
//! nearest point was that backend's — about 1/N of them — and every restart or node routes a
//! key the same way (the hash seed is fixed). A key whose backend is unavailable walks
//! clockwise to the next eligible point. Requests without a key are spread round-robin.

use std::sync::Arc;

use super::{Pick, Strategy, hash_key, round_robin::RoundRobin};
use crate::Backend;

/// Ring points per unit of weight; 100 keeps the spread within a few percent of the weights.
const POINTS_PER_WEIGHT: u32 = 100;

/// Consistent hashing over a ring of weighted points.
#[derive(Debug)]
pub struct ConsistentHash {
    /// (point, backend index), sorted by point.
    ring: Vec<(u64, u32)>,
    /// Fallback for requests without a key.
    keyless: RoundRobin,
}

impl ConsistentHash {
    /// Builds the ring over `backends` with their current weights.
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        let mut ring = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            for point in 0..POINTS_PER_WEIGHT * b.weight() {
                let label = format!("{}#{point}", b.name());
                ring.push((hash_key(label.as_bytes()), i as u32));
            }
        }
        ring.sort_unstable();
        Self {
            ring,
            keyless: RoundRobin::default(),
        }
    }
}

impl Strategy for ConsistentHash {
    fn pick(&self, p: &Pick<'_>) -> Option<usize> {
        let Some(key) = p.key else {
            return self.keyless.pick(p);
        };
        if self.ring.is_empty() {
            return None;
        }
        let start = self.ring.partition_point(|&(h, _)| h < key);
        let len = self.ring.len();
        (0..len)
            .map(|off| self.ring[(start + off) % len].1 as usize)
            .find(|&i| i < p.backends.len() && p.eligible(i))
    }
}
