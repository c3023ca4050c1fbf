//! Layer-4 proxying: one client connection, one backend connection, bytes copied both ways.
//!
//! The backend is chosen per connection (consistent hashing hashes the client IP). A
//! listener with `routes` first reads the client's TLS ClientHello (within
//! `handshake_timeout`, parsed by rustls) and picks the pool by its server name; the bytes
//! read go to the backend first, so TLS is passed through, never terminated. A failed
//! or slow connect is retried on another backend up to `retries` times and counts as a
//! passive health failure. Once connected, each direction is copied until its reader sees
//! end-of-file, which is passed on as a half-close (`shutdown(Write)`), so protocols that
//! close one side first (MQTT DISCONNECT, HTTP/1.0) work. A session with no byte either way for
//! `idle_timeout` is closed. Copy buffers exist only while data flows: an idle session holds
//! two sockets and a task, not 2 × 16 KiB.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use balance::{Backend, Outcome, Refusal, StrategyKind, hash_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tracing::debug;

use crate::access_log::{Record, Trace};
use crate::attempts::Attempts;
use crate::listener::{ActiveGuard, ListenerHandle, ListenerSettings};
use crate::proxy_protocol;

/// Size of the buffer a direction borrows while data flows.
const COPY_BUF: usize = 16 * 1024;

/// Serves one client connection of a `mode = "tcp"` listener; logs it at its end when the
/// listener has an access log.
pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    handle: Arc<ListenerHandle>,
    _active: ActiveGuard,
) {
    let settings = handle.settings.load_full();
    handle.info.stats.requests.fetch_add(1, Ordering::Relaxed);
    let Some(log) = settings.access_log.clone() else {
        return session(
            client,
            peer,
            &handle,
            settings,
            &mut Trace::new(false),
            &mut None,
        )
        .await;
    };
    let time = SystemTime::now();
    let mut trace = Trace::new(true);
    let mut routed = None;
    session(client, peer, &handle, settings, &mut trace, &mut routed).await;
    let (pool, route) = routed.unwrap_or_default();
    let record = Record {
        time,
        client: peer,
        listener: &handle.info.name,
        request: None,
        tcp: true,
        status: trace.status,
        bytes_sent: trace.body_sent,
        bytes_received: trace.body_received,
        pool: &pool,
        route: route.as_deref(),
        backend: trace.backend.as_deref(),
        connect: trace.connect,
        response: None,
        total: trace.elapsed().unwrap_or_default(),
        request_id: None,
        retries: trace.retries,
        error: trace.error,
    };
    log.write(&record, &handle.info.stats.access_log_dropped);
}

/// The session itself; `trace` learns its status (nginx's stream statuses: 200, 502, 503),
/// bytes and times, `routed` its pool and route names (when traced).
async fn session(
    mut client: TcpStream,
    peer: SocketAddr,
    handle: &ListenerHandle,
    settings: Arc<ListenerSettings>,
    trace: &mut Trace,
    routed: &mut Option<(String, Option<String>)>,
) {
    let stats = &handle.info.stats;
    let (pool, hello) = if settings.router.routes.is_empty() {
        (&settings.pool, Vec::new())
    } else {
        let Ok((sni, hello)) =
            tokio::time::timeout(settings.cfg.handshake_timeout, client_hello(&mut client)).await
        else {
            debug!(listener = %handle.info.name, %peer, "no TLS ClientHello within handshake_timeout");
            trace.own(408, "handshake_timeout");
            return;
        };
        let route = settings.router.select_sni(sni.as_deref());
        debug!(listener = %handle.info.name, %peer, ?sni, route = route.map(|r| r.label.as_str()), "routed by SNI");
        if trace.start.is_some() {
            *routed = Some((String::new(), route.map(|r| r.label.clone())));
        }
        let pool = match route.map(|r| &r.action) {
            Some(crate::route::Action::Pool(p)) => p,
            _ => &settings.pool,
        };
        (pool, hello)
    };
    if trace.start.is_some() {
        routed.get_or_insert_default().0 = pool.name().to_owned();
    }
    let key = match pool.state().kind {
        StrategyKind::ConsistentHash => Some(client_ip_key(peer)),
        _ => None,
    };
    let mut attempts = Attempts::new(pool, &settings.cfg, stats, key);
    let mut first = true;
    let (lease, mut server) = loop {
        let Some(lease) = attempts.next().await else {
            let (tried, refusal) = attempts.give_up();
            debug!(listener = %handle.info.name, %peer, tried, ?refusal, "no backend could take the connection");
            match refusal {
                Some(Refusal::QueueFull { .. }) => trace.own(503, "queue_full"),
                Some(Refusal::Timeout { .. }) => trace.own(503, "queue_timeout"),
                _ if tried > 0 => trace.own(502, "connect_failed"),
                _ => trace.own(503, "no_backend"),
            }
            return;
        };
        trace.attempt(lease.backend(), std::mem::take(&mut first));
        match connect(lease.backend().addr(), settings.cfg.connect_timeout).await {
            // For a session the latency that matters to balancing is the connect time.
            Ok(stream) => {
                trace.connect = trace.elapsed();
                attempts.succeeded(&lease, true);
                break (lease, stream);
            }
            Err(e) => attempts.connect_failed(&lease, &e),
        }
    };
    if let Some(version) = settings.cfg.proxy_protocol {
        let local = client.local_addr().unwrap_or(handle.info.addr);
        let header = proxy_protocol::header(version, peer, local);
        if server.write_all(&header).await.is_err() {
            lease.record(Outcome::Failure);
            trace.own(502, "backend_failed");
            return;
        }
    }
    if !hello.is_empty() && server.write_all(&hello).await.is_err() {
        lease.record(Outcome::Failure);
        trace.own(502, "backend_failed");
        return;
    }
    let idle = settings.cfg.idle_timeout;
    drop(settings);
    let backend = lease.backend().clone();
    trace.status = 200;
    let moved = pipe(client, server, idle, &backend).await;
    trace.body_received = moved.up;
    trace.body_sent = moved.down;
    if let Some(e) = moved.error {
        debug!(%peer, backend = backend.name(), error = %e, "session ended with an error");
    }
    // The lease, and with it the backend's in-flight count, ends with the session.
    drop(lease);
}

