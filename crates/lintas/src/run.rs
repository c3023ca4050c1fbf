//! Running a node: start the configured services, reload on SIGHUP, drain on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use admin::{AdminState, Auth, Control, Metrics};
use anyhow::Context;
use configkit::KeyPath;
use net::Workers;
use proxy::{Proxy, ReloadSummary};
use relay::Relay;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use watch::Watch;

use crate::config::{self, Loaded};

/// How long connections get to finish after a shutdown signal before they are closed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The services of one running node.
pub struct Node {
    /// The load balancer (running with no listeners when `[proxy]` is absent, so a reload
    /// can add them).
    pub proxy: Arc<Proxy>,
    /// Where the admin service listens, when configured.
    pub admin_addr: Option<SocketAddr>,
    /// The relay, when `[relay]` is configured.
    pub relay: Option<Arc<Relay>>,
    /// The watch service, when `[watch]` is configured.
    pub watch: Option<Arc<Watch>>,
    /// The configuration file, re-read on reload.
    path: PathBuf,
    /// The configuration in force, so a reload can tell what changed outside `[proxy]`.
    current: Mutex<Loaded>,
}

impl Node {
    /// Starts every configured service on `tracker`, serving connections on `workers`,
    /// stopping on `shutdown`. Errors that come from the environment (an address in use, an
    /// unset password variable) are positioned in the file like validation errors.
    pub async fn start(
        loaded: Loaded,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        workers: Workers,
    ) -> anyhow::Result<Arc<Self>> {
        let proxy_cfg = loaded.config.proxy.clone().unwrap_or_default();
        let proxy = Proxy::start(
            &proxy_cfg,
            tracker.clone(),
            shutdown.clone(),
            workers.clone(),
        )
        .await
        .map_err(|e| loaded.error_at(&e.key_path(&KeyPath::root("proxy")), e.to_string()))?;
        // One store per node, opened here and shared by the services that keep state.
        let store = if loaded.config.relay.is_some() || loaded.config.watch.is_some() {
            let opened = store::Store::open(&loaded.data_dir()).await;
            Some(opened.map_err(|e| loaded.error_at(&KeyPath::root("data_dir"), e.to_string()))?)
        } else {
            None
        };
        let relay = match (&loaded.config.relay, &store) {
            (Some(cfg), Some(store)) => {
                let at = KeyPath::root("relay");
                let data_dir = loaded.data_dir();
                let ingest = workers.bind(cfg.listen).map_err(|e| {
                    loaded.error_at(
                        &at.key("listen"),
                        format!(
                            "cannot listen on {}: {e}; choose another address or stop what holds it",
                            cfg.listen
                        ),
                    )
                })?;
                let relay = Relay::start(
                    cfg.clone(),
                    store.clone(),
                    &data_dir,
                    loaded.config.backplane.as_ref(),
                    &at,
                    &tracker,
                    shutdown.clone(),
                    ingest,
                )
                .await
                .map_err(|e| loaded.error_at(&e.at, e.message))?;
                Some(relay)
            }
            _ => None,
        };
        let watch = match (&loaded.config.watch, store) {
            (Some(cfg), Some(store)) => {
                let pools: Arc<dyn watch::Pools> =
                    Arc::new(crate::watched::ProxyPools(proxy.clone()));
                let watch = Watch::start(cfg, store, Some(pools), &tracker, shutdown.clone())
                    .map_err(|e| loaded.error_at(&KeyPath::root("watch").key(e.key), e.message))?;
                tracker.spawn(crate::watched::pools(
                    proxy.clone(),
                    watch.reporter(),
                    shutdown.clone(),
                ));
                if let Some(relay) = &relay {
                    tracker.spawn(crate::watched::relay(
                        relay.clone(),
                        watch.reporter(),
                        shutdown.clone(),
                    ));
                }
                Some(watch)
            }
            _ => None,
        };
        let admin = match &loaded.config.admin {
            Some(cfg) => {
                let at = KeyPath::root("admin");
                let auth = Auth::from_config(cfg)
                    .map_err(|e| loaded.error_at(&at.key("password_env"), e))?;
                let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
                    loaded.error_at(
                        &at.key("listen"),
                        format!("cannot listen on {}: {e}; choose another address or stop what holds it", cfg.listen),
                    )
                })?;
                Some((auth, listener))
            }
            None => None,
        };
        let node = Arc::new(Self {
            proxy,
            admin_addr: admin.as_ref().and_then(|(_, l)| l.local_addr().ok()),
            relay,
            watch,
            path: loaded.path.clone(),
            current: Mutex::new(loaded),
        });
        if let Some((auth, listener)) = admin {
            let metrics = Metrics::default();
            proxy::admin::metrics::register(node.proxy.registry(), &metrics);
            let state = AdminState {
                auth: Arc::new(auth),
                control: Arc::new(Reloader(node.clone())),
                metrics,
                services: proxy::admin::router(node.proxy.clone())
                    .merge(
                        node.relay
                            .clone()
                            .map(relay::admin::router)
                            .unwrap_or_default(),
                    )
                    .merge(
                        node.watch
                            .clone()
                            .map(watch::admin::router)
                            .unwrap_or_default(),
                    ),
            };
            info!(addr = ?node.admin_addr, "admin listening");
            tracker.spawn(async move {
                if let Err(e) = admin::serve(listener, state, shutdown).await {
                    warn!(error = %e, "admin service stopped");
                }
            });
        }
        Ok(node)
    }

    /// Re-reads the configuration file and applies it without dropping connections. An
    /// invalid file changes nothing.
    pub async fn reload(&self) -> Result<ReloadSummary, String> {
        let loaded = config::load(&self.path).map_err(|e| e.to_string())?;
        let mut current = self.current.lock().await;
        if loaded.config.admin != current.config.admin {
            warn!("[admin] changed; it takes effect at the next restart");
        }
        if loaded.config.watch != current.config.watch {
            warn!(
                "[watch] changed; it takes effect at the next restart (targets can be added at run time through the admin API)"
            );
        }
        match (&self.relay, &loaded.config.relay) {
            (Some(relay), Some(cfg)) => {
                if cfg.listen != relay.config().listen || data_settings_differ(cfg, relay.config())
                {
                    warn!(
                        "[relay] settings other than applications, destinations and routes take effect at the next restart"
                    );
                }
                relay
                    .apply_declarations(cfg, &KeyPath::root("relay"))
                    .await
                    .map_err(|e| loaded.error_at(&e.at, e.message).to_string())?;
            }
            (None, None) => {}
            _ => warn!("[relay] added or removed; it takes effect at the next restart"),
        }
        let summary = self
            .proxy
            .apply(&loaded.config.proxy.clone().unwrap_or_default())
            .await
            .map_err(|e| {
                loaded
                    .error_at(&e.key_path(&KeyPath::root("proxy")), e.to_string())
                    .to_string()
            })?;
        *current = loaded;
        Ok(summary)
    }
}

