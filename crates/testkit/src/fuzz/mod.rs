//! Time-bounded random loops: the fuzz targets every crate keeps beside its tests.
//!
//! A target runs for `LINTAS_FUZZ_SECONDS` (default 10) from the seed in `LINTAS_FUZZ_SEED`
//! (default random), so `scripts/test` runs every target for a fixed time from a fixed
//! seed, and a longer or different run is one variable away. The seed is printed when the
//! target ends and in every failure message, with the failing input, so a failure can be
//! replayed: `LINTAS_FUZZ_SEED=<seed> cargo nextest run -p <crate> <target>`.

pub mod http1;

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

/// One fuzz target's run: its seed, its deadline and how many cases it tried.
#[derive(Debug)]
pub struct Fuzz {
    /// Printed with every failure, to replay it.
    pub seed: u64,
    /// Cases started so far; a failure names the case it happened in.
    pub cases: u64,
    /// Name printed in the closing summary.
    target: &'static str,
    /// When the run stops starting new cases.
    until: Instant,
}

impl Fuzz {
    /// A run of `target` from the environment's budget and seed.
    pub fn from_env(target: &'static str) -> Self {
        let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
        Self {
            seed: env("LINTAS_FUZZ_SEED").unwrap_or_else(rand::random),
            cases: 0,
            target,
            until: Instant::now() + Duration::from_secs(env("LINTAS_FUZZ_SECONDS").unwrap_or(10)),
        }
    }

    /// The run's generator: the same seed gives the same cases.
    pub fn rng(&self) -> StdRng {
        StdRng::seed_from_u64(self.seed)
    }

    /// Whether to run another case (and counts it); false once the time is up. The first
    /// case always runs, so a target is never vacuous.
    pub fn next_case(&mut self) -> bool {
        if self.cases > 0 && Instant::now() >= self.until {
            eprintln!("{}: seed {}: {} cases", self.target, self.seed, self.cases);
            return false;
        }
        self.cases += 1;
        true
    }

    /// What a failure message starts with: the seed and the case, to replay it.
    pub fn at(&self) -> String {
        format!("{} seed {} case {}", self.target, self.seed, self.cases)
    }
}
