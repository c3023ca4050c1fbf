//! The users' topology of issue 10, as processes: three `lintas` MQTT nodes that form one
//! cluster through a Redis of the test's own, behind a `lintas` TCP balancer (round-robin,
//! TCP health checks, the admin API), driven by paho-mqtt clients.
//!
//! - [`Redis`]: a `redis-server` on a free port with its data in a temporary directory
//!   (`appendonly yes`, `appendfsync always`, no snapshots), so [`Redis::restart`] on the
//!   same port finds everything the killed process acknowledged. Never the shared 6379:
//!   other tests use it at the same time, and these kill their Redis.
//! - [`Cluster`]: the three nodes (`examples/mqtt-cluster` with free ports and a prefix of
//!   their own) and the balancer; SIGKILL and restart a node, see where each client is
//!   connected (each node's `GET /api/mqtt/clients`), wait for the balancer to see a node
//!   down or up (`GET /api/pools/brokers/backends/{node}`).
//! - [`Paho`]: one python process (`tests/clients/mqtt_clients.py`) driving many clients
//!   from one loop; [`Load`] is subscribers and publishers spread over a few of them, and
//!   [`Audit`] counts what every subscriber got against what it should have.
//!
//! [`the_balancer_spreads_mqtt_clients_over_three_nodes`] checks the harness with what one
//! node does alone; the others check the cluster: forwarding, the users' stress, a node
//! SIGKILLed and Redis restarted under load.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use testkit::{AdminClient, PATIENCE, wait_until};

use crate::cli::Lintas;
use crate::harness::{TempDir, unique, unused_addr};
use crate::script::Script;

/// The admin password of every process (given as `LINTAS_ADMIN_PASSWORD`).
const PASSWORD: &str = "pw";

/// How long a load may take to be published and delivered in a debug build.
const LOAD_PATIENCE: Duration = Duration::from_secs(60);

/// A `redis-server` of the test's own; SIGKILLed when dropped.
pub struct Redis {
    port: u16,
    /// Its working directory: the append-only file and the log.
    dir: PathBuf,
    child: Child,
}

