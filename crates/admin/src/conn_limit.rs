//! A listener that takes a connection permit *before* accepting, and connections that close
//! when idle.
//!
//! `axum::serve` accepts without bound; the admin port is reachable by anyone who can reach
//! the host, authenticated or not, so open connections are capped. When all permits are
//! taken, new clients wait in the kernel's accept backlog instead of costing memory here;
//! a connection gives its permit back when it closes. So that silent clients cannot hold
//! every permit (axum's server sets no header-read timeout), a connection on which nothing
//! moves in either direction for [`IDLE_TIMEOUT`] fails with `TimedOut` and is closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections the admin listener serves at once. An operator's browser, a few scripts and a
/// Prometheus scraper need a handful; the margin is for bursts of `curl`.
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// A connection with no byte read or written for this long is closed. The stats page
/// reloads every 5 s and API calls are short, so only a stuck or hostile client waits this long.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A `TcpListener` whose connections each hold a permit.
pub(crate) struct Bounded {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl Bounded {
    pub(crate) fn new(inner: TcpListener, max: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max)),
        }
    }
}

impl Listener for Bounded {
    type Io = Permitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Permitted, SocketAddr) {
        // The semaphore is never closed, so this only fails if that changes; serving without
        // a permit is then better than refusing every client.
        let permit = self.permits.clone().acquire_owned().await.ok();
        // `TcpListener`'s own impl retries accept errors with a backoff.
        let (io, addr) = Listener::accept(&mut self.inner).await;
        (
            Permitted {
                io,
                idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection, its idle deadline, and the permit it gives back when dropped.
pub(crate) struct Permitted {
    io: TcpStream,
    /// Pushed back on every read or write that completes.
    idle: Pin<Box<Sleep>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Permitted {
    /// Passes a completed operation through (resetting the deadline), or turns a pending one
    /// into `TimedOut` once the deadline has passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "admin connection idle for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        self.watch(cx, poll)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn accept_waits_for_a_free_permit() {
        let sock = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let mut listener = Bounded::new(sock, 1);
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (first, _) = listener.accept().await;
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(
            blocked.is_err(),
            "a second connection was accepted past the limit"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(second.is_ok(), "the freed permit was not reused");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_time_out_and_active_ones_do_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let mut listener = Bounded::new(sock, 4);
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await;

        let mut buf = [0u8; 8];
        // Traffic more often than the timeout keeps the connection open...
        for _ in 0..3 {
            tokio::time::sleep(IDLE_TIMEOUT - Duration::from_secs(10)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        }
        // ...silence closes it.
        let started = Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE_TIMEOUT);
    }
}
