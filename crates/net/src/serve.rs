//! Serving an axum router with the listener's [`Limits`].

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::debug;

use crate::{Idle, Limits, Permit, Permits, accept_loop};

/// Serves `router` on `listener` until `shutdown`, then stops accepting, lets requests in
/// progress finish and closes idle connections.
///
/// Unlike `axum::serve`: a permit is taken before each accept (at most
/// `limits.max_connections` connections; more wait in the kernel's backlog), each request
/// head must arrive within `limits.head_timeout` (hyper's header timer, one deadline per
/// head), and a connection on which nothing moves for `limits.idle_timeout` is closed.
/// Handlers see the client's address as axum's `ConnectInfo<SocketAddr>`.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Permits::new(limits.max_connections);
    let tracker = TaskTracker::new();
    accept_loop(
        &listener,
        &permits,
        &shutdown,
        "http api",
        |stream, peer, permit| {
            let router = router.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                serve_connection(stream, peer, permit, router, &limits, &shutdown).await;
            });
        },
    )
    .await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// A connection's permit, in every request's extensions: a handler that upgrades the
/// connection (the hub's WebSocket) takes it into the task that serves the upgraded
/// connection, since hyper's part — and the permit's hold — ends at the upgrade. Not taken,
/// it is given back when the HTTP connection ends.
#[derive(Clone)]
pub struct UpgradePermit(Arc<Mutex<Option<Permit>>>);

impl UpgradePermit {
    /// The permit, the first time it is asked for.
    pub fn take(&self) -> Option<Permit> {
        self.0.lock().ok().and_then(|mut p| p.take())
    }
}

/// Serves one HTTP/1.1 connection `stream` from `peer`, holding `permit`, with `router`
/// under `limits` until it ends or `shutdown` drains it: hyper's head timer, [`Idle`] with
/// `limits.idle_timeout`, the client's address as `ConnectInfo<SocketAddr>`, and upgrades
/// (a handler gets the socket as `TokioIo<Idle<TcpStream>>` and the permit as
/// [`UpgradePermit`]).
pub async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: Permit,
    router: Router,
    limits: &Limits,
    shutdown: &CancellationToken,
) {
    let io = Idle::new(stream, limits.idle_timeout);
    let slot = UpgradePermit(Arc::new(Mutex::new(Some(permit))));
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(slot.clone());
        router.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192));
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    /// Longest any wait in these tests may take before it counts as a failure.
    const PATIENCE: Duration = Duration::from_secs(10);

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let stop = CancellationToken::new();
        tokio::spawn(serve_router(listener, router, limits, stop.clone()));
        (addr, stop)
    }

    fn short() -> Limits {
        Limits {
            max_connections: 2,
            head_timeout: Duration::from_millis(400),
            idle_timeout: Duration::from_millis(400),
            ..Limits::API
        }
    }

    /// Reads until the server closes; the bytes read.
    async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(PATIENCE, async {
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the server did not close the connection");
        out
    }

    async fn get_root(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8(until_closed(&mut s).await).unwrap()
    }

    #[tokio::test]
    async fn a_head_sent_a_byte_at_a_time_is_cut_at_its_deadline() {
        let (addr, _stop) = start(short()).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for b in head {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if started.elapsed() > PATIENCE {
                panic!("a head trickled in for {PATIENCE:?} without being cut");
            }
        }
        let answer = String::from_utf8_lossy(&until_closed(&mut slow).await).into_owned();
        assert!(
            !answer.contains("127.0.0.1"),
            "the trickled head was served: {answer}"
        );
        assert!(started.elapsed() < Duration::from_millis(20) * head.len() as u32);
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_give_their_permit_back() {
        let (addr, _stop) = start(short()).await;
        let mut silent: Vec<TcpStream> = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // Both permits are held by silent clients; the next client is served once they are
        // closed.
        let answer = tokio::time::timeout(PATIENCE, get_root(addr))
            .await
            .unwrap();
        assert!(answer.ends_with("127.0.0.1"), "{answer}");
        for s in &mut silent {
            assert_eq!(until_closed(s).await, b"");
        }
    }
}
