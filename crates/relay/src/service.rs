//! The running relay: the stream, the store, the catalog snapshot, the delivery workers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::service::{Deps, StartError};
use arc_swap::ArcSwap;
use backplane::{Backplane, Kind, Stream};
use configkit::KeyPath;
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::catalog::{self, Catalog, DeclError};
use crate::config::RelayConfig;
use crate::status::{self, DestinationStatus, RelayEvent};
use crate::telemetry::Telemetry;
use crate::{deliver, deliveries, ingest};

/// How often old delivery-log rows and delivered stream records are cleared.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

impl From<DeclError> for StartError {
    fn from(e: DeclError) -> Self {
        Self::new(e.at, e.message)
    }
}

/// The relay service of one node.
pub struct Relay {
    cfg: RelayConfig,
    store: Store,
    /// The node's backplane: the stream's home, and the destination leases'.
    backplane: Arc<dyn Backplane>,
    stream: Arc<dyn Stream>,
    /// This process, as a consumer and lease holder on a shared stream.
    node_id: String,
    /// Decrypts destination passwords kept in the store.
    secrets: crate::secrets::Secrets,
    /// How long a destination lease lasts, on a shared stream.
    lease: Option<Duration>,
    catalog: ArcSwap<Catalog>,
    generation: watch::Sender<u64>,
    statuses: Mutex<BTreeMap<i64, DestinationStatus>>,
    events: broadcast::Sender<RelayEvent>,
    addr: SocketAddr,
    /// Records operators asked to skip, by destination id: the offset it was stuck on.
    skips: Mutex<BTreeMap<i64, u64>>,
    /// Wakes workers waiting to retry when a skip is asked for.
    skip_asked: tokio::sync::Notify,
    /// The runtimes ingest is served on; delivery workers are spread over them too, so the
    /// node's threads share the work instead of one thread doing all the delivering.
    runtimes: Vec<tokio::runtime::Handle>,
    /// Counters of ingest and delivery, registered in the node's metrics.
    telemetry: Telemetry,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ::service::Service for Relay {
    type Config = RelayConfig;
    type Changes = Reloaded;
    const SECTION: &'static str = "relay";

    /// Opens the stream on the node's backplane, writes the file's
    /// declarations into the node's store, and starts serving ingest on `cfg.listen` and
    /// delivering.
    async fn start(
        cfg: &RelayConfig,
        deps: Deps,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        let at = KeyPath::root(Self::SECTION);
        let cfg = cfg.clone();
        let ingest = deps
            .workers
            .bind(cfg.listen)
            .map_err(|e| StartError::bind(at.key("listen"), cfg.listen, &e))?;
        let store = deps.store().await?;
        store.migrate("relay", crate::MIGRATIONS).await?;
        let key_file = cfg
            .secret_key_file
            .clone()
            .unwrap_or_else(|| deps.data_dir.join("secret.key"));
        let secrets = crate::secrets::Secrets::load_or_create(&key_file)
            .map_err(|e| StartError::new(at.key("secret_key_file"), e))?;
        let backplane = deps.backplane.clone();
        let shared = backplane.kind() == Kind::Redis;
        let backplane_error = |e: backplane::BackplaneError| {
            let blame = if shared {
                KeyPath::root("backplane").key("redis")
            } else {
                KeyPath::root("data_dir")
            };
            StartError::new(blame, e.to_string())
        };
        let stream = crate::stream::open(backplane.as_ref(), cfg.idempotency_window)
            .await
            .map_err(backplane_error)?;
        let end = stream.end().await.map_err(backplane_error)?;
        catalog::sync_declared(store.pool(), &cfg, &at, end).await?;
        let cat = Catalog::load(store.pool())
            .await
            .map_err(|e| StartError::new(at.clone(), format!("store: {e}")))?;
        let addr = ingest
            .first()
            .and_then(|(s, _)| s.local_addr().ok())
            .ok_or_else(|| StartError::new(at.key("listen"), "no ingest socket"))?;
        let runtimes: Vec<tokio::runtime::Handle> =
            ingest.iter().filter_map(|(_, h)| h.clone()).collect();
        let relay = Arc::new(Self {
            cfg,
            store,
            lease: shared.then(|| backplane.lease_ttl()),
            backplane,
            stream,
            node_id: node_id(),
            secrets,
            catalog: ArcSwap::from_pointee(cat),
            generation: watch::channel(0).0,
            statuses: Mutex::new(BTreeMap::new()),
            events: status::channel(),
            addr,
            skips: Mutex::new(BTreeMap::new()),
            skip_asked: tokio::sync::Notify::new(),
            runtimes,
            telemetry: Telemetry::new(end),
        });
        relay.telemetry.register(&deps.metrics, &relay);
        let kind = if relay.lease.is_some() {
            "redis"
        } else {
            "embedded"
        };
        info!(%addr, stream = kind, "relay ingest listening");
        let tracker = deps.tasks;
        for (socket, runtime) in ingest {
            let (r, stop) = (relay.clone(), shutdown.clone());
            let serve = tracker.track_future(async move {
                let served = match TcpListener::from_std(socket) {
                    Ok(listener) => ingest::serve(listener, r, stop).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    warn!(error = %e, "relay ingest stopped");
                }
            });
            match runtime {
                Some(handle) => drop(handle.spawn(serve)),
                None => drop(tokio::spawn(serve)),
            }
        }
        tracker.spawn(supervise(relay.clone(), tracker.clone(), shutdown.clone()));
        tracker.spawn(housekeeping(relay.clone(), shutdown));
        Ok(relay)
    }

    /// Applies the applications, destinations and routes declared in `cfg`.
    async fn reload(self: &Arc<Self>, cfg: &RelayConfig) -> Result<Reloaded, StartError> {
        self.apply_declarations(cfg, &KeyPath::root(Self::SECTION))
            .await?;
        let catalog = self.catalog();
        Ok(Reloaded {
            applications: catalog.applications().count(),
            destinations: catalog.destinations().count(),
            routes: catalog.routes().count(),
        })
    }

    /// Everything but the declared objects: the listener, the stream and delivery settings
    /// are set up once at start.
    fn restart_needed(&self, cfg: &RelayConfig) -> Vec<KeyPath> {
        let objects_only = |c: &RelayConfig| RelayConfig {
            applications: Vec::new(),
            destinations: Vec::new(),
            routes: Vec::new(),
            ..c.clone()
        };
        if objects_only(cfg) == objects_only(&self.cfg) {
            Vec::new()
        } else {
            vec![KeyPath::root(Self::SECTION)]
        }
    }

    fn routes(self: &Arc<Self>) -> axum::Router {
        crate::admin::router(self.clone())
    }
}

/// What a reload of `[relay]` left in force: the objects the relay now knows, declared in
/// the file or made through the API.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Reloaded {
    /// Applications.
    pub applications: usize,
    /// Destinations.
    pub destinations: usize,
    /// Routes.
    pub routes: usize,
}

