//! The health state machine of one backend.
//!
//! Two inputs move it:
//!
//! - **active checks** ([`CheckResult`]): `fall` consecutive failures take an `Up` backend
//!   `Down`; `rise` consecutive successes bring a `Down` one back `Up`. The thresholds keep a
//!   single lost probe from flapping the backend. The counting is [`RiseFall`]'s, the
//!   machine watch's own targets run too.
//! - **passive observation** of real traffic: `eject_after` consecutive connect failures (L4)
//!   or 5xx/timeouts (L7) *eject* an `Up` backend for `cooldown`; when the cooldown has
//!   passed, [`crate::Pool::tick`] brings it back (and later failures eject it again). Any
//!   success resets the count. The count is an atomic on the backend, so the request path
//!   never takes this machine's lock unless the threshold is reached.
//!
//! **Initial state.** A backend starts `Up`, as in HAProxy: a freshly started or reloaded
//! proxy serves at once instead of answering 503 until `rise` checks have passed, and a dead
//! backend is taken out after `fall` checks (or sooner, after `failures` passive failures).
//!
//! Every change of state is published as a [`HealthEvent`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::RiseFall;

/// Health as the state machine sees it (the operator's wish is [`crate::AdminState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Passing checks; takes traffic.
    Up,
    /// Failed `fall` active checks in a row.
    Down,
    /// Failed `failures` real requests in a row; out until its cooldown ends.
    Ejected,
}

impl Health {
    /// Lower-case name for logs, JSON and the stats page.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Ejected => "ejected",
        }
    }
}

/// Thresholds of a pool's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive passing checks that bring a `Down` backend `Up`.
    pub rise: u32,
    /// Consecutive failing checks that take an `Up` backend `Down`.
    pub fall: u32,
    /// Consecutive failures of real traffic that eject a backend; 0 turns ejection off.
    pub eject_after: u32,
    /// How long an ejected backend stays out.
    pub cooldown: Duration,
    /// A backend coming back (up again, or enabled) gets its share of new traffic in
    /// proportion to the time since, reaching all of it after this long; zero gives it all
    /// at once. Caches and JITs warming up are spared a full load at once.
    pub slow_start: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            rise: 2,
            fall: 3,
            eject_after: 5,
            cooldown: Duration::from_secs(10),
            slow_start: Duration::ZERO,
        }
    }
}

/// What one active check found.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Whether the backend passed.
    pub ok: bool,
    /// What was seen, e.g. "HTTP 200" or "connection refused".
    pub detail: String,
    /// How long the check took.
    pub duration: Duration,
}

/// A backend changed state; published on the pool's broadcast channel.
#[derive(Debug, Clone, Serialize)]
pub struct HealthEvent {
    /// Pool the backend belongs to.
    pub pool: Arc<str>,
    /// Backend name.
    pub backend: Arc<str>,
    /// Backend address.
    pub addr: SocketAddr,
    /// State before.
    pub from: Health,
    /// State after.
    pub to: Health,
    /// Why: the last check's detail or the passive failure count.
    pub reason: String,
    /// When it happened.
    pub at: SystemTime,
}

/// When a check last ran and what it found, for the stats page.
#[derive(Debug, Clone, Serialize)]
pub struct LastCheck {
    /// Wall-clock time of the check, in milliseconds since the Unix epoch (what JSON
    /// consumers and dashboards take directly).
    pub at_unix_ms: u64,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw ("HTTP 200", "connection refused", ...).
    pub detail: String,
    /// How long it took in milliseconds.
    pub duration_ms: u64,
}

/// Counters and state behind a backend's health; guarded by the backend's mutex.
#[derive(Debug)]
pub(crate) struct HealthTracker {
    pub(crate) state: Health,
    /// Active checks' rise and fall; up while the backend is `Up` or `Ejected`, since an
    /// ejected backend that fails `fall` checks goes `Down`.
    checks: RiseFall,
    ejected_until: Option<Instant>,
    pub(crate) last_check: Option<LastCheck>,
    /// When `state` last changed (or the backend was added): "up since", "down for".
    pub(crate) since: SystemTime,
    /// The same moment on the monotonic clock, which downtime is measured with so a step of
    /// the wall clock neither adds nor removes any.
    changed: Instant,
    /// Time spent `Down` or `Ejected` in stretches that have ended (HAProxy's "Dwntme").
    downtime: Duration,
    /// Times it left `Up` (HAProxy's "Dwn"), so a flapping backend stands out even when
    /// its total downtime is short.
    pub(crate) downs: u64,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self {
            state: Health::Up,
            checks: RiseFall::default(),
            ejected_until: None,
            last_check: None,
            since: SystemTime::now(),
            changed: Instant::now(),
            downtime: Duration::ZERO,
            downs: 0,
        }
    }
}

impl HealthTracker {
    /// Applies an active check; returns the new state when it changed.
    pub(crate) fn on_check(
        &mut self,
        policy: &HealthPolicy,
        result: &CheckResult,
    ) -> Option<Health> {
        self.last_check = Some(LastCheck {
            at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            ok: result.ok,
            detail: result.detail.clone(),
            duration_ms: result.duration.as_millis() as u64,
        });
        let now = Instant::now();
        match self.checks.observe(result.ok, policy.rise, policy.fall)? {
            true => self.set(Health::Up, now),
            false => {
                self.ejected_until = None;
                self.set(Health::Down, now)
            }
        }
    }

