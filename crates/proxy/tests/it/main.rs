//! The proxy's admin routes and metrics, served by a real admin listener on a real socket in
//! front of a real `proxy::Proxy`.
//!
//! Each test starts its own proxy (pools only, backends on unreachable loopback ports) and its
//! own admin server on 127.0.0.1:0, and talks to it with `testkit::HttpClient`.

mod api;
mod dns;
mod forms;
mod pages;
mod traffic;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use admin::{AdminState, Auth, Control, ReloadError};
use net::Workers;
use proxy::Proxy;
use proxy::config::ProxyConfig;
use service::{Deps, Service};
use testkit::AdminClient;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pools `web` (with a backend whose name is markup), `api`, and `checked` (active checks
/// against a closed port, so its backend goes down), behind one HTTP listener.
const PROXY_TOML: &str = r#"
[pools.web]
strategy = "round_robin"
backends = [
    { name = "app1", address = "127.0.0.1:1" },
    { name = "app2", address = "127.0.0.1:2", weight = 2 },
    { name = "<script>alert(1)</script>", address = "127.0.0.1:3" },
]

[pools.api]
strategy = "least_connections"
backends = [{ name = "api1", address = "127.0.0.1:4" }]

[pools.checked]
backends = [{ name = "dead", address = "127.0.0.1:1" }]
health = { kind = "tcp", interval = "50ms", timeout = "500ms", fall = 1 }

[[listeners]]
name = "front"
mode = "http"
listen = "127.0.0.1:0"
pool = "web"
"#;

const USER: &str = "admin";
const PASSWORD: &str = "s3cret:with colon";

/// Reloads are the node's business, tested with the node; here they are refused.
struct NoReload;

impl Control for NoReload {
    fn reload(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, ReloadError>> + Send + '_>> {
        Box::pin(async { Err(ReloadError::Refused("no reload in these tests".to_owned())) })
    }
}

/// A running admin server and what it controls.
pub(crate) struct Admin {
    pub(crate) client: AdminClient,
    pub(crate) proxy: Arc<Proxy>,
    /// Cancelled when the test ends, stopping the proxy's and the listener's tasks.
    shutdown: CancellationToken,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Admin {
    pub(crate) async fn start() -> Admin {
        Self::start_with(PROXY_TOML).await
    }

    /// A proxy configured by `proxy_toml` (a `[proxy]` section's body).
    pub(crate) async fn start_with(proxy_toml: &str) -> Admin {
        let cfg: ProxyConfig = toml::from_str(proxy_toml).expect("the proxy's TOML parses");
        let mut issues = configkit::Issues::default();
        cfg.validate(&configkit::KeyPath::root("proxy"), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        let shutdown = CancellationToken::new();
        let deps = deps().await;
        let proxy = Proxy::start(&cfg, deps.clone(), shutdown.clone())
            .await
            .expect("the proxy starts");
        let state = AdminState {
            auth: Arc::new(Auth::from_password(USER, PASSWORD)),
            control: Arc::new(NoReload),
            metrics: deps.metrics,
            services: proxy.routes(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let client = AdminClient::new(base, USER, PASSWORD);
        tokio::spawn(admin::serve(listener, state, shutdown.clone()));
        Admin {
            client,
            proxy,
            shutdown,
        }
    }

    pub(crate) fn pool(&self, name: &str) -> Arc<balance::Pool> {
        self.proxy
            .registry()
            .pool(name)
            .unwrap_or_else(|| panic!("no pool {name}"))
    }
}

/// What a node hands the proxy: no workers (the test's runtime serves), an embedded
/// backplane.
pub(crate) async fn deps() -> Deps {
    Deps::new(
        Workers::default(),
        TaskTracker::new(),
        std::path::PathBuf::new(),
        backplane::open(None, std::path::Path::new(""))
            .await
            .expect("the embedded backplane opens"),
    )
}

/// An HTTP/1.1 backend on 127.0.0.1:0 that answers every request `200 ok` after `delay`,
/// keeping connections alive. Dropping it closes its port and every connection to it, as a
/// killed process would.
pub(crate) struct Backend {
    pub(crate) addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub(crate) async fn start(delay: std::time::Duration) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        Self::serve(listener, delay)
    }

    /// Serves again on `addr`, the address of a backend that was dropped.
    pub(crate) async fn restart(addr: std::net::SocketAddr) -> Backend {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("the dropped backend's port is free again");
        Self::serve(listener, std::time::Duration::ZERO)
    }

    fn serve(listener: tokio::net::TcpListener, delay: std::time::Duration) -> Backend {
        let addr = listener.local_addr().expect("bound address");
        let task = tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection's task.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(answer(stream, delay));
            }
        });
        Backend { addr, task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers each request head on `stream` (the tests send no bodies) after `delay`.
async fn answer(mut stream: tokio::net::TcpStream, delay: std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            tokio::time::sleep(delay).await;
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The tests call the listener through the harness: `admin.get("/stats")`.
impl std::ops::Deref for Admin {
    type Target = AdminClient;

    fn deref(&self) -> &AdminClient {
        &self.client
    }
}
