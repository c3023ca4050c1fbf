//! A pool: backends, the strategy over them, their health, and the events it publishes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwap, Guard};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::backend::MAX_WEIGHT;
use crate::health::{CheckResult, Health, HealthEvent, HealthPolicy, LastCheck};
use crate::queue::{Queue, QueuePolicy, QueueSnapshot, Refusal};
use crate::strategy::{self, HashKey, Pick, Strategy, StrategyKind};
use crate::{AdminState, Backend, BackendSpec, Lease};

/// Health events buffered per subscriber before the slowest one starts losing the oldest.
const EVENT_BUFFER: usize = 1024;

/// A change the runtime API asked for that cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// No backend of that name in the pool.
    #[error("pool `{pool}` has no backend named `{backend}`")]
    NoSuchBackend {
        /// Pool asked.
        pool: String,
        /// Name asked for.
        backend: String,
    },
    /// Adding would make two backends share a name.
    #[error("pool `{pool}` already has a backend named `{backend}`; names must be unique")]
    DuplicateBackend {
        /// Pool asked.
        pool: String,
        /// The duplicated name.
        backend: String,
    },
    /// Weight above the maximum.
    #[error("weight {weight} is out of range; use 0 to {MAX_WEIGHT}")]
    WeightOutOfRange {
        /// The weight asked for.
        weight: u32,
    },
}

/// The part of a pool that is replaced as a whole: membership and strategy.
#[derive(Debug)]
pub struct PoolState {
    /// Backends in configuration order.
    pub backends: Vec<Arc<Backend>>,
    /// Algorithm in use.
    pub kind: StrategyKind,
    /// What consistent hashing hashes (ignored by other strategies).
    pub hash_key: Option<HashKey>,
    strategy: Box<dyn Strategy>,
    /// Whether any backend is a backup (otherwise picks skip looking for primaries).
    has_backups: bool,
}

impl PoolState {
    fn new(kind: StrategyKind, hash_key: Option<HashKey>, backends: Vec<Arc<Backend>>) -> Self {
        Self {
            strategy: strategy::build(kind, &backends),
            has_backups: backends.iter().any(|b| b.is_backup()),
            backends,
            kind,
            hash_key,
        }
    }
}

/// A named set of backends behind one strategy.
///
/// Reads (picks) go through an `ArcSwap` and never lock; writes (API calls, reloads, health
/// transitions) build a new [`PoolState`] under `write` and swap it in, so connections in
/// flight keep their [`Lease`] on the old backend object and finish normally.
#[derive(Debug)]
pub struct Pool {
    name: Arc<str>,
    state: ArcSwap<PoolState>,
    /// Bumped on every change of any backend's availability; strategies cache by it.
    generation: AtomicU64,
    policy: ArcSwap<HealthPolicy>,
    events: broadcast::Sender<HealthEvent>,
    /// Serialises writers so two API calls cannot lose each other's change.
    write: Mutex<()>,
    /// Requests waiting for a slot on a backend with `max_connections`.
    queue: Arc<Queue>,
    /// What the configuration file said at the last load: a reload changes what the file
    /// changed and keeps what was changed at run time.
    file: Mutex<FileView>,
}

/// A pool as its configuration file defined it.
#[derive(Debug)]
struct FileView {
    kind: StrategyKind,
    hash_key: Option<HashKey>,
    specs: Vec<BackendSpec>,
}

