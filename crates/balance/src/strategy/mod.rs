//! Strategies: how a pool chooses one backend among the eligible ones.
//!
//! A strategy is built from a pool's backend list ([`build`]) and answers [`Strategy::pick`]
//! with an index into that list. It only ever returns a backend that is
//! [`Backend::is_available`], has room under its `max_connections` and is not in the caller's
//! exclusion list (backends a retry already tried), so the caller never filters. Strategies that need precomputed state (the weighted
//! round-robin sequence, the hash ring) build it once; the pool rebuilds the strategy when
//! membership or weights change and bumps a *generation* when availability changes, so that
//! cached state is recomputed off the hot path's common case.
//!
//! One file per algorithm:
//!
//! | kind | file | weights |
//! |---|---|---|
//! | `round_robin` | [`round_robin`] | ignored: every eligible backend in turn |
//! | `weighted_round_robin` | [`weighted_round_robin`] | smooth interleaving, no bursts |
//! | `least_connections` | [`least_connections`] | in-flight ÷ weight |
//! | `random_two_choices` | [`random_two_choices`] | in-flight ÷ weight of two random picks |
//! | `peak_ewma` | [`peak_ewma`] | latency × (in-flight + 1) ÷ weight |
//! | `consistent_hash` | [`consistent_hash`] | points on the ring ∝ weight |

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::Backend;

pub mod consistent_hash;
pub mod least_connections;
pub mod peak_ewma;
pub mod random_two_choices;
pub mod round_robin;
pub mod weighted_round_robin;

/// Fixed seed of every hash lintas computes for balancing, so a key goes to the same backend
/// across restarts and across nodes.
const HASH_SEED: u64 = 0x6c69_6e74_6173_2131;

/// Hashes a balancing key (client IP bytes, a header or cookie value) with the fixed seed.
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, HASH_SEED)
}

/// The algorithm a pool uses; chosen per pool, changeable at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Every eligible backend in turn.
    RoundRobin,
    /// Round-robin in proportion to weight, interleaved (nginx's smooth algorithm).
    WeightedRoundRobin,
    /// Fewest requests or connections in flight relative to weight.
    LeastConnections,
    /// Power of two choices: the less loaded of two random backends.
    RandomTwoChoices,
    /// Lowest peak-EWMA latency times load, with a penalty for failures.
    PeakEwma,
    /// A ring of hashed points: a key always lands on the same backend while it is up.
    ConsistentHash,
}

impl StrategyKind {
    /// Every kind, for help texts and error messages.
    pub const ALL: [StrategyKind; 6] = [
        Self::RoundRobin,
        Self::WeightedRoundRobin,
        Self::LeastConnections,
        Self::RandomTwoChoices,
        Self::PeakEwma,
        Self::ConsistentHash,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::LeastConnections => "least_connections",
            Self::RandomTwoChoices => "random_two_choices",
            Self::PeakEwma => "peak_ewma",
            Self::ConsistentHash => "consistent_hash",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StrategyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown strategy `{s}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What a consistent-hash pool hashes to choose a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// The client's IP address (not its port): one client, one backend.
    ClientIp,
    /// The value of this request header; requests without it are spread round-robin.
    Header(String),
    /// The value of this cookie; requests without it are spread round-robin.
    Cookie(String),
}

/// One pick request: the backends, the key and what to skip.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// The pool's backends, in the order the strategy was built with.
    pub backends: &'a [Arc<Backend>],
    /// Hash of the balancing key, for consistent hashing.
    pub key: Option<u64>,
    /// Backends already tried by this request; never returned again.
    pub exclude: &'a [Arc<Backend>],
    /// Current time, for latency decay.
    pub now: Instant,
    /// Bumped by the pool whenever any backend's availability changes.
    pub generation: u64,
    /// Whether backup backends may be chosen: no primary is available.
    pub backups: bool,
}

impl Pick<'_> {
    /// Whether backend `i` may be returned.
    #[inline]
    pub fn eligible(&self, i: usize) -> bool {
        let b = &self.backends[i];
        b.is_available()
            && b.has_room()
            && (self.backups || !b.is_backup())
            && !self.exclude.iter().any(|e| Arc::ptr_eq(e, b))
    }

    /// Number of eligible backends.
    pub fn eligible_count(&self) -> usize {
        (0..self.backends.len())
            .filter(|&i| self.eligible(i))
            .count()
    }

    /// Index of the `k`-th eligible backend (0-based).
    pub fn nth_eligible(&self, k: usize) -> Option<usize> {
        (0..self.backends.len())
            .filter(|&i| self.eligible(i))
            .nth(k)
    }

    /// The eligible backend minimising `cost`, scanning from `start` so that ties rotate
    /// instead of always landing on the first backend.
    pub fn min_by_cost<C: PartialOrd>(
        &self,
        start: usize,
        cost: impl Fn(&Backend) -> C,
    ) -> Option<usize> {
        let n = self.backends.len();
        let mut best: Option<(usize, C)> = None;
        for off in 0..n {
            let i = (start + off) % n;
            if !self.eligible(i) {
                continue;
            }
            let c = cost(&self.backends[i]);
            if best.as_ref().is_none_or(|(_, bc)| c < *bc) {
                best = Some((i, c));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Chooses one backend for a request or connection.
pub trait Strategy: Send + Sync + fmt::Debug {
    /// Index of the chosen backend in `p.backends`, or `None` when none is eligible.
    fn pick(&self, p: &Pick<'_>) -> Option<usize>;
}

/// Builds the strategy of `kind` over `backends`.
pub fn build(kind: StrategyKind, backends: &[Arc<Backend>]) -> Box<dyn Strategy> {
    match kind {
        StrategyKind::RoundRobin => Box::new(round_robin::RoundRobin::default()),
        StrategyKind::WeightedRoundRobin => {
            Box::new(weighted_round_robin::WeightedRoundRobin::default())
        }
        StrategyKind::LeastConnections => Box::new(least_connections::LeastConnections::default()),
        StrategyKind::RandomTwoChoices => Box::new(random_two_choices::RandomTwoChoices),
        StrategyKind::PeakEwma => Box::new(peak_ewma::PeakEwma::default()),
        StrategyKind::ConsistentHash => Box::new(consistent_hash::ConsistentHash::new(backends)),
    }
}

#[cfg(test)]
mod compliance;

/// Helpers shared by the strategies' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use std::sync::Arc;
    use std::time::Instant;

    use super::{Pick, Strategy};
    use crate::{Backend, BackendSpec};

    pub fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Backend::new(&BackendSpec {
                    name: format!("b{i}"),
                    addr: format!("127.0.0.1:{}", 10_000 + i).parse().unwrap(),
                    weight: w,
                    max_connections: 0,
                    backup: false,
                })
            })
            .collect()
    }

    /// A pick over `bs` now, without a key, skipping `exclude`.
    pub fn request<'a>(bs: &'a [Arc<Backend>], exclude: &'a [Arc<Backend>]) -> Pick<'a> {
        Pick {
            backends: bs,
            key: None,
            exclude,
            now: Instant::now(),
            generation: 0,
            backups: false,
        }
    }

    pub fn pick_n(s: &dyn Strategy, bs: &[Arc<Backend>], n: usize, generation: u64) -> Vec<usize> {
        (0..n)
            .map(|_| {
                s.pick(&Pick {
                    generation,
                    ..request(bs, &[])
                })
                .unwrap()
            })
            .collect()
    }

    pub fn counts(picks: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &p in picks {
            c[p] += 1;
        }
        c
    }
}
