//! The hub's listener: HTTP/1.1 (hyper) with the WebSocket upgrade at `/ws`, the
//! publish API at `/api/hub/publish` and the chat page at `/chat`.
//!
//! Bound on every worker thread; `max_connections` permits shared by all of them, each
//! taken before accepting and held for the connection's whole life — through the upgrade
//! (`net::UpgradePermit`), which hyper otherwise treats as the end of the HTTP connection.
//! Each connection is served by `net::serve_connection` under [`limits`].
//!
//! The upgrade is refused with a status and a body saying why: 400 for a request that is
//! not a WebSocket upgrade, 403 for a browser page from an `Origin` the hub does not allow
//! (cross-site WebSocket hijacking: a page elsewhere would use the visitor's cookies and
//! network position), and 426 for another WebSocket version.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use configkit::KeyPath;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use service::{Deps, StartError};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hub::{Hub, Refused};
use crate::protocol::{Credentials, Data, Room};

/// What tungstenite reads from the socket at once: small, since ten thousand idle
/// connections each hold one, and tungstenite zeroes it before every read (its default is
/// 128 KiB). A larger frame makes the buffer grow to hold it.
const READ_BUFFER: usize = 1024;

/// The least idle time allowed on a connection, whatever the ping settings.
const MIN_IDLE: Duration = Duration::from_secs(60);

/// The listener, bound.
pub(crate) struct Bound {
    /// Where it listens (the port chosen when the file said 0).
    pub addr: SocketAddr,
    sockets: Vec<(std::net::TcpListener, Option<tokio::runtime::Handle>)>,
}

/// Binds `[hub] listen` on every worker thread.
pub(crate) fn bind(hub_listen: SocketAddr, deps: &Deps, at: &KeyPath) -> Result<Bound, StartError> {
    let at = at.key("listen");
    let sockets = deps
        .workers
        .bind(hub_listen)
        .map_err(|e| StartError::bind(at.clone(), hub_listen, &e))?;
    let addr = sockets
        .first()
        .and_then(|(s, _)| s.local_addr().ok())
        .ok_or_else(|| StartError::new(at, "no listening socket"))?;
    Ok(Bound { addr, sockets })
}

/// Serves `bound` for `hub` until `shutdown`.
pub(crate) fn serve(hub: &Arc<Hub>, bound: Bound, deps: &Deps, shutdown: &CancellationToken) {
    let cfg = hub.config();
    let permits = net::Permits::new(cfg.max_connections);
    let router = router(hub);
    for (socket, runtime) in bound.sockets {
        let (hub, permits, stop) = (hub.clone(), permits.clone(), shutdown.clone());
        let (tracker, router) = (deps.tasks.clone(), router.clone());
        let accept = deps.tasks.track_future(async move {
            let listener = match TcpListener::from_std(socket) {
                Ok(listener) => listener,
                Err(e) => {
                    warn!(error = %e, "hub listener stopped");
                    return;
                }
            };
            let limits = limits(hub.config());
            net::accept_loop(&listener, &permits, &stop, "hub", |stream, peer, permit| {
                let (router, stop) = (router.clone(), stop.clone());
                tracker.spawn(async move {
                    net::serve_connection(stream, peer, permit, router, &limits, &stop).await;
                });
            })
            .await;
        });
        match runtime {
            Some(handle) => drop(handle.spawn(accept)),
            None => drop(tokio::spawn(accept)),
        }
    }
    info!(addr = %bound.addr, "hub listening");
}

/// The routes of the hub's listener.
fn router(hub: &Arc<Hub>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/api/hub/publish", post(publish_with_token))
        .merge(crate::page::routes())
        .layer(DefaultBodyLimit::max(hub.config().max_message))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(Problem::new(
                    "not found: the hub serves /ws (WebSocket), the chat page at /chat and POST /api/hub/publish",
                )),
            )
        })
        .with_state(hub.clone())
}

/// The limits of the hub's HTTP connections: a head within `connect_timeout`, and an idle
/// timeout above a ping round (`ping_interval + pong_timeout`, a minute at least) until the
/// upgrade, after which the WebSocket's pings take over.
fn limits(cfg: &crate::HubConfig) -> net::Limits {
    net::Limits {
        max_connections: cfg.max_connections,
        head_timeout: cfg.connect_timeout,
        idle_timeout: (cfg.ping_interval + cfg.pong_timeout).max(MIN_IDLE),
        ..net::Limits::API
    }
}

/// A refusal's body.
#[derive(Debug, Serialize)]
struct Problem {
    error: String,
}

impl Problem {
    fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
        }
    }
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    (status, axum::Json(Problem::new(why))).into_response()
}

