//! The load balancer: listeners in front of pools of backends.
//!
//! Where a connection goes is decided by the `balance` crate; this crate moves the bytes.
//!
//! # Layout
//!
//! - [`config`]: the `[proxy]` section and its validation.
//! - `listener`: the accept loop shared by both modes (connection permit taken before
//!   accept, per-listener live settings swapped on reload).
//! - `tcp`: layer 4 — connect with retries, optional PROXY protocol (`proxy_protocol`),
//!   bidirectional copy with half-close and idle timeout.
//! - `http`: layer 7 — HTTP/1.x clients through lintas's own forwarding loop (`http::h1`),
//!   h2 clients through hyper (`http::h2`); pooled HTTP/1.1 backends, WebSocket upgrades
//!   tunnelled, retries, timeouts, TLS termination (`net::tls`).
//! - `route`: a listener's routes — by host, path, method, header (HTTP) or SNI (TCP) to
//!   a pool or a redirect, with path and header rewrites.
//! - `access_log`: one line per HTTP request or TCP session (nginx's `common`/`combined`
//!   or JSON), formatted on the data path, written by one thread per file; error pages
//!   (`http::error_pages`) replace lintas's own plain-text answers.
//! - `check`: active health checks per pool.
//! - `dns`: backends written as host names — resolved, then resolved again as their
//!   records expire, the pool's membership following the answers.
//! - [`registry`]: pools and listeners with their counters, read by the stats and metrics;
//!   `rates` samples their request counters into requests per second.
//! - [`admin`]: the stats page, the runtime API and the metrics, mounted in the admin
//!   listener.
//! - [`Proxy`]: starts all of it and applies a reloaded configuration as a diff.
//!
//! Listeners are bound and served on `net`'s worker threads (one current-thread runtime
//! per core, each accepting on its own `SO_REUSEPORT` socket of every listener).

mod access_log;
pub mod admin;
mod attempts;
mod check;
pub mod config;
mod dns;
mod http;
mod listener;
mod proxy_protocol;
mod rates;
pub mod registry;
mod route;
mod tcp;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use balance::{Pool, PoolError};
use configkit::KeyPath;
use net::Workers;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{ListenerConfig, Mode, ProxyConfig};
pub use crate::dns::{DnsMember, DnsSnapshot};
use crate::listener::{ListenerHandle, ListenerSettings};
use crate::registry::{ListenerInfo, Registry};

/// Why the proxy could not start or apply a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener's address could not be bound.
    #[error(
        "listener `{listener}` cannot listen on {addr}: {source}; choose another address or stop what holds it"
    )]
    Bind {
        /// Listener name.
        listener: String,
        /// Its index in `[[proxy.listeners]]`.
        index: usize,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A listener's certificate or key is unusable.
    #[error("listener `{listener}`: {message}")]
    Tls {
        /// Listener name.
        listener: String,
        /// Its index in `[[proxy.listeners]]`.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A backend's host name did not resolve when its configuration was applied.
    #[error("pool `{pool}`: {message}")]
    Resolve {
        /// Pool name.
        pool: String,
        /// The backend's index in the pool's `backends`.
        index: usize,
        /// What failed and what to check.
        message: String,
    },
    /// No resolver could be made for `[proxy.dns]`.
    #[error("{message}")]
    Dns {
        /// Why.
        message: String,
    },
    /// A listener's access log cannot be opened for appending.
    #[error(
        "listener `{listener}`: the access log `{path}` cannot be opened: {source}; check the directory exists and lintas may write there"
    )]
    AccessLog {
        /// Listener name.
        listener: String,
        /// Its index in `[[proxy.listeners]]`.
        index: usize,
        /// The configured path.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// A listener's error page cannot be read.
    #[error("listener `{listener}`: the error page `{path}` cannot be read: {source}")]
    ErrorPage {
        /// Listener name.
        listener: String,
        /// Its index in `[[proxy.listeners]]`.
        index: usize,
        /// The status it is for, as written (`"503"`).
        status: String,
        /// The file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// A pool definition was refused.
    #[error("pool `{pool}`: {source}")]
    Pool {
        /// Pool name.
        pool: String,
        /// Why.
        source: PoolError,
    },
}

impl ProxyError {
    /// The configuration key the error is about, below `at` (the `[proxy]` section's path).
    pub fn key_path(&self, at: &KeyPath) -> KeyPath {
        match self {
            Self::Bind { index, .. } => at.key("listeners").index(*index).key("listen"),
            Self::Tls { index, .. } => at.key("listeners").index(*index).key("tls"),
            Self::AccessLog { index, .. } => at
                .key("listeners")
                .index(*index)
                .key("access_log")
                .key("path"),
            Self::ErrorPage { index, status, .. } => at
                .key("listeners")
                .index(*index)
                .key("error_pages")
                .key(status),
            Self::Pool { pool, .. } => at.key("pools").key(pool),
            Self::Resolve { pool, index, .. } => at
                .key("pools")
                .key(pool)
                .key("backends")
                .index(*index)
                .key("address"),
            Self::Dns { .. } => at.key("dns"),
        }
    }
}

/// What a reload changed, for the log and the API's answer.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadSummary {
    /// Listeners started.
    pub listeners_added: Vec<String>,
    /// Listeners that stopped accepting (their connections finish).
    pub listeners_removed: Vec<String>,
    /// Listeners whose settings were updated in place.
    pub listeners_updated: Vec<String>,
    /// Pools created.
    pub pools_added: Vec<String>,
    /// Pools dropped.
    pub pools_removed: Vec<String>,
    /// Pools reconfigured in place.
    pub pools_updated: Vec<String>,
    /// Changes made at run time (API, stats page, console) that the reload kept because
    /// the file did not change the same thing.
    pub runtime_kept: Vec<String>,
}