/// Most bytes read looking for a ClientHello; one larger is judged to have no server name.
const MAX_HELLO: usize = 64 * 1024;

/// Reads the client's first bytes until rustls has the whole TLS ClientHello; returns its
/// server name (none for a client that does not speak TLS or sends none) and every byte
/// read, which the backend must get first.
async fn client_hello(client: &mut TcpStream) -> (Option<String>, Vec<u8>) {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut read = Vec::with_capacity(2048);
    loop {
        let before = read.len();
        match client.read_buf(&mut read).await {
            Ok(n) if n > 0 => {}
            _ => return (None, read),
        }
        let mut fresh = &read[before..];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return (None, read);
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_owned);
                return (sni, read);
            }
            Ok(None) if read.len() < MAX_HELLO => {}
            Ok(None) | Err(_) => return (None, read),
        }
    }
}

/// The balancing key of a client: its IP address without the port.
pub(crate) fn client_ip_key(peer: SocketAddr) -> u64 {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
        std::net::IpAddr::V6(ip) => hash_key(&ip.octets()),
    }
}

/// Connects with a deadline and `TCP_NODELAY`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a session moved: bytes from the client (`up`) and to it (`down`), and the error
/// that ended it, if one did.
struct Moved {
    up: u64,
    down: u64,
    error: Option<io::Error>,
}

/// Copies both directions until both have ended or the session idles out.
async fn pipe(client: TcpStream, server: TcpStream, idle: Duration, backend: &Backend) -> Moved {
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved in either direction.
    let last = AtomicU64::new(0);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let stats = backend.stats();
    let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = copy_half(cr, sw, &last, start, [&stats.bytes_in, &up_bytes]);
    let down = copy_half(sr, cw, &last, start, [&stats.bytes_out, &down_bytes]);
    let watchdog = async {
        loop {
            let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            tokio::time::sleep_until(deadline).await;
            let now_ms = start.elapsed().as_millis() as u64;
            if now_ms.saturating_sub(last.load(Ordering::Relaxed)) >= idle.as_millis() as u64 {
                return;
            }
        }
    };
    let error = tokio::select! {
        r = async { tokio::try_join!(up, down) } => r.err(),
        _ = watchdog => Some(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
    };
    Moved {
        up: up_bytes.into_inner(),
        down: down_bytes.into_inner(),
        error,
    }
}

/// Copies one direction, counting bytes in the backend's and the session's `counters`; on
/// end-of-file half-closes the writer.
async fn copy_half(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    last: &AtomicU64,
    start: Instant,
    counters: [&AtomicU64; 2],
) -> io::Result<()> {
    loop {
        // Wait without a buffer: an idle session holds none.
        r.readable().await?;
        let mut buf = Vec::with_capacity(COPY_BUF);
        loop {
            buf.clear();
            // Polled once: readiness can be stale, and then the buffer must not be held while
            // waiting. `read_buf` (unlike `try_read`) tells the reactor when a short read
            // drained the socket, so the next wait costs no extra system call.
            let read = {
                let mut read = std::pin::pin!(r.read_buf(&mut buf));
                std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
            };
            let n = match read {
                Poll::Pending => break,
                Poll::Ready(n) => n?,
            };
            if n == 0 {
                w.shutdown().await?;
                return Ok(());
            }
            w.write_all(&buf).await?;
            for c in counters {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
            last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            if n < COPY_BUF {
                break;
            }
        }
    }
}
