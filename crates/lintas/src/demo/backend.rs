//! A demo application server: what `lintas demo` balances and what the tests run behind it.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | its name and a newline |
//! | `GET /work?ms=N` | waits N ms first (long and short jobs); with `jobs`, at most that many at once, the rest waiting their turn (`x-waited: yes`) |
//! | `GET /health` | `ok` |
//! | `GET /headers` | the request headers it received, one per line |
//! | `POST /echo` | the request body |
//! | `POST /kill?for=10s` | stops listening and drops its connections, back after the duration (never, without `for`) |
//! | `GET /ws` (upgrade) | WebSocket echo |
//!
//! Every answer carries `x-backend: NAME`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Longest `/work` a request may ask for, so a typo cannot hold a connection for hours.
const MAX_WORK: Duration = Duration::from_secs(600);

/// Largest body `/echo` reads.
const MAX_ECHO: usize = 1 << 20;

/// What the request handlers share.
struct Shared {
    name: String,
    /// Set by `/kill`: how long to stay dead (`None`: for good).
    kill: std::sync::Mutex<Option<Option<Duration>>>,
    killed: Notify,
    /// `/work` slots when the backend runs a limited number of jobs at once, like a worker
    /// process with one thread; waiting jobs are served in arrival order.
    jobs: Option<Semaphore>,
}

/// Serves until `shutdown`; `/kill` stops it for a while (or for good) without ending this
/// future until then. `jobs` limits the `/work` requests run at once (others wait).
pub async fn serve(
    name: String,
    listener: TcpListener,
    jobs: Option<usize>,
    shutdown: CancellationToken,
) {
    let addr = listener.local_addr().ok();
    let shared = Arc::new(Shared {
        name,
        kill: std::sync::Mutex::new(None),
        killed: Notify::new(),
        jobs: jobs.map(Semaphore::new),
    });
    let mut listener = Some(listener);
    while let Some(l) = listener.take() {
        let connections = shutdown.child_token();
        accept(l, shared.clone(), &connections).await;
        connections.cancel();
        if shutdown.is_cancelled() {
            return;
        }
        let pause = shared
            .kill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .flatten();
        let (Some(pause), Some(addr)) = (pause, addr) else {
            info!(backend = %shared.name, "killed; not coming back");
            shutdown.cancelled().await;
            return;
        };
        info!(backend = %shared.name, ?pause, "killed; back after the pause");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
        match TcpListener::bind(addr).await {
            Ok(l) => listener = Some(l),
            Err(e) => warn!(backend = %shared.name, %addr, error = %e, "cannot listen again"),
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: &CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = shared.killed.notified() => return,
            _ = stop.cancelled() => return,
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn handle(mut req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let name = &shared.name;
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => reply(name, StatusCode::OK, format!("{name}\n")),
        (&Method::GET, "/health") => reply(name, StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/work") => {
            let ms = param(&query, "ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let wait = Duration::from_millis(ms).min(MAX_WORK);
            // Whether the job found every slot taken and had to wait its turn.
            let (_slot, waited) = match &shared.jobs {
                None => (None, false),
                Some(jobs) => match jobs.try_acquire() {
                    Ok(slot) => (Some(slot), false),
                    Err(_) => (jobs.acquire().await.ok(), true),
                },
            };
            tokio::time::sleep(wait).await;
            let mut resp = reply(
                name,
                StatusCode::OK,
                format!("{name} worked {} ms\n", wait.as_millis()),
            );
            let waited = http::HeaderValue::from_static(if waited { "yes" } else { "no" });
            resp.headers_mut().insert("x-waited", waited);
            resp
        }
        (&Method::GET, "/headers") => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            reply(name, StatusCode::OK, out)
        }
        (&Method::POST, "/echo") => match http_body_util::Limited::new(req.into_body(), MAX_ECHO)
            .collect()
            .await
        {
            Ok(body) => {
                let mut resp = Response::new(Full::new(body.to_bytes()));
                resp.headers_mut().insert("x-backend", header_value(name));
                resp
            }
            Err(e) => reply(name, StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")),
        },
        (&Method::POST, "/kill") => {
            let pause = param(&query, "for").and_then(|v| configkit::parse_duration(v).ok());
            *shared.kill.lock().unwrap_or_else(|e| e.into_inner()) = Some(pause);
            shared.killed.notify_one();
            let msg = match pause {
                Some(p) => format!("{name} going down for {}\n", configkit::format_duration(p)),
                None => format!("{name} going down\n"),
            };
            reply(name, StatusCode::OK, msg)
        }
        (&Method::GET, "/ws") if req.headers().contains_key(header::SEC_WEBSOCKET_KEY) => {
            let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
                return reply(
                    name,
                    StatusCode::BAD_REQUEST,
                    "missing Sec-WebSocket-Key\n".into(),
                );
            };
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(io) = upgrade.await {
                    let ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None)
                        .await;
                    let (mut tx, mut rx) = ws.split();
                    while let Some(Ok(msg)) = rx.next().await {
                        if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert(
                header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
            h.insert(header::SEC_WEBSOCKET_ACCEPT, header_value(&accept));
            h.insert("x-backend", header_value(name));
            resp
        }
        _ => reply(name, StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn header_value(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
}

fn reply(name: &str, status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert("x-backend", header_value(name));
    resp
}

/// Binds `addr` and serves a demo backend named `name` until `shutdown`, running at most
/// `jobs` `/work` requests at once when set.
pub async fn bind_and_serve(
    name: &str,
    addr: SocketAddr,
    jobs: Option<usize>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(name.to_owned(), listener, jobs, shutdown));
    Ok(local)
}
