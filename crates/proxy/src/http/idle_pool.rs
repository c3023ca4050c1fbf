//! Idle backend connections, kept for reuse and expired when unused.
//!
//! Both HTTP paths keep their backend connections here: the HTTP/1 path its raw sockets
//! (one pool per worker thread, since a socket belongs to its thread's reactor), the h2
//! path hyper's request senders. Connections are reused last-in first-out — the most
//! recently used one is the likeliest to be alive — and one idle for longer than
//! [`MAX_IDLE_TIME`] is closed when its backend's list is next touched, so a pool does not
//! keep descriptors for connections the backend closed long ago.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Idle connections kept per backend; beyond this, finished connections are closed.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// A connection idle for this long is closed rather than reused; most backends close
/// idle keep-alive connections within a minute anyway (nginx 75 s, Apache 5 s).
pub(crate) const MAX_IDLE_TIME: Duration = Duration::from_secs(30);

/// Idle connections of type `T`, by backend address.
#[derive(Debug)]
pub(crate) struct IdlePool<T> {
    /// Per backend, oldest first, each with when it went idle.
    idle: Mutex<HashMap<SocketAddr, VecDeque<(T, Instant)>>>,
}

impl<T> Default for IdlePool<T> {
    fn default() -> Self {
        Self {
            idle: Mutex::default(),
        }
    }
}

impl<T> IdlePool<T> {
    /// Keeps `conn` for the next request to `addr`, unless the backend has enough idle.
    pub fn put(&self, addr: SocketAddr, conn: T) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        expire(list, now);
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push_back((conn, now));
        }
    }

    /// The most recently parked connection to `addr` that has not expired.
    pub fn take(&self, addr: SocketAddr) -> Option<T> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        expire(list, Instant::now());
        list.pop_back().map(|(conn, _)| conn)
    }
}

/// Drops the connections at the front of `list` that have been idle too long.
fn expire<T>(list: &mut VecDeque<(T, Instant)>, now: Instant) {
    while list
        .front()
        .is_some_and(|(_, since)| now.duration_since(*since) >= MAX_IDLE_TIME)
    {
        list.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test(start_paused = true)]
    async fn the_freshest_connection_is_reused_and_stale_ones_are_closed() {
        let pool = IdlePool::default();
        pool.put(addr(1), "old");
        tokio::time::advance(MAX_IDLE_TIME / 2).await;
        pool.put(addr(1), "newer");
        pool.put(addr(2), "other backend");
        assert_eq!(pool.take(addr(1)), Some("newer"));
        pool.put(addr(1), "newer");
        tokio::time::advance(MAX_IDLE_TIME / 2).await;
        // "old" has been idle for MAX_IDLE_TIME now; "newer" for half of it.
        assert_eq!(pool.take(addr(1)), Some("newer"));
        assert_eq!(pool.take(addr(1)), None);
        tokio::time::advance(MAX_IDLE_TIME).await;
        assert_eq!(pool.take(addr(2)), None);
    }

    #[test]
    fn a_backend_keeps_at_most_its_share_of_idle_connections() {
        let pool = IdlePool::default();
        for i in 0..MAX_IDLE_PER_BACKEND + 10 {
            pool.put(addr(1), i);
        }
        let kept = std::iter::from_fn(|| pool.take(addr(1))).count();
        assert_eq!(kept, MAX_IDLE_PER_BACKEND);
    }
}
