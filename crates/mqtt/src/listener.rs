//! The broker's listeners: plain TCP (`listen`), TLS (`tls_listen`), WebSocket (`ws_listen`)
//! and WebSocket over TLS (`wss_listen`), all feeding the same connection task.
//!
//! Every address is bound on every worker thread before anything is served, so a port
//! already taken fails the start naming its key (`mqtt.ws_listen`). The listeners share one
//! set of permits (`max_connections` in all), taken before each accept. Opening a
//! transport — the TLS handshake, the WebSocket upgrade, or both — must finish within
//! `connect_timeout`, so a client that opens a socket and says nothing holds its slot no
//! longer than one that never sends CONNECT; then the CONNECT gets its own
//! `connect_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;

use configkit::KeyPath;
use futures_util::FutureExt;
use futures_util::future::Either;
use service::{Deps, StartError};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::config::MqttConfig;
use crate::connection;
use crate::transport::websocket;

/// How a listener's connections become the byte stream the connection task reads.
#[derive(Clone)]
enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS.
    Tls(TlsAcceptor),
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss(TlsAcceptor),
}

/// One configured listener, bound.
pub(crate) struct Bound {
    /// Its key in `[mqtt]`.
    pub key: &'static str,
    /// Where it listens (the port chosen when the file said 0).
    pub addr: SocketAddr,
    transport: Transport,
    sockets: Vec<(std::net::TcpListener, Option<tokio::runtime::Handle>)>,
}

/// Binds every listener of `cfg` (`listen` first) and builds their TLS acceptors.
pub(crate) fn bind(cfg: &MqttConfig, deps: &Deps, at: &KeyPath) -> Result<Vec<Bound>, StartError> {
    let tls = |alpn: &[&[u8]]| {
        let tls = cfg.tls.as_ref().ok_or_else(|| {
            StartError::new(
                at.key("tls"),
                "tls_listen and wss_listen need a certificate",
            )
        })?;
        net::tls::acceptor(tls, alpn).map_err(|e| StartError::new(at.key("tls"), e))
    };
    let mut bound = Vec::new();
    for (key, addr) in cfg.listeners() {
        let transport = match key {
            "tls_listen" => Transport::Tls(tls(&[])?),
            "ws_listen" => Transport::Ws,
            "wss_listen" => Transport::Wss(tls(&[b"http/1.1"])?),
            _ => Transport::Tcp,
        };
        let sockets = deps
            .workers
            .bind(addr)
            .map_err(|e| StartError::bind(at.key(key), addr, &e))?;
        let addr = sockets
            .first()
            .and_then(|(s, _)| s.local_addr().ok())
            .ok_or_else(|| StartError::new(at.key(key), "no listening socket"))?;
        bound.push(Bound {
            key,
            addr,
            transport,
            sockets,
        });
    }
    Ok(bound)
}

/// Serves every bound listener for `broker` until `shutdown`, on `deps`' tracker.
pub(crate) fn serve(
    broker: &Arc<Broker>,
    bound: Vec<Bound>,
    deps: &Deps,
    shutdown: &CancellationToken,
) {
    let permits = net::Permits::new(broker.config().max_connections);
    for Bound {
        key,
        addr,
        transport,
        sockets,
    } in bound
    {
        for (socket, runtime) in sockets {
            let (b, permits, stop) = (broker.clone(), permits.clone(), shutdown.clone());
            let (tracker, transport) = (deps.tasks.clone(), transport.clone());
            let accept = deps.tasks.track_future(async move {
                let listener = match TcpListener::from_std(socket) {
                    Ok(listener) => listener,
                    Err(e) => {
                        warn!(error = %e, listener = key, "mqtt listener stopped");
                        return;
                    }
                };
                net::accept_loop(&listener, &permits, &stop, key, |stream, peer, permit| {
                    tracker.spawn(open_and_serve(&transport, &b, stream, peer, permit));
                })
                .await;
            });
            match runtime {
                Some(handle) => drop(handle.spawn(accept)),
                None => drop(tokio::spawn(accept)),
            }
        }
        info!(%addr, listener = key, "mqtt broker listening");
    }
}

/// Opens `transport` on `stream` within `connect_timeout` and serves the client, then
/// gives the connection's `permit` back; a connection whose opening fails or stalls is
/// closed.
///
/// The future is built here rather than in an `async` block: a task's future is allocated
/// whole for as long as the connection lasts, an `async` block keeps its own copy of what it
/// moves into the future it awaits, and an `async` match is as large as its largest arm.
/// So a plain TCP connection's task holds just [`connection::serve`] and the permit, and
/// the TLS and WebSocket arms (their handshakes and streams, 8.5 KiB more) are boxed.
fn open_and_serve(
    transport: &Transport,
    broker: &Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: net::Permit,
) -> impl Future<Output = ()> + Send + 'static {
    let serve = match transport {
        Transport::Tcp => Either::Left(connection::serve(broker.clone(), stream, peer)),
        wrapped => Either::Right(Box::pin(open_wrapped(
            wrapped.clone(),
            broker.clone(),
            stream,
            peer,
        ))),
    };
    serve.map(move |()| drop(permit))
}

/// The body of [`open_and_serve`], for any transport; called boxed for those that wrap
/// the TCP stream.
async fn open_wrapped(
    transport: Transport,
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let cfg = broker.config();
    let (deadline, path) = (cfg.connect_timeout, cfg.ws_path.clone());
    // One WebSocket message may hold a whole packet and the start of the next.
    let max_message = (cfg.max_packet_size as usize).saturating_mul(2);
    match transport {
        Transport::Tcp => connection::serve(broker, stream, peer).await,
        Transport::Tls(tls) => {
            if let Some(s) = opened(peer, timeout(deadline, tls.accept(stream)).await) {
                connection::serve(broker, s, peer).await;
            }
        }
        Transport::Ws => {
            let upgrade = websocket::accept(stream, &path, max_message);
            if let Some(s) = opened(peer, timeout(deadline, upgrade).await) {
                connection::serve(broker, s, peer).await;
            }
        }
        Transport::Wss(tls) => {
            let open = async {
                let stream = tls.accept(stream).await.map_err(|e| e.to_string())?;
                websocket::accept(stream, &path, max_message)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Some(s) = opened(peer, timeout(deadline, open).await) {
                connection::serve(broker, s, peer).await;
            }
        }
    }
}

/// The opened stream, or `None` (logged) when opening failed or took too long.
fn opened<T, E: std::fmt::Display>(
    peer: SocketAddr,
    result: Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> Option<T> {
    match result {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            debug!(%peer, %error, "mqtt transport not opened");
            None
        }
        Err(_) => {
            debug!(%peer, "mqtt transport not opened within connect_timeout");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task of a plain TCP connection is allocated whole for as long as the connection
    /// lasts: most of what an idle connection costs (bench/mqtt's idle phase). tokio adds
    /// 104 bytes and rounds the task up to 128, so up to 920 bytes it takes 1,024; an edit
    /// that makes it larger than that costs 128 bytes more per connection, and should say
    /// why (or box what it adds, as `connection::serve` boxes the handshake).
    #[tokio::test]
    async fn a_tcp_connection_task_fits_in_one_kib() {
        let broker = crate::broker::testing::broker(MqttConfig::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let permit = net::Permits::new(1).acquire().await;
        let task = open_and_serve(&Transport::Tcp, &broker, stream, addr, permit);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 920, "a TCP connection's future is {size} bytes");
    }
}
