//! What TCP and HTTP listeners share: live settings and the accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use balance::Pool;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::ProxyError;
use crate::access_log::{AccessLog, LogFiles};
use crate::config::ListenerConfig;
use crate::http::error_pages::ErrorPages;
use crate::registry::ListenerInfo;

/// Everything a connection needs from its listener's configuration; replaced on reload, read
/// once per connection (TCP) or request (HTTP).
pub(crate) struct ListenerSettings {
    pub cfg: ListenerConfig,
    /// Where traffic no route takes goes.
    pub pool: Arc<Pool>,
    /// The listener's routes, compiled.
    pub router: crate::route::Router,
    pub tls: Option<TlsAcceptor>,
    /// Where its lines go, when it logs.
    pub access_log: Option<AccessLog>,
    /// HTTP: pages that replace lintas's own answers.
    pub error_pages: ErrorPages,
}

/// What applying a configuration reads from disk for the listeners: their log files
/// (opened, or reopened for a reload) and their error pages.
pub(crate) struct Files {
    pub logs: LogFiles,
    /// By listener index.
    pub per_listener: Vec<(Option<AccessLog>, ErrorPages)>,
}

impl Files {
    /// Opens and reads everything `listeners` name; `current` are the files being written.
    pub(crate) fn load(
        listeners: &[ListenerConfig],
        current: &LogFiles,
    ) -> Result<Self, ProxyError> {
        let logs = current
            .open(listeners)
            .map_err(|(index, source)| ProxyError::AccessLog {
                listener: listeners[index].name.clone(),
                index,
                path: listeners[index]
                    .access_log
                    .as_ref()
                    .map(|l| l.path.clone())
                    .unwrap_or_default(),
                source,
            })?;
        let mut per_listener = Vec::with_capacity(listeners.len());
        for (index, l) in listeners.iter().enumerate() {
            let pages = ErrorPages::load(&l.error_pages).map_err(|(status, source)| {
                ProxyError::ErrorPage {
                    listener: l.name.clone(),
                    index,
                    path: l.error_pages[&status].display().to_string(),
                    status,
                    source,
                }
            })?;
            per_listener.push((logs.for_listener(l), pages));
        }
        Ok(Self { logs, per_listener })
    }
}

impl std::fmt::Debug for ListenerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSettings")
            .field("cfg", &self.cfg)
            .field("pool", &self.pool.name())
            .field("tls", &self.tls.is_some())
            .field("access_log", &self.access_log.as_ref().map(|l| l.format))
            .finish()
    }
}

/// A running listener.
#[derive(Debug)]
pub(crate) struct ListenerHandle {
    pub info: Arc<ListenerInfo>,
    pub settings: ArcSwap<ListenerSettings>,
    /// Cancelled when a reload removes this listener, or when the node stops (a child of
    /// its shutdown): it stops accepting, its connections finish on their own.
    pub stop_accepting: CancellationToken,
    /// Bounds connections served at once; resized on reload (a shrink below the
    /// connections open takes effect as they end).
    pub permits: net::Permits,
}

/// Keeps a listener's active-connection gauge right however the connection ends.
pub(crate) struct ActiveGuard {
    info: Arc<ListenerInfo>,
    _permit: net::Permit,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.info.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts until `stop_accepting` (a child of the node's shutdown), spawning `serve` per
/// connection on `tracker`; see [`net::accept_loop`] for the permit and the backoff.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    handle: Arc<ListenerHandle>,
    tracker: TaskTracker,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Arc<ListenerHandle>, ActiveGuard) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = handle.info.name.clone();
    net::accept_loop(
        &listener,
        &handle.permits,
        &handle.stop_accepting,
        &name,
        |stream, peer, permit| {
            let stats = &handle.info.stats;
            stats.connections.fetch_add(1, Ordering::Relaxed);
            stats.active.fetch_add(1, Ordering::Relaxed);
            let guard = ActiveGuard {
                info: handle.info.clone(),
                _permit: permit,
            };
            debug!(listener = %handle.info.name, %peer, "accepted");
            tracker.spawn(serve(stream, peer, handle.clone(), guard));
        },
    )
    .await;
}