/// The running load balancer of this node.
#[derive(Debug)]
pub struct Proxy {
    registry: Arc<Registry>,
    /// Backend connection pools, one per worker (or one on the current runtime).
    backends: Vec<http::Backends>,
    workers: Workers,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    running: Mutex<Running>,
    /// Every pool's health events, pools added by reloads included.
    health: tokio::sync::broadcast::Sender<balance::HealthEvent>,
}

#[derive(Debug, Default)]
struct Running {
    listeners: BTreeMap<String, Arc<ListenerHandle>>,
    checkers: Vec<CancellationToken>,
    /// Access log files by path, reopened by each apply.
    log_files: access_log::LogFiles,
}

impl service::Service for Proxy {
    type Config = ProxyConfig;
    type Changes = ReloadSummary;
    const SECTION: &'static str = "proxy";

    /// Binds every listener and starts serving; `cfg` must have passed
    /// [`ProxyConfig::validate`]. Connections are accepted and served on the node's workers
    /// (on the current runtime when it has none). The pools' and listeners' metrics are
    /// registered in the node's registry, read from [`Proxy::registry`] at each scrape.
    async fn start(
        cfg: &ProxyConfig,
        deps: service::Deps,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, service::StartError> {
        let proxy = Arc::new(Self {
            registry: Arc::new(Registry::default()),
            backends: http::Backends::per_worker(deps.workers.sockets_per_listener()),
            workers: deps.workers.clone(),
            tracker: deps.tasks.clone(),
            shutdown,
            running: Mutex::new(Running::default()),
            health: tokio::sync::broadcast::channel(1024).0,
        });
        proxy.apply(cfg).await.map_err(located)?;
        crate::admin::metrics::register(&proxy.registry, &deps.metrics);
        proxy
            .tracker
            .spawn(rates::run(proxy.registry.clone(), proxy.shutdown.clone()));
        Ok(proxy)
    }

    async fn reload(
        self: &Arc<Self>,
        cfg: &ProxyConfig,
    ) -> Result<ReloadSummary, service::StartError> {
        self.apply(cfg).await.map_err(located)
    }

    /// Everything in `[proxy]` applies while running.
    fn restart_needed(&self, _: &ProxyConfig) -> Vec<KeyPath> {
        Vec::new()
    }

    fn routes(self: &Arc<Self>) -> axum::Router {
        crate::admin::router(self.clone())
    }
}

/// A [`ProxyError`] placed at the setting it is about.
fn located(e: ProxyError) -> service::StartError {
    service::StartError::new(e.key_path(&KeyPath::root("proxy")), e.to_string())
}

impl Proxy {
    /// Pools and listeners, for the admin service.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Every health change of every pool (present and future), for the watch service: one
    /// stream, so no backend is checked twice.
    pub fn subscribe_health(&self) -> tokio::sync::broadcast::Receiver<balance::HealthEvent> {
        self.health.subscribe()
    }

    /// Address a listener is bound to (useful when the configuration said port 0).
    pub async fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.running
            .lock()
            .await
            .listeners
            .get(listener)
            .map(|h| h.info.addr)
    }