impl Relay {
    /// Where ingest listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `[relay]` settings in force.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The stream.
    pub fn stream(&self) -> &dyn Stream {
        self.stream.as_ref()
    }

    /// The node's backplane (the destination leases).
    pub(crate) fn backplane(&self) -> &dyn Backplane {
        self.backplane.as_ref()
    }

    /// The counters ingest and delivery update.
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The password to connect to a destination with: from its environment variable, or
    /// decrypted from the store, or the one given with the spec (a new destination).
    pub(crate) fn password_for(
        &self,
        spec: &crate::config::DestinationSpec,
        stored: Option<&str>,
    ) -> Result<Option<String>, String> {
        if let Some(var) = &spec.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| format!("environment variable {var} (password_env) is not set"));
        }
        match stored {
            Some(sealed) => self.secrets.decrypt(sealed).map(Some),
            None => Ok(spec.password.clone()),
        }
    }

    /// Seals a password for the store.
    pub(crate) fn seal(&self, password: &str) -> Result<String, String> {
        self.secrets.encrypt(password)
    }

    /// This process's name as a consumer of a shared stream.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The destination lease's length, when the stream is shared.
    pub(crate) fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// The current catalog.
    pub fn catalog(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// Re-reads the catalog from the store and tells the workers.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let cat = Catalog::load(self.store.pool()).await?;
        self.catalog.store(Arc::new(cat));
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Applies a reloaded file's declarations.
    pub async fn apply_declarations(
        &self,
        cfg: &RelayConfig,
        at: &KeyPath,
    ) -> Result<(), StartError> {
        let end = self
            .stream
            .end()
            .await
            .map_err(|e| StartError::new(at.clone(), e.to_string()))?;
        catalog::sync_declared(self.store.pool(), cfg, at, end).await?;
        self.refresh()
            .await
            .map_err(|e| StartError::new(at.clone(), format!("store: {e}")))
    }

    /// Sees every catalog change.
    pub(crate) fn catalog_generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The row of `lintas_applied_offsets` for a destination: this stream's id, so two
    /// lintas installations (or a data_dir started afresh) never mistake each other's
    /// offsets, and the destination's name, which every node of a cluster knows it by.
    pub(crate) fn stream_key(&self, destination: &str) -> String {
        format!("{}/{destination}", self.stream.id())
    }

    /// Every destination's status, by name.
    pub fn statuses(&self) -> Vec<DestinationStatus> {
        let mut v: Vec<_> = self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.destination.cmp(&b.destination));
        v
    }

    /// One destination's status.
    pub fn status(&self, destination: i64) -> Option<DestinationStatus> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&destination)
            .cloned()
    }

    pub(crate) fn update_status<T>(
        &self,
        destination: i64,
        f: impl FnOnce(&mut DestinationStatus) -> T,
    ) -> Option<T> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&destination)
            .map(f)
    }

    /// Asks the worker of `destination` to dead-letter the record at `offset`, the one it
    /// is stuck on, and go on with the next.
    pub(crate) fn ask_skip(&self, destination: i64, offset: u64) {
        self.skips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(destination, offset);
        self.skip_asked.notify_waiters();
    }

    /// The skip asked for `destination`, if any, taken.
    pub(crate) fn take_skip(&self, destination: i64) -> Option<u64> {
        self.skips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&destination)
    }

    /// Resolves when a skip is asked for (of any destination).
    pub(crate) fn skip_asked(&self) -> tokio::sync::futures::Notified<'_> {
        self.skip_asked.notified()
    }

    /// Destination up/down events, for alerting.
    pub fn subscribe(&self) -> broadcast::Receiver<RelayEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, e: RelayEvent) {
        let _ = self.events.send(e);
    }
}

