//! The pool's queue: where a request waits when every eligible backend is at its
//! `max_connections` (HAProxy's backend queue with `maxconn` and `timeout queue`).
//!
//! A request that finds no room joins the back of one FIFO per pool; whenever a slot frees
//! (a limited backend's [`Lease`] ends) or availability changes (a backend comes up, is
//! enabled, gets weight or a higher limit), the queue is served from the front: each waiter
//! in turn gets a pick with its own balancing key and exclusions, and the lease is handed to
//! it directly, so a request arriving later cannot take the slot first. While anyone waits,
//! new requests queue behind them rather than racing for freed slots.
//!
//! The queue is bounded (`queue_size`): a request that finds it full is refused at once, and
//! one that waits longer than `queue_timeout` is refused then — both are the caller's 503.
//! Picks for waiters happen under the queue's lock; leases a waiter can no longer take (it
//! gave up a moment before) are dropped after the lock is released, since dropping a lease
//! serves the queue again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::pool::Pool;
use crate::{Backend, Lease};

/// How long and how many requests may wait for a backend slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Requests waiting at once; one more is refused. 0 refuses as soon as all are full.
    pub size: usize,
    /// A request waiting longer than this is refused.
    pub timeout: Duration,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            size: 1000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a pool gave no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No backend is eligible at all (down, drained, excluded): waiting would not help.
    NoBackend,
    /// Every eligible backend is full and `size` requests already wait.
    QueueFull {
        /// The queue's size.
        size: usize,
    },
    /// Waited `timeout` without a slot freeing.
    Timeout {
        /// The queue's timeout.
        timeout: Duration,
    },
}

struct Waiter {
    key: Option<u64>,
    exclude: Vec<Arc<Backend>>,
    since: Instant,
    tx: oneshot::Sender<Lease>,
}

/// Counters of one pool's queue, for the stats page and metrics.
#[derive(Debug, Default)]
struct QueueStats {
    /// Most requests waiting at once since start.
    max_length: AtomicUsize,
    /// Requests that had to wait.
    queued: AtomicU64,
    /// Requests that waited and got a backend.
    served: AtomicU64,
    /// Total wait of the served ones, in microseconds.
    waited_us: AtomicU64,
    /// Requests refused after `timeout`.
    timeouts: AtomicU64,
    /// Requests refused because the queue was full.
    full: AtomicU64,
}

/// One pool's queue of requests waiting for a backend slot.
pub(crate) struct Queue {
    /// The pool it serves; weak, since the pool owns the queue.
    pool: Weak<Pool>,
    waiters: Mutex<VecDeque<Waiter>>,
    /// `waiters.len()`, read without the lock on every freed slot.
    len: AtomicUsize,
    policy: Mutex<QueuePolicy>,
    stats: QueueStats,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.len)
            .field("stats", &self.stats)
            .finish()
    }
}

/// A pool's queue as the stats page and metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueSnapshot {
    /// Requests waiting now.
    pub length: usize,
    /// Most requests waiting at once since start.
    pub max_length: usize,
    /// The bound (`queue_size`).
    pub size: usize,
    /// `queue_timeout` in milliseconds.
    pub timeout_ms: u64,
    /// Requests that had to wait, since start.
    pub queued: u64,
    /// Of those, how many got a backend.
    pub served: u64,
    /// Mean wait of the served ones, in milliseconds.
    pub mean_wait_ms: f64,
    /// Total wait of the served ones, in seconds (for rates in metrics).
    pub waited_seconds: f64,
    /// Requests refused after waiting `queue_timeout`.
    pub timeouts: u64,
    /// Requests refused because the queue was full.
    pub full: u64,
}

impl Queue {
    pub(crate) fn new(pool: Weak<Pool>) -> Self {
        Self {
            pool,
            waiters: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            policy: Mutex::new(QueuePolicy::default()),
            stats: QueueStats::default(),
        }
    }