impl Redis {
    /// Starts one on a free port with its data in `dir`; returns once it answers PING.
    pub fn start(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let port = unused_addr().port();
        let child = Self::spawn(port, &dir);
        Self { port, dir, child }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then a new process on the same port and data; returns once it answers PING
    /// (after it has loaded the append-only file).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, &self.dir);
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let log = dir.join("redis.log");
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server: {e} (apt-get install redis-server; scripts/test does)"
                )
            });
        let deadline = Instant::now() + PATIENCE;
        while !pong(port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "redis-server on port {port} exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} does not answer PING after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a Redis on `port` answers PING with PONG (not -LOADING while it reads its file).
fn pong(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let mut answer = [0u8; 7];
    s.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
        && s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// One MQTT node of a [`Cluster`].
pub struct ClusterNode<'a> {
    /// `node1`, `node2`, `node3`: its backend name in the balancer.
    pub name: String,
    /// Its MQTT listener, for clients connecting directly.
    pub mqtt: SocketAddr,
    admin_addr: SocketAddr,
    admin: AdminClient,
    config: PathBuf,
    /// `None` while killed.
    process: Option<Lintas<'a>>,
    /// Processes started so far, so each writes its output to files of its own.
    runs: usize,
}

impl<'a> ClusterNode<'a> {
    fn spawn(&mut self, dir: &'a TempDir) {
        self.runs += 1;
        let config = self.config.to_str().unwrap().to_owned();
        self.process = Some(Lintas::spawn_env(
            dir,
            &format!("{}-{}", self.name, self.runs),
            &["run", "-c", &config],
            &[("LINTAS_ADMIN_PASSWORD", PASSWORD)],
        ));
    }

    async fn wait_serving(&mut self) {
        let what = self.name.clone();
        let process = self.process.as_mut().expect("a running node");
        wait_listening(&what, process, self.mqtt).await;
        wait_listening(&what, process, self.admin_addr).await;
    }

    /// The ids of the clients connected to this node now (none while it is killed).
    pub async fn clients(&self) -> BTreeSet<String> {
        if self.process.is_none() {
            return BTreeSet::new();
        }
        let (status, list) = self
            .admin
            .json(http::Method::GET, "/api/mqtt/clients", "")
            .await;
        assert_eq!(status, 200, "{}: {list}", self.name);
        list.as_array()
            .unwrap_or_else(|| panic!("{}: not a list: {list}", self.name))
            .iter()
            .map(|c| c["client_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Waits until `addr` accepts TCP connections; panics with the process's stderr when it
/// exits or does not within [`PATIENCE`].
pub(crate) async fn wait_listening(what: &str, process: &mut Lintas<'_>, addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            process.running() && Instant::now() < deadline,
            "{what} is not listening on {addr}; its stderr:\n{}",
            process.read("stderr")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three MQTT nodes on one [`Redis`] behind a balancer; every process stops when dropped.
pub struct Cluster<'a> {
    dir: &'a TempDir,
    /// The backplane, restartable.
    pub redis: Redis,
    /// `node1`..`node3`.
    pub nodes: Vec<ClusterNode<'a>>,
    /// The balancer's MQTT (TCP) listener.
    pub balancer: SocketAddr,
    balancer_admin: AdminClient,
    balancer_process: Lintas<'a>,
}

impl<'a> Cluster<'a> {
    /// Starts Redis, the three nodes and the balancer (configuration files and output in
    /// `dir`); returns once the balancer sees every node up.
    pub async fn start(dir: &'a TempDir) -> Self {
        let redis = Redis::start(dir.path().join("redis"));
        let prefix = unique("mqtt-cluster");
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let name = format!("node{i}");
            let (mqtt, admin_addr) = (unused_addr(), unused_addr());
            let config = dir.write(
                &format!("{name}.toml"),
                &node_config(&name, mqtt, admin_addr, &redis.url(), &prefix),
            );
            let mut node = ClusterNode {
                name,
                mqtt,
                admin_addr,
                admin: admin_client(admin_addr),
                config,
                process: None,
                runs: 0,
            };
            node.spawn(dir);
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_serving().await;
        }
        let (balancer, admin_addr) = (unused_addr(), unused_addr());
        let config = dir.write(
            "balancer.toml",
            &balancer_config(balancer, admin_addr, &nodes),
        );
        let mut balancer_process = Lintas::spawn_env(
            dir,
            "balancer",
            &["run", "-c", config.to_str().unwrap()],
            &[("LINTAS_ADMIN_PASSWORD", PASSWORD)],
        );
        wait_listening("the balancer", &mut balancer_process, balancer).await;
        wait_listening("the balancer", &mut balancer_process, admin_addr).await;
        let cluster = Self {
            dir,
            redis,
            nodes,
            balancer,
            balancer_admin: admin_client(admin_addr),
            balancer_process,
        };
        for node in &cluster.nodes {
            cluster.wait_health(&node.name, "up").await;
        }
        cluster
    }

    /// SIGKILLs node `i` (0-based).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].process = None;
    }

    /// Starts node `i` again with the same configuration; returns once it listens.
    pub async fn restart(&mut self, i: usize) {
        let dir = self.dir;
        let node = &mut self.nodes[i];
        node.spawn(dir);
        node.wait_serving().await;
    }

    /// Whether every node and the balancer still run (none exited on its own).
    pub fn all_running(&mut self) -> bool {
        self.balancer_process.running()
            && self
                .nodes
                .iter_mut()
                .all(|n| n.process.as_mut().is_some_and(|p| p.running()))
    }

    /// The health the balancer gives `node` now: `up`, `down` or `ejected`.
    pub async fn health(&self, node: &str) -> String {
        let path = format!("/api/pools/brokers/backends/{node}");
        let (status, backend) = self.balancer_admin.json(http::Method::GET, &path, "").await;
        assert_eq!(status, 200, "{path}: {backend}");
        backend["health"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the balancer gives `node` the health `want`.
    pub async fn wait_health(&self, node: &str, want: &str) {
        wait_until(
            &format!("the balancer to see {node} {want}"),
            PATIENCE,
            || async { self.health(node).await == want },
        )
        .await;
    }

    /// Which node each connected client is on, by client id.
    pub async fn placement(&self) -> BTreeMap<String, String> {
        let mut placed = BTreeMap::new();
        for node in &self.nodes {
            for client in node.clients().await {
                if let Some(other) = placed.insert(client.clone(), node.name.clone()) {
                    panic!("{client} is connected to both {other} and {}", node.name);
                }
            }
        }
        placed
    }

    /// The last lines every process wrote to stderr, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let tail = |name: &str, text: String| {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(15);
            format!("--- {name} ---\n{}\n", lines[from..].join("\n"))
        };
        for node in &self.nodes {
            if let Some(p) = &node.process {
                out.push_str(&tail(&node.name, p.read("stderr")));
            }
        }
        out.push_str(&tail("balancer", self.balancer_process.read("stderr")));
        out
    }
}

fn admin_client(addr: SocketAddr) -> AdminClient {
    AdminClient::new(format!("http://{addr}"), "admin", PASSWORD)
}

/// `examples/mqtt-cluster/node*.toml` on free ports, this test's Redis and prefix, and a
/// lease short enough for a test to see a node's death.
fn node_config(
    name: &str,
    mqtt: SocketAddr,
    admin: SocketAddr,
    redis: &str,
    prefix: &str,
) -> String {
    format!(
        "data_dir = \"{name}-data\"\n\n\
         [backplane]\nredis = \"{redis}\"\nprefix = \"{prefix}\"\nlease = \"1s\"\n\n\
         [mqtt]\nlisten = \"{mqtt}\"\nallow_anonymous = true\nsys_interval = \"0s\"\n\
         persistent_session_expiry = \"1h\"\nmax_queued = 100000\n\n\
         [admin]\nlisten = \"{admin}\"\nuser = \"admin\"\npassword_env = \"LINTAS_ADMIN_PASSWORD\"\n"
    )
}

/// `examples/mqtt-cluster/balancer.toml` on free ports, checking every 100 ms so a test
/// sees a node go down and come back within a second.
fn balancer_config(listen: SocketAddr, admin: SocketAddr, nodes: &[ClusterNode<'_>]) -> String {
    let backends: Vec<String> = nodes
        .iter()
        .map(|n| format!("{{ name = \"{}\", address = \"{}\" }}", n.name, n.mqtt))
        .collect();
    format!(
        "data_dir = \"balancer-data\"\n\n\
         [proxy.pools.brokers]\nstrategy = \"round_robin\"\nbackends = [{}]\n\
         health = {{ kind = \"tcp\", interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 1 }}\n\n\
         [[proxy.listeners]]\nname = \"mqtt\"\nmode = \"tcp\"\nlisten = \"{listen}\"\npool = \"brokers\"\n\
         connect_timeout = \"500ms\"\nretries = 2\n\n\
         [admin]\nlisten = \"{admin}\"\nuser = \"admin\"\npassword_env = \"LINTAS_ADMIN_PASSWORD\"\n",
        backends.join(", ")
    )
}

/// A subscriber of `mqtt_clients.py`'s plan: `filter` at QoS 2, so each message arrives at
/// the QoS it was published with; probed once it got a probe from `probes` publishers.
fn subscriber(id: &str, addr: SocketAddr, clean: bool, filter: &str, probes: usize) -> Value {
    json!({"id": id, "host": addr.ip().to_string(), "port": addr.port(), "clean": clean,
           "subscribe": [filter], "qos": 2, "probes": probes})
}

/// A publisher of `mqtt_clients.py`'s plan: `count` messages to `topic` a round, message
/// `i` at QoS `qos[i % qos.len()]`.
fn publisher(
    id: &str,
    addr: SocketAddr,
    clean: bool,
    topic: &str,
    count: usize,
    qos: &[u8],
) -> Value {
    json!({"id": id, "host": addr.ip().to_string(), "port": addr.port(), "clean": clean,
           "publish": {"topic": topic, "count": count, "qos": qos}})
}

/// What a [`Paho`] process last said about its clients.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Every client connected and subscribed once.
    pub ready: bool,
    /// Messages received by all its subscribers.
    pub received: usize,
    /// Messages its publishers had acknowledged (QoS 0: written).
    pub acked: usize,
    /// Clients connected now.
    pub connected: usize,
    /// Connected clients whose subscriptions are in place.
    pub subscribed: usize,
    /// Subscribers that got a probe from every publisher of their topic.
    pub probed: usize,
    /// Clients in the plan.
    pub clients: usize,
    /// Connections made again after one ended.
    pub reconnects: usize,
}

/// What a [`Paho`] process's clients did, once it was asked.
#[derive(Debug, Default, Deserialize)]
pub struct Report {
    /// Payloads (`"PUBLISHER SEQ QOS"`) by subscriber, in the order they arrived.
    pub received: BTreeMap<String, Vec<String>>,
    /// Payloads each publisher had acknowledged.
    pub acked: BTreeMap<String, Vec<String>>,
    /// Subscribers that came back without their session (and subscribed again).
    pub sessions_lost: Vec<String>,
    /// Connections made again after one ended.
    pub reconnects: usize,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.received.extend(other.received);
        self.acked.extend(other.acked);
        self.sessions_lost.extend(other.sessions_lost);
        self.reconnects += other.reconnects;
    }
}

/// One `mqtt_clients.py` process; killed when dropped.
pub struct Paho {
    script: Script,
    /// The last progress line, and whether it said "ready".
    pub progress: Progress,
}

impl Paho {
    /// Starts the clients of `plan`; files named `NAME.*` in `dir`.
    pub fn start(dir: &TempDir, name: &str, clients: Vec<Value>) -> Self {
        Self {
            script: Script::start(dir, name, "mqtt_clients.py", &json!({ "clients": clients })),
            progress: Progress::default(),
        }
    }

    /// The next event within `within`, keeping [`Self::progress`] current; panics on an
    /// error event or when the process ended.
    async fn next_event(&mut self, within: Duration) -> Option<Value> {
        let event = self.script.next_event(within).await?;
        match event["event"].as_str() {
            Some("progress") => {
                let ready = self.progress.ready;
                self.progress = Progress::deserialize(&event).unwrap();
                self.progress.ready = ready;
            }
            Some("ready") => self.progress.ready = true,
            Some("report") => {}
            _ => panic!("{}: {event}", self.script.name),
        }
        Some(event)
    }

    /// Waits until `check` holds for the progress; panics naming `what` after `within`.
    pub async fn wait(&mut self, what: &str, within: Duration, check: impl Fn(&Progress) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !check(&self.progress) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.next_event(left).await.is_none() {
                panic!(
                    "{}: timed out after {within:?} waiting for {what}; last progress {:?}",
                    self.script.name, self.progress
                );
            }
        }
    }

    fn command(&mut self, command: &str) {
        self.script.command(command);
    }

    /// Every publisher queues its next round of messages.
    pub fn publish(&mut self) {
        self.command("publish");
    }

    /// What every client did; the process exits.
    pub async fn report(mut self) -> Report {
        self.command("report");
        loop {
            match self.next_event(PATIENCE).await {
                Some(event) if event["event"] == "report" => {
                    return Report::deserialize(&event).unwrap();
                }
                Some(_) => {}
                None => panic!("{}: no report within {PATIENCE:?}", self.script.name),
            }
        }
    }
}

/// Deliveries counted against what each subscriber should have received, by QoS.
#[derive(Debug, Default)]
pub struct Audit {
    /// Messages the subscribers should have received (one per subscriber and message).
    pub expected: BTreeMap<u8, usize>,
    /// Of those, never received.
    pub missing: BTreeMap<u8, usize>,
    /// Copies received beyond the first.
    pub duplicates: BTreeMap<u8, usize>,
    /// Subscribers with a message missing or duplicated, of how many.
    pub subscribers_wrong: (usize, usize),
    /// The first problem of the first few such subscribers, for the failure message.
    pub examples: Vec<String>,
}

impl Audit {
    /// Compares what each subscriber in `received` got with `expected(subscriber)`;
    /// messages it got but was not expected to get are not counted.
    pub fn of<'r>(
        received: &'r BTreeMap<String, Vec<String>>,
        expected: impl Fn(&str) -> Vec<&'r str>,
    ) -> Self {
        let mut audit = Self::default();
        for (subscriber, got) in received {
            audit.subscribers_wrong.1 += 1;
            let mut wrong = false;
            let mut times: BTreeMap<&str, usize> = BTreeMap::new();
            for payload in got {
                *times.entry(payload).or_insert(0) += 1;
            }
            for payload in expected(subscriber) {
                let qos = qos_of(payload);
                *audit.expected.entry(qos).or_insert(0) += 1;
                let n = times.get(payload).copied().unwrap_or(0);
                let problem = match n {
                    0 => audit.missing.entry(qos).or_insert(0),
                    1 => continue,
                    _ => audit.duplicates.entry(qos).or_insert(0),
                };
                *problem += n.max(2) - 1;
                // Missing messages first: they are what a failure is usually about.
                let example = format!("{subscriber} got {payload:?} {n} times");
                if n == 0 && audit.examples.len() < 20 {
                    audit.examples.insert(0, example);
                } else if !wrong && audit.examples.len() < 10 {
                    audit.examples.push(example);
                }
                wrong = true;
            }
            audit.subscribers_wrong.0 += usize::from(wrong);
        }
        audit
    }

    /// Messages of QoS `qos` missing at some subscriber.
    pub fn missing(&self, qos: u8) -> usize {
        self.missing.get(&qos).copied().unwrap_or(0)
    }

    /// Extra copies of messages of QoS `qos`.
    pub fn duplicates(&self, qos: u8) -> usize {
        self.duplicates.get(&qos).copied().unwrap_or(0)
    }
}