/// Whether a reload changes `[relay]` settings that only a restart applies.
fn data_settings_differ(a: &relay::RelayConfig, b: &relay::RelayConfig) -> bool {
    let strip = |c: &relay::RelayConfig| relay::RelayConfig {
        applications: Vec::new(),
        destinations: Vec::new(),
        routes: Vec::new(),
        ..c.clone()
    };
    strip(a) != strip(b)
}

/// The admin API's handle on reloads.
struct Reloader(Arc<Node>);

impl Control for Reloader {
    fn reload(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + '_>> {
        Box::pin(async move {
            let proxy = self.0.reload().await?;
            Ok(serde_json::json!({ "proxy": proxy }))
        })
    }
}

/// `lintas run`: serves on `workers` until SIGINT or SIGTERM, reloading on SIGHUP.
pub async fn run(path: PathBuf, workers: Workers) -> anyhow::Result<()> {
    let loaded = config::load(&path)?;
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let node = Node::start(loaded, tracker.clone(), shutdown.clone(), workers).await?;
    info!(config = %path.display(), "lintas running");
    wait_for_signals(&node, &shutdown).await?;
    drain(tracker).await;
    Ok(())
}

/// Reloads on SIGHUP; returns on SIGINT or SIGTERM, after cancelling `shutdown`.
pub async fn wait_for_signals(node: &Node, shutdown: &CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => match node.reload().await {
                Ok(summary) => info!(?summary, "configuration reloaded"),
                Err(e) => warn!("reload refused, configuration unchanged:\n{e}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!(
        "shutting down: no new connections; draining for up to {}",
        configkit::format_duration(DRAIN_GRACE)
    );
    shutdown.cancel();
    Ok(())
}

/// Waits for tracked tasks to finish, at most [`DRAIN_GRACE`].
pub async fn drain(tracker: TaskTracker) {
    tracker.close();
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("drain grace period over; closing the remaining connections");
    }
}