    pub(crate) fn policy(&self) -> QueuePolicy {
        *self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_policy(&self, policy: QueuePolicy) {
        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Whether anyone waits: new requests then queue behind them.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a lease from `pool` (whose queue this is): the slow path of
    /// [`Pool::acquire`], taken when the fast pick found nothing or others already wait.
    pub(crate) async fn wait(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        key: Option<u64>,
        exclude: &[Arc<Backend>],
    ) -> Result<Lease, Refusal> {
        let policy = self.policy();
        let rx = {
            let mut waiters = self.lock();
            if waiters.is_empty()
                && let Some(lease) = pool.pick(key, exclude)
            {
                return Ok(lease);
            }
            if !pool.could_make_room(exclude) {
                return Err(Refusal::NoBackend);
            }
            if waiters.len() >= policy.size {
                self.stats.full.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::QueueFull { size: policy.size });
            }
            let (tx, rx) = oneshot::channel();
            waiters.push_back(Waiter {
                key,
                exclude: exclude.to_vec(),
                since: Instant::now(),
                tx,
            });
            self.len.store(waiters.len(), Ordering::Release);
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            self.stats
                .max_length
                .fetch_max(waiters.len(), Ordering::Relaxed);
            rx
        };
        // Others may have been waiting on a backend this request could take; serve in order.
        self.serve();
        // Bound first, so the receiver is gone before the queue looks for closed waiters.
        let waited = tokio::time::timeout(policy.timeout, rx).await;
        match waited {
            Ok(Ok(lease)) => Ok(lease),
            // The pool was dropped by a reload with this request in its queue.
            Ok(Err(_)) => Err(Refusal::NoBackend),
            Err(_) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                let mut waiters = self.lock();
                waiters.retain(|w| !w.tx.is_closed());
                self.len.store(waiters.len(), Ordering::Release);
                Err(Refusal::Timeout {
                    timeout: policy.timeout,
                })
            }
        }
    }

    /// A limited backend's slot was given back.
    pub(crate) fn slot_freed(&self) {
        if !self.is_empty() {
            self.serve();
        }
    }