    /// Applies `cfg` as a diff of the running state: pools keep their backends' health and
    /// counters, listeners on an unchanged address keep their socket and connections, new
    /// listeners are bound before anything is torn down, and removed listeners only stop
    /// accepting. If a new address cannot be bound, a certificate is unusable or a new host
    /// name does not resolve, nothing changes. Host names already known are not resolved
    /// again here: their refresh tasks keep them current.
    pub async fn apply(&self, cfg: &ProxyConfig) -> Result<ReloadSummary, ProxyError> {
        // Before the lock: waiting on DNS must not hold up another reload's wait.
        let resolved = self.registry.dns.prepare(cfg).await?;
        let mut running = self.running.lock().await;
        let mut summary = ReloadSummary::default();

        // 1. Everything fallible first: TLS material and new sockets.
        let mut acceptors = Vec::with_capacity(cfg.listeners.len());
        for (index, l) in cfg.listeners.iter().enumerate() {
            let acceptor = match &l.tls {
                Some(t) => Some(net::tls::acceptor(t, &[b"h2", b"http/1.1"]).map_err(
                    |message| ProxyError::Tls {
                        listener: l.name.clone(),
                        index,
                        message,
                    },
                )?),
                None => None,
            };
            acceptors.push(acceptor);
        }
        let mut files = listener::Files::load(&cfg.listeners, &running.log_files)?;
        let keeps = |l: &ListenerConfig| {
            running
                .listeners
                .get(&l.name)
                .is_some_and(|h| h.settings.load().cfg.listen == l.listen && h.info.mode == l.mode)
        };
        let removed: Vec<Arc<ListenerHandle>> = running
            .listeners
            .iter()
            .filter(|(name, _)| !cfg.listeners.iter().any(|l| &l.name == *name && keeps(l)))
            .map(|(_, h)| h.clone())
            .collect();
        let mut bound = BTreeMap::new();
        let mut deferred = Vec::new();
        for (index, l) in cfg.listeners.iter().enumerate() {
            if keeps(l) {
                continue;
            }
            match net::bind(l.listen, self.workers.sockets_per_listener()) {
                Ok(sock) => {
                    bound.insert(index, sock);
                }
                // Held by a listener this reload removes: bind once it has let go.
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse
                        && removed
                            .iter()
                            .any(|h| h.settings.load().cfg.listen == l.listen) =>
                {
                    deferred.push(index);
                }
                Err(source) => return Err(bind_error(l, index, source)),
            }
        }

        // 2. Pools: reconfigure in place, create, drop.
        let old_pools = self.registry.pools();
        let mut pools = BTreeMap::new();
        // A refresh applies no answer until the pools are set.
        let dns_changes = self.registry.dns.hold().await;
        self.registry.dns.merge(cfg, resolved);
        for (name, p) in &cfg.pools {
            let specs = p.backend_specs(|i| self.registry.dns.members(name, &p.backends[i]));
            let pool = match old_pools.get(name) {
                Some(existing) => {
                    let kept =
                        existing.reconfigure(p.strategy, p.hash_key.clone(), &specs, p.policy());
                    summary
                        .runtime_kept
                        .extend(kept.into_iter().map(|k| format!("pool {name}: {k}")));
                    summary.pools_updated.push(name.clone());
                    existing.clone()
                }
                None => {
                    summary.pools_added.push(name.clone());
                    let pool = Pool::new(name, p.strategy, p.hash_key.clone(), &specs, p.policy())
                        .map_err(|source| ProxyError::Pool {
                            pool: name.clone(),
                            source,
                        })?;
                    self.tracker.spawn(log_health_events(
                        pool.subscribe(),
                        self.health.clone(),
                        self.shutdown.clone(),
                    ));
                    pool
                }
            };
            pool.set_queue_policy(p.queue_policy());
            pools.insert(name.clone(), pool);
        }
        summary.pools_removed = old_pools
            .keys()
            .filter(|n| !pools.contains_key(*n))
            .cloned()
            .collect();
        self.registry.set_pools(pools.clone());
        self.registry.dns.restart_refreshers(
            &pools,
            cfg.dns.max_ttl,
            &self.tracker,
            &self.shutdown,
        );
        drop(dns_changes);

        // 3. Health checkers restart with the new settings.
        for c in running.checkers.drain(..) {
            c.cancel();
        }
        for (name, p) in &cfg.pools {
            let token = self.shutdown.child_token();
            running.checkers.push(token.clone());
            self.tracker
                .spawn(check::run(pools[name].clone(), p.health.clone(), token));
        }

        // 4. Listeners: stop removed ones, update kept ones, start new ones.
        for h in &removed {
            h.stop_accepting.cancel();
            running.listeners.remove(&h.info.name);
            summary.listeners_removed.push(h.info.name.clone());
        }
        for index in deferred {
            let l = &cfg.listeners[index];
            let sock = bind_when_released(l.listen, self.workers.sockets_per_listener())
                .await
                .map_err(|source| bind_error(l, index, source))?;
            bound.insert(index, sock);
        }
        let mut infos = Vec::with_capacity(cfg.listeners.len());
        let per_listener = std::mem::take(&mut files.per_listener);
        for (index, ((l, tls), (access_log, error_pages))) in cfg
            .listeners
            .iter()
            .zip(acceptors)
            .zip(per_listener)
            .enumerate()
        {
            let settings = ListenerSettings {
                cfg: l.clone(),
                pool: pools[&l.pool].clone(),
                router: route::Router::new(&l.routes, &pools),
                tls,
                access_log,
                error_pages,
            };
            match bound.remove(&index) {
                None => {
                    let h = running.listeners[&l.name].clone();
                    let old_max = h.settings.load().cfg.max_connections;
                    h.permits.resize(old_max, l.max_connections);
                    h.info.pool.store(Arc::new(l.pool.clone()));
                    h.settings.store(Arc::new(settings));
                    summary.listeners_updated.push(l.name.clone());
                    infos.push(h.info.clone());
                }
                Some(sock) => {
                    let h = self.spawn_listener(sock, settings)?;
                    summary.listeners_added.push(l.name.clone());
                    infos.push(h.info.clone());
                    running.listeners.insert(l.name.clone(), h);
                }
            }
        }
        self.registry.set_listeners(infos);
        running.log_files = files.logs;
        info!(?summary, "proxy configuration applied");
        Ok(summary)
    }

