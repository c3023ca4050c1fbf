//! Kept-alive backend connections of the HTTP/1 path.
//!
//! There is one pool per worker thread (see `net::WorkerThreads`): a socket belongs to the
//! reactor of the thread that opened it, so it is only ever reused there, and the pool's
//! lock is never contended. On a single multi-threaded runtime (tests) one pool is shared.
//!
//! A connection goes back to the pool only after a response was read to its exact end with
//! nothing left over. Before one is reused its read readiness is looked at (no system call:
//! the reactor already knows): a connection the backend closed in the meantime is readable
//! (end-of-file), is probed with a non-blocking read and dropped, so the request goes out on
//! a live one. The race left — the backend closing at that very moment — is covered by the
//! replay rule for idempotent requests.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::http::idle_pool::IdlePool;
use crate::tcp;

/// A backend connection with what was read from it beyond the last message.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet used.
    pub buf: BytesMut,
    /// Taken from the pool rather than freshly connected.
    pub reused: bool,
}

/// Idle backend connections by address.
#[derive(Debug, Default)]
pub(crate) struct ConnPool {
    idle: IdlePool<TcpStream>,
}

impl ConnPool {
    /// An open connection to `addr`: a live idle one, or a new one.
    pub async fn checkout(&self, addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        while let Some(stream) = self.idle.take(addr) {
            if is_quiet(&stream) {
                return Ok(Conn {
                    stream,
                    buf: BytesMut::new(),
                    reused: true,
                });
            }
        }
        Self::connect(addr, timeout).await
    }

    /// A new connection to `addr`, never a pooled one.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        Ok(Conn {
            stream: tcp::connect(addr, timeout).await?,
            buf: BytesMut::new(),
            reused: false,
        })
    }

    /// Keeps `conn` for the next request to `addr`, when it is clean.
    pub fn checkin(&self, addr: SocketAddr, conn: Conn) {
        if conn.buf.is_empty() {
            self.idle.put(addr, conn.stream);
        }
    }
}

/// Whether an idle connection has nothing to read: not closed by the backend, and no bytes
/// nobody asked for.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        // Readiness can be stale: only a read tells end-of-file from nothing.
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}
