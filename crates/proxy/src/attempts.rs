//! One request's or session's walk over a pool's backends, shared by the TCP and HTTP
//! paths: picks with the already-failed backends excluded, at most `1 + retries` times,
//! waiting in the pool's queue when every eligible backend is at its `max_connections`, and
//! the accounting every attempt needs (latency, passive health, listener counters).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use balance::{Backend, Lease, Outcome, Pool, Refusal};
use tracing::debug;

use crate::config::ListenerConfig;
use crate::registry::ListenerStats;

/// One request's or session's walk over the pool's backends. The HTTP paths add the answers
/// they give when the walk ends without a response (in `crate::http`).
pub(crate) struct Attempts<'a> {
    pub(crate) pool: &'a Arc<Pool>,
    pub(crate) cfg: &'a ListenerConfig,
    pub(crate) stats: &'a ListenerStats,
    key: Option<u64>,
    tried: Vec<Arc<Backend>>,
    made: u32,
    /// Why the pool gave no backend, once it did not.
    refusal: Option<Refusal>,
    /// Whether the last backend tried timed out and the walk went on (`retry_on_timeout`):
    /// a 504, not a 502, if no other backend answers.
    pub(crate) timed_out: bool,
}

impl<'a> Attempts<'a> {
    /// A walk over `pool` for one request or session with balancing key `key`.
    pub fn new(
        pool: &'a Arc<Pool>,
        cfg: &'a ListenerConfig,
        stats: &'a ListenerStats,
        key: Option<u64>,
    ) -> Self {
        Self {
            pool,
            cfg,
            stats,
            key,
            tried: Vec::new(),
            made: 0,
            refusal: None,
            timed_out: false,
        }
    }

    /// The next backend to try, with its in-flight slot taken; waits in the pool's queue
    /// while every eligible backend is full.
    pub async fn next(&mut self) -> Option<Lease> {
        if self.made > self.cfg.retries {
            return None;
        }
        let lease = match self.pool.acquire(self.key, &self.tried).await {
            Ok(lease) => lease,
            Err(refusal) => {
                self.refusal = Some(refusal);
                return None;
            }
        };
        if self.made > 0 {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.made += 1;
        Some(lease)
    }

    /// Connecting to the lease's backend failed.
    pub fn connect_failed(&mut self, lease: &Lease, error: &dyn std::fmt::Display) {
        debug!(backend = lease.backend().name(), %error, "backend connect failed");
        self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.failed(lease);
    }

    /// The lease's backend failed this request; it is not tried again for it.
    pub fn failed(&mut self, lease: &Lease) {
        lease.record(Outcome::Failure);
        self.pool.report_traffic(lease.backend(), false);
        self.tried.push(lease.backend().clone());
    }

    /// The backend took the request or session; `ok` is false when its answer counts
    /// against its health (an HTTP 5xx).
    pub fn succeeded(&self, lease: &Lease, ok: bool) {
        lease.record(if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        });
        self.pool.report_traffic(lease.backend(), ok);
    }

    /// Ends the walk without a backend: how many were tried, and why the pool gave none
    /// when it did not (`None` when the retries ran out). None tried at all means no backend
    /// was available, which the listener counts.
    pub fn give_up(&self) -> (usize, Option<Refusal>) {
        if self.tried.is_empty() {
            self.stats.no_backend.fetch_add(1, Ordering::Relaxed);
        }
        (self.tried.len(), self.refusal)
    }
}
