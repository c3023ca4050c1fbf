//! The demo's clustered services, the users' topologies, when a Redis answers at
//! `LINTAS_DEMO_REDIS` (default `redis://127.0.0.1:6379`):
//!
//! - MQTT: three broker nodes forming one cluster behind a lintas TCP listener
//!   (round-robin, TCP health checks, on the stats page);
//! - the hub: two of those nodes also run a hub, behind a lintas HTTP listener (round-robin)
//!   that serves the chat page, so two browser tabs can land on different nodes.
//!
//! Without Redis, one broker and one hub run in the main node (a cluster needs the Redis its
//! nodes share).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backplane::BackplaneConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::port_or_any;
use crate::config;
use crate::run::Node;

/// Where the demo looks for Redis.
const REDIS_ENV: &str = "LINTAS_DEMO_REDIS";

/// How the demo's MQTT and hub are laid out.
pub enum Layout {
    /// Three nodes on Redis at `redis`, under `prefix`: brokers on `nodes`, the first two
    /// with a hub on `hubs`.
    Cluster {
        redis: String,
        prefix: String,
        nodes: [u16; 3],
        hubs: [u16; 2],
    },
    /// One broker, because no Redis answered at `tried`.
    Alone { tried: String },
}

impl Layout {
    /// A cluster when Redis answers within 2 s.
    pub async fn choose(scratch: &Path) -> Self {
        let redis = std::env::var(REDIS_ENV).unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("lintas-demo-{}", std::process::id());
        let cfg = backplane_config(&redis, &prefix);
        let probe =
            tokio::time::timeout(Duration::from_secs(2), backplane::open(Some(&cfg), scratch));
        match probe.await {
            Ok(Ok(_)) => Self::Cluster {
                redis,
                prefix,
                nodes: [port_or_any(11883), port_or_any(11884), port_or_any(11885)]
                    .map(|p| if p == 0 { free_port() } else { p }),
                hubs: [port_or_any(18091), port_or_any(18092)]
                    .map(|p| if p == 0 { free_port() } else { p }),
            },
            _ => Self::Alone { tried: redis },
        }
    }

    /// What the main node's file gets: the balancers in front of the nodes, or the one
    /// broker and the one hub.
    pub fn main_config(&self) -> String {
        match self {
            Self::Alone { .. } => format!(
                "\n[mqtt]\nlisten = \"127.0.0.1:{}\"\nallow_anonymous = true\n\n\
                 [hub]\nlisten = \"127.0.0.1:{}\"\nallow_anonymous = true\n",
                port_or_any(1883),
                port_or_any(8090)
            ),
            Self::Cluster { nodes, hubs, .. } => format!(
                r#"
[proxy.pools.brokers]
strategy = "round_robin"
backends = [
  {{ name = "mqtt1", address = "127.0.0.1:{}" }},
  {{ name = "mqtt2", address = "127.0.0.1:{}" }},
  {{ name = "mqtt3", address = "127.0.0.1:{}" }},
]
health = {{ kind = "tcp", interval = "1s", timeout = "500ms", rise = 2, fall = 2 }}

[[proxy.listeners]]
name = "demo-mqtt"
mode = "tcp"
listen = "127.0.0.1:{}"
pool = "brokers"
idle_timeout = "5m"

[proxy.pools.hubs]
strategy = "round_robin"
backends = [
  {{ name = "hub1", address = "127.0.0.1:{}" }},
  {{ name = "hub2", address = "127.0.0.1:{}" }},
]
health = {{ kind = "tcp", interval = "1s", timeout = "500ms", rise = 2, fall = 2 }}

[[proxy.listeners]]
name = "demo-chat"
mode = "http"
listen = "127.0.0.1:{}"
pool = "hubs"
idle_timeout = "5m"
"#,
                nodes[0],
                nodes[1],
                nodes[2],
                port_or_any(1883),
                hubs[0],
                hubs[1],
                port_or_any(8090)
            ),
        }
    }