/// The QoS a payload `"PUBLISHER SEQ QOS"` was published with.
fn qos_of(payload: &str) -> u8 {
    payload
        .rsplit(' ')
        .next()
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("not a payload of mqtt_clients.py: {payload:?}"))
}

/// The SEQ of a payload `"PUBLISHER SEQ QOS"`.
fn seq_of(payload: &str) -> usize {
    payload
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a payload of mqtt_clients.py: {payload:?}"))
}

/// The size and shape of a [`Load`].
pub struct LoadShape {
    pub subscribers: usize,
    pub publishers: usize,
    /// Subscriber `s` subscribes to topic `s % topics`, publisher `p` publishes to topic
    /// `p % topics`.
    pub topics: usize,
    /// Messages per publisher per round.
    pub count: usize,
    /// QoS of message `i`: `qos[i % qos.len()]`.
    pub qos: &'static [u8],
    /// Persistent sessions (fixed client ids, `clean_session = 0`) for every client.
    pub persistent: bool,
    /// Python processes the subscribers are spread over (the publishers have one more).
    pub processes: usize,
}

/// Subscribers and publishers of a [`LoadShape`], subscriber `s` connecting to
/// `subscriber_addrs[s % len]` and publisher `p` to `publisher_addrs[p % len]`.
pub struct Load {
    subscribers: Vec<Paho>,
    publishers: Paho,
    /// Topic by client id (subscribers and publishers).
    topic: BTreeMap<String, String>,
    /// Deliveries one round makes when every subscriber gets its topic's messages.
    pub per_round: usize,
}

