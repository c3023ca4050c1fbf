//! The users' chat topology of issue 11, as processes: three `lintas` hub nodes that form
//! one cluster through a Redis of the test's own, behind a `lintas` HTTP listener
//! (round-robin, WebSocket upgrades), driven by clients written with Python's `websockets`
//! (`tests/clients/hub_clients.py`), which lintas did not write.
//!
//! - room and direct messages between clients on different nodes arrive once, in order;
//! - a SIGKILLed node's users leave presence within `presence_timeout` and a tick, and its
//!   clients reconnect through the balancer and recover exactly what they missed;
//! - Redis SIGKILLed and restarted under load: every message a publisher had acknowledged
//!   reaches every member, once, in order, without restarting lintas.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use testkit::PATIENCE;

use crate::cli::Lintas;
use crate::harness::{TempDir, unique, unused_addr};
use crate::mqtt_cluster::{Redis, wait_listening};
use crate::script::Script;

/// How soon a node's users leave presence after it dies, as configured here.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a load may take in a debug build.
const LOAD_PATIENCE: Duration = Duration::from_secs(30);

/// One hub node.
struct HubNode<'a> {
    addr: SocketAddr,
    /// `None` once killed.
    process: Option<Lintas<'a>>,
}

/// Three hub nodes on one [`Redis`] behind a balancer; every process stops when dropped.
struct Cluster<'a> {
    redis: Redis,
    nodes: Vec<HubNode<'a>>,
    /// The balancer's HTTP listener.
    balancer: SocketAddr,
    _balancer: Lintas<'a>,
}

impl<'a> Cluster<'a> {
    async fn start(dir: &'a TempDir) -> Self {
        let redis = Redis::start(dir.path().join("redis"));
        let prefix = unique("hub-cluster");
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let addr = unused_addr();
            let config = dir.write(
                &format!("hub{i}.toml"),
                &format!(
                    "data_dir = \"hub{i}-data\"\n\n\
                     [backplane]\nredis = \"{}\"\nprefix = \"{prefix}\"\n\n\
                     [hub]\nlisten = \"{addr}\"\nallow_anonymous = true\n\
                     presence_timeout = \"{}s\"\npublish_rate = 100000\nmax_queued = 100000\n",
                    redis.url(),
                    PRESENCE_TIMEOUT.as_secs()
                ),
            );
            let mut process = Lintas::spawn_named(
                dir,
                &format!("hub{i}"),
                &["run", "-c", config.to_str().unwrap()],
            );
            wait_listening(&format!("hub{i}"), &mut process, addr).await;
            nodes.push(HubNode {
                addr,
                process: Some(process),
            });
        }
        let balancer = unused_addr();
        let backends: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{{ name = \"hub{}\", address = \"{}\" }}", i + 1, n.addr))
            .collect();
        let config = dir.write(
            "balancer.toml",
            &format!(
                "data_dir = \"balancer-data\"\n\n\
                 [proxy.pools.hubs]\nstrategy = \"round_robin\"\nbackends = [{}]\n\
                 health = {{ kind = \"tcp\", interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 1 }}\n\n\
                 [[proxy.listeners]]\nname = \"chat\"\nmode = \"http\"\nlisten = \"{balancer}\"\npool = \"hubs\"\n\
                 connect_timeout = \"500ms\"\nretries = 2\n",
                backends.join(", ")
            ),
        );
        let mut process =
            Lintas::spawn_named(dir, "balancer", &["run", "-c", config.to_str().unwrap()]);
        wait_listening("the balancer", &mut process, balancer).await;
        Self {
            redis,
            nodes,
            balancer,
            _balancer: process,
        }
    }

    /// `ws://` URL of node `i`.
    fn node_url(&self, i: usize) -> String {
        format!("ws://{}/ws", self.nodes[i].addr)
    }

    /// `ws://` URL of the balancer.
    fn balancer_url(&self) -> String {
        format!("ws://{}/ws", self.balancer)
    }

    /// SIGKILLs node `i`.
    fn kill(&mut self, i: usize) {
        self.nodes[i].process = None;
    }
}

/// One client of the plan.
fn client(id: &str, urls: &[String], rooms: &[&str]) -> Value {
    json!({"id": id, "name": id, "urls": urls, "rooms": rooms})
}

/// The clients' script, and the events read but not waited for yet.
struct Clients(Script, Vec<Value>);

/// What one client did.
#[derive(Debug, Deserialize)]
struct Did {
    node: String,
    messages: BTreeMap<String, Vec<(u64, Value)>>,
    directs: Vec<Value>,
    recovered: BTreeMap<String, Vec<bool>>,
    refused: usize,
    /// Seconds the slowest of its publishes took to be acknowledged.
    slowest: f64,
}

impl Clients {
    async fn start(dir: &TempDir, name: &str, clients: Vec<Value>) -> Self {
        let script = Script::start(dir, name, "hub_clients.py", &json!({ "clients": clients }));
        let mut clients = Self(script, Vec::new());
        clients
            .wait("every client joined", |e| e["event"] == "ready")
            .await;
        clients
    }

