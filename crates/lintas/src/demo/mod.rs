//! `lintas demo`: the load balancer in front of three demo backends, the relay
//! delivering one application's records to two SQLite databases, an MQTT broker and the
//! hub with its chat page — nothing else needed (with a Redis, MQTT and the hub run as
//! clusters, see `cluster`).
//!
//! The demo builds an ordinary configuration and runs it through the same validation and
//! wiring as `lintas run`, so what it shows is what a user's file gets. Ports 8080 (HTTP),
//! 8081 (TCP), 8088 (relay), 1883 (MQTT), 8090 (chat) and 9000 (admin) are used when free,
//! any free port otherwise (1883 is often Mosquitto's).
//! The relay's data and the two databases live in a temporary directory removed at exit.
//! Watch follows the backends and prints its alerts on the console.

pub mod backend;
mod cluster;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::run::{Node, drain, wait_for_signals};

/// Names of the demo backends.
const BACKENDS: [&str; 3] = ["app1", "app2", "app3"];

/// Names of the demo's job workers: backends that run one `/work` job at a time.
const WORKERS: [&str; 3] = ["worker1", "worker2", "worker3"];

/// Runs the demo on `workers` until Ctrl-C.
pub async fn run(workers: net::Workers) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut backend_addrs = Vec::new();
    for name in BACKENDS {
        let addr = backend::bind_and_serve(
            name,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            None,
            shutdown.clone(),
        )
        .await?;
        backend_addrs.push(addr);
    }
    let mut worker_addrs = Vec::new();
    for name in WORKERS {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        worker_addrs.push(backend::bind_and_serve(name, any, Some(1), shutdown.clone()).await?);
    }
    let password: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    let data = std::env::temp_dir().join(format!("lintas-demo-{}", std::process::id()));
    let dbs = create_databases(&data).await?;
    let key = relay::keys::generate();
    let mqtt = cluster::Layout::choose(&data).await;
    // Top-level keys come before the first table.
    let text = format!(
        "data_dir = \"{}\"\n\n{}{}",
        data.display(),
        demo_config(
            &backend_addrs,
            &worker_addrs,
            &admin::Auth::hash_password(&password)
        ),
        relay_config(&dbs, &key)
    ) + &mqtt.main_config()
        + WATCH_CONFIG
        + &telegram_config();
    let loaded = config::parse(Path::new("<demo>"), text)?;
    let brokers = mqtt
        .start_nodes(&data, &tracker, &shutdown, &workers)
        .await?;
    let node = Node::start(loaded, tracker.clone(), shutdown.clone(), workers).await?;
    let http = node.proxy.local_addr("demo-http").await;
    let tcp = node.proxy.local_addr("demo-tcp").await;
    let mqtt_addr = match node.mqtt.as_ref() {
        Some(broker) => Some(broker.local_addr()),
        None => node.proxy.local_addr("demo-mqtt").await,
    };
    let chat = match node.hub.as_ref() {
        Some(hub) => Some(hub.local_addr()),
        None => node.proxy.local_addr("demo-chat").await,
    };
    let (Some(http), Some(tcp), Some(admin), Some(relay), Some(mqtt_addr), Some(chat)) = (
        http,
        tcp,
        node.admin_addr,
        node.relay.as_ref(),
        mqtt_addr,
        chat,
    ) else {
        anyhow::bail!("the demo listeners did not start");
    };
    print_banner(http, tcp, admin, &backend_addrs, &password);
    print_relay_banner(relay.local_addr(), admin, &password, &key, &dbs);
    mqtt.print_banner(mqtt_addr, admin, &password);
    mqtt.print_hub_banner(chat, admin, &password);
    print_watch_banner(admin);
    wait_for_signals(&node, &shutdown).await?;
    drop(brokers);
    drain(tracker).await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// Watch over the demo backends (and the relay's destinations), alerts on the console.
const WATCH_CONFIG: &str = r#"
[watch]
repeat = "10s"
console = true
"#;

/// The variable that, when set, also sends the demo's alerts to a real Telegram bot.
const TELEGRAM_TOKEN_ENV: &str = "LINTAS_TELEGRAM_TOKEN";