impl Load {
    /// Starts every client; returns once all are connected and subscribed.
    pub async fn start(
        dir: &TempDir,
        shape: &LoadShape,
        subscriber_addrs: &[SocketAddr],
        publisher_addrs: &[SocketAddr],
    ) -> Self {
        let prefix = unique("load");
        let clean = !shape.persistent;
        let topic_of = |i: usize| format!("{prefix}/{}", i % shape.topics);
        let mut topic = BTreeMap::new();
        let mut pubs = Vec::new();
        let mut publishers_of: BTreeMap<String, usize> = BTreeMap::new();
        for p in 0..shape.publishers {
            let (id, t) = (format!("{prefix}-p{p}"), topic_of(p));
            let addr = publisher_addrs[p % publisher_addrs.len()];
            pubs.push(publisher(&id, addr, clean, &t, shape.count, shape.qos));
            *publishers_of.entry(t.clone()).or_insert(0) += 1;
            topic.insert(id, t);
        }
        let mut plans = vec![Vec::new(); shape.processes];
        let mut per_round = 0;
        for s in 0..shape.subscribers {
            let (id, t) = (format!("{prefix}-s{s}"), topic_of(s));
            let addr = subscriber_addrs[s % subscriber_addrs.len()];
            let probes = publishers_of.get(&t).copied().unwrap_or(0);
            plans[s % shape.processes].push(subscriber(&id, addr, clean, &t, probes));
            per_round += probes * shape.count;
            topic.insert(id, t);
        }
        let mut subscribers: Vec<Paho> = plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| Paho::start(dir, &format!("subscribers{i}"), plan))
            .collect();
        for paho in &mut subscribers {
            paho.wait("every subscriber subscribed", LOAD_PATIENCE, |p| p.ready)
                .await;
        }
        let mut publishers = Paho::start(dir, "publishers", pubs);
        publishers
            .wait("every publisher connected", LOAD_PATIENCE, |p| p.ready)
            .await;
        Self {
            subscribers,
            publishers,
            topic,
            per_round,
        }
    }

    /// Sends a round of probes a second until every subscriber got one from every publisher
    /// of its topic: from then on each subscription is known on every node a publisher is
    /// on.
    pub async fn probe(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut next_probe = tokio::time::Instant::now();
        loop {
            let waiting: Vec<(usize, usize)> = self
                .subscribers
                .iter()
                .map(|s| (s.progress.probed, s.progress.clients))
                .filter(|(probed, clients)| probed < clients)
                .collect();
            if waiting.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscribers still without a probe from every publisher of their topic after \
                 {PATIENCE:?} (probed, subscribers per process): {waiting:?}"
            );
            // A round of probes is a delivery to every subscriber; one a second leaves
            // the clients' time to the subscriptions still propagating.
            if tokio::time::Instant::now() >= next_probe {
                self.publishers.command("probe");
                next_probe += Duration::from_secs(1);
            }
            self.events(Duration::from_millis(50)).await;
        }
    }

    /// Reads every process's events for `span`.
    async fn events(&mut self, span: Duration) {
        let until = tokio::time::Instant::now() + span;
        while tokio::time::Instant::now() < until {
            for paho in self.subscribers.iter_mut().chain([&mut self.publishers]) {
                paho.next_event(Duration::from_millis(10)).await;
            }
        }
    }

    /// Every publisher sends its next round.
    pub fn publish(&mut self) {
        self.publishers.publish();
    }

    /// Waits until the publishers had `n` messages acknowledged in all.
    pub async fn wait_acked(&mut self, n: usize) {
        self.publishers
            .wait(&format!("{n} messages acknowledged"), LOAD_PATIENCE, |p| {
                p.acked >= n
            })
            .await;
    }

    /// Waits until clients connected again `n` times in all and every client is connected
    /// with its subscriptions in place.
    pub async fn wait_reconnected(&mut self, n: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let all = || self.subscribers.iter().chain([&self.publishers]);
            let reconnects: usize = all().map(|p| p.progress.reconnects).sum();
            let settled = all().all(|p| p.progress.subscribed == p.progress.clients);
            if reconnects >= n && settled {
                return;
            }
            let progress: Vec<Progress> = all().map(|p| p.progress).collect();
            assert!(
                tokio::time::Instant::now() < deadline,
                "clients not back after {PATIENCE:?} ({n} reconnections expected): {progress:?}"
            );
            self.events(Duration::from_millis(50)).await;
        }
    }

    /// Waits until nothing arrived for a second, so that what is still on its way when the
    /// count a test waited for is reached (messages from other nodes, once they forward,
    /// count too) is in before its next step.
    pub async fn settle(&mut self) {
        self.wait_received(usize::MAX, Duration::from_secs(1)).await;
    }

    /// Waits until the subscribers received `n` messages in all, or nothing arrived for
    /// `quiet`, or [`LOAD_PATIENCE`] passed (the audit then tells what is missing).
    pub async fn wait_received(&mut self, n: usize, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + LOAD_PATIENCE;
        let mut last = (usize::MAX, tokio::time::Instant::now());
        loop {
            let received: usize = self.subscribers.iter().map(|s| s.progress.received).sum();
            let now = tokio::time::Instant::now();
            if received != last.0 {
                last = (received, now);
            }
            if received >= n || now - last.1 >= quiet || now >= deadline {
                return;
            }
            self.events(Duration::from_millis(50)).await;
        }
    }

    /// Every process's report, merged, with the topic of every client.
    pub async fn finish(self) -> Finished {
        let mut report = self.publishers.report().await;
        for s in self.subscribers {
            report.merge(s.report().await);
        }
        Finished {
            report,
            topic: self.topic,
        }
    }
}

