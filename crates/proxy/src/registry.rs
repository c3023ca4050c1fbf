//! What the proxy exposes to the admin service: pools by name and listeners with counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use balance::{Pool, PoolSnapshot, RateMeter};
use serde::Serialize;

use crate::config::Mode;
use crate::dns::{Dns, DnsSnapshot};

/// Live counters of one listener; relaxed atomics bumped on the data path.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Client connections accepted.
    pub connections: AtomicU64,
    /// Client connections open now.
    pub active: AtomicU64,
    /// HTTP requests received (TCP: sessions).
    pub requests: AtomicU64,
    /// Responses by class: index 0 is 1xx … index 4 is 5xx.
    pub responses: [AtomicU64; 5],
    /// Requests or sessions refused because no backend was available.
    pub no_backend: AtomicU64,
    /// Connection attempts to backends that failed.
    pub connect_failures: AtomicU64,
    /// Requests retried on another backend or connection.
    pub retries: AtomicU64,
    /// Requests whose backend did not answer within `request_timeout`.
    pub timeouts: AtomicU64,
    /// `requests` per second, sampled by the proxy's rate ticker (`rates`).
    pub rate: RateMeter,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: AtomicU64,
}

impl ListenerStats {
    /// Counts a response by its status class.
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// One running listener as the stats page shows it.
#[derive(Debug)]
pub struct ListenerInfo {
    /// Configured name.
    pub name: String,
    /// `tcp` or `http`.
    pub mode: Mode,
    /// Address actually bound (differs from the configuration for port 0).
    pub addr: SocketAddr,
    /// Pool it sends to; changes on reload.
    pub pool: ArcSwap<String>,
    /// Counters.
    pub stats: ListenerStats,
}

/// Serializable view of a listener.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerSnapshot {
    /// Name.
    pub name: String,
    /// Mode.
    pub mode: Mode,
    /// Bound address.
    pub addr: String,
    /// Pool.
    pub pool: String,
    /// Connections accepted.
    pub connections: u64,
    /// Connections open.
    pub active: u64,
    /// Requests (HTTP) or sessions (TCP).
    pub requests: u64,
    /// 1xx..5xx responses.
    pub responses: [u64; 5],
    /// Refused for lack of a backend.
    pub no_backend: u64,
    /// Failed backend connects.
    pub connect_failures: u64,
    /// Retries.
    pub retries: u64,
    /// Backend timeouts.
    pub timeouts: u64,
    /// Requests (TCP: sessions) per second over about the last second.
    pub rate: u64,
    /// The highest `rate` since the listener started.
    pub rate_max: u64,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: u64,
}

impl ListenerInfo {
    /// Current values.
    pub fn snapshot(&self) -> ListenerSnapshot {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenerSnapshot {
            name: self.name.clone(),
            mode: self.mode,
            addr: self.addr.to_string(),
            pool: self.pool.load().to_string(),
            connections: get(&s.connections),
            active: get(&s.active),
            requests: get(&s.requests),
            responses: std::array::from_fn(|i| get(&s.responses[i])),
            no_backend: get(&s.no_backend),
            connect_failures: get(&s.connect_failures),
            retries: get(&s.retries),
            timeouts: get(&s.timeouts),
            rate: s.rate.current(),
            rate_max: s.rate.max(),
            access_log_dropped: get(&s.access_log_dropped),
        }
    }
}

/// Pools and listeners of this node, swapped as wholes on reload.
#[derive(Debug, Default)]
pub struct Registry {
    pools: ArcSwap<BTreeMap<String, Arc<Pool>>>,
    listeners: ArcSwap<Vec<Arc<ListenerInfo>>>,
    /// Backends written as host names, and their last resolutions.
    pub(crate) dns: Arc<Dns>,
}

impl Registry {
    /// Pool by name.
    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools.load().get(name).cloned()
    }

    /// All pools, sorted by name.
    pub fn pools(&self) -> Arc<BTreeMap<String, Arc<Pool>>> {
        self.pools.load_full()
    }

    /// All listeners in configuration order.
    pub fn listeners(&self) -> Arc<Vec<Arc<ListenerInfo>>> {
        self.listeners.load_full()
    }

    /// Snapshot of every pool.
    pub fn pool_snapshots(&self) -> Vec<PoolSnapshot> {
        self.pools.load().values().map(|p| p.snapshot()).collect()
    }

    /// Every backend entry written as a host name: its addresses now and its failures.
    pub fn dns_snapshots(&self) -> Vec<DnsSnapshot> {
        self.dns.snapshot()
    }

    /// Snapshot of every listener.
    pub fn listener_snapshots(&self) -> Vec<ListenerSnapshot> {
        self.listeners.load().iter().map(|l| l.snapshot()).collect()
    }

    pub(crate) fn set_pools(&self, pools: BTreeMap<String, Arc<Pool>>) {
        self.pools.store(Arc::new(pools));
    }

    pub(crate) fn set_listeners(&self, listeners: Vec<Arc<ListenerInfo>>) {
        self.listeners.store(Arc::new(listeners));
    }
}