    /// The first event, in the order they came, that `want` matches.
    async fn wait(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.1.iter().position(&want) {
            return self.1.remove(i);
        }
        let deadline = tokio::time::Instant::now() + LOAD_PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.0.next_event(left).await {
                Some(e) if e["event"] == "error" => panic!("{}: {e}", self.0.name),
                Some(e) if want(&e) => return e,
                Some(e) => self.1.push(e),
                None => panic!(
                    "{}: no {what} within {LOAD_PATIENCE:?}; its stderr:\n{}",
                    self.0.name,
                    self.0.stderr()
                ),
            }
        }
    }

    fn command(&mut self, command: Value) {
        self.0.command(&command.to_string());
    }

    async fn report(&mut self) -> BTreeMap<String, Did> {
        self.command(json!({"cmd": "report"}));
        let report = self.wait("the report", |e| e["event"] == "report").await;
        self.1.retain(|e| e["event"] != "report");
        serde_json::from_value(report["clients"].clone()).expect("a report")
    }
}

/// The data each publisher's messages carry, in its order: `[tag, seq]` pairs.
fn seqs(messages: &[(u64, Value)], tag: &str) -> Vec<u64> {
    messages
        .iter()
        .filter(|(_, d)| d["tag"] == tag)
        .map(|(_, d)| d["seq"].as_u64().expect("seq"))
        .collect()
}

/// Asserts `messages` hold offsets `range` each once in order (naming the first that is
/// not, rather than printing thousands).
fn gapless(who: &str, messages: &[(u64, Value)], range: std::ops::Range<u64>) {
    let offsets: Vec<u64> = messages.iter().map(|(o, _)| *o).collect();
    let want: Vec<u64> = range.collect();
    if let Some(i) = (0..offsets.len().max(want.len())).find(|&i| offsets.get(i) != want.get(i)) {
        let around = |v: &[u64]| v[i.saturating_sub(3).min(v.len())..(i + 3).min(v.len())].to_vec();
        panic!(
            "{who}: {} offsets where {} were due; at index {i} got {:?}, due {:?}",
            offsets.len(),
            want.len(),
            around(&offsets),
            around(&want)
        );
    }
}