/// What a [`Load`] did.
pub struct Finished {
    pub report: Report,
    /// Topic by client id.
    topic: BTreeMap<String, String>,
}

impl Finished {
    /// Every subscriber's deliveries against the messages its topic's publishers had
    /// acknowledged, of those `expected(subscriber, publisher, seq)` selects.
    pub fn audit(&self, expected: impl Fn(&str, &str, usize) -> bool) -> Audit {
        let expected = &expected;
        Audit::of(&self.report.received, |subscriber| {
            self.report
                .acked
                .iter()
                .filter(|(publisher, _)| self.topic[*publisher] == self.topic[subscriber])
                .flat_map(|(publisher, acked)| {
                    acked
                        .iter()
                        .filter(move |m| expected(subscriber, publisher, seq_of(m)))
                        .map(move |m| m.as_str())
                })
                .collect()
        })
    }

    /// [`Self::audit`] of every message.
    pub fn audit_all(&self) -> Audit {
        self.audit(|_, _, _| true)
    }
}

/// How many clients each node has, by node name.
fn per_node(placement: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    crate::harness::tally(&placement.values().collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_redis_keeps_acknowledged_writes_across_a_restart() {
    let dir = TempDir::new();
    let mut redis = Redis::start(dir.path().join("redis"));
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::AsyncCommands::set(&mut conn, "kept", "yes")
        .await
        .unwrap();

    redis.restart();

    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let kept: Option<String> = redis::AsyncCommands::get(&mut conn, "kept").await.unwrap();
    assert_eq!(kept.as_deref(), Some("yes"));
}

/// 12 clients through the balancer land 4 on each node; every subscriber gets every
/// message of every publisher, whichever node each is on; a SIGKILLed node's clients
/// reconnect through the balancer to the other two, resume their sessions there and get
/// every message of the next round; the balancer sees the node down and, restarted, up
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_spreads_mqtt_clients_over_three_nodes() {
    let dir = TempDir::new();
    let mut cluster = Cluster::start(&dir).await;
    let shape = LoadShape {
        subscribers: 6,
        publishers: 6,
        topics: 1,
        count: 9,
        qos: &[0, 1, 2],
        persistent: true,
        processes: 1,
    };
    let mut load = Load::start(&dir, &shape, &[cluster.balancer], &[cluster.balancer]).await;
    let first = cluster.placement().await;
    let spread: Vec<(&str, usize)> = vec![("node1", 4), ("node2", 4), ("node3", 4)];
    assert_eq!(
        per_node(&first),
        crate::harness::counts(&spread),
        "{first:#?}"
    );
    let round = shape.subscribers * shape.publishers * shape.count;

    load.publish();
    load.wait_acked(6 * 9).await;
    load.wait_received(round, PATIENCE).await;
    load.settle().await;

    cluster.kill(1);
    cluster.wait_health("node2", "down").await;
    let moved: Vec<&String> = first
        .iter()
        .filter(|(_, node)| *node == "node2")
        .map(|(id, _)| id)
        .collect();
    load.wait_reconnected(moved.len()).await;
    let second = cluster.placement().await;
    assert_eq!(
        second.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>(),
        "every client connected again"
    );
    assert_eq!(per_node(&second).get("node2"), None, "{second:#?}");

    load.publish();
    load.wait_acked(2 * 6 * 9).await;
    load.wait_received(2 * round, PATIENCE).await;
    load.settle().await;
    cluster.restart(1).await;
    cluster.wait_health("node2", "up").await;

    let logs = cluster.logs();
    let done = load.finish().await;
    let all = done.audit_all();
    assert_eq!(all.expected.values().sum::<usize>(), 2 * round);
    // A session resumed from the SIGKILLed node may get again what its client acknowledged
    // in the node's last second (the journal's floors are written every second): the
    // first round, for the subscribers that were there. Nothing else comes twice.
    let moved_first_round =
        |subscriber: &str, seq: usize| first[subscriber] == "node2" && seq < shape.count;
    let rest = done.audit(|subscriber, _, seq| !moved_first_round(subscriber, seq));
    assert_eq!(
        (all.missing.clone(), rest.duplicates(0), rest.duplicates(2)),
        (BTreeMap::new(), 0, 0),
        "{all:#?}\n{rest:#?}\nclients moved: {moved:?}\n{logs}"
    );
}

/// Subscribers on every node, a publisher on node 1: every subscriber gets every message
/// once, at QoS 0, 1 and 2 (20 each, counted per QoS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_reaches_subscribers_on_all() {
    let dir = TempDir::new();
    let cluster = Cluster::start(&dir).await;
    let shape = LoadShape {
        subscribers: 3,
        publishers: 1,
        topics: 1,
        count: 60,
        qos: &[0, 1, 2],
        persistent: false,
        processes: 1,
    };
    let nodes: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.mqtt).collect();
    let mut load = Load::start(&dir, &shape, &nodes, &nodes[..1]).await;
    load.probe().await;

    load.publish();
    load.wait_acked(60).await;
    load.wait_received(load.per_round, Duration::from_secs(5))
        .await;

    let logs = cluster.logs();
    let audit = load.finish().await.audit_all();
    assert_eq!(
        (audit.missing.clone(), audit.duplicates.clone()),
        (BTreeMap::new(), BTreeMap::new()),
        "{audit:#?}\n{logs}"
    );
    assert_eq!(audit.expected, BTreeMap::from([(0, 60), (1, 60), (2, 60)]));
}

