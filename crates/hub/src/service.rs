//! The hub as a lintas service: bound, served and managed like the others.
//!
//! `start` reads the token secret from its environment variable (never from the file),
//! binds `[hub] listen` on every worker thread (a port already taken is an error naming
//! `hub.listen`), links the node to the others when the backplane is Redis, and serves.
//! Nothing in `[hub]` changes while running yet: a reload reports the section as needing
//! a restart when it differs. Admin routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/hub` | listen address, node, the other nodes, rooms here, counters |
//! | `GET /api/hub/rooms` | the rooms this node holds: members here, users in the cluster |
//! | `GET /api/hub/rooms/{room}` | who is in the room, on every node |
//! | `POST /api/hub/publish` | publishes `{"room", "data"}` as the application `""` |

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use backplane::Kind;
use configkit::KeyPath;
use serde::Serialize;
use service::{Deps, StartError};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::HubConfig;
use crate::frames::Present;
use crate::hub::Hub;
use crate::protocol::Room;
use crate::stats::Snapshot;
use crate::token::Tokens;

/// Shortest token secret accepted: HS256 with a guessable secret is no protection.
const MIN_SECRET: usize = 32;

/// What a reload of `[hub]` did: nothing yet (every setting needs a restart).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Reloaded {}

impl service::Service for Hub {
    type Config = HubConfig;
    type Changes = Reloaded;
    const SECTION: &'static str = "hub";

    async fn start(
        cfg: &HubConfig,
        deps: Deps,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        let at = KeyPath::root(Self::SECTION);
        let tokens = match &cfg.token_secret_env {
            Some(var) => Some(secret(var, &at.key("token_secret_env"))?),
            None => None,
        };
        let bound = crate::listener::bind(cfg.listen, &deps, &at)?;
        let cluster = match deps.backplane.kind() {
            Kind::Redis => Some(Arc::new(Cluster::new(
                deps.backplane.clone(),
                deps.node.clone(),
            ))),
            Kind::Embedded => None,
        };
        let hub = Arc::new(Hub::new(
            cfg.clone(),
            (deps.node.clone(), bound.addr),
            tokens,
            cluster,
            (deps.tasks.clone(), shutdown.clone()),
        ));
        crate::stats::register(&deps.metrics, &hub);
        crate::listener::serve(&hub, bound, &deps, &shutdown);
        match hub.cluster() {
            Some(cluster) => drop(deps.tasks.spawn(cluster.clone().keep_presence(hub.clone()))),
            None => drop(deps.tasks.spawn(sweep(hub.clone()))),
        }
        Ok(hub)
    }

    async fn reload(self: &Arc<Self>, _cfg: &HubConfig) -> Result<Reloaded, StartError> {
        Ok(Reloaded {})
    }

    fn restart_needed(&self, cfg: &HubConfig) -> Vec<KeyPath> {
        service::whole_section_if_changed(self.config(), cfg, Self::SECTION)
    }

    fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/hub", get(overview))
            .route("/api/hub/rooms", get(rooms))
            .route("/api/hub/rooms/{room}", get(room))
            .route("/api/hub/publish", post(crate::listener::publish_as_admin))
            .with_state(self.clone())
    }
}

/// The token secret from environment variable `var`.
fn secret(var: &str, at: &KeyPath) -> Result<Tokens, StartError> {
    let value = std::env::var(var).map_err(|_| {
        StartError::new(
            at.clone(),
            format!("the environment variable {var} is not set; it holds the secret tokens are signed with"),
        )
    })?;
    if value.len() < MIN_SECRET {
        return Err(StartError::new(
            at.clone(),
            format!(
                "the secret in {var} has {} bytes; use at least {MIN_SECRET} random bytes",
                value.len()
            ),
        ));
    }
    Ok(Tokens::new(value.as_bytes()))
}

/// Drops a single node's rooms that nobody is in and whose history expired.
async fn sweep(hub: Arc<Hub>) {
    let mut every = tokio::time::interval(Hub::SWEEP);
    loop {
        tokio::select! {
            _ = every.tick() => hub.sweep(),
            () = hub.shutdown.cancelled() => return,
        }
    }
}

/// `GET /api/hub`.
#[derive(Debug, Serialize)]
struct Overview {
    listen: std::net::SocketAddr,
    node: String,
    nodes: Vec<String>,
    rooms: usize,
    #[serde(flatten)]
    stats: Snapshot,
}

async fn overview(State(hub): State<Arc<Hub>>) -> axum::Json<Overview> {
    axum::Json(Overview {
        listen: hub.listen,
        node: hub.node.to_string(),
        nodes: hub.cluster().map(|c| c.nodes()).unwrap_or_default(),
        rooms: hub.rooms_here().len(),
        stats: hub.stats.snapshot(),
    })
}

/// One room in `GET /api/hub/rooms`.
#[derive(Debug, Serialize)]
struct RoomSummary {
    room: Room,
    members_here: usize,
    users: usize,
}

async fn rooms(State(hub): State<Arc<Hub>>) -> axum::Json<Vec<RoomSummary>> {
    let rooms = hub
        .rooms_here()
        .into_iter()
        .map(|(room, members_here)| RoomSummary {
            users: hub.presence(&room).len(),
            room,
            members_here,
        })
        .collect();
    axum::Json(rooms)
}

/// `GET /api/hub/rooms/{room}`.
#[derive(Debug, Serialize)]
struct RoomPresence {
    room: Room,
    presence: Vec<Present>,
}

async fn room(
    State(hub): State<Arc<Hub>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<axum::Json<RoomPresence>, admin::ApiError> {
    let room = Room::parse(&name).map_err(admin::ApiError::bad_request)?;
    Ok(axum::Json(RoomPresence {
        presence: hub.presence(&room),
        room,
    }))
}
