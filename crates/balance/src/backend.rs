//! One upstream address and everything the balancer knows about it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::health::{Health, HealthTracker};
use crate::rate::RateMeter;
use crate::response_time::ResponseTime;

/// Largest weight a backend may have; like HAProxy's 256, it keeps smooth weighted
/// round-robin sequences short.
pub const MAX_WEIGHT: u32 = 256;

/// Latency assumed for a backend that has not answered yet, so a new backend is neither
/// flooded (cost 0) nor starved (cost infinite) by latency-aware strategies.
const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Latency charged for a failed request, so a backend that fails fast looks slow rather than
/// attractive to latency-aware strategies.
pub(crate) const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Time constant of the latency average's decay: a slow sample fades to a third in this long.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// What a configuration or the runtime API says a backend should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    /// Name shown on the stats page and used by the API; unique within a pool.
    pub name: String,
    /// Where connections go.
    pub addr: SocketAddr,
    /// Relative share of traffic, 0 to [`MAX_WEIGHT`]; 0 takes no new traffic.
    pub weight: u32,
    /// Requests or connections it takes at once (HAProxy's `maxconn`); 0 is no limit. A
    /// worker that runs one job at a time says 1, and the rest wait in the pool's queue.
    #[serde(default)]
    pub max_connections: u32,
    /// Takes traffic only while no other backend of the pool can (HAProxy's `backup`).
    #[serde(default)]
    pub backup: bool,
}

/// The operator's wish for a backend, independent of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes traffic when healthy.
    Enabled,
    /// Takes no new traffic; connections in flight finish; health checks go on.
    Drain,
    /// Maintenance: no new traffic and no health checks.
    Disabled,
}

impl AdminState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Drain,
            2 => Self::Disabled,
            _ => Self::Enabled,
        }
    }
}

/// How a request or connection through a [`Lease`] ended, for latency and error accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered (any status below 500 for HTTP; a clean session for TCP).
    Success,
    /// The backend failed: refused, reset, timed out or answered 5xx.
    Failure,
}

/// Live counters of one backend; all relaxed atomics, read by the stats page.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests (HTTP) or connections (TCP) sent to this backend since it was added.
    pub requests: AtomicU64,
    /// Of those, how many failed.
    pub failures: AtomicU64,
    /// Bytes sent from clients to this backend.
    pub bytes_in: AtomicU64,
    /// Bytes sent from this backend to clients.
    pub bytes_out: AtomicU64,
    /// `requests` per second, sampled by the proxy's ticker: what the stats page shows.
    pub rate: RateMeter,
    /// Measured time to the answer of successful requests (to the connection for TCP), unlike
    /// the balancer's decaying estimate: what people read as the backend's speed.
    pub response: ResponseTime,
}

/// One upstream address with its state and counters.
#[derive(Debug)]
pub struct Backend {
    /// Name unique within its pool.
    name: Arc<str>,
    /// Where connections go.
    addr: SocketAddr,
    /// Current weight; changed by the API without rebuilding connections.
    weight: AtomicU32,
    /// [`AdminState`] as a byte so the hot path reads it without a lock.
    admin: AtomicU8,
    /// Derived from health, admin state and weight; the only thing the hot path reads to
    /// decide eligibility. Recomputed under `tracker`'s lock on every change.
    available: AtomicBool,
    /// Requests or connections currently holding a [`Lease`] on this backend.
    in_flight: AtomicU64,
    /// Most leases at once; 0 is no limit.
    max_connections: AtomicU32,
    /// Used only when no primary backend is available.
    backup: AtomicBool,
    /// Set while `ramp` holds a slow start, so other picks skip the lock.
    ramping: AtomicBool,
    /// The slow start in progress, if any.
    ramp: Mutex<Option<Ramp>>,
    /// Consecutive failures of real traffic, for passive ejection.
    passive_failures: AtomicU32,
    /// Peak-EWMA latency in nanoseconds, stored as `f64` bits.
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since `epoch`.
    ewma_stamp_ns: AtomicU64,
    /// Reference point for the nanosecond stamps above.
    epoch: Instant,
    /// Health state machine; locked only by checks and failures, never by a pick.
    pub(crate) tracker: Mutex<HealthTracker>,
    /// Counters for the stats page and metrics.
    stats: BackendStats,
}

impl Backend {
    /// Builds a backend that starts healthy (see [`crate::health`] for why).
    pub fn new(spec: &BackendSpec) -> Arc<Self> {
        let b = Self {
            name: spec.name.as_str().into(),
            addr: spec.addr,
            weight: AtomicU32::new(spec.weight.min(MAX_WEIGHT)),
            admin: AtomicU8::new(AdminState::Enabled as u8),
            available: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            max_connections: AtomicU32::new(spec.max_connections),
            backup: AtomicBool::new(spec.backup),
            ramping: AtomicBool::new(false),
            ramp: Mutex::new(None),
            passive_failures: AtomicU32::new(0),
            ewma_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            ewma_stamp_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            tracker: Mutex::new(HealthTracker::default()),
            stats: BackendStats::default(),
        };
        b.refresh_available(Health::Up);
        Arc::new(b)
    }