    /// Hands leases to waiters, front first, while picks succeed.
    pub(crate) fn serve(&self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        // Leases whose waiter left just before; dropped once the lock is released.
        let mut orphans = Vec::new();
        {
            let mut waiters = self.lock();
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].tx.is_closed() {
                    waiters.remove(i);
                    continue;
                }
                let w = &waiters[i];
                let Some(lease) = pool.pick(w.key, &w.exclude) else {
                    // Nothing has room for a waiter without constraints: nothing has room
                    // for anyone behind it either.
                    if w.key.is_none() && w.exclude.is_empty() {
                        break;
                    }
                    i += 1;
                    continue;
                };
                let Some(w) = waiters.remove(i) else { break };
                let waited = w.since.elapsed();
                match w.tx.send(lease) {
                    Ok(()) => {
                        self.stats.served.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .waited_us
                            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
                    }
                    Err(lease) => orphans.push(lease),
                }
            }
            self.len.store(waiters.len(), Ordering::Release);
        }
        drop(orphans);
    }

    pub(crate) fn snapshot(&self) -> QueueSnapshot {
        let s = &self.stats;
        let policy = self.policy();
        let served = s.served.load(Ordering::Relaxed);
        let waited_us = s.waited_us.load(Ordering::Relaxed);
        QueueSnapshot {
            length: self.len.load(Ordering::Relaxed),
            max_length: s.max_length.load(Ordering::Relaxed),
            size: policy.size,
            timeout_ms: policy.timeout.as_millis() as u64,
            queued: s.queued.load(Ordering::Relaxed),
            served,
            mean_wait_ms: if served == 0 {
                0.0
            } else {
                waited_us as f64 / served as f64 / 1000.0
            },
            waited_seconds: waited_us as f64 / 1e6,
            timeouts: s.timeouts.load(Ordering::Relaxed),
            full: s.full.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AdminState, BackendSpec, HealthPolicy, StrategyKind};

    /// A pool of `n` backends taking one request each, queue of `size` waiting `timeout`.
    fn pool(n: usize, size: usize, timeout: Duration) -> Arc<Pool> {
        let specs: Vec<_> = (0..n)
            .map(|i| BackendSpec {
                name: format!("w{i}"),
                addr: format!("127.0.0.1:{}", 20_000 + i).parse().unwrap(),
                weight: 1,
                max_connections: 1,
                backup: false,
            })
            .collect();
        let p = Pool::new(
            "jobs",
            StrategyKind::LeastConnections,
            None,
            &specs,
            HealthPolicy::default(),
        )
        .unwrap();
        p.set_queue_policy(QueuePolicy { size, timeout });
        p
    }

    /// Starts an acquire in its own task and returns once it is queued.
    async fn queued(
        p: &Arc<Pool>,
        length: usize,
    ) -> tokio::task::JoinHandle<Result<String, Refusal>> {
        let task = tokio::spawn({
            let p = p.clone();
            async move {
                let lease = p.acquire(None, &[]).await?;
                // The slot goes back at once, to whoever waits next.
                Ok(lease.backend().name().to_string())
            }
        });
        while p.snapshot().queue.length < length {
            tokio::task::yield_now().await;
        }
        task
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_request_that_waited_longest() {
        let p = pool(2, 10, Duration::from_secs(5));
        let w0 = p.acquire(None, &[]).await.unwrap();
        let w1 = p.acquire(None, &[]).await.unwrap();
        assert!(p.pick(None, &[]).is_none());
        let first = queued(&p, 1).await;
        let second = queued(&p, 2).await;
        drop(w1);
        assert_eq!(first.await.unwrap(), Ok("w1".to_string()));
        // `first` gave its slot back at once, and the queue handed it on.
        assert_eq!(second.await.unwrap(), Ok("w1".to_string()));
        let q = p.snapshot().queue;
        assert_eq!((q.length, q.max_length, q.queued, q.served), (0, 2, 2, 2));
        drop(w0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_and_a_long_wait_times_out() {
        let p = pool(1, 1, Duration::from_secs(5));
        let _held = p.acquire(None, &[]).await.unwrap();
        let waiting = queued(&p, 1).await;
        assert_eq!(
            p.acquire(None, &[]).await.unwrap_err(),
            Refusal::QueueFull { size: 1 }
        );
        assert_eq!(
            waiting.await.unwrap(),
            Err(Refusal::Timeout {
                timeout: Duration::from_secs(5)
            })
        );
        let q = p.snapshot().queue;
        assert_eq!((q.length, q.timeouts, q.full, q.served), (0, 1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_waits_when_no_backend_could_make_room() {
        let p = pool(1, 10, Duration::from_secs(5));
        p.set_admin("w0", AdminState::Disabled).unwrap();
        assert_eq!(p.acquire(None, &[]).await.unwrap_err(), Refusal::NoBackend);
        p.set_admin("w0", AdminState::Enabled).unwrap();
        let held = p.acquire(None, &[]).await.unwrap();
        // Excluded (already tried by this request): waiting for it would not help either.
        let tried = [held.backend().clone()];
        assert_eq!(
            p.acquire(None, &tried).await.unwrap_err(),
            Refusal::NoBackend
        );
        assert_eq!(p.snapshot().queue.queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_coming_back_serves_the_queue() {
        let p = pool(2, 10, Duration::from_secs(5));
        p.set_admin("w1", AdminState::Disabled).unwrap();
        let _held = p.acquire(None, &[]).await.unwrap();
        let waiting = queued(&p, 1).await;
        p.set_admin("w1", AdminState::Enabled).unwrap();
        assert_eq!(waiting.await.unwrap(), Ok("w1".to_string()));
    }

    #[test]
    fn concurrent_requests_never_exceed_max_connections() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let p = pool(3, 10_000, Duration::from_secs(60));
        let peak = Arc::new(AtomicU64::new(0));
        rt.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (p, peak) = (p.clone(), peak.clone());
                    tokio::spawn(async move {
                        for _ in 0..300 {
                            let lease = p.acquire(None, &[]).await.unwrap();
                            let now = lease.backend().in_flight();
                            peak.fetch_max(now, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            drop(lease);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert_eq!(peak.load(Ordering::Relaxed), 1);
        let s = p.snapshot();
        let requests: u64 = s.backends.iter().map(|b| b.requests).sum();
        assert_eq!(requests, 2400);
        assert!(s.backends.iter().all(|b| b.in_flight == 0));
        assert_eq!(s.queue.length, 0);
    }
}