/// What happens to the cluster once a third of a stress round is acknowledged.
enum Disruption {
    Nothing,
    /// Node 2 is SIGKILLed (and the balancer sees it down).
    KillNode2,
    /// Redis is SIGKILLed and started again on the same port and data.
    RestartRedis,
}

/// Runs one round of `shape` through the balancer with `disruption` a third of the way:
/// every client connected and probed, the round published, acknowledged and delivered (or
/// nothing arriving for 10 s). Returns what the clients did and the processes' last logs.
async fn stress(
    dir: &TempDir,
    cluster: &mut Cluster<'_>,
    shape: &LoadShape,
    disruption: Disruption,
) -> (Finished, String) {
    let total = shape.publishers * shape.count;
    let mut load = Load::start(dir, shape, &[cluster.balancer], &[cluster.balancer]).await;
    load.probe().await;

    load.publish();
    load.wait_acked(total / 3).await;
    match disruption {
        Disruption::Nothing => {}
        Disruption::KillNode2 => {
            cluster.kill(1);
            cluster.wait_health("node2", "down").await;
        }
        Disruption::RestartRedis => cluster.redis.restart(),
    }
    load.wait_acked(total).await;
    load.wait_received(load.per_round, Duration::from_secs(10))
        .await;
    let logs = cluster.logs();
    (load.finish().await, logs)
}

