//! The admin listener served on a real socket, in front of a real `proxy::Proxy`.
//!
//! Each test starts its own proxy (pools only, backends on unreachable loopback ports) and its
//! own admin server on 127.0.0.1:0, and talks to it with `testkit::HttpClient`.

#[path = "admin/api.rs"]
mod api;
#[path = "admin/auth.rs"]
mod auth;
#[path = "admin/guessing.rs"]
mod guessing;
#[path = "admin/pages.rs"]
mod pages;
#[path = "admin/slow.rs"]
mod slow;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use admin::{AdminState, Auth, Control};
use axum::http::Method;
use base64::Engine;
use net::Workers;
use proxy::config::ProxyConfig;
use proxy::{Proxy, ReloadSummary};
use service::Service;
use testkit::{HttpClient, Reply};
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

/// Counts reloads and answers with a fixed summary, or fails when told to.
pub(crate) struct TestControl {
    pub(crate) calls: AtomicUsize,
    pub(crate) fail: Option<String>,
}

impl Control for TestControl {
    fn reload(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.fail {
                Some(msg) => Err(msg.clone()),
                None => Ok(serde_json::json!({ "proxy": ReloadSummary {
                    pools_updated: vec!["web".into()],
                    listeners_added: vec!["new".into()],
                    ..ReloadSummary::default()
                }})),
            }
        })
    }
}

/// A running admin server and what it controls.
pub(crate) struct Admin {
    pub(crate) base: String,
    pub(crate) client: HttpClient,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) control: Arc<TestControl>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) server: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

impl Admin {
    pub(crate) async fn start() -> Admin {
        Self::start_with(None).await
    }

    pub(crate) async fn start_with(reload_error: Option<&str>) -> Admin {
        let cfg: ProxyConfig = toml::from_str(PROXY_TOML).expect("PROXY_TOML parses");
        let mut issues = configkit::Issues::default();
        cfg.validate(&configkit::KeyPath::root("proxy"), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        let shutdown = CancellationToken::new();
        let deps = service::Deps::new(
            Workers::default(),
            TaskTracker::new(),
            std::path::PathBuf::new(),
            None,
        );
        let proxy = Proxy::start(&cfg, deps, shutdown.clone())
            .await
            .expect("the proxy starts");
        let control = Arc::new(TestControl {
            calls: AtomicUsize::new(0),
            fail: reload_error.map(String::from),
        });
        let state = AdminState {
            registry: proxy.registry().clone(),
            auth: Arc::new(Auth::from_password(USER, PASSWORD)),
            control: control.clone(),
            services: axum::Router::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let server = tokio::spawn(admin::serve(listener, state, shutdown.clone()));
        Admin {
            base,
            client: HttpClient::new(),
            proxy,
            control,
            shutdown,
            server,
        }
    }

    /// An authenticated request.
    pub(crate) async fn call(&self, method: Method, path: &str, body: &str) -> Reply {
        let auth = basic(USER, PASSWORD);
        self.send(method, path, &[("authorization", &auth)], body)
            .await
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        self.client
            .send(method, &url, headers, body.to_string())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, "").await
    }

    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let r = self.call(method, path, body).await;
        assert_eq!(
            r.header("content-type"),
            "application/json",
            "{path}: {}",
            r.body
        );
        let v = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body));
        (r.status, v)
    }

    pub(crate) fn pool(&self, name: &str) -> Arc<balance::Pool> {
        self.proxy
            .registry()
            .pool(name)
            .unwrap_or_else(|| panic!("no pool {name}"))
    }
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let admin = Admin::start().await;
    assert_eq!(admin.get("/api/stats").await.status, 200);
    admin.shutdown.cancel();
    let result = tokio::time::timeout(testkit::PATIENCE, admin.server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}
