//! The properties every strategy shares, checked for every [`StrategyKind`].
//!
//! Each kind states what it claims about weights and keys in [`claim`], an exhaustive match,
//! so a new strategy does not compile until it says which properties it must pass; the
//! shared ones (only eligible backends, `None` exactly when none is eligible, exclusions
//! honoured, keys ignored or honoured) run for all of them.

use std::sync::Arc;
use std::time::Instant;

use super::test_util::{backends, counts, request};
use super::{Pick, Strategy, StrategyKind, build, hash_key};
use crate::health::Health;
use crate::{AdminState, Backend, BackendSpec};

/// What a strategy promises about how it spreads picks.
#[derive(Debug, Clone, Copy)]
enum Spread {
    /// A fixed rotation over the eligible backends: over whole cycles every eligible backend
    /// gets exactly its share, `weighted` by weight or equal.
    Rotation { weighted: bool },
    /// Always the eligible backend of least `cost` (ties rotate).
    MinCost(fn(&Backend, Instant) -> f64),
    /// The cheaper of two random eligible backends by `cost`: with two eligible it is the
    /// cheaper one, and the most loaded of three never wins.
    TwoChoices(fn(&Backend, Instant) -> f64),
    /// A key always lands on the same backend; without a key, a plain rotation.
    Hashed,
}

/// The claim of each kind; exhaustive, so a new kind must state one.
fn claim(kind: StrategyKind) -> Spread {
    match kind {
        StrategyKind::RoundRobin => Spread::Rotation { weighted: false },
        StrategyKind::WeightedRoundRobin => Spread::Rotation { weighted: true },
        StrategyKind::LeastConnections => {
            Spread::MinCost(|b, _| b.in_flight() as f64 / f64::from(b.weight()))
        }
        StrategyKind::PeakEwma => Spread::MinCost(|b, now| {
            b.latency_ns(now) * (b.in_flight() + 1) as f64 / f64::from(b.weight())
        }),
        StrategyKind::RandomTwoChoices => {
            Spread::TwoChoices(|b, _| (b.in_flight() + 1) as f64 / f64::from(b.weight()))
        }
        StrategyKind::ConsistentHash => Spread::Hashed,
    }
}

/// Backends named `names` with weight 1.
fn named(names: &[String]) -> Vec<Arc<Backend>> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Backend::new(&BackendSpec {
                name: n.clone(),
                addr: format!("127.0.0.1:{}", 20_000 + i).parse().unwrap(),
                weight: 1,
                max_connections: 0,
                backup: false,
            })
        })
        .collect()
}

/// `n` picks, each with the key `keys(i)`; `None` picks are an error.
fn picks(
    s: &dyn Strategy,
    bs: &[Arc<Backend>],
    n: usize,
    key: impl Fn(usize) -> Option<u64>,
) -> Vec<usize> {
    (0..n)
        .map(|i| {
            s.pick(&Pick {
                key: key(i),
                ..request(bs, &[])
            })
            .unwrap()
        })
        .collect()
}

/// Six backends of which only 4 and 5 may be picked: drained, disabled, down, weight 0.
fn mixed() -> Vec<Arc<Backend>> {
    let bs = backends(&[1, 1, 1, 0, 2, 1]);
    bs[0].set_admin(AdminState::Drain);
    bs[1].set_admin(AdminState::Disabled);
    bs[2].refresh_available(Health::Down);
    bs
}

/// The kind after `kind` in declaration order: exhaustive, so a new kind must be added to
/// this chain, and then [`every_kind_is_in_all`] fails until it is in `ALL` too.
fn successor(kind: StrategyKind) -> Option<StrategyKind> {
    match kind {
        StrategyKind::RoundRobin => Some(StrategyKind::WeightedRoundRobin),
        StrategyKind::WeightedRoundRobin => Some(StrategyKind::LeastConnections),
        StrategyKind::LeastConnections => Some(StrategyKind::RandomTwoChoices),
        StrategyKind::RandomTwoChoices => Some(StrategyKind::PeakEwma),
        StrategyKind::PeakEwma => Some(StrategyKind::ConsistentHash),
        StrategyKind::ConsistentHash => None,
    }
}

#[test]
fn every_kind_is_in_all() {
    let chain: Vec<StrategyKind> =
        std::iter::successors(Some(StrategyKind::RoundRobin), |&k| successor(k)).collect();
    assert_eq!(chain, StrategyKind::ALL);
    for kind in StrategyKind::ALL {
        assert_eq!(kind.as_str().parse::<StrategyKind>(), Ok(kind));
    }
}