    /// Name unique within the pool.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shared handle on the name, for events.
    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    /// Address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Current weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Current administrative state.
    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Whether a strategy may choose this backend for new traffic.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Requests or connections in flight right now.
    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether it only takes traffic when no primary can.
    #[inline]
    pub fn is_backup(&self) -> bool {
        self.backup.load(Ordering::Relaxed)
    }

    /// Whether a slow start is in progress.
    #[inline]
    pub fn is_ramping(&self) -> bool {
        self.ramping.load(Ordering::Relaxed)
    }

    /// Begins a slow start at `now` (the backend just came back).
    pub(crate) fn start_ramp(&self, now: Instant) {
        *self.lock_ramp() = Some(Ramp {
            since: now,
            offered: 0,
            admitted: 0,
        });
        self.ramping.store(true, Ordering::Relaxed);
    }

    /// Whether a pick that landed on this backend may keep it, `slow_start` into a ramp
    /// that began at `since`: of the picks offered so far, the share kept follows the
    /// time elapsed, counted exactly (no randomness) so a run of picks is predictable.
    pub(crate) fn admit(&self, now: Instant, slow_start: Duration) -> bool {
        let mut ramp = self.lock_ramp();
        let Some(r) = ramp.as_mut() else {
            return true;
        };
        let elapsed = now.saturating_duration_since(r.since);
        if elapsed >= slow_start {
            *ramp = None;
            self.ramping.store(false, Ordering::Relaxed);
            return true;
        }
        let share = elapsed.as_secs_f64() / slow_start.as_secs_f64();
        r.offered += 1;
        if (r.admitted + 1) as f64 <= r.offered as f64 * share {
            r.admitted += 1;
            true
        } else {
            false
        }
    }

    fn lock_ramp(&self) -> std::sync::MutexGuard<'_, Option<Ramp>> {
        self.ramp.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Most requests or connections at once; 0 is no limit.
    pub fn max_connections(&self) -> u32 {
        self.max_connections.load(Ordering::Relaxed)
    }

    /// Whether it can take one more lease now: no limit, or in flight below it. Part of
    /// eligibility, so every strategy passes over a full backend.
    #[inline]
    pub fn has_room(&self) -> bool {
        let max = self.max_connections.load(Ordering::Relaxed);
        max == 0 || self.in_flight() < u64::from(max)
    }

    /// Counters for the stats page.
    pub fn stats(&self) -> &BackendStats {
        &self.stats
    }

    /// Current health as the state machine sees it.
    pub fn health(&self) -> Health {
        self.lock_tracker().state
    }

    /// Takes the in-flight slot the caller holds for the whole request or connection.
    pub fn lease(self: &Arc<Self>) -> Lease {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.leased(None)
    }