/// 16 random bytes in hex.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This process's name on a shared stream: host, pid and a random part (a restarted
/// process is a new consumer; the old one's pending records are claimed from it).
fn node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!(
        "{}-{}-{}",
        host.trim(),
        std::process::id(),
        &random_id()[..8]
    )
}

/// Keeps one worker per destination: starts workers for new destinations and stops those
/// of removed ones.
async fn supervise(relay: Arc<Relay>, tracker: TaskTracker, shutdown: CancellationToken) {
    let mut running: BTreeMap<i64, CancellationToken> = BTreeMap::new();
    let mut generation = relay.catalog_generation();
    loop {
        let catalog = relay.catalog();
        running.retain(|id, token| {
            let keep = catalog.destination_by_id(*id).is_some();
            if !keep {
                token.cancel();
                relay
                    .statuses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
            }
            keep
        });
        for dest in catalog.destinations() {
            if running.contains_key(&dest.id) {
                continue;
            }
            let token = shutdown.child_token();
            running.insert(dest.id, token.clone());
            relay
                .statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(dest.id, DestinationStatus::new(dest.spec.name.clone()));
            let work = tracker.track_future(deliver::run(relay.clone(), dest.clone(), token));
            match relay
                .runtimes
                .get(dest.id as usize % relay.runtimes.len().max(1))
            {
                Some(runtime) => drop(runtime.spawn(work)),
                None => drop(tokio::spawn(work)),
            }
        }
        drop(catalog);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = generation.changed() => if r.is_err() { return },
        }
    }
}

/// Prunes the delivery log, and trims the stream of records every destination has applied
/// (see [`crate::stream::trim`]).
async fn housekeeping(relay: Arc<Relay>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = deliveries::prune(&relay).await {
            warn!(error = %e, "cannot prune the relay delivery log");
        }
        let groups: Vec<String> = relay
            .catalog()
            .destinations()
            .map(|d| d.spec.name.clone())
            .collect();
        if let Err(e) =
            crate::stream::trim(relay.stream.as_ref(), &groups, relay.cfg.retention).await
        {
            warn!(error = %e, "cannot trim the relay stream");
        }
    }
}