#[test]
fn every_kind_picks_only_eligible_backends_keyed_or_not() {
    for kind in StrategyKind::ALL {
        let bs = mixed();
        let s = build(kind, &bs);
        for key in [None, Some(7)] {
            let got = picks(&*s, &bs, 300, |i| {
                key.map(|k| hash_key(&(k + i as u64).to_le_bytes()))
            });
            let mut seen: Vec<usize> = got.clone();
            seen.sort_unstable();
            seen.dedup();
            assert!(
                seen.iter().all(|i| [4, 5].contains(i)),
                "{kind} with key {key:?}: {seen:?}"
            );
        }
        // Excluding 4 leaves 5 alone; excluding both leaves nothing.
        for _ in 0..20 {
            assert_eq!(s.pick(&request(&bs, &bs[4..5])), Some(5), "{kind}");
            let keyed = Pick {
                key: Some(hash_key(b"k")),
                ..request(&bs, &bs[4..5])
            };
            assert_eq!(s.pick(&keyed), Some(5), "{kind} keyed");
        }
        assert_eq!(s.pick(&request(&bs, &bs[4..6])), None, "{kind}");
    }
}

#[test]
fn every_kind_returns_none_exactly_when_nothing_is_eligible() {
    for kind in StrategyKind::ALL {
        let bs = backends(&[1, 2]);
        let s = build(kind, &bs);
        assert!(s.pick(&request(&bs, &[])).is_some(), "{kind}");
        bs[0].refresh_available(Health::Down);
        bs[1].set_admin(AdminState::Drain);
        assert_eq!(s.pick(&request(&bs, &[])), None, "{kind}");
        let keyed = Pick {
            key: Some(hash_key(b"client")),
            ..request(&bs, &[])
        };
        assert_eq!(s.pick(&keyed), None, "{kind} keyed");
        // One comes back: every pick, keyed or not, is that one.
        bs[1].set_admin(AdminState::Enabled);
        for i in 0..20u64 {
            assert_eq!(s.pick(&request(&bs, &[])), Some(1), "{kind}");
            let p = Pick {
                key: Some(hash_key(&i.to_le_bytes())),
                ..request(&bs, &[])
            };
            assert_eq!(s.pick(&p), Some(1), "{kind} keyed");
        }
        // An empty pool has nothing to pick.
        let empty = build(kind, &[]);
        assert_eq!(empty.pick(&request(&[], &[])), None, "{kind}");
    }
}

#[test]
fn every_kind_spreads_as_it_claims() {
    for kind in StrategyKind::ALL {
        match claim(kind) {
            Spread::Rotation { weighted } => rotation(kind, weighted),
            Spread::MinCost(cost) => min_cost(kind, cost),
            Spread::TwoChoices(cost) => two_choices(kind, cost),
            Spread::Hashed => hashed(kind),
        }
    }
}

/// Exact shares over whole cycles, with every backend up and with one down (its share goes
/// to the others: by weight, or evenly).
fn rotation(kind: StrategyKind, weighted: bool) {
    let bs = backends(&[3, 2, 1]);
    let s = build(kind, &bs);
    let want = if weighted {
        [300, 200, 100]
    } else {
        [200, 200, 200]
    };
    assert_eq!(counts(&picks(&*s, &bs, 600, |_| None), 3), want, "{kind}");
    bs[0].refresh_available(Health::Down);
    let down = Pick {
        generation: 1,
        ..request(&bs, &[])
    };
    let got: Vec<usize> = (0..300).map(|_| s.pick(&down).unwrap()).collect();
    let want = if weighted {
        [0, 200, 100]
    } else {
        [0, 150, 150]
    };
    assert_eq!(counts(&got, 3), want, "{kind} with b0 down");
}

