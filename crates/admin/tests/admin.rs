//! The admin listener served on a real socket, with a small test service mounted in it.
//!
//! Each test starts its own admin server on 127.0.0.1:0 — the shell with a `thing` service
//! whose routes use the shared extractors and errors, as the proxy's, the relay's and
//! watch's do — and talks to it with `testkit::HttpClient`. The services' own routes are
//! tested in their crates.

#[path = "admin/auth.rs"]
mod auth;
#[path = "admin/guessing.rs"]
mod guessing;
#[path = "admin/session.rs"]
mod session;
#[path = "admin/shell.rs"]
mod shell;
#[path = "admin/slow.rs"]
mod slow;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use admin::extract::{Json, Path, Query};
use admin::{AdminState, ApiError, Auth, Control, Metrics, ReloadError};
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use testkit::AdminClient;
use tokio_util::sync::CancellationToken;

const USER: &str = "admin";
const PASSWORD: &str = "s3cret:with colon";

/// Counts reloads and answers with a fixed summary, or fails when told to.
pub(crate) struct TestControl {
    pub(crate) calls: AtomicUsize,
    pub(crate) fail: Option<ReloadError>,
}

impl Control for TestControl {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<Value, ReloadError>> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.fail {
                Some(msg) => Err(msg.clone()),
                None => Ok(json!({"proxy": {"pools_updated": ["web"]}, "restart_needed": []})),
            }
        })
    }
}

/// The test service: one switch, and calls taking a body, a path and a query.
#[derive(Default)]
pub(crate) struct Thing {
    pub(crate) off: AtomicBool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Weight {
    weight: u32,
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

fn thing_routes(thing: Arc<Thing>) -> Router {
    Router::new()
        .route(
            "/api/thing",
            get(|State(t): State<Arc<Thing>>| async move {
                Json(json!({"on": !t.off.load(Ordering::SeqCst)}))
            }),
        )
        .route(
            "/api/thing/off",
            post(|State(t): State<Arc<Thing>>| async move {
                t.off.store(true, Ordering::SeqCst);
                Json(json!({"on": false}))
            }),
        )
        .route(
            "/forms/thing/off",
            // Answers the form's `note`, which shows the body reaches the handler whole after
            // the shell read the token from it.
            post(
                |State(t): State<Arc<Thing>>, body: axum::body::Bytes| async move {
                    t.off.store(true, Ordering::SeqCst);
                    Json(json!({ "note": admin::extract::form_field(&body, "note") }))
                },
            ),
        )
        .route(
            "/api/things/{id}",
            get(|Path(id): Path<u32>| async move { Json(json!({ "id": id })) }),
        )
        .route(
            "/api/things/{id}/weight",
            put(|Path(id): Path<u32>, Json(w): Json<Weight>| async move {
                if w.weight > 256 {
                    return Err(ApiError::unprocessable(format!(
                        "weight {} is out of range; use 0 to 256",
                        w.weight
                    )));
                }
                Ok(Json(json!({ "id": id, "weight": w.weight })))
            }),
        )
        .route(
            "/api/things",
            get(|Query(q): Query<Limit>| async move { Json(json!({ "limit": q.limit })) }),
        )
        .with_state(thing)
}

/// A running admin server and what it controls.
pub(crate) struct Admin {
    pub(crate) client: AdminClient,
    pub(crate) thing: Arc<Thing>,
    pub(crate) metrics: Metrics,
    pub(crate) control: Arc<TestControl>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Admin {
    pub(crate) async fn start() -> Admin {
        Self::start_with(None).await
    }

    pub(crate) async fn start_with(reload_error: Option<ReloadError>) -> Admin {
        let shutdown = CancellationToken::new();
        let control = Arc::new(TestControl {
            calls: AtomicUsize::new(0),
            fail: reload_error,
        });
        let thing = Arc::new(Thing::default());
        let metrics = Metrics::default();
        let state = AdminState {
            auth: Arc::new(Auth::from_password(USER, PASSWORD)),
            control: control.clone(),
            metrics: metrics.clone(),
            services: thing_routes(thing.clone()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let client = AdminClient::new(base, USER, PASSWORD);
        let server = tokio::spawn(admin::serve(listener, state, shutdown.clone()));
        Admin {
            client,
            thing,
            metrics,
            control,
            shutdown,
            server,
        }
    }

    pub(crate) fn is_on(&self) -> bool {
        !self.thing.off.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let admin = Admin::start().await;
    assert_eq!(admin.get("/api/thing").await.status, 200);
    admin.shutdown.cancel();
    let result = tokio::time::timeout(testkit::PATIENCE, admin.server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}

/// The tests call the listener through the harness: `admin.get("/stats")`.
impl std::ops::Deref for Admin {
    type Target = AdminClient;

    fn deref(&self) -> &AdminClient {
        &self.client
    }
}
