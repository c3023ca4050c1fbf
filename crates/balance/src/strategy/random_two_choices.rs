//! Power of two choices: pick two eligible backends at random, keep the less loaded.
//!
//! Nearly as good as least-connections at spreading load, but it reads two counters instead
//! of all of them and avoids the herd that forms when many balancers see the same minimum.

use rand::Rng;

use super::{Pick, Strategy};

/// P2C over in-flight ÷ weight.
#[derive(Debug, Default)]
pub struct RandomTwoChoices;

impl Strategy for RandomTwoChoices {
    fn pick(&self, p: &Pick<'_>) -> Option<usize> {
        let count = p.eligible_count();
        match count {
            0 => None,
            1 => p.nth_eligible(0),
            _ => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..count);
                let mut b = rng.random_range(0..count - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (p.nth_eligible(a)?, p.nth_eligible(b)?);
                let load = |i: usize| {
                    let be = &p.backends[i];
                    (be.in_flight() + 1) as f64 / f64::from(be.weight().max(1))
                };
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_util::*;

    #[test]
    fn never_picks_the_most_loaded_of_three_when_others_idle() {
        // With three backends any pair contains an idle one, so the busy one never wins.
        let bs = backends(&[1, 1, 1]);
        let _busy: Vec<_> = (0..5).map(|_| bs[2].lease()).collect();
        let picks = pick_n(&RandomTwoChoices, &bs, 200, 0);
        assert!(!picks.contains(&2));
    }

    #[test]
    fn spreads_over_all_backends() {
        let bs = backends(&[1, 1, 1, 1]);
        let picks = pick_n(&RandomTwoChoices, &bs, 400, 0);
        assert!(counts(&picks, 4).iter().all(|&c| c > 0));
    }
}