impl Pool {
    /// Builds a pool; backend names must be unique.
    pub fn new(
        name: &str,
        kind: StrategyKind,
        hash_key: Option<HashKey>,
        specs: &[BackendSpec],
        policy: HealthPolicy,
    ) -> Result<Arc<Self>, PoolError> {
        for (i, s) in specs.iter().enumerate() {
            check_weight(s.weight)?;
            if specs[..i].iter().any(|o| o.name == s.name) {
                return Err(PoolError::DuplicateBackend {
                    pool: name.into(),
                    backend: s.name.clone(),
                });
            }
        }
        let backends = specs.iter().map(Backend::new).collect();
        Ok(Arc::new_cyclic(|pool| Self {
            name: name.into(),
            state: ArcSwap::from_pointee(PoolState::new(kind, hash_key.clone(), backends)),
            generation: AtomicU64::new(0),
            policy: ArcSwap::from_pointee(policy),
            events: broadcast::channel(EVENT_BUFFER).0,
            write: Mutex::new(()),
            queue: Arc::new(Queue::new(pool.clone())),
            file: Mutex::new(FileView {
                kind,
                hash_key,
                specs: specs.to_vec(),
            }),
        }))
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current membership and strategy (a cheap, lock-free snapshot).
    pub fn state(&self) -> Guard<Arc<PoolState>> {
        self.state.load()
    }

    /// Current health thresholds.
    pub fn policy(&self) -> HealthPolicy {
        **self.policy.load()
    }

    /// Receives every health state change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    /// Chooses a backend and takes its in-flight slot; `None` when no backend is eligible
    /// or every eligible one is full. Does not wait: see [`Pool::acquire`].
    ///
    /// `key` is the hashed balancing key for consistent hashing; `exclude` lists backends this
    /// request already tried.
    pub fn pick(&self, key: Option<u64>, exclude: &[Arc<Backend>]) -> Option<Lease> {
        let state = self.state.load();
        let (now, generation) = (Instant::now(), self.generation.load(Ordering::Acquire));
        let slow_start = self.policy.load().slow_start;
        let pick = |exclude: &[Arc<Backend>]| {
            // Backups only while no primary could take it.
            let backups = state.has_backups
                && !state.backends.iter().any(|b| {
                    !b.is_backup() && b.is_available() && !exclude.iter().any(|e| Arc::ptr_eq(e, b))
                });
            state.strategy.pick(&Pick {
                backends: &state.backends,
                key,
                exclude,
                now,
                generation,
                backups,
            })
        };
        // Backends passed over in this pick: full ones, and ramping ones that declined.
        let mut skipped: Vec<Arc<Backend>> = Vec::new();
        // A ramping backend that declined, taken after all if nothing else can.
        let mut declined = None;
        loop {
            let Some(i) = pick(if skipped.is_empty() {
                exclude
            } else {
                &skipped
            }) else {
                return declined.and_then(|b: Arc<Backend>| b.try_lease(&self.queue));
            };
            let b = &state.backends[i];
            let ramp_declines =
                !slow_start.is_zero() && b.is_ramping() && !b.admit(now, slow_start);
            if ramp_declines {
                declined.get_or_insert_with(|| b.clone());
            } else if let Some(lease) = b.try_lease(&self.queue) {
                return Some(lease);
            }
            // Declined, or another request took its last slot between the pick and the
            // lease: pick again without it. Only then does the pick allocate.
            if skipped.is_empty() {
                skipped.extend_from_slice(exclude);
            }
            skipped.push(b.clone());
        }
    }

    /// Chooses a backend like [`Pool::pick`], waiting in the pool's queue when every
    /// eligible backend is at its `max_connections`: the first slot that frees goes to the
    /// request that waited longest. Refused at once when no backend could make room (none
    /// eligible, or none limited) or the queue is full, and after the queue's timeout.
    pub async fn acquire(
        self: &Arc<Self>,
        key: Option<u64>,
        exclude: &[Arc<Backend>],
    ) -> Result<Lease, Refusal> {
        if self.queue.is_empty()
            && let Some(lease) = self.pick(key, exclude)
        {
            return Ok(lease);
        }
        self.queue.wait(self, key, exclude).await
    }

    /// Whether waiting could help: some eligible backend is only full, not out.
    pub(crate) fn could_make_room(&self, exclude: &[Arc<Backend>]) -> bool {
        self.state.load().backends.iter().any(|b| {
            b.is_available()
                && b.max_connections() > 0
                && !exclude.iter().any(|e| Arc::ptr_eq(e, b))
        })
    }

    /// Sets how many requests may wait for a slot, and for how long.
    pub fn set_queue_policy(&self, policy: QueuePolicy) {
        self.queue.set_policy(policy);
    }

    /// Backend by name.
    pub fn backend(&self, name: &str) -> Option<Arc<Backend>> {
        self.state
            .load()
            .backends
            .iter()
            .find(|b| b.name() == name)
            .cloned()
    }

    /// Switches algorithm; connections in flight are untouched.
    pub fn set_strategy(&self, kind: StrategyKind, hash_key: Option<HashKey>) {
        let _w = self.lock_write();
        let backends = self.state.load().backends.clone();
        self.state
            .store(Arc::new(PoolState::new(kind, hash_key, backends)));
        self.bump();
    }

    /// Replaces the health thresholds.
    pub fn set_policy(&self, policy: HealthPolicy) {
        self.policy.store(Arc::new(policy));
    }

    /// Changes one backend's weight (0 takes it out of new traffic).
    pub fn set_weight(&self, name: &str, weight: u32) -> Result<(), PoolError> {
        check_weight(weight)?;
        let _w = self.lock_write();
        self.find(name)?.set_weight(weight);
        self.rebuild_strategy();
        Ok(())
    }

    /// Enables, drains or disables one backend; one enabled again starts slowly (see
    /// [`HealthPolicy::slow_start`]).
    pub fn set_admin(&self, name: &str, admin: AdminState) -> Result<(), PoolError> {
        let _w = self.lock_write();
        let b = self.find(name)?;
        if admin == AdminState::Enabled && b.admin_state() != AdminState::Enabled {
            b.start_ramp(Instant::now());
        }
        b.set_admin(admin);
        self.bump();
        Ok(())
    }

    /// Adds a backend; it starts `Up` like every backend.
    pub fn add_backend(&self, spec: &BackendSpec) -> Result<Arc<Backend>, PoolError> {
        check_weight(spec.weight)?;
        let _w = self.lock_write();
        let state = self.state.load();
        if state.backends.iter().any(|b| b.name() == spec.name) {
            return Err(PoolError::DuplicateBackend {
                pool: self.name.to_string(),
                backend: spec.name.clone(),
            });
        }
        let added = Backend::new(spec);
        let mut backends = state.backends.clone();
        backends.push(added.clone());
        self.state.store(Arc::new(PoolState::new(
            state.kind,
            state.hash_key.clone(),
            backends,
        )));
        self.bump();
        Ok(added)
    }

    /// Removes a backend from new traffic; connections already on it finish.
    pub fn remove_backend(&self, name: &str) -> Result<(), PoolError> {
        let _w = self.lock_write();
        let state = self.state.load();
        let removed = self.find(name)?;
        let backends = state
            .backends
            .iter()
            .filter(|b| !Arc::ptr_eq(b, &removed))
            .cloned()
            .collect();
        self.state.store(Arc::new(PoolState::new(
            state.kind,
            state.hash_key.clone(),
            backends,
        )));
        self.bump();
        Ok(())
    }

    /// Applies a reloaded definition as a diff against the file's previous one, like
    /// HAProxy's `server-state-file`: what the file changed takes effect, and what was
    /// changed at run time where the file did not change survives — a weight or strategy
    /// set through the API, backends added or removed through it (drain and disable live
    /// in the backend and always survive). Backends with the same name and address keep
    /// their object (health, counters, connections). Returns one line per run-time change
    /// kept, for the reload's answer.
    pub fn reconfigure(
        &self,
        kind: StrategyKind,
        hash_key: Option<HashKey>,
        specs: &[BackendSpec],
        policy: HealthPolicy,
    ) -> Vec<String> {
        let _w = self.lock_write();
        let old = self.state.load();
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = Vec::new();
        let (use_kind, use_hash) = if (kind, &hash_key) == (file.kind, &file.hash_key) {
            if (old.kind, &old.hash_key) != (kind, &hash_key) {
                kept.push(format!("strategy {} (set at run time)", old.kind));
            }
            (old.kind, old.hash_key.clone())
        } else {
            (kind, hash_key.clone())
        };
        let mut backends = Vec::with_capacity(specs.len());
        for s in specs {
            let before = file.specs.iter().find(|o| o.name == s.name);
            let running = old
                .backends
                .iter()
                .find(|b| b.name() == s.name && b.addr() == s.addr);
            match running {
                None if before == Some(s) => {
                    kept.push(format!(
                        "backend {} stays removed (removed at run time)",
                        s.name
                    ));
                }
                None => backends.push(Backend::new(s)),
                Some(b) => {
                    if before == Some(s) {
                        if b.weight() != s.weight {
                            kept.push(format!(
                                "backend {} keeps weight {} (set at run time; the file says {})",
                                s.name,
                                b.weight(),
                                s.weight
                            ));
                        }
                    } else {
                        b.set_weight(s.weight);
                    }
                    b.set_max_connections(s.max_connections);
                    b.set_backup(s.backup);
                    backends.push(b.clone());
                }
            }
        }
        for b in old.backends.iter() {
            let in_file = |list: &[BackendSpec]| list.iter().any(|s| s.name == b.name());
            if !in_file(&file.specs) && !in_file(specs) {
                kept.push(format!("backend {} stays (added at run time)", b.name()));
                backends.push(b.clone());
            }
        }
        *file = FileView {
            kind,
            hash_key,
            specs: specs.to_vec(),
        };
        self.policy.store(Arc::new(policy));
        self.state
            .store(Arc::new(PoolState::new(use_kind, use_hash, backends)));
        self.bump();
        kept
    }

    /// Feeds an active check's result into `backend`'s state machine.
    pub fn report_check(&self, backend: &Backend, result: &CheckResult) {
        let policy = self.policy();
        let mut t = backend.lock_tracker();
        let from = t.state;
        if let Some(to) = t.on_check(&policy, result) {
            backend.refresh_available(to);
            drop(t);
            self.transition(backend, from, to, result.detail.clone());
        }
    }

    /// Feeds the outcome of real traffic (passive health) into `backend`'s state machine.
    pub fn report_traffic(&self, backend: &Backend, ok: bool) {
        let policy = self.policy();
        if !backend.note_traffic(ok, policy.eject_after) {
            return;
        }
        let mut t = backend.lock_tracker();
        let from = t.state;
        if let Some(to) = t.on_passive_threshold(&policy, Instant::now()) {
            backend.refresh_available(to);
            drop(t);
            let reason = format!(
                "{} consecutive failures of live traffic",
                policy.eject_after
            );
            self.transition(backend, from, to, reason);
        }
    }

    /// Returns backends whose ejection cooldown has passed; called periodically.
    pub fn tick(&self, now: Instant) {
        for b in self.state.load().backends.iter() {
            let mut t = b.lock_tracker();
            let from = t.state;
            if let Some(to) = t.on_tick(now) {
                b.refresh_available(to);
                drop(t);
                self.transition(b, from, to, "ejection cooldown over".into());
            }
        }
    }

    /// Everything the stats page and metrics show.
    pub fn snapshot(&self) -> PoolSnapshot {
        let state = self.state.load();
        let now = Instant::now();
        PoolSnapshot {
            name: self.name.to_string(),
            strategy: state.kind,
            hash_key: state.hash_key.clone(),
            queue: self.queue.snapshot(),
            backends: state
                .backends
                .iter()
                .map(|b| {
                    let t = b.lock_tracker();
                    let s = b.stats();
                    BackendSnapshot {
                        name: b.name().to_string(),
                        addr: b.addr().to_string(),
                        weight: b.weight(),
                        max_connections: b.max_connections(),
                        backup: b.is_backup(),
                        admin: b.admin_state(),
                        health: t.state,
                        health_since_unix_ms: t.since_unix_ms(),
                        available: b.is_available(),
                        in_flight: b.in_flight(),
                        requests: s.requests.load(Ordering::Relaxed),
                        failures: s.failures.load(Ordering::Relaxed),
                        bytes_in: s.bytes_in.load(Ordering::Relaxed),
                        bytes_out: s.bytes_out.load(Ordering::Relaxed),
                        latency_ms: b.latency_ns(now) / 1e6,
                        response_ms: s.response.mean_ms(),
                        rate: s.rate.current(),
                        rate_max: s.rate.max(),
                        downtime_ms: t.downtime(now).as_millis() as u64,
                        downs: t.downs,
                        last_check: t.last_check.clone(),
                    }
                })
                .collect(),
        }
    }

    fn transition(&self, backend: &Backend, from: Health, to: Health, reason: String) {
        if to == Health::Up {
            backend.start_ramp(Instant::now());
        }
        self.bump();
        // No subscriber is fine: events are for whoever listens.
        let _ = self.events.send(HealthEvent {
            pool: self.name.clone(),
            backend: backend.name_arc(),
            addr: backend.addr(),
            from,
            to,
            reason,
            at: SystemTime::now(),
        });
    }

    fn rebuild_strategy(&self) {
        let old = self.state.load();
        self.state.store(Arc::new(PoolState::new(
            old.kind,
            old.hash_key.clone(),
            old.backends.clone(),
        )));
        self.bump();
    }

    fn find(&self, name: &str) -> Result<Arc<Backend>, PoolError> {
        self.backend(name).ok_or_else(|| PoolError::NoSuchBackend {
            pool: self.name.to_string(),
            backend: name.into(),
        })
    }

    /// Availability changed: strategies recompute, and waiters may now find room.
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.queue.slot_freed();
    }

