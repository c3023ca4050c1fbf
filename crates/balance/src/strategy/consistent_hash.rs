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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendSpec;
    use crate::health::Health;
    use crate::strategy::test_util::request;
    use proptest::prelude::{any, prop_assert_eq, prop_assert_ne, proptest};

    fn named(names: &[&str]) -> Vec<Arc<Backend>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                Backend::new(&BackendSpec {
                    name: (*n).into(),
                    addr: format!("127.0.0.1:{}", 20_000 + i).parse().unwrap(),
                    weight: 1,
                })
            })
            .collect()
    }

    fn owner(s: &ConsistentHash, bs: &[Arc<Backend>], key: u64) -> String {
        let p = Pick {
            key: Some(key),
            ..request(bs, &[])
        };
        bs[s.pick(&p).unwrap()].name().to_string()
    }

    #[test]
    fn same_key_same_backend() {
        let bs = named(&["a", "b", "c"]);
        let s = ConsistentHash::new(&bs);
        for k in 0..100u64 {
            let key = hash_key(&k.to_le_bytes());
            assert_eq!(owner(&s, &bs, key), owner(&s, &bs, key));
        }
    }

    #[test]
    fn spread_is_close_to_even() {
        let bs = named(&["a", "b", "c"]);
        let s = ConsistentHash::new(&bs);
        let mut counts = std::collections::HashMap::new();
        for k in 0..30_000u64 {
            *counts
                .entry(owner(&s, &bs, hash_key(&k.to_le_bytes())))
                .or_insert(0) += 1;
        }
        for (_, c) in counts {
            assert!((8_000..12_000).contains(&c), "{c}");
        }
    }

    #[test]
    fn keyless_requests_round_robin() {
        let bs = named(&["a", "b"]);
        let s = ConsistentHash::new(&bs);
        let p = request(&bs, &[]);
        let picks: Vec<_> = (0..4).map(|_| s.pick(&p).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
    }

    proptest! {
        /// Removing one backend moves only the keys it owned.
        #[test]
        fn removal_moves_only_the_removed_backends_keys(
            n in 2usize..8, gone in 0usize..8, keys in proptest::collection::vec(any::<u64>(), 1..200)
        ) {
            let gone = gone % n;
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let all = named(&refs);
            let before = ConsistentHash::new(&all);
            let mut rest_names = refs.clone();
            rest_names.remove(gone);
            let rest = named(&rest_names);
            let after = ConsistentHash::new(&rest);
            for k in keys {
                let was = owner(&before, &all, k);
                if was != names[gone] {
                    prop_assert_eq!(owner(&after, &rest, k), was);
                }
            }
        }

        /// A backend going down moves only its keys, and they come back when it returns.
        #[test]
        fn down_backend_keys_return_when_it_is_up(
            down in 0usize..4, keys in proptest::collection::vec(any::<u64>(), 1..200)
        ) {
            let bs = named(&["a", "b", "c", "d"]);
            let s = ConsistentHash::new(&bs);
            let before: Vec<String> = keys.iter().map(|&k| owner(&s, &bs, k)).collect();
            bs[down].refresh_available(Health::Down);
            for (k, was) in keys.iter().zip(&before) {
                let now = owner(&s, &bs, *k);
                if *was != bs[down].name() {
                    prop_assert_eq!(&now, was);
                } else {
                    prop_assert_ne!(&now, was);
                }
            }
            bs[down].refresh_available(Health::Up);
            let again: Vec<String> = keys.iter().map(|&k| owner(&s, &bs, k)).collect();
            prop_assert_eq!(again, before);
        }
    }
}
