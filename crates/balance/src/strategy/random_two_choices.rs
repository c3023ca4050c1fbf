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
