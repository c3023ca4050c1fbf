//! The contract every lintas service fills in.
//!
//! A node runs any mix of services (proxy, relay, watch; MQTT and the hub next) from one
//! file. Each needs the same things from the node — threads to serve connections on, a
//! place to spawn tasks that shutdown drains, this node's store, the backplane shared with
//! other nodes — and offers the node the same things back: a way to apply a reloaded
//! section, routes for the admin listener, and the settings it cannot change while running.
//! Writing that down once as [`Service`] means the binary wires every service the same way,
//! tests start any of them in-process the same way, and a new service is a crate that
//! implements one trait rather than a new set of special cases in the binary.
//!
//! What is shared is opened once by the node and handed out through [`Deps`]: two services
//! never open the same SQLite file or Redis connection on their own.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use configkit::KeyPath;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a service could not start or apply a reloaded section.
///
/// `at` is the absolute key path of the setting to blame (`relay.listen`,
/// `backplane.redis`), so the binary can point at the file's line the same way it does for
/// validation errors; an address in use or an unset password variable is a configuration
/// problem to the person reading it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct StartError {
    /// The setting at fault.
    pub at: KeyPath,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl StartError {
    /// An error about the setting at `at`.
    pub fn new(at: KeyPath, message: impl Into<String>) -> Self {
        Self {
            at,
            message: message.into(),
        }
    }

    /// The error for a listening address that cannot be bound, worded the same for every
    /// listener of every service: the usual cause is another program on the port.
    pub fn bind(at: KeyPath, addr: std::net::SocketAddr, e: &std::io::Error) -> Self {
        Self::new(
            at,
            format!("cannot listen on {addr}: {e}; choose another address or stop what holds it"),
        )
    }
}

/// The store is the data directory's: a file that cannot be opened or a schema newer than
/// this binary is blamed on `data_dir`.
impl From<store::StoreError> for StartError {
    fn from(e: store::StoreError) -> Self {
        Self::new(KeyPath::root("data_dir"), e.to_string())
    }
}

/// The answer to [`Service::restart_needed`] of a service that changes nothing while
/// running: its whole section, when `new` differs from `running`.
pub fn whole_section_if_changed<C: PartialEq>(running: &C, new: &C, section: &str) -> Vec<KeyPath> {
    if running == new {
        Vec::new()
    } else {
        vec![KeyPath::root(section)]
    }
}

/// What the node gives every service: cheap to clone, the same for all of them.
#[derive(Clone)]
pub struct Deps {
    /// The threads connections are served on (one current-thread runtime per core).
    pub workers: net::Workers,
    /// Where services spawn their tasks; the node waits on it, up to the drain grace, at
    /// shutdown.
    pub tasks: TaskTracker,
    /// The node's data directory (`data_dir`).
    pub data_dir: PathBuf,
    /// What nodes share (streams, pub/sub, key/value, leases): embedded, or on the Redis of
    /// `[backplane]`; opened once by the node with [`backplane::open`].
    pub backplane: Arc<dyn backplane::Backplane>,
    /// This node's name among the nodes sharing the backplane: host, process and a random
    /// part, so a restarted process is a new node (a stream consumer, lease holder and MQTT
    /// cluster member whose predecessor's leftovers are claimed, not resumed by mistake).
    /// Never holds `:` or tabs (other names are built with them).
    pub node: Arc<str>,
    /// The node's one metrics registry: a service registers its metrics here in `start`,
    /// and the admin listener's `GET /metrics` encodes them all.
    pub metrics: admin::Metrics,
    /// The store, opened on first use: a node that runs only the proxy keeps no state and
    /// needs no writable data directory.
    store: Arc<OnceCell<store::Store>>,
}

impl Deps {
    /// The dependencies of a node keeping its state in `data_dir`.
    pub fn new(
        workers: net::Workers,
        tasks: TaskTracker,
        data_dir: PathBuf,
        backplane: Arc<dyn backplane::Backplane>,
    ) -> Self {
        Self {
            workers,
            tasks,
            data_dir,
            backplane,
            node: node_name().into(),
            metrics: admin::Metrics::default(),
            store: Arc::new(OnceCell::new()),
        }
    }

    /// This node's store, opened by the first service that asks; each service then brings
    /// its own tables up to date ([`store::Store::migrate`]).
    pub async fn store(&self) -> Result<store::Store, StartError> {
        self.store
            .get_or_try_init(|| store::Store::open(&self.data_dir))
            .await
            .cloned()
            .map_err(StartError::from)
    }
}

/// A new node's name: see [`Deps::node`].
fn node_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    // RandomState is seeded from the OS's randomness for every new instance.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{host}-{}-{:08x}", std::process::id(), random as u32)
}

/// One service of a node: started from its configuration section, reloaded in place,
/// managed through the admin listener.
pub trait Service: Send + Sync + Sized + 'static {
    /// Its configuration section (`[relay]` for the relay).
    type Config: Send + Sync;
    /// What a reload changed, reported to whoever asked for the reload.
    type Changes: serde::Serialize + Send;
    /// The section's name in the file, which is also the root of every [`StartError`]
    /// about it.
    const SECTION: &'static str;

    /// Starts serving `cfg`, which has passed validation, until `shutdown`. Everything
    /// fallible (binding, opening, connecting) happens before it returns, so a node that
    /// started is serving.
    fn start(
        cfg: &Self::Config,
        deps: Deps,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<Arc<Self>, StartError>> + Send;

    /// Applies a reloaded section, as much of it as can change while running; on error the
    /// running service is unchanged.
    fn reload(
        self: &Arc<Self>,
        cfg: &Self::Config,
    ) -> impl Future<Output = Result<Self::Changes, StartError>> + Send;

    /// Settings in `cfg` that differ from the running ones and that only a restart applies,
    /// so a reload can say so instead of silently ignoring them.
    fn restart_needed(&self, cfg: &Self::Config) -> Vec<KeyPath>;

    /// Its admin API routes, served behind the admin listener's authentication.
    fn routes(self: &Arc<Self>) -> axum::Router;
}