#[tokio::test]
async fn messages_between_nodes_arrive_once_in_order_through_the_balancer() {
    let dir = TempDir::new();
    let cluster = Cluster::start(&dir).await;
    let url = vec![cluster.balancer_url()];
    let plan: Vec<Value> = (0..30)
        .map(|i| client(&format!("c{i}"), &url, &["lobby"]))
        .collect();
    let mut clients = Clients::start(&dir, "spread", plan).await;
    for p in 0..3 {
        let publish = json!({"cmd": "publish", "client": format!("c{p}"), "room": "lobby", "count": 50, "tag": format!("p{p}")});
        clients.command(publish);
    }
    for p in 0..3 {
        let tag = format!("p{p}");
        clients
            .wait("a publisher's 50 messages", |e| {
                e["event"] == "published" && e["tag"] == tag
            })
            .await;
    }
    clients.command(json!({"cmd": "send", "client": "c0", "to": "~c29", "data": "to c29"}));
    clients.command(json!({"cmd": "send", "client": "c29", "to": "~c1", "data": "to c1"}));
    let deadline = tokio::time::Instant::now() + LOAD_PATIENCE;
    let report = loop {
        let report = clients.report().await;
        let done = report.values().all(|d| d.messages["lobby"].len() >= 150)
            && !report["c29"].directs.is_empty()
            && !report["c1"].directs.is_empty();
        if done || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let nodes: std::collections::BTreeSet<&str> =
        report.values().map(|d| d.node.as_str()).collect();
    assert_eq!(
        nodes.len(),
        3,
        "the balancer spread the clients over the three nodes"
    );
    let first = &report["c0"].messages["lobby"];
    for (id, did) in &report {
        let got = &did.messages["lobby"];
        gapless(id, got, 0..150);
        assert_eq!(got, first, "{id} got what c0 got, in the same order");
        for p in 0..3 {
            assert_eq!(
                seqs(got, &format!("p{p}")),
                (0..50).collect::<Vec<_>>(),
                "{id}: p{p}'s order"
            );
        }
        assert_eq!(did.refused, 0);
    }
    assert_eq!(report["c29"].directs, [json!("to c29")]);
    assert_eq!(report["c1"].directs, [json!("to c1")]);
    let others: usize = report
        .iter()
        .filter(|(id, _)| *id != "c29" && *id != "c1")
        .map(|(_, d)| d.directs.len())
        .sum();
    assert_eq!(others, 0, "a direct message reaches its user only");
}

#[tokio::test]
async fn a_killed_nodes_users_leave_presence_and_its_clients_recover_elsewhere() {
    let dir = TempDir::new();
    let mut cluster = Cluster::start(&dir).await;
    let (n1, n2, n3) = (
        cluster.node_url(0),
        cluster.node_url(1),
        cluster.node_url(2),
    );
    let plan = vec![
        client("watcher", std::slice::from_ref(&n1), &["lobby"]),
        client("publisher", std::slice::from_ref(&n1), &["lobby"]),
        // On node 2; when it dies, on node 3 through its second address.
        client("victim", &[n2.clone(), n3], &["lobby"]),
        // On node 2 only: it stays away, so it leaves presence.
        client("gone", &[n2], &["lobby"]),
    ];
    let mut clients = Clients::start(&dir, "kill", plan).await;
    clients.command(json!({"cmd": "publish", "client": "publisher", "room": "lobby", "count": 5, "tag": "before"}));
    clients
        .wait("the first 5", |e| e["event"] == "published")
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while clients.report().await["victim"].messages["lobby"].len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim never got the first 5"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The watcher's node must know the gone client before it can see it leave.
    clients
        .wait("the watcher knowing the gone client", |e| {
            e["event"] == "presence"
                && e["client"] == "watcher"
                && e["user"] == "~gone"
                && (e["type"] == "user_joined" || e["type"] == "listed")
        })
        .await;
    cluster.kill(1);
    let killed = std::time::Instant::now();
    clients.command(json!({"cmd": "publish", "client": "publisher", "room": "lobby", "count": 20, "tag": "while"}));
    let left = clients
        .wait("the gone client leaving presence", |e| {
            e["event"] == "presence"
                && e["client"] == "watcher"
                && e["type"] == "user_left"
                && e["user"] == "~gone"
        })
        .await;
    let took = killed.elapsed();
    let bound = PRESENCE_TIMEOUT + PRESENCE_TIMEOUT / 4 + Duration::from_secs(2);
    assert!(
        took <= bound,
        "the dead node's user left presence after {took:?}, beyond {bound:?}: {left}"
    );
    clients
        .wait("the victim back", |e| {
            e["event"] == "reconnected" && e["client"] == "victim"
        })
        .await;
    clients
        .wait("the 20 while it was away", |e| {
            e["event"] == "published" && e["tag"] == "while"
        })
        .await;
    let deadline = tokio::time::Instant::now() + LOAD_PATIENCE;
    let report = loop {
        let report = clients.report().await;
        let have = report["victim"].messages["lobby"].len();
        if have >= 25 || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let victim = &report["victim"];
    gapless("victim", &victim.messages["lobby"], 0..25);
    // The publisher's sequence goes on from its first five.
    assert_eq!(
        seqs(&victim.messages["lobby"], "while"),
        (5..25).collect::<Vec<_>>()
    );
    assert_eq!(
        victim.recovered["lobby"],
        [true],
        "recovered on node 3: {victim:?}"
    );
    gapless("watcher", &report["watcher"].messages["lobby"], 0..25);
}

#[tokio::test]
async fn redis_restarted_under_load_loses_no_acknowledged_message() {
    let dir = TempDir::new();
    let mut cluster = Cluster::start(&dir).await;
    let urls: Vec<String> = (0..3).map(|i| cluster.node_url(i)).collect();
    let mut plan: Vec<Value> = (0..12)
        .map(|i| client(&format!("m{i}"), &[urls[i % 3].clone()], &["busy"]))
        .collect();
    for (p, url) in urls.iter().enumerate() {
        plan.push(client(
            &format!("p{p}"),
            std::slice::from_ref(url),
            &["busy"],
        ));
    }
    let mut clients = Clients::start(&dir, "redis", plan).await;
    for p in 0..3 {
        clients.command(json!({"cmd": "publish", "client": format!("p{p}"), "room": "busy", "count": 1000, "tag": format!("p{p}")}));
    }
    // Restart Redis once the load is under way.
    let deadline = tokio::time::Instant::now() + LOAD_PATIENCE;
    while clients.report().await["m0"].messages["busy"].len() < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.redis.restart();
    for p in 0..3 {
        let tag = format!("p{p}");
        clients
            .wait("a publisher's 1000 acknowledged", |e| {
                e["event"] == "published" && e["tag"] == tag
            })
            .await;
    }
    let deadline = tokio::time::Instant::now() + LOAD_PATIENCE;
    let report = loop {
        let report = clients.report().await;
        if report.values().all(|d| d.messages["busy"].len() >= 3000)
            || tokio::time::Instant::now() > deadline
        {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A publish that met the restart waited for Redis (the hub tries its append again every
    // 100 ms, under the same idempotency key) and was acknowledged once it was stored.
    let slowest = report.values().map(|d| d.slowest).fold(0.0, f64::max);
    assert!(
        slowest >= 0.1,
        "no publish met the restart (slowest {slowest} s): the test restarted Redis too late"
    );
    assert_eq!(report.values().map(|d| d.refused).sum::<usize>(), 0);
    for (id, did) in &report {
        gapless(id, &did.messages["busy"], 0..3000);
        for p in 0..3 {
            assert_eq!(
                seqs(&did.messages["busy"], &format!("p{p}")),
                (0..1000).collect::<Vec<_>>(),
                "{id}: p{p}"
            );
        }
    }
}