/// Each pick is the cheapest backend at the time; with leases held, in-flight follows the
/// weights; without, equal backends take exact turns.
fn min_cost(kind: StrategyKind, cost: fn(&Backend, Instant) -> f64) {
    let bs = backends(&[2, 1, 1]);
    bs[2].refresh_available(Health::Down);
    let s = build(kind, &bs);
    let mut held = Vec::new();
    for _ in 0..30 {
        let p = request(&bs, &[]);
        let i = s.pick(&p).unwrap();
        let cheapest = (0..2)
            .map(|j| cost(&bs[j], p.now))
            .fold(f64::INFINITY, f64::min);
        assert_eq!(
            cost(&bs[i], p.now),
            cheapest,
            "{kind}: picked {i}, not the cheapest"
        );
        held.push(bs[i].lease());
    }
    let in_flight: Vec<u64> = bs.iter().map(|b| b.in_flight()).collect();
    assert!(
        in_flight[0] >= 19 && in_flight[0] <= 21 && in_flight[2] == 0,
        "{kind}: {in_flight:?}"
    );
    drop(held);
    let equal = backends(&[1, 1, 1]);
    let s = build(kind, &equal);
    assert_eq!(
        counts(&picks(&*s, &equal, 30, |_| None), 3),
        [10, 10, 10],
        "{kind}: ties rotate"
    );
}

/// Two eligible: always the cheaper; three with one loaded: never the loaded one; idle
/// backends: all of them used.
fn two_choices(kind: StrategyKind, cost: fn(&Backend, Instant) -> f64) {
    let bs = backends(&[1, 1, 1]);
    bs[2].refresh_available(Health::Down);
    let _busy: Vec<_> = (0..3).map(|_| bs[0].lease()).collect();
    let s = build(kind, &bs);
    let now = Instant::now();
    assert!(cost(&bs[1], now) < cost(&bs[0], now));
    assert_eq!(
        counts(&picks(&*s, &bs, 200, |_| None), 3),
        [0, 200, 0],
        "{kind}"
    );
    bs[2].refresh_available(Health::Up);
    assert_eq!(
        counts(&picks(&*s, &bs, 200, |_| None), 3)[0],
        0,
        "{kind}: loaded one won"
    );
    let idle = backends(&[1, 1, 1, 1]);
    let s = build(kind, &idle);
    assert!(
        counts(&picks(&*s, &idle, 400, |_| None), 4)
            .iter()
            .all(|&c| c > 0),
        "{kind}"
    );
}

/// Same key, same backend; removing a backend or taking it down moves only its keys (which
/// come back when it is up); keyless picks rotate; the spread follows weights.
fn hashed(kind: StrategyKind) {
    let owner = |s: &dyn Strategy, bs: &[Arc<Backend>], key: u64| {
        let p = Pick {
            key: Some(key),
            ..request(bs, &[])
        };
        bs[s.pick(&p).unwrap()].name().to_owned()
    };
    let keys: Vec<u64> = (0..2_000u64).map(|k| hash_key(&k.to_le_bytes())).collect();
    for n in 2..8 {
        let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
        let all = named(&names);
        let s = build(kind, &all);
        let before: Vec<String> = keys.iter().map(|&k| owner(&*s, &all, k)).collect();
        let again: Vec<String> = keys.iter().map(|&k| owner(&*s, &all, k)).collect();
        assert_eq!(before, again, "{kind}: a key moved with nothing changed");
        for gone in 0..n {
            let mut rest_names = names.clone();
            rest_names.remove(gone);
            let rest = named(&rest_names);
            let after = build(kind, &rest);
            for (&k, was) in keys.iter().zip(&before) {
                if *was != names[gone] {
                    assert_eq!(&owner(&*after, &rest, k), was, "{kind}: key {k} moved");
                }
            }
            all[gone].refresh_available(Health::Down);
            for (&k, was) in keys.iter().zip(&before) {
                let now = owner(&*s, &all, k);
                assert_eq!(
                    now == *was,
                    *was != names[gone],
                    "{kind}: key {k} with {gone} down"
                );
            }
            all[gone].refresh_available(Health::Up);
            let back: Vec<String> = keys.iter().map(|&k| owner(&*s, &all, k)).collect();
            assert_eq!(back, before, "{kind}: keys did not come back to {gone}");
        }
    }
    let bs = backends(&[1, 1]);
    let s = build(kind, &bs);
    assert_eq!(
        picks(&*s, &bs, 4, |_| None),
        [0, 1, 0, 1],
        "{kind}: keyless"
    );
    let bs = backends(&[2, 1, 1]);
    let s = build(kind, &bs);
    let spread = counts(
        &picks(&*s, &bs, 40_000, |i| {
            Some(hash_key(&(i as u64).to_le_bytes()))
        }),
        3,
    );
    for (got, want) in spread.iter().zip([20_000, 10_000, 10_000]) {
        assert!(got.abs_diff(want) < want / 5, "{kind}: spread {spread:?}");
    }
}