/// `[watch.telegram]` when [`TELEGRAM_TOKEN_ENV`] is set. With an admin chat id in
/// `LINTAS_TELEGRAM_ADMIN` registrations wait for that admin; without one nobody could
/// approve them, so the demo (a bot only its owner knows of) lets registrations in.
fn telegram_config() -> String {
    match std::env::var(TELEGRAM_TOKEN_ENV) {
        Ok(t) if !t.is_empty() => {
            let access = match std::env::var("LINTAS_TELEGRAM_ADMIN") {
                Ok(admin) if !admin.is_empty() => format!("admins = [{admin}]"),
                _ => "registration = \"open\"".to_owned(),
            };
            format!("\n[watch.telegram]\ntoken_env = \"{TELEGRAM_TOKEN_ENV}\"\n{access}\n")
        }
        _ => String::new(),
    }
}

fn print_watch_banner(admin: SocketAddr) {
    let telegram = if telegram_config().is_empty() {
        format!(
            "Set {TELEGRAM_TOKEN_ENV} to a bot token from @BotFather to get them on Telegram too."
        )
    } else {
        "They also go to your Telegram bot: send it /start to register.".to_owned()
    };
    println!(
        r#"Watch: alerts about the backends print here (DOWN, STILL DOWN every 10 s, UP).
{telegram}
  console       http://{admin}/console#/watch/host  (host graphs, busiest processes)
                http://{admin}/console#/watch/alerts (alert log, silences)
"#
    );
}

/// The users' example: db1 keeps items' name and price, db2 their name, category and type.
async fn create_databases(dir: &Path) -> anyhow::Result<[PathBuf; 2]> {
    std::fs::create_dir_all(dir)?;
    let ddl = [
        "CREATE TABLE items (name TEXT NOT NULL, price NUMERIC)",
        "CREATE TABLE items (name TEXT PRIMARY KEY, category TEXT, type TEXT)",
    ];
    let mut paths = [dir.join("db1.sqlite"), dir.join("db2.sqlite")];
    for (path, ddl) in paths.iter_mut().zip(ddl) {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&*path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await?;
        sqlx::raw_sql(&format!("DROP TABLE IF EXISTS items; {ddl}"))
            .execute(&pool)
            .await?;
        pool.close().await;
    }
    Ok(paths)
}

fn relay_config(dbs: &[PathBuf; 2], key: &str) -> String {
    format!(
        r#"
[relay]
listen = "127.0.0.1:{relay}"

[[relay.applications]]
name = "shop"
key_sha256 = "{hash}"

[[relay.destinations]]
name = "db1"
kind = "sqlite"
url = "sqlite://{db1}"

[[relay.destinations]]
name = "db2"
kind = "sqlite"
url = "sqlite://{db2}"

[[relay.routes]]
application = "shop"
destination = "db1"
table = "items"
operation = "insert"
columns = {{ name = "name", price = "price" }}

[[relay.routes]]
application = "shop"
destination = "db2"
table = "items"
operation = "upsert"
columns = {{ name = "name", category = "category", type = "type" }}
keys = ["name"]
"#,
        relay = port_or_any(8088),
        hash = relay::keys::to_hex(&relay::keys::hash(key)),
        db1 = dbs[0].display(),
        db2 = dbs[1].display(),
    )
}

fn print_relay_banner(
    relay: SocketAddr,
    admin: SocketAddr,
    password: &str,
    key: &str,
    dbs: &[PathBuf; 2],
) {
    println!(
        r#"Relay: application `shop` (API key {key}, shown only now) delivers to two SQLite
databases — db1 keeps name and price, db2 name, category and type (upsert by name).

  # ingest a record (202 once it is on disk); fields no route uses are dropped
  curl -s -X POST http://{relay}/v1/records -H 'Authorization: Bearer {key}' -H 'content-type: application/json' \
       -d '{{"name":"Oolong","price":12.5,"category":"tea","sub_category":"blue","type":"leaf"}}'

  # see it in both
  sqlite3 {db1} 'SELECT * FROM items'
  sqlite3 {db2} 'SELECT * FROM items'

  # or ask lintas: what was sent and what each database got
  curl -s -u admin:{password} http://{admin}/api/relay/records/0
  curl -s -u admin:{password} http://{admin}/api/relay
"#,
        db1 = dbs[0].display(),
        db2 = dbs[1].display(),
    );
}

/// `preferred` when it can be bound now, else 0 (any free port).
fn port_or_any(preferred: u16) -> u16 {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, preferred)) {
        Ok(_) => preferred,
        Err(_) => 0,
    }
}