/// The stress load: 800 subscribers, 100 publishers, 8 topics (100 subscribers each), QoS 1
/// and 2 alternating; `count` messages per publisher are 100 × `count` deliveries per
/// topic.
const STRESS: LoadShape = LoadShape {
    subscribers: 800,
    publishers: 100,
    topics: 8,
    count: 10,
    qos: &[1, 2],
    persistent: false,
    processes: 2,
};

/// 100 publishers and 800 subscribers through the balancer, on 8 topics: QoS 1 messages
/// all arrive, QoS 2 messages arrive exactly once, at every subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_100_publishers_800_subscribers_through_the_balancer() {
    let dir = TempDir::new();
    let mut cluster = Cluster::start(&dir).await;

    let (done, logs) = stress(&dir, &mut cluster, &STRESS, Disruption::Nothing).await;

    let audit = done.audit_all();
    assert_eq!(
        (audit.missing(1), audit.missing(2), audit.duplicates(2)),
        (0, 0, 0),
        "{audit:#?}\n{logs}"
    );
}

/// The stress load on persistent sessions, QoS 1; node 2 SIGKILLed when a third of the
/// messages are acknowledged. Its clients reconnect through the balancer to the other
/// nodes and resume their sessions there: every message a publisher had PUBACKed reaches
/// every subscriber of its topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sigkilled_under_load_loses_nothing_acknowledged() {
    let dir = TempDir::new();
    let mut cluster = Cluster::start(&dir).await;
    let shape = LoadShape {
        qos: &[1],
        persistent: true,
        ..STRESS
    };

    let (done, logs) = stress(&dir, &mut cluster, &shape, Disruption::KillNode2).await;

    let lost = &done.report.sessions_lost;
    let audit = done.audit(|subscriber, _, _| !lost.iter().any(|s| s == subscriber));
    assert_eq!(audit.missing(1), 0, "{audit:#?}\n{logs}");
    assert_eq!(lost, &Vec::<String>::new(), "sessions lost with the node");
}

/// The stress load on persistent sessions while Redis is SIGKILLed and started again (same
/// port, same data): the nodes carry on without a restart, QoS 1 messages all arrive,
/// QoS 2 messages exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_resumes_without_restarting_lintas() {
    let dir = TempDir::new();
    let mut cluster = Cluster::start(&dir).await;
    let shape = LoadShape {
        persistent: true,
        ..STRESS
    };

    let (done, logs) = stress(&dir, &mut cluster, &shape, Disruption::RestartRedis).await;

    assert!(cluster.all_running(), "a process exited:\n{logs}");
    let audit = done.audit_all();
    assert_eq!(
        (audit.missing(1), audit.missing(2), audit.duplicates(2)),
        (0, 0, 0),
        "{audit:#?}\n{logs}"
    );
    assert_eq!(done.report.sessions_lost, Vec::<String>::new());
}
