//! What every integration test shares: a node started in-process from TOML text, demo
//! backends (in-process or as processes that can be SIGKILLed), raw TCP test servers, client
//! load loops and a temporary directory.
//!
//! Everything binds `127.0.0.1:0` (or a port the OS just handed out), so tests run in
//! parallel processes without sharing a port, and everything stops when its handle drops.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use balance::{BackendSnapshot, Health, Pool};
use lintas::config::Loaded;
use lintas::run::Node;
use net::Workers;
use proxy::registry::ListenerSnapshot;
use testkit::{HttpClient, PATIENCE, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The `lintas` binary built for this test run.
pub const LINTAS: &str = env!("CARGO_BIN_EXE_lintas");

/// A node running in this test process; stops when dropped.
pub struct TestNode {
    pub node: Arc<Node>,
    shutdown: CancellationToken,
}

impl TestNode {
    /// Starts a node from configuration text (reported as `test.toml` in errors).
    pub async fn start(text: &str) -> Self {
        let loaded = lintas::config::parse(Path::new("test.toml"), text.to_owned())
            .unwrap_or_else(|e| panic!("test configuration refused:\n{e}\n---\n{text}"));
        Self::start_loaded(loaded).await
    }

    /// Starts a node from a file, so that [`Node::reload`] re-reads that file.
    pub async fn start_file(path: &Path) -> Self {
        let loaded = lintas::config::load(path).unwrap_or_else(|e| panic!("{e}"));
        Self::start_loaded(loaded).await
    }

    /// The one-pool, one-listener node most tests need: pool `web` with `pool` lines,
    /// listener `web` in `mode` with `listener` lines.
    pub async fn single(mode: &str, pool: &str, listener: &str) -> Self {
        Self::start(&single_config(mode, pool, listener)).await
    }

    /// Why a node refuses to start from `loaded` (panics if it starts).
    pub async fn refused(loaded: Loaded) -> String {
        let err = Node::start(
            loaded,
            TaskTracker::new(),
            CancellationToken::new(),
            Workers::default(),
        )
        .await
        .err()
        .expect("the node started");
        format!("{err:#}")
    }

    async fn start_loaded(loaded: Loaded) -> Self {
        let shutdown = CancellationToken::new();
        let node = Node::start(
            loaded,
            TaskTracker::new(),
            shutdown.clone(),
            Workers::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("node did not start: {e:#}"));
        Self { node, shutdown }
    }

    /// Address listener `name` is bound to.
    pub async fn addr(&self, name: &str) -> SocketAddr {
        self.node
            .proxy
            .local_addr(name)
            .await
            .unwrap_or_else(|| panic!("no listener named `{name}`"))
    }

    /// `http://ADDR/path` of HTTP listener `name`.
    pub async fn url(&self, name: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(name).await)
    }

    pub fn pool(&self, name: &str) -> Arc<Pool> {
        self.node
            .proxy
            .registry()
            .pool(name)
            .unwrap_or_else(|| panic!("no pool named `{name}`"))
    }

    /// Counters of listener `name` now.
    pub fn listener(&self, name: &str) -> ListenerSnapshot {
        self.node
            .proxy
            .registry()
            .listener_snapshots()
            .into_iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no listener named `{name}`"))
    }

    /// Backend `name` of pool `pool` as the stats page shows it now.
    pub fn backend(&self, pool: &str, name: &str) -> BackendSnapshot {
        self.pool(pool)
            .snapshot()
            .backends
            .into_iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("pool `{pool}` has no backend `{name}`"))
    }

    /// Waits until every backend of `pool` is in `health`.
    pub async fn wait_all(&self, pool: &str, health: Health) {
        let p = self.pool(pool);
        wait_until(
            &format!("every backend of `{pool}` {health:?}"),
            PATIENCE,
            || {
                let all = p.snapshot().backends.iter().all(|b| b.health == health);
                async move { all }
            },
        )
        .await;
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Configuration text of pool `web` and one listener `web` in front of it, on any port.
pub fn single_config(mode: &str, pool: &str, listener: &str) -> String {
    single_config_on("127.0.0.1:0".parse().unwrap(), mode, pool, listener)
}

/// [`single_config`] with the listener on `listen`.
pub fn single_config_on(listen: SocketAddr, mode: &str, pool: &str, listener: &str) -> String {
    format!(
        r#"[proxy.pools.web]
{pool}

[[proxy.listeners]]
name = "web"
mode = "{mode}"
listen = "{listen}"
pool = "web"
{listener}
"#
    )
}

/// One more `[[proxy.listeners]]` block in front of pool `web`, on a port of its own.
pub fn listener_toml(name: &str, mode: &str, lines: &str) -> String {
    format!(
        r#"
[[proxy.listeners]]
name = "{name}"
mode = "{mode}"
listen = "{listen}"
pool = "web"
{lines}
"#,
        listen = unused_addr()
    )
}

/// A `backends = [...]` line.
pub fn backends_toml<'a>(list: impl IntoIterator<Item = (&'a str, SocketAddr, u32)>) -> String {
    let entries: Vec<String> = list
        .into_iter()
        .map(|(name, addr, weight)| {
            format!(r#"{{ name = "{name}", address = "{addr}", weight = {weight} }}"#)
        })
        .collect();
    format!("backends = [{}]", entries.join(", "))
}

/// Demo backends served in this process; they stop when dropped.
pub struct Backends {
    pub list: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
}

impl Backends {
    pub async fn start(names: &[&str]) -> Self {
        Self::start_workers(names, None).await
    }

    /// Backends that run at most `jobs` `/work` requests at once (`lintas backend --jobs`).
    pub async fn start_workers(names: &[&str], jobs: Option<usize>) -> Self {
        let shutdown = CancellationToken::new();
        let mut list = Vec::new();
        for name in names {
            let addr = lintas::demo::backend::bind_and_serve(
                name,
                "127.0.0.1:0".parse().unwrap(),
                jobs,
                shutdown.clone(),
            )
            .await
            .unwrap();
            list.push(((*name).to_owned(), addr));
        }
        Self { list, shutdown }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.list
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no backend `{name}`"))
    }

    /// `backends = [...]` with weight 1 each.
    pub fn toml(&self) -> String {
        self.toml_weighted(&vec![1; self.list.len()])
    }

    /// `backends = [...]` with these weights, in order.
    pub fn toml_weighted(&self, weights: &[u32]) -> String {
        backends_toml(
            self.list
                .iter()
                .zip(weights)
                .map(|((n, a), w)| (n.as_str(), *a, *w)),
        )
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A demo backend running as a `lintas backend` process, SIGKILLed when dropped.
pub struct ProcessBackend {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl ProcessBackend {
    /// Starts it on `listen` and waits for its `NAME listening on ADDR` line (a blocking
    /// read of a few milliseconds; the process writes nothing else).
    pub fn spawn(name: &str, listen: SocketAddr) -> Self {
        let mut child = Command::new(LINTAS)
            .args(["backend", "--name", name, "--listen", &listen.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix(&format!("{name} listening on "))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("backend {name} did not start: {line:?}"));
        Self {
            name: name.to_owned(),
            addr,
            child,
            _stdout: stdout,
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An address nothing listens on (the OS handed the port out and it was released).
pub fn unused_addr() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Serves every connection to the returned address with `handler`, until the test ends.
pub async fn tcp_server<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// A TCP server whose connections the test takes one by one and plays by hand: exact control
/// over what a backend reads, writes and when it closes, and proof of which connection a
/// request arrived on.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<TcpStream>,
}

impl ScriptedServer {
    pub async fn start() -> Self {
        let (tx, conns) = mpsc::unbounded_channel();
        let addr = tcp_server(move |stream| {
            let _ = tx.send(stream);
            async {}
        })
        .await;
        Self { addr, conns }
    }

    /// The next accepted connection, within [`PATIENCE`].
    pub async fn accept(&mut self) -> TcpStream {
        tokio::time::timeout(PATIENCE, self.conns.recv())
            .await
            .expect("no connection accepted in time")
            .expect("the accept loop ended")
    }

    /// Connections accepted and not taken with [`Self::accept`] (they are closed).
    pub fn untaken(&mut self) -> usize {
        std::iter::from_fn(|| self.conns.try_recv().ok()).count()
    }
}

/// A TCP server that writes back whatever it reads.
pub async fn echo_server() -> SocketAddr {
    tcp_server(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// Writes `request` on a new connection to `addr` and returns everything read until the
/// peer closes (or resets) the connection.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_until_closed(&mut s).await
}

/// Reads exactly `n` bytes within [`PATIENCE`].
pub async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut buf))
        .await
        .expect("no answer in time")
        .unwrap();
    buf
}

/// Reads until end-of-file or an error, within [`PATIENCE`].
pub async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("the connection was not closed in time");
    out
}

/// `GET url`, which must answer 200; returns the answering backend's name.
pub async fn get_backend(client: &HttpClient, url: &str) -> String {
    let reply = client.get(url).await;
    assert_eq!(reply.status, 200, "GET {url}: {reply:?}");
    reply.header("x-backend").to_owned()
}

/// `n` sequential `GET url`s on one keep-alive client; the answering backends in order.
pub async fn get_backends(url: &str, n: usize) -> Vec<String> {
    let client = HttpClient::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_backend(&client, url).await);
    }
    out
}

/// How many times each name occurs.
pub fn tally<S: AsRef<str>>(names: &[S]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for n in names {
        *counts.entry(n.as_ref().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// `[(name, count)]` as a map, for comparing with [`tally`].
pub fn counts(expected: &[(&str, usize)]) -> BTreeMap<String, usize> {
    expected
        .iter()
        .map(|(n, c)| ((*n).to_owned(), *c))
        .collect()
}

/// Clients sending `GET url` in a loop, each on its own keep-alive connection, until
/// stopped. Every reply and every failure is recorded.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<LoadReport>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Replies by answering backend (status 200 only).
    pub by_backend: BTreeMap<String, usize>,
    /// Transport errors and non-200 replies, described.
    pub failures: Vec<String>,
}

impl Load {
    pub fn start(clients: usize, url: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, sent, url) = (stop.clone(), sent.clone(), url.to_owned());
                tokio::spawn(async move {
                    let client = HttpClient::new();
                    let mut report = LoadReport::default();
                    while !stop.load(Ordering::Relaxed) {
                        match client
                            .send(http::Method::GET, &url, &[], bytes::Bytes::new())
                            .await
                        {
                            Ok(r) if r.status == 200 => {
                                *report
                                    .by_backend
                                    .entry(r.header("x-backend").to_owned())
                                    .or_insert(0) += 1;
                            }
                            Ok(r) => report.failures.push(format!("{} {:?}", r.status, r.body)),
                            Err(e) => report.failures.push(e),
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    report
                })
            })
            .collect();
        Self { stop, sent, tasks }
    }

    /// Requests completed so far by all clients.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests have completed.
    pub async fn wait_for_more(&self, more: usize) {
        let target = self.sent() + more;
        wait_until(&format!("{more} more requests"), PATIENCE, || {
            let done = self.sent() >= target;
            async move { done }
        })
        .await;
    }

    /// Stops the clients and merges their reports.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for t in self.tasks {
            let r = t.await.unwrap();
            for (k, v) in r.by_backend {
                *total.by_backend.entry(k).or_insert(0) += v;
            }
            total.failures.extend(r.failures);
        }
        total
    }
}

pub use testkit::TempDir;

/// A unique-enough suffix for names shared with the outside world (MQTT topics).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Polls until `pool`'s backend `name` satisfies `check`.
pub async fn wait_backend(
    node: &TestNode,
    pool: &str,
    name: &str,
    what: &str,
    check: impl Fn(&BackendSnapshot) -> bool,
) {
    wait_until(what, PATIENCE, || {
        let ok = check(&node.backend(pool, name));
        async move { ok }
    })
    .await;
}

/// A self-signed certificate for `localhost` written into `dir`, as the `tls = {...}` line
/// of a listener, and the certificate's path (for a client's roots).
/// A TLS client that trusts only the certificates in the PEM file `cert`.
pub fn tls_connector(cert: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

pub fn tls_listener(dir: &TempDir) -> (String, std::path::PathBuf) {
    let (cert, key) = testkit::tls::self_signed(dir.path()).unwrap();
    let line = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    (line, cert)
}
