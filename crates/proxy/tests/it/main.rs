//! The proxy's admin routes and metrics, served by a real admin listener on a real socket in
//! front of a real `proxy::Proxy`.
//!
//! Each test starts its own proxy (pools only, backends on unreachable loopback ports) and its
//! own admin server on 127.0.0.1:0, and talks to it with `testkit::HttpClient`.

mod api;
mod pages;

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
        let cfg: ProxyConfig = toml::from_str(PROXY_TOML).expect("PROXY_TOML parses");
        let mut issues = configkit::Issues::default();
        cfg.validate(&configkit::KeyPath::root("proxy"), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        let shutdown = CancellationToken::new();
        let deps = Deps::new(
            Workers::default(),
            TaskTracker::new(),
            std::path::PathBuf::new(),
            backplane::open(None, std::path::Path::new(""))
                .await
                .expect("the embedded backplane opens"),
        );
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

/// The tests call the listener through the harness: `admin.get("/stats")`.
impl std::ops::Deref for Admin {
    type Target = AdminClient;

    fn deref(&self) -> &AdminClient {
        &self.client
    }
}
