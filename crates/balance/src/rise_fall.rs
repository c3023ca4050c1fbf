//! Rise and fall: how a run of pass/fail results becomes up or down.
//!
//! One lost probe must not take a backend out, and one lucky answer must not bring a dead
//! one back. So a target that is up goes down only after `fall` failures in a row, and one
//! that is down comes back only after `rise` passes in a row; a result that agrees with the
//! current state starts the count again. The proxy's backends ([`crate::health`]) and the
//! targets watch checks itself both run this machine, so a `rise = 2, fall = 3` means the
//! same thing in `[proxy]` and `[watch]`.

/// Up or down, and how many results in a row have disagreed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    /// The state the results have settled on.
    up: bool,
    /// Results in a row that disagreed with `up`; reaching `rise` or `fall` flips it.
    streak: u32,
}

impl Default for RiseFall {
    /// Starts up, as HAProxy does: a started service serves at once rather than refusing
    /// until `rise` checks have passed; a dead target is out after `fall` checks.
    fn default() -> Self {
        Self {
            up: true,
            streak: 0,
        }
    }
}

impl RiseFall {
    /// Whether the results have settled on up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Counts one result; returns the new state (`true` for up) when it flipped: after
    /// `fall` failures in a row while up, or `rise` passes in a row while down.
    pub fn observe(&mut self, passed: bool, rise: u32, fall: u32) -> Option<bool> {
        if passed == self.up {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        if self.streak < if self.up { fall } else { rise } {
            return None;
        }
        self.up = passed;
        self.streak = 0;
        Some(passed)
    }

    /// Forgets the results counted so far, when something else changed what they were
    /// counted against (a passive ejection of a backend, or its end).
    pub fn clear_streak(&mut self) {
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `results` ('+' pass, '-' fail) and writes what each one returned.
    fn run(rise: u32, fall: u32, results: &str) -> String {
        let mut m = RiseFall::default();
        results
            .chars()
            .map(|c| match m.observe(c == '+', rise, fall) {
                Some(true) => 'U',
                Some(false) => 'D',
                None => '.',
            })
            .collect()
    }

    #[test]
    fn goes_down_after_fall_failures_and_up_after_rise_passes() {
        assert_eq!(run(2, 3, "---+-++++"), "..D...U..");
    }

    #[test]
    fn a_result_that_agrees_restarts_the_count() {
        assert_eq!(run(2, 3, "--+--+--+"), ".........");
        assert_eq!(run(2, 3, "---+-+-+-++"), "..D.......U");
    }

    #[test]
    fn thresholds_of_one_follow_every_change() {
        assert_eq!(run(1, 1, "+-+-"), ".DUD");
    }

    #[test]
    fn clearing_the_streak_restarts_the_count() {
        let mut m = RiseFall::default();
        assert_eq!(m.observe(false, 2, 2), None);
        m.clear_streak();
        assert_eq!(m.observe(false, 2, 2), None);
        assert_eq!(m.observe(false, 2, 2), Some(false));
        assert!(!m.is_up());
    }
}
