//! Kept-alive backend connections of the HTTP/1 path.
//!
//! Idle connections are kept per thread: with worker threads (see `crate::workers`) a
//! socket belongs to the reactor of the thread that opened it, so it is only ever reused
//! there, and checking one out takes no lock.
//!
//! A connection goes back to the pool only after a response was read to its exact end with
//! nothing left over. Before one is reused its read readiness is looked at (no system call:
//! the reactor already knows): a connection the backend closed in the meantime is readable
//! (end-of-file), is probed with a non-blocking read and dropped, so the request goes out on
//! a live one. The race left — the backend closing at that very moment — is covered by the
//! replay rule for idempotent requests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::tcp;

/// Idle connections kept per backend; beyond this, finished connections are closed.
const MAX_IDLE_PER_BACKEND: usize = 256;

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

thread_local! {
    /// This thread's idle backend connections by address.
    static IDLE: RefCell<HashMap<SocketAddr, Vec<TcpStream>>> = RefCell::default();
}

/// An open connection to `addr`: a live idle one, or a new one.
pub(crate) async fn checkout(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
    while let Some(stream) = pop(addr) {
        if is_quiet(&stream) {
            return Ok(Conn {
                stream,
                buf: BytesMut::new(),
                reused: true,
            });
        }
    }
    connect(addr, timeout).await
}

/// A new connection to `addr`, never a pooled one.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
    Ok(Conn {
        stream: tcp::connect(addr, timeout).await?,
        buf: BytesMut::new(),
        reused: false,
    })
}

/// Keeps `conn` for the next request to `addr`, when it is clean.
pub(crate) fn checkin(addr: SocketAddr, conn: Conn) {
    if !conn.buf.is_empty() {
        return;
    }
    IDLE.with_borrow_mut(|idle| {
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push(conn.stream);
        }
    });
}

fn pop(addr: SocketAddr) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|idle| idle.get_mut(&addr).and_then(Vec::pop))
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