fn demo_config(backends: &[SocketAddr], workers: &[SocketAddr], password_hash: &str) -> String {
    let list: Vec<String> = BACKENDS
        .iter()
        .zip(backends)
        .map(|(n, a)| format!("  {{ name = \"{n}\", address = \"{a}\" }},"))
        .collect();
    let workers: Vec<String> = WORKERS
        .iter()
        .zip(workers)
        .map(|(n, a)| format!("  {{ name = \"{n}\", address = \"{a}\", max_connections = 1 }},"))
        .collect();
    let http = port_or_any(8080);
    format!(
        r#"[admin]
listen = "127.0.0.1:{admin}"
user = "admin"
password_hash = "{password_hash}"

[proxy.pools.demo]
strategy = "least_connections"
backends = [
{list}
]
health = {{ kind = "http", path = "/health", interval = "1s", timeout = "500ms", rise = 2, fall = 2 }}
passive = {{ failures = 3, cooldown = "5s" }}

# Workers that run one job at a time: a request finding all three busy waits in the
# pool's queue for the first that frees.
[proxy.pools.jobs]
strategy = "least_connections"
backends = [
{workers}
]
queue_timeout = "60s"

[[proxy.listeners]]
name = "demo-http"
mode = "http"
listen = "127.0.0.1:{http}"
pool = "demo"

[[proxy.listeners.routes]]
name = "jobs"
path_prefix = "/jobs/"
strip_prefix = true
request_id = true
pool = "jobs"

[[proxy.listeners.routes]]
name = "www"
host = "www.localhost"
redirect = "http://localhost:{http}{{uri}}"
redirect_status = 301

[[proxy.listeners]]
name = "demo-tcp"
mode = "tcp"
listen = "127.0.0.1:{tcp}"
pool = "demo"
"#,
        admin = port_or_any(9000),
        tcp = port_or_any(8081),
        list = list.join("\n"),
        workers = workers.join("\n"),
    )
}

fn print_banner(
    http: SocketAddr,
    tcp: SocketAddr,
    admin: SocketAddr,
    backends: &[SocketAddr],
    password: &str,
) {
    let b2 = backends[1];
    println!(
        r#"
lintas demo is running. Ctrl-C stops it.

  backends      app1 {b1}  app2 {b2}  app3 {b3}
  HTTP balancer http://{http}/        (least_connections)
                routes: /jobs/ → worker1-3 (one job at a time each, one queue),
                Host www.localhost → a 301
  TCP balancer  {tcp}                 (same pool, layer 4)
  console       http://{admin}/console  user admin, password {password}
                (the password is shown only now; pools, relay, watch in one place)
  stats page    http://{admin}/stats

Try:
  # each request goes to the least busy backend; idle ones take turns
  for i in 1 2 3 4 5 6; do curl -s http://{http}/; done

  # a long job keeps one backend busy; short jobs go to the others meanwhile
  curl -s 'http://{http}/work?ms=5000' & sleep 0.2; for i in 1 2 3 4; do curl -s http://{http}/work?ms=100; done; wait

  # routes: /jobs/ goes to three workers that run one job at a time (max_connections = 1);
  # six 3-second jobs: three run, three wait in the pool's queue (stats page: queue) and
  # each takes the first worker that frees; every answer carries its X-Request-Id
  for i in 1 2 3 4 5 6; do curl -s -D- -o/dev/null http://{http}/jobs/work?ms=3000 | grep -i 'x-backend\|x-request-id' & done; wait
  # a host route that redirects
  curl -si -H 'Host: www.localhost' http://{http}/some/page?x=1 | head -3

  # the same pool through the TCP balancer
  curl -s http://{tcp}/

  # kill app2 for 15 s: health checks take it out (DOWN on the stats page), traffic fails
  # over, and watch prints the alert here — a reminder every 10 s while it is down, then UP
  curl -s -X POST 'http://{b2}/kill?for=15s'
  for i in 1 2 3 4; do curl -s http://{http}/; done

  # drain, weight and strategy through the runtime API
  curl -s -u admin:{password} -X POST http://{admin}/api/pools/demo/backends/app1/drain
  curl -s -u admin:{password} -X POST http://{admin}/api/pools/demo/backends/app1/enable
  curl -s -u admin:{password} -X PUT -d '{{"strategy":"round_robin"}}' -H 'content-type: application/json' http://{admin}/api/pools/demo/strategy
  curl -s -u admin:{password} http://{admin}/api/stats
  curl -s -u admin:{password} http://{admin}/metrics
"#,
        b1 = backends[0],
        b3 = backends[2],
    );
}