    fn spawn_listener(
        &self,
        sockets: Vec<std::net::TcpListener>,
        settings: ListenerSettings,
    ) -> Result<Arc<ListenerHandle>, ProxyError> {
        let cfg = &settings.cfg;
        let addr = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(cfg.listen);
        let handle = Arc::new(ListenerHandle {
            info: Arc::new(ListenerInfo {
                name: cfg.name.clone(),
                mode: cfg.mode,
                addr,
                pool: ArcSwap::from_pointee(cfg.pool.clone()),
                stats: Default::default(),
            }),
            permits: net::Permits::new(cfg.max_connections),
            stop_accepting: self.shutdown.child_token(),
            settings: ArcSwap::from_pointee(settings),
        });
        info!(listener = %handle.info.name, %addr, mode = ?handle.info.mode, sockets = sockets.len(), "listening");
        for (i, sock) in sockets.into_iter().enumerate() {
            let backends = self.backends.get(i).cloned().unwrap_or_default();
            let conn_shutdown = self.shutdown.clone();
            let serve_http = move |s, peer, h, active| {
                http::serve(s, peer, h, active, backends.clone(), conn_shutdown.clone())
            };
            let (handle, tracker) = (handle.clone(), self.tracker.clone());
            let mode = handle.info.mode;
            // The socket joins the reactor of the runtime it is served on.
            let accept = async move {
                let listener = match TcpListener::from_std(sock) {
                    Ok(l) => l,
                    Err(e) => {
                        return warn!(listener = %handle.info.name, error = %e, "cannot serve a listening socket");
                    }
                };
                match mode {
                    Mode::Tcp => listener::accept_loop(listener, handle, tracker, tcp::serve).await,
                    Mode::Http => {
                        listener::accept_loop(listener, handle, tracker, serve_http).await
                    }
                }
            };
            match self.workers.handle(i) {
                Some(runtime) => self.tracker.spawn_on(accept, runtime),
                None => self.tracker.spawn(accept),
            };
        }
        Ok(handle)
    }
}

/// Logs every health change of a pool and passes it on to `all` (the proxy-wide channel),
/// until the pool is dropped or the node stops.
async fn log_health_events(
    mut events: tokio::sync::broadcast::Receiver<balance::HealthEvent>,
    all: tokio::sync::broadcast::Sender<balance::HealthEvent>,
    shutdown: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = shutdown.cancelled() => return,
        };
        match ev {
            Ok(ev) if ev.to == balance::Health::Up => {
                info!(pool = %ev.pool, backend = %ev.backend, addr = %ev.addr, from = ev.from.as_str(), reason = %ev.reason, "backend is up");
                let _ = all.send(ev);
            }
            Ok(ev) => {
                warn!(pool = %ev.pool, backend = %ev.backend, addr = %ev.addr, to = ev.to.as_str(), reason = %ev.reason, "backend is out of rotation");
                let _ = all.send(ev);
            }
            Err(RecvError::Lagged(n)) => warn!(missed = n, "health event log fell behind"),
            Err(RecvError::Closed) => return,
        }
    }
}

fn bind_error(l: &ListenerConfig, index: usize, source: io::Error) -> ProxyError {
    ProxyError::Bind {
        listener: l.name.clone(),
        index,
        addr: l.listen,
        source,
    }
}

/// Binds an address a stopping listener still holds, waiting briefly for it to let go.
async fn bind_when_released(
    addr: SocketAddr,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut last = None;
    for _ in 0..50 {
        match net::bind(addr, count) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}
