//! Running a node: start the configured services, reload on SIGHUP, drain on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use admin::{AdminState, Auth, Control, ReloadError};
use anyhow::Context;
use configkit::KeyPath;
use hub::Hub;
use mqtt::Broker;
use net::Workers;
use proxy::{Proxy, ReloadSummary};
use relay::Relay;
use service::{Deps, Service, StartError};
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
    /// The MQTT broker, when `[mqtt]` is configured.
    pub mqtt: Option<Arc<Broker>>,
    /// The WebSocket hub, when `[hub]` is configured.
    pub hub: Option<Arc<Hub>>,
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
        let config = &loaded.config;
        // One backplane per node, opened here and shared by the services through Deps.
        let backplane = backplane::open(config.backplane.as_ref(), &loaded.data_dir())
            .await
            .map_err(|e| {
                let key = match &config.backplane {
                    Some(_) => KeyPath::root("backplane").key("redis"),
                    None => KeyPath::root("data_dir"),
                };
                loaded.error_at(&key, e.to_string())
            })?;
        let deps = Deps::new(workers, tracker.clone(), loaded.data_dir(), backplane);
        let located = |e: StartError| loaded.error_at(&e.at, e.message);
        let proxy_cfg = config.proxy.clone().unwrap_or_default();
        let proxy = Proxy::start(&proxy_cfg, deps.clone(), shutdown.clone())
            .await
            .map_err(located)?;
        let relay = start::<Relay>(config.relay.as_ref(), &deps, &shutdown)
            .await
            .map_err(located)?;
        let watch = start::<Watch>(config.watch.as_ref(), &deps, &shutdown)
            .await
            .map_err(located)?;
        let mqtt = start::<Broker>(config.mqtt.as_ref(), &deps, &shutdown)
            .await
            .map_err(located)?;
        let hub = start::<Hub>(config.hub.as_ref(), &deps, &shutdown)
            .await
            .map_err(located)?;
        if let Some(watch) = &watch {
            watch.attach_pools(Arc::new(crate::watched::ProxyPools(proxy.clone())));
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
        }
        let admin = match &config.admin {
            Some(cfg) => {
                let at = KeyPath::root("admin");
                let auth = Auth::from_config(cfg)
                    .map_err(|e| loaded.error_at(&at.key("password_env"), e))?;
                let listener = TcpListener::bind(cfg.listen)
                    .await
                    .map_err(|e| located(StartError::bind(at.key("listen"), cfg.listen, &e)))?;
                Some((auth, listener))
            }
            None => None,
        };
        let node = Arc::new(Self {
            proxy,
            admin_addr: admin.as_ref().and_then(|(_, l)| l.local_addr().ok()),
            relay,
            watch,
            mqtt,
            hub,
            path: loaded.path.clone(),
            current: Mutex::new(loaded),
        });
        if let Some((auth, listener)) = admin {
            let state = AdminState {
                auth: Arc::new(auth),
                control: Arc::new(Reloader(node.clone())),
                metrics: deps.metrics.clone(),
                services: console::router()
                    .merge(node.proxy.routes())
                    .merge(node.relay.as_ref().map(Service::routes).unwrap_or_default())
                    .merge(node.watch.as_ref().map(Service::routes).unwrap_or_default())
                    .merge(node.mqtt.as_ref().map(Service::routes).unwrap_or_default())
                    .merge(node.hub.as_ref().map(Service::routes).unwrap_or_default()),
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
    /// invalid file changes nothing ([`ReloadError::Invalid`]); a file that is valid but that
    /// a service refuses (an address in use, [`ReloadError::Refused`]) may leave the services
    /// before it reloaded.
    pub async fn reload(&self) -> Result<NodeReload, ReloadError> {
        let loaded = config::load(&self.path).map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let mut current = self.current.lock().await;
        let located =
            |e: StartError| ReloadError::Refused(loaded.error_at(&e.at, e.message).to_string());
        let mut restart_needed = Vec::new();
        if loaded.config.admin != current.config.admin {
            restart_needed.push(KeyPath::root("admin"));
        }
        if loaded.config.backplane != current.config.backplane {
            restart_needed.push(KeyPath::root("backplane"));
        }
        let relay = reload(
            &self.relay,
            loaded.config.relay.as_ref(),
            &mut restart_needed,
        )
        .await
        .map_err(located)?;
        let watch = reload(
            &self.watch,
            loaded.config.watch.as_ref(),
            &mut restart_needed,
        )
        .await
        .map_err(located)?;
        let mqtt = reload(&self.mqtt, loaded.config.mqtt.as_ref(), &mut restart_needed)
            .await
            .map_err(located)?;
        let hub = reload(&self.hub, loaded.config.hub.as_ref(), &mut restart_needed)
            .await
            .map_err(located)?;
        let proxy = self
            .proxy
            .reload(&loaded.config.proxy.clone().unwrap_or_default())
            .await
            .map_err(located)?;
        let summary = NodeReload {
            proxy,
            relay,
            watch,
            mqtt,
            hub,
            restart_needed: restart_needed.iter().map(ToString::to_string).collect(),
        };
        if !summary.restart_needed.is_empty() {
            warn!(
                settings = %summary.restart_needed.join(", "),
                "these settings changed and take effect at the next restart"
            );
        }
        *current = loaded;
        Ok(summary)
    }
}

/// What a reload changed on the whole node, for the log and the admin API's answer.
#[derive(Debug, serde::Serialize)]
pub struct NodeReload {
    /// The load balancer's changes.
    pub proxy: ReloadSummary,
    /// What the relay has in force, when it runs.
    pub relay: Option<relay::Reloaded>,
    /// What watch has in force, when it runs.
    pub watch: Option<watch::Reloaded>,
    /// What the MQTT broker applied, when it runs.
    pub mqtt: Option<mqtt::service::Reloaded>,
    /// What the hub applied, when it runs.
    pub hub: Option<hub::Reloaded>,
    /// Settings that changed but that only a restart applies (a service added or removed
    /// counts as its whole section).
    pub restart_needed: Vec<String>,
}

/// Starts service `S` when its section is present.
async fn start<S: Service>(
    cfg: Option<&S::Config>,
    deps: &Deps,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<S>>, StartError> {
    match cfg {
        Some(cfg) => S::start(cfg, deps.clone(), shutdown.clone())
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// Reloads service `S` when it runs and its section is still there; otherwise notes that
/// adding or removing it needs a restart.
async fn reload<S: Service>(
    running: &Option<Arc<S>>,
    cfg: Option<&S::Config>,
    restart_needed: &mut Vec<KeyPath>,
) -> Result<Option<S::Changes>, StartError> {
    match (running, cfg) {
        (Some(service), Some(cfg)) => {
            restart_needed.extend(service.restart_needed(cfg));
            service.reload(cfg).await.map(Some)
        }
        (None, None) => Ok(None),
        _ => {
            restart_needed.push(KeyPath::root(S::SECTION));
            Ok(None)
        }
    }
}

/// The admin API's handle on reloads.
struct Reloader(Arc<Node>);

impl Control for Reloader {
    fn reload(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, ReloadError>> + Send + '_>> {
        Box::pin(async {
            let summary = self.0.reload().await?;
            serde_json::to_value(summary).map_err(|e| ReloadError::Refused(e.to_string()))
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