    /// Starts the three nodes (nothing when alone), each with its data under `data`.
    pub async fn start_nodes(
        &self,
        data: &Path,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        workers: &net::Workers,
    ) -> anyhow::Result<Vec<Arc<Node>>> {
        let Self::Cluster {
            redis,
            prefix,
            nodes,
            hubs,
        } = self
        else {
            return Ok(Vec::new());
        };
        let mut started = Vec::new();
        for (i, port) in nodes.iter().enumerate() {
            let text = format!(
                r#"data_dir = "{dir}"

[backplane]
redis = "{redis}"
prefix = "{prefix}"
lease = "3s"

[mqtt]
listen = "127.0.0.1:{port}"
allow_anonymous = true
{hub}"#,
                dir = data.join(format!("mqtt{}", i + 1)).display(),
                hub = hubs.get(i).map_or_else(String::new, |p| format!(
                    "\n[hub]\nlisten = \"127.0.0.1:{p}\"\nallow_anonymous = true\n"
                )),
            );
            let loaded = config::parse(Path::new(&format!("<demo mqtt{}>", i + 1)), text)?;
            started.push(
                Node::start(loaded, tracker.clone(), shutdown.clone(), workers.clone()).await?,
            );
        }
        Ok(started)
    }

    /// Prints how to try MQTT; `balancer` is the demo-mqtt listener or the lone broker.
    pub fn print_banner(&self, balancer: SocketAddr, admin: SocketAddr, password: &str) {
        let port = balancer.port();
        match self {
            Self::Alone { tried } => println!(
                r#"MQTT: a broker for MQTT 3.1.1 and 5.0 clients on {balancer}.
  (With a Redis at {tried} — or {REDIS_ENV} — the demo runs three broker nodes as one
  cluster behind a TCP balancer instead; examples/mqtt-cluster shows the same by hand.)

  mosquitto_sub -h 127.0.0.1 -p {port} -t 'demo/#' -v &
  mosquitto_pub -h 127.0.0.1 -p {port} -t demo/hello -m 'hi' -q 1
  curl -s -u admin:{password} http://{admin}/api/mqtt/clients
"#
            ),
            Self::Cluster { redis, nodes, .. } => {
                let [a, b, c] = nodes;
                println!(
                    r#"MQTT: three broker nodes ({a}, {b}, {c}) forming one cluster on {redis},
behind a TCP balancer on {balancer} (round-robin, TCP health checks, pool "brokers" on the
stats page). Publish on one node, receive on all:

  mosquitto_sub -h 127.0.0.1 -p {a} -t 'demo/#' -v &
  mosquitto_sub -h 127.0.0.1 -p {b} -t 'demo/#' -v &
  mosquitto_pub -h 127.0.0.1 -p {c} -t demo/hello -m 'from node 3' -q 1
  mosquitto_sub -h 127.0.0.1 -p {port} -t 'demo/#' -v -i me -c &   # through the balancer
  mosquitto_pub -h 127.0.0.1 -p {port} -t demo/lb -m 'via the balancer' -q 1
"#
                );
            }
        }
    }

    /// Prints how to try the hub; `chat` is the demo-chat listener or the lone hub.
    pub fn print_hub_banner(&self, chat: SocketAddr, admin: SocketAddr, password: &str) {
        let nodes = match self {
            Self::Alone { tried } => format!(
                "one hub node (with a Redis at {tried} the demo runs two, behind an HTTP balancer)"
            ),
            Self::Cluster { hubs, redis, .. } => format!(
                "two hub nodes ({}, {}) linked through {redis}, behind an HTTP balancer\n  \
                 (round-robin: open two tabs; each says which node it is on)",
                hubs[0], hubs[1]
            ),
        };
        println!(
            r#"Hub (WebSocket rooms, direct messages, presence, history): {nodes}.

  chat page     http://{chat}/chat
  WebSocket     ws://{chat}/ws   (protocol: docs/hub-protocol.md)
  rooms         curl -s -u admin:{password} http://{admin}/api/hub/rooms
"#
        );
    }
}

fn backplane_config(redis: &str, prefix: &str) -> BackplaneConfig {
    BackplaneConfig {
        redis: redis.to_owned(),
        password_env: None,
        tls_ca_file: None,
        prefix: prefix.to_owned(),
        lease: Duration::from_secs(3),
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}