/// `GET /ws`: the WebSocket upgrade.
async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this is the hub's WebSocket endpoint: send a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "the hub speaks WebSocket version 13 (RFC 6455)",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    let accept = derive_accept_key(key.as_bytes());
    if let Err(why) = check_origin(&hub.config().allowed_origins, headers) {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    let permit = req
        .extensions()
        .get::<net::UpgradePermit>()
        .and_then(net::UpgradePermit::take);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(hub.config().max_message))
        .max_frame_size(Some(hub.config().max_message));
    let tasks = hub.tasks.clone();
    tasks.spawn(async move {
        match on_upgrade
            .await
            .map(Upgraded::downcast::<TokioIo<net::Idle<TcpStream>>>)
        {
            // The socket itself, out of hyper's wrapper and the HTTP idle timer: from now on
            // pings tell whether the client is there.
            Ok(Ok(parts)) => {
                let socket = parts.io.into_inner().into_inner();
                let ws = WebSocketStream::from_partially_read(
                    socket,
                    parts.read_buf.to_vec(),
                    Role::Server,
                    Some(config),
                )
                .await;
                crate::connection::serve(hub, ws, peer).await;
            }
            Ok(Err(_)) => warn!(%peer, "hub upgrade: not the connection type served"),
            Err(e) => debug!(%peer, error = %e, "hub upgrade failed"),
        }
        drop(permit);
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

/// Whether a browser's `Origin` may open a WebSocket: one of `allowed` (`"*"`: any), or
/// with none listed, the hub's own host (the `Host` the page was asked from). A request
/// without `Origin` is not a browser's and is let through.
fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let ok = if allowed.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let own = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        !host.is_empty() && own.is_some_and(|o| o.eq_ignore_ascii_case(host))
    } else {
        allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "origin {origin:?} may not connect; list it in [hub] allowed_origins"
        ))
    }
}

/// The publish API's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: Room,
    data: Data,
}

/// The publish API's answer.
#[derive(Debug, Serialize)]
struct PublishedBody {
    room: Room,
    epoch: String,
    offset: u64,
}

/// Reads a publish API body, or says what is wrong with it.
fn read_publish(body: &[u8]) -> Result<PublishBody, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("the body must be {{\"room\": string, \"data\": any JSON}}: {e}"))
}

/// Publishes `request` for an application, as `from` (id and name); the answer.
async fn publish(hub: &Arc<Hub>, request: PublishBody, from: (&str, &str)) -> Response {
    match hub.publish(&request.room, from, request.data).await {
        Ok((epoch, offset)) => axum::Json(PublishedBody {
            room: request.room,
            epoch: epoch.to_string(),
            offset,
        })
        .into_response(),
        Err(Refused { message, .. }) => refuse(StatusCode::SERVICE_UNAVAILABLE, message),
    }
}

/// `POST /api/hub/publish` on the hub's listener: `Authorization: Bearer <token>`.
async fn publish_with_token(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        let mut r = refuse(
            StatusCode::UNAUTHORIZED,
            "send the token as Authorization: Bearer <token>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let identity = match hub.identify(&Credentials::Token(token.trim().to_owned())) {
        Ok(identity) => identity,
        Err(Refused { message, .. }) => return refuse(StatusCode::UNAUTHORIZED, message),
    };
    let request = match read_publish(&body) {
        Ok(r) => r,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let allowed = identity
        .rooms
        .as_ref()
        .is_some_and(|patterns| patterns.iter().any(|p| p.matches(&request.room)));
    if !allowed {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("the token does not allow room {:?}", request.room.as_str()),
        );
    }
    publish(&hub, request, (&identity.user, &identity.name)).await
}

/// `POST /api/hub/publish` on the admin listener (its credentials already checked).
pub(crate) async fn publish_as_admin(State(hub): State<Arc<Hub>>, body: Bytes) -> Response {
    match read_publish(&body) {
        Ok(request) => publish(&hub, request, ("", "")).await,
        Err(why) => refuse(StatusCode::BAD_REQUEST, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn origins_are_checked_against_the_list_or_the_hubs_own_host() {
        let own = headers(&[
            ("host", "chat.example.com:8090"),
            ("origin", "https://chat.example.com:8090"),
        ]);
        assert_eq!(check_origin(&[], &own), Ok(()));
        let other = headers(&[
            ("host", "chat.example.com"),
            ("origin", "https://evil.example"),
        ]);
        assert_eq!(
            check_origin(&[], &other),
            Err(
                "origin \"https://evil.example\" may not connect; list it in [hub] allowed_origins"
                    .into()
            )
        );
        let listed = vec!["https://evil.example".to_owned()];
        assert_eq!(check_origin(&listed, &other), Ok(()));
        assert!(check_origin(&listed, &own).is_err());
        assert_eq!(check_origin(&["*".to_owned()], &other), Ok(()));
        assert_eq!(
            check_origin(&[], &headers(&[("host", "x")])),
            Ok(()),
            "no Origin: not a browser"
        );
        let null = headers(&[("host", "x"), ("origin", "null")]);
        assert!(
            check_origin(&[], &null).is_err(),
            "a sandboxed page's null origin"
        );
    }
}