    fn lock_write(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_weight(weight: u32) -> Result<(), PoolError> {
    if weight > MAX_WEIGHT {
        return Err(PoolError::WeightOutOfRange { weight });
    }
    Ok(())
}

/// A pool as the stats page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSnapshot {
    /// Pool name.
    pub name: String,
    /// Algorithm in use.
    pub strategy: StrategyKind,
    /// What consistent hashing hashes, when set.
    pub hash_key: Option<HashKey>,
    /// Requests waiting for a full backend, and what waiting cost.
    pub queue: QueueSnapshot,
    /// Its backends.
    pub backends: Vec<BackendSnapshot>,
}

/// A backend as the stats page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendSnapshot {
    /// Backend name.
    pub name: String,
    /// Address.
    pub addr: String,
    /// Weight.
    pub weight: u32,
    /// Most requests or connections at once; 0 is no limit.
    pub max_connections: u32,
    /// Takes traffic only while no primary can.
    pub backup: bool,
    /// Operator's state.
    pub admin: AdminState,
    /// Health state machine's state.
    pub health: Health,
    /// Since when `health` holds (ms since the Unix epoch): the console's "down for".
    pub health_since_unix_ms: u64,
    /// Whether it takes new traffic now.
    pub available: bool,
    /// Requests or connections in flight.
    pub in_flight: u64,
    /// Requests or connections since it was added.
    pub requests: u64,
    /// Failed ones.
    pub failures: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Peak-EWMA latency in milliseconds: the balancer's estimate, which latency-aware
    /// strategies pick by (failures count as slow; it decays toward 30 ms while idle).
    pub latency_ms: f64,
    /// Mean measured response time of successful requests in milliseconds, over about the
    /// last 256 ([`crate::ResponseTime`]); `None` before the first answer.
    pub response_ms: Option<f64>,
    /// Requests (or connections) per second over about the last second.
    pub rate: u64,
    /// The highest `rate` since the backend was added.
    pub rate_max: u64,
    /// Time spent `Down` or `Ejected` since the backend was added, in milliseconds.
    pub downtime_ms: u64,
    /// Times its health left `Up`.
    pub downs: u64,
    /// Last active check, if any ran.
    pub last_check: Option<LastCheck>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn specs(n: usize) -> Vec<BackendSpec> {
        (0..n)
            .map(|i| BackendSpec {
                name: format!("b{i}"),
                addr: format!("127.0.0.1:{}", 30_000 + i).parse().unwrap(),
                weight: 1,
                max_connections: 0,
                backup: false,
            })
            .collect()
    }

