//! The accept loop every listener runs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{Permit, Permits};

/// Accepts on `listener` until `stop`, handing each connection to `serve` with its permit.
///
/// The permit is taken *before* accepting, so at the limit new clients wait in the kernel's
/// backlog instead of costing memory here. Accept errors (usually EMFILE/ENFILE) are retried
/// with a backoff from 5 ms to 1 s instead of spinning. `TCP_NODELAY` is set: Nagle's
/// algorithm only delays the small writes a proxy or an API answers with.
pub async fn accept_loop<F>(
    listener: &TcpListener,
    permits: &Permits,
    stop: &CancellationToken,
    name: &str,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, Permit),
{
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            p = permits.acquire() => p,
            _ = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                serve(stream, peer, permit);
            }
            Err(e) => {
                warn!(listener = name, error = %e, "accept failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
