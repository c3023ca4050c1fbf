//! Keep-alive connections to backends, reused across client requests.
//!
//! A connection is checked out *before* the request is handed to it, so a failed connect
//! leaves the request intact and it can go to another backend whatever its method. Idle
//! connections are kept per backend address ([`IdlePool`]) and returned by the response
//! body once the backend's response has been read to its end; a connection whose response
//! was abandoned is closed, since its state is unknown.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::http::idle_pool::IdlePool;
use crate::http::paced::Paced;
use crate::tcp;

/// What lintas sends upstream: the client's body as it streams in (at the listener's
/// pace), or nothing.
pub(crate) type ReqBody = Either<Paced, Empty<Bytes>>;

/// A request sender on one HTTP/1.1 backend connection.
pub(crate) type Sender = http1::SendRequest<ReqBody>;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// TCP connect failed or timed out.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// The pool of idle backend connections shared by all HTTP listeners.
#[derive(Debug, Default)]
pub(crate) struct Upstream {
    idle: IdlePool<Sender>,
}

impl Upstream {
    /// A ready connection to `addr`: an idle one if any is still open, else a new one.
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        while let Some(mut sender) = self.idle.take(addr) {
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() {
                return Ok(sender);
            }
            // Just after a response ends the connection may not have signalled readiness yet;
            // a short wait is far cheaper than a new connection.
            if let Ok(Ok(())) = tokio::time::timeout(timeout, sender.ready()).await {
                return Ok(sender);
            }
        }
        let stream = tcp::connect(addr, timeout).await?;
        let (sender, conn) = builder().handshake(TokioIo::new(stream)).await?;
        // The connection task ends when its sender is dropped or the backend closes it.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%addr, error = %e, "backend connection ended");
            }
        });
        Ok(sender)
    }

    /// Gives back a connection whose last response was read to the end.
    pub fn checkin(&self, addr: SocketAddr, sender: Sender) {
        if !sender.is_closed() {
            self.idle.put(addr, sender);
        }
    }
}

/// HTTP/1.1 client settings for backend connections: one flattened send per request is
/// cheaper than the vectored path for the small heads a proxy forwards.
fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.writev(false);
    b
}