    fn pool(kind: StrategyKind, n: usize) -> Arc<Pool> {
        Pool::new("p", kind, None, &specs(n), HealthPolicy::default()).unwrap()
    }

    fn names(p: &Pool, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| p.pick(None, &[]).unwrap().backend().name().to_string())
            .collect()
    }

    fn fail(ok: bool) -> CheckResult {
        CheckResult {
            ok,
            detail: "probe".into(),
            duration: Duration::from_millis(1),
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut s = specs(2);
        s[1].name = "b0".into();
        let err = Pool::new(
            "web",
            StrategyKind::RoundRobin,
            None,
            &s,
            HealthPolicy::default(),
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "pool `web` already has a backend named `b0`; names must be unique"
        );
    }

    #[test]
    fn active_checks_take_a_backend_out_and_back_with_events() {
        let p = pool(StrategyKind::RoundRobin, 2);
        let mut events = p.subscribe();
        let b1 = p.backend("b1").unwrap();
        for _ in 0..3 {
            p.report_check(&b1, &fail(false));
        }
        assert_eq!(names(&p, 3), vec!["b0", "b0", "b0"]);
        let ev = events.try_recv().unwrap();
        assert_eq!(
            (&*ev.backend, ev.from, ev.to),
            ("b1", Health::Up, Health::Down)
        );
        p.report_check(&b1, &fail(true));
        p.report_check(&b1, &fail(true));
        let ev = events.try_recv().unwrap();
        assert_eq!((ev.from, ev.to), (Health::Down, Health::Up));
        let mut after = names(&p, 4);
        after.sort();
        assert_eq!(after, vec!["b0", "b0", "b1", "b1"]);
    }

    #[test]
    fn weighted_strategy_follows_availability_changes() {
        let p = pool(StrategyKind::WeightedRoundRobin, 2);
        assert_eq!(names(&p, 2), vec!["b0", "b1"]);
        let b0 = p.backend("b0").unwrap();
        for _ in 0..3 {
            p.report_check(&b0, &fail(false));
        }
        assert_eq!(names(&p, 3), vec!["b1", "b1", "b1"]);
    }

    #[test]
    fn passive_failures_eject_and_tick_restores() {
        let p = pool(StrategyKind::RoundRobin, 2);
        p.set_policy(HealthPolicy {
            eject_after: 3,
            cooldown: Duration::from_secs(10),
            ..HealthPolicy::default()
        });
        let mut events = p.subscribe();
        let b0 = p.backend("b0").unwrap();
        p.report_traffic(&b0, false);
        p.report_traffic(&b0, false);
        p.report_traffic(&b0, true);
        p.report_traffic(&b0, false);
        p.report_traffic(&b0, false);
        assert!(b0.is_available());
        p.report_traffic(&b0, false);
        assert!(!b0.is_available());
        assert_eq!(events.try_recv().unwrap().to, Health::Ejected);
        p.tick(Instant::now());
        assert!(!b0.is_available());
        p.tick(Instant::now() + Duration::from_secs(11));
        assert!(b0.is_available());
        assert_eq!(events.try_recv().unwrap().to, Health::Up);
    }

    #[test]
    fn strategy_change_keeps_leases_and_backends() {
        let p = pool(StrategyKind::RoundRobin, 2);
        let held = p.pick(None, &[]).unwrap();
        let before = held.backend().clone();
        p.set_strategy(StrategyKind::LeastConnections, None);
        assert_eq!(before.in_flight(), 1);
        assert!(Arc::ptr_eq(&before, &p.backend(before.name()).unwrap()));
        // least-connections now avoids the backend with the held lease
        let other = p.pick(None, &[]).unwrap();
        assert_ne!(other.backend().name(), before.name());
        drop(held);
        assert_eq!(before.in_flight(), 0);
    }

    #[test]
    fn runtime_membership_and_weights() {
        let p = pool(StrategyKind::WeightedRoundRobin, 2);
        p.set_weight("b0", 3).unwrap();
        let picks = names(&p, 4);
        assert_eq!(picks.iter().filter(|n| *n == "b0").count(), 3);
        p.add_backend(&BackendSpec {
            name: "b2".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
            max_connections: 0,
            backup: false,
        })
        .unwrap();
        assert_eq!(names(&p, 5).iter().filter(|n| *n == "b2").count(), 1);
        p.remove_backend("b0").unwrap();
        assert_eq!(names(&p, 4), vec!["b1", "b2", "b1", "b2"]);
        assert_eq!(
            p.set_weight("zz", 1).unwrap_err().to_string(),
            "pool `p` has no backend named `zz`"
        );
        assert_eq!(
            p.set_weight("b1", 999).unwrap_err().to_string(),
            "weight 999 is out of range; use 0 to 256"
        );
    }

    #[test]
    fn backups_take_traffic_only_while_no_primary_can() {
        let mut s = specs(3);
        s[2].backup = true;
        let p = Pool::new(
            "p",
            StrategyKind::RoundRobin,
            None,
            &s,
            HealthPolicy::default(),
        )
        .unwrap();
        assert_eq!(names(&p, 4), vec!["b0", "b1", "b0", "b1"]);
        p.set_admin("b0", AdminState::Disabled).unwrap();
        assert_eq!(names(&p, 2), vec!["b1", "b1"]);
        p.set_admin("b1", AdminState::Drain).unwrap();
        assert_eq!(names(&p, 2), vec!["b2", "b2"]);
        // A primary tried by this request lets it go to the backup.
        p.set_admin("b1", AdminState::Enabled).unwrap();
        let b1 = p.backend("b1").unwrap();
        let retry = p.pick(None, &[b1]).unwrap();
        assert_eq!(retry.backend().name(), "b2");
        assert_eq!(names(&p, 2), vec!["b1", "b1"]);
        assert!(p.snapshot().backends[2].backup);
    }

    #[test]
    fn a_backend_back_up_starts_slowly_but_never_refuses_alone() {
        let p = pool(StrategyKind::RoundRobin, 2);
        p.set_policy(HealthPolicy {
            rise: 1,
            fall: 1,
            slow_start: Duration::from_secs(3600),
            ..HealthPolicy::default()
        });
        let b1 = p.backend("b1").unwrap();
        p.report_check(&b1, &fail(false));
        p.report_check(&b1, &fail(true));
        assert!(b1.is_ramping());
        // An hour-long ramp that just began: b1 declines its turns.
        assert_eq!(names(&p, 4), vec!["b0", "b0", "b0", "b0"]);
        // Alone, it takes everything rather than nothing.
        p.set_admin("b0", AdminState::Disabled).unwrap();
        assert_eq!(names(&p, 2), vec!["b1", "b1"]);
        // Enabled again, b0 ramps in turn.
        p.set_admin("b0", AdminState::Enabled).unwrap();
        assert!(p.backend("b0").unwrap().is_ramping());
    }

    #[test]
    fn drain_and_disable_stop_new_picks() {
        let p = pool(StrategyKind::RoundRobin, 2);
        p.set_admin("b0", AdminState::Drain).unwrap();
        assert_eq!(names(&p, 2), vec!["b1", "b1"]);
        p.set_admin("b1", AdminState::Disabled).unwrap();
        assert!(p.pick(None, &[]).is_none());
        p.set_admin("b0", AdminState::Enabled).unwrap();
        assert_eq!(names(&p, 2), vec!["b0", "b0"]);
    }

    #[test]
    fn reconfigure_keeps_matching_backends() {
        let p = pool(StrategyKind::RoundRobin, 2);
        let b0 = p.backend("b0").unwrap();
        let lease = p.pick(None, &[]).unwrap();
        let mut s = specs(3);
        s[0].weight = 5;
        s[0].max_connections = 4;
        p.reconfigure(
            StrategyKind::WeightedRoundRobin,
            None,
            &s,
            HealthPolicy::default(),
        );
        assert!(Arc::ptr_eq(&b0, &p.backend("b0").unwrap()));
        assert_eq!((b0.weight(), b0.max_connections()), (5, 4));
        assert_eq!(p.state().backends.len(), 3);
        assert_eq!(lease.backend().in_flight(), 1);
    }
}
