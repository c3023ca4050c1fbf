//! Worker threads: one current-thread runtime per core, each accepting on its own socket.
//!
//! A multi-threaded runtime moves tasks between threads and wakes threads for one another;
//! for a proxy whose every connection is independent that costs more than it gives
//! (measured: 10.8 µs of CPU per proxied HTTP request on two threads against 8.7 on one).
//! So, like HAProxy's and nginx's workers, each worker thread runs its own current-thread
//! runtime, every listener binds one socket per worker with `SO_REUSEPORT`, and the kernel
//! spreads new connections across them; a connection then lives on one thread for good.
//! Control work (health checks, admin, reloads) stays on the caller's runtime.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use socket2::{Domain, Socket, Type};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Where listeners' accept loops run: on the worker runtimes, or (when there are none, as in
/// tests) on the current runtime.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    handles: Vec<Handle>,
}

impl Workers {
    /// How many sockets each listener binds.
    pub fn sockets_per_listener(&self) -> usize {
        self.handles.len().max(1)
    }

    /// The runtime of worker `i`, or `None` to use the current one.
    pub fn handle(&self, i: usize) -> Option<&Handle> {
        self.handles.get(i)
    }

    /// One listening socket per worker on `addr` (sharing the port with `SO_REUSEPORT`),
    /// each with the runtime it is to be served on (`None`: the current one). For other
    /// services' listeners (the relay's ingest), so they spread like the proxy's.
    pub fn bind(
        &self,
        addr: SocketAddr,
    ) -> io::Result<Vec<(std::net::TcpListener, Option<Handle>)>> {
        let sockets = bind(addr, self.sockets_per_listener())?;
        Ok(sockets
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, self.handle(i).cloned()))
            .collect())
    }
}

/// How many of its own tasks a worker runs before it takes one woken from another thread.
/// tokio's default (31) lets a worker busy with its own connections leave a task woken by
/// the other worker waiting for long: a hub room delivering on one worker to members
/// served on the other was served ten times slower than a room whose members were local
/// (bench/hub: 46 to 439 messages per room in 10 s).
const GLOBAL_QUEUE_INTERVAL: u32 = 4;

/// The running worker threads; stopped and joined on drop.
#[derive(Debug)]
pub struct WorkerThreads {
    workers: Workers,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerThreads {
    /// Starts `n` worker threads, each with its own current-thread runtime.
    pub fn start(n: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("lintas-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            threads.push(thread);
        }
        Ok(Self {
            workers: Workers { handles },
            stop,
            threads,
        })
    }

    /// Handles to give the services that serve on the workers (the proxy, the relay).
    pub fn workers(&self) -> Workers {
        self.workers.clone()
    }
}

impl Drop for WorkerThreads {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Binds `count` listening sockets on `addr`. More than one share the port with
/// `SO_REUSEPORT` (port 0 is resolved by the first); a single one does not, so that a port
/// held by anyone else is always an error.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_sockets_share_one_port() {
        let socks = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = socks
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert!(ports.iter().all(|&p| p == ports[0] && p != 0), "{ports:?}");
    }

    #[test]
    fn a_port_held_elsewhere_is_refused() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind(held.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
