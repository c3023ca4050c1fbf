//! The running relay: its three parts started together and handed what each needs.
//!
//! [`Objects`] (applications, destinations, routes) are shared by ingest, which stores
//! records on the stream, and delivery, which writes them to the destinations; the admin
//! API reaches all three through [`Relay`]. Neither ingest nor delivery knows of the other.

use std::net::SocketAddr;
use std::sync::Arc;

use ::service::{Deps, StartError};
use backplane::{Kind, Stream};
use configkit::KeyPath;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::{Catalog, DeclError};
use crate::config::RelayConfig;
use crate::deliver::{self, Delivery, Pace};
use crate::ingest::{self, Ingest};
use crate::objects::Objects;
use crate::status::{Board, DestinationStatus, RelayEvent};
use crate::telemetry::Telemetry;

impl From<DeclError> for StartError {
    fn from(e: DeclError) -> Self {
        Self::new(e.at, e.message)
    }
}

/// The relay service of one node.
pub struct Relay {
    /// The `[relay]` it started with: what a reload may not change.
    cfg: RelayConfig,
    /// Where ingest listens.
    addr: SocketAddr,
    /// What the admin API creates and deletes.
    objects: Arc<Objects>,
    /// The workers' shared state: statuses, skips, the stream.
    delivery: Arc<Delivery>,
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
        let listeners = deps
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
        let objects = Objects::load(store, secrets)
            .await
            .map_err(|e| StartError::new(at.clone(), format!("store: {e}")))?;
        let objects = Arc::new(objects);
        objects.declare(&cfg, &at, end).await?;
        let addr = listeners
            .first()
            .and_then(|(s, _)| s.local_addr().ok())
            .ok_or_else(|| StartError::new(at.key("listen"), "no ingest socket"))?;
        let telemetry = Arc::new(Telemetry::new(end));
        let board = Arc::new(Board::default());
        telemetry.register(&deps.metrics, &board);
        let ingest = Arc::new(Ingest {
            objects: objects.clone(),
            stream: stream.clone(),
            telemetry: telemetry.clone(),
            max_body_bytes: cfg.max_body_bytes,
            limits: cfg.limits(),
        });
        let delivery = Arc::new(Delivery {
            objects: objects.clone(),
            stream,
            lease: shared.then(|| backplane.lease_ttl()),
            backplane,
            board,
            telemetry,
            pace: Pace::of(&cfg),
            node_id: deps.node.to_string(),
            skips: deliver::Skips::default(),
            runtimes: listeners.iter().filter_map(|(_, h)| h.clone()).collect(),
        });
        let kind = if shared { "redis" } else { "embedded" };
        info!(%addr, stream = kind, "relay ingest listening");
        let tracker = deps.tasks;
        for (socket, runtime) in listeners {
            let (ingest, stop) = (ingest.clone(), shutdown.clone());
            let serve = tracker.track_future(async move {
                let served = match TcpListener::from_std(socket) {
                    Ok(listener) => ingest::serve(listener, ingest, stop).await,
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
        tracker.spawn(deliver::supervise(
            delivery.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(deliver::housekeeping(delivery.clone(), shutdown));
        Ok(Arc::new(Self {
            cfg,
            addr,
            objects,
            delivery,
        }))
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
        crate::admin::router(crate::admin::Handles {
            objects: self.objects.clone(),
            delivery: self.delivery.clone(),
        })
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

    /// The stream.
    pub fn stream(&self) -> &dyn Stream {
        self.delivery.stream.as_ref()
    }

    /// The current applications, destinations and routes.
    pub fn catalog(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.objects.catalog()
    }

    /// Every destination's status, by name.
    pub fn statuses(&self) -> Vec<DestinationStatus> {
        self.delivery.board.all()
    }

    /// One destination's status.
    pub fn status(&self, destination: i64) -> Option<DestinationStatus> {
        self.delivery.board.get(destination)
    }

    /// Destination up/down events, for alerting.
    pub fn subscribe(&self) -> broadcast::Receiver<RelayEvent> {
        self.delivery.board.subscribe()
    }

    /// Applies a reloaded file's declarations.
    async fn apply_declarations(&self, cfg: &RelayConfig, at: &KeyPath) -> Result<(), StartError> {
        let end = self
            .stream()
            .end()
            .await
            .map_err(|e| StartError::new(at.clone(), e.to_string()))?;
        self.objects.declare(cfg, at, end).await
    }
}