    /// Takes a slot if one is free under `max_connections`: two workers picking the last
    /// slot at once cannot both get it. A limited backend's lease tells `queue` when it
    /// ends, so a waiting request gets the slot.
    pub(crate) fn try_lease(self: &Arc<Self>, queue: &Arc<crate::queue::Queue>) -> Option<Lease> {
        let max = u64::from(self.max_connections());
        if max == 0 {
            return Some(self.lease());
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(self.leased(Some(queue.clone())))
    }

    fn leased(self: &Arc<Self>, queue: Option<Arc<crate::queue::Queue>>) -> Lease {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Lease {
            backend: self.clone(),
            started: Instant::now(),
            queue,
        }
    }

    /// Counts a traffic outcome; true when `threshold` failures in a row were reached (and
    /// the count starts over). A success costs one load when there was no failure before.
    pub(crate) fn note_traffic(&self, ok: bool, threshold: u32) -> bool {
        if ok {
            if self.passive_failures.load(Ordering::Relaxed) != 0 {
                self.passive_failures.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let n = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold > 0 && n >= threshold {
            self.passive_failures.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    pub(crate) fn lock_tracker(&self) -> std::sync::MutexGuard<'_, HealthTracker> {
        // A panic while holding this lock leaves plain counters behind; they stay usable.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight.min(MAX_WEIGHT), Ordering::Relaxed);
        let health = self.lock_tracker().state;
        self.refresh_available(health);
    }

    pub(crate) fn set_max_connections(&self, max: u32) {
        self.max_connections.store(max, Ordering::Relaxed);
    }

    pub(crate) fn set_backup(&self, backup: bool) {
        self.backup.store(backup, Ordering::Relaxed);
    }

    pub(crate) fn set_admin(&self, state: AdminState) {
        self.admin.store(state as u8, Ordering::Relaxed);
        let health = self.lock_tracker().state;
        self.refresh_available(health);
    }

    /// Recomputes the hot-path eligibility flag from its three inputs.
    pub(crate) fn refresh_available(&self, health: Health) {
        let ok =
            health == Health::Up && self.admin_state() == AdminState::Enabled && self.weight() > 0;
        self.available.store(ok, Ordering::Relaxed);
    }

    /// Peak-EWMA latency decayed to `now`, in nanoseconds.
    pub fn latency_ns(&self, now: Instant) -> f64 {
        let ewma = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let stamp = self.ewma_stamp_ns.load(Ordering::Relaxed);
        let elapsed = self.nanos_since_epoch(now).saturating_sub(stamp) as f64;
        let default = DEFAULT_RTT.as_nanos() as f64;
        // Decay towards the default so a penalised backend is retried eventually.
        default + (ewma - default) * (-elapsed / EWMA_DECAY.as_nanos() as f64).exp()
    }

    /// Folds one latency sample into the peak-EWMA: a slower sample is taken at once (peak),
    /// a faster one is averaged in.
    pub(crate) fn observe_latency(&self, sample: Duration, now: Instant) {
        let sample = sample.as_nanos() as f64;
        let current = self.latency_ns(now);
        let next = if sample > current {
            sample
        } else {
            let stamp = self.ewma_stamp_ns.load(Ordering::Relaxed);
            let elapsed = self.nanos_since_epoch(now).saturating_sub(stamp) as f64;
            let w = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
            current * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_stamp_ns
            .store(self.nanos_since_epoch(now), Ordering::Relaxed);
    }

    fn nanos_since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// A slow start in progress: picks offered and kept since it began.
#[derive(Debug)]
struct Ramp {
    since: Instant,
    offered: u64,
    admitted: u64,
}

/// A backend's in-flight slot, held for the life of a request or connection.
///
/// Dropping it gives the slot back; [`Lease::record`] records latency and failures.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<Backend>,
    started: Instant,
    /// The pool's queue, for a backend with `max_connections`: told when the slot frees.
    queue: Option<Arc<crate::queue::Queue>>,
}

impl Lease {
    /// The backend this lease is on.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Records how the request ended (latency, failures); the slot is given back on drop.
    pub fn record(&self, outcome: Outcome) {
        let now = Instant::now();
        let mut latency = now.saturating_duration_since(self.started);
        if outcome == Outcome::Failure {
            self.backend.stats.failures.fetch_add(1, Ordering::Relaxed);
            latency = latency.max(FAILURE_PENALTY);
        } else {
            self.backend.stats.response.observe(latency);
        }
        self.backend.observe_latency(latency, now);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(queue) = self.queue.take() {
            queue.slot_freed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, weight: u32) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            weight,
            max_connections: 0,
            backup: false,
        }
    }

    #[test]
    fn lease_gives_in_flight_back_on_drop() {
        let b = Backend::new(&spec("a", 1));
        let l1 = b.lease();
        let l2 = b.lease();
        assert_eq!(b.in_flight(), 2);
        drop(l1);
        assert_eq!(b.in_flight(), 1);
        l2.record(Outcome::Success);
        drop(l2);
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.stats().requests.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn failure_raises_latency_to_the_penalty() {
        let b = Backend::new(&spec("a", 1));
        b.lease().record(Outcome::Failure);
        assert!(b.latency_ns(Instant::now()) >= FAILURE_PENALTY.as_nanos() as f64 * 0.99);
        assert_eq!(b.stats().failures.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn penalty_decays_back_towards_default() {
        let b = Backend::new(&spec("a", 1));
        let now = Instant::now();
        b.observe_latency(FAILURE_PENALTY, now);
        let later = now + EWMA_DECAY * 5;
        assert!(b.latency_ns(later) < DEFAULT_RTT.as_nanos() as f64 * 1.3);
    }

    #[test]
    fn a_ramp_admits_the_share_of_picks_its_age_allows() {
        let b = Backend::new(&spec("a", 1));
        let (t0, slow) = (Instant::now(), Duration::from_secs(10));
        assert!(!b.is_ramping());
        b.start_ramp(t0);
        let admitted = |at: Duration, n: usize| (0..n).filter(|_| b.admit(t0 + at, slow)).count();
        assert_eq!(admitted(Duration::ZERO, 10), 0);
        b.start_ramp(t0);
        assert_eq!(admitted(Duration::from_secs(1), 100), 10);
        b.start_ramp(t0);
        assert_eq!(admitted(Duration::from_secs(5), 100), 50);
        assert!(b.is_ramping());
        assert_eq!(admitted(Duration::from_secs(10), 3), 3);
        assert!(!b.is_ramping());
    }

    #[test]
    fn weight_zero_and_drain_make_unavailable() {
        let b = Backend::new(&spec("a", 1));
        assert!(b.is_available());
        b.set_weight(0);
        assert!(!b.is_available());
        b.set_weight(3);
        b.set_admin(AdminState::Drain);
        assert!(!b.is_available());
        b.set_admin(AdminState::Enabled);
        assert!(b.is_available());
    }
}