    /// Ejects an `Up` backend whose real traffic failed `eject_after` times in a row.
    pub(crate) fn on_passive_threshold(
        &mut self,
        policy: &HealthPolicy,
        now: Instant,
    ) -> Option<Health> {
        if self.state != Health::Up {
            return None;
        }
        self.ejected_until = Some(now + policy.cooldown);
        self.set(Health::Ejected, now)
    }

    /// Ends an ejection whose cooldown has passed; returns the new state when it changed.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Option<Health> {
        match self.ejected_until {
            Some(until) if self.state == Health::Ejected && now >= until => {
                self.ejected_until = None;
                self.set(Health::Up, now)
            }
            _ => None,
        }
    }

    fn set(&mut self, to: Health, now: Instant) -> Option<Health> {
        self.checks.clear_streak();
        if self.state != Health::Up {
            self.downtime += now.saturating_duration_since(self.changed);
        } else if to != Health::Up {
            self.downs += 1;
        }
        self.state = to;
        self.since = SystemTime::now();
        self.changed = now;
        Some(to)
    }

    /// Time spent `Down` or `Ejected` since the backend was added, the current stretch
    /// counted up to `now`.
    pub(crate) fn downtime(&self, now: Instant) -> Duration {
        match self.state {
            Health::Up => self.downtime,
            Health::Down | Health::Ejected => {
                self.downtime + now.saturating_duration_since(self.changed)
            }
        }
    }

    /// When the state last changed, in milliseconds since the Unix epoch.
    pub(crate) fn since_unix_ms(&self) -> u64 {
        self.since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: bool) -> CheckResult {
        CheckResult {
            ok,
            detail: if ok { "ok".into() } else { "refused".into() },
            duration: Duration::from_millis(1),
        }
    }

    #[test]
    fn goes_down_after_fall_and_up_after_rise() {
        let policy = HealthPolicy {
            rise: 2,
            fall: 3,
            ..HealthPolicy::default()
        };
        let mut t = HealthTracker::default();
        assert_eq!(t.on_check(&policy, &check(false)), None);
        assert_eq!(t.on_check(&policy, &check(false)), None);
        assert_eq!(t.on_check(&policy, &check(false)), Some(Health::Down));
        assert_eq!(t.on_check(&policy, &check(false)), None);
        assert_eq!(t.on_check(&policy, &check(true)), None);
        assert_eq!(t.on_check(&policy, &check(true)), Some(Health::Up));
        assert_eq!(t.on_check(&policy, &check(true)), None);
    }

    #[test]
    fn a_single_success_resets_the_fall_count() {
        let policy = HealthPolicy::default();
        let mut t = HealthTracker::default();
        for _ in 0..10 {
            assert_eq!(t.on_check(&policy, &check(false)), None);
            assert_eq!(t.on_check(&policy, &check(false)), None);
            assert_eq!(t.on_check(&policy, &check(true)), None);
        }
        assert_eq!(t.state, Health::Up);
    }

    #[test]
    fn ejection_lasts_the_cooldown() {
        let policy = HealthPolicy {
            cooldown: Duration::from_secs(5),
            ..HealthPolicy::default()
        };
        let mut t = HealthTracker::default();
        let now = Instant::now();
        assert_eq!(t.on_passive_threshold(&policy, now), Some(Health::Ejected));
        assert_eq!(t.on_passive_threshold(&policy, now), None);
        assert_eq!(t.on_tick(now + Duration::from_secs(4)), None);
        assert_eq!(t.on_tick(now + Duration::from_secs(5)), Some(Health::Up));
    }

    #[test]
    fn downtime_adds_up_every_stretch_out_and_counts_the_downs() {
        let policy = HealthPolicy {
            cooldown: Duration::from_secs(5),
            ..HealthPolicy::default()
        };
        let mut t = HealthTracker::default();
        let t0 = t.changed;
        assert_eq!(
            (t.downtime(t0 + Duration::from_secs(60)), t.downs),
            (Duration::ZERO, 0)
        );
        t.on_passive_threshold(&policy, t0 + Duration::from_secs(10));
        assert_eq!(
            t.downtime(t0 + Duration::from_secs(12)),
            Duration::from_secs(2)
        );
        t.on_tick(t0 + Duration::from_secs(15));
        assert_eq!(
            t.downtime(t0 + Duration::from_secs(100)),
            Duration::from_secs(5)
        );
        t.on_passive_threshold(&policy, t0 + Duration::from_secs(100));
        t.on_tick(t0 + Duration::from_secs(105));
        assert_eq!(
            (t.downtime(t0 + Duration::from_secs(200)), t.downs),
            (Duration::from_secs(10), 2)
        );
    }

    #[test]
    fn active_down_overrides_ejection() {
        let policy = HealthPolicy {
            fall: 1,
            ..HealthPolicy::default()
        };
        let mut t = HealthTracker::default();
        let now = Instant::now();
        assert_eq!(t.on_passive_threshold(&policy, now), Some(Health::Ejected));
        assert_eq!(t.on_check(&policy, &check(false)), Some(Health::Down));
        assert_eq!(t.on_tick(now + Duration::from_secs(60)), None);
    }
}
