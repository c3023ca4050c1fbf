//! The relay in the real binary: killed with SIGKILL in the middle of ingest and delivery,
//! restarted, and every acknowledged record is in every destination exactly once; two nodes
//! on Redis behind the proxy, the delivering one killed, the other takes over.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::Method;
use testkit::scratch::{Scratch, Server};
use testkit::{HttpClient, PATIENCE, wait_until};

use crate::cli::Lintas;
use crate::harness::{TempDir, TestNode, unique, unused_addr};

const KEY: &str = "sigkill-test-key";

fn config(listen: std::net::SocketAddr, pg: &str, my: &str) -> String {
    let hash = relay::keys::to_hex(&relay::keys::hash(KEY));
    let mut text = format!(
        "data_dir = \"data\"\n\n[relay]\nlisten = \"{listen}\"\nretry_min = \"50ms\"\nretry_max = \"500ms\"\nbatch_records = 50\n\n\
         [[relay.applications]]\nname = \"app\"\nkey_sha256 = \"{hash}\"\n\n"
    );
    for (name, kind, url) in [("pg", "postgres", pg), ("my", "mysql", my)] {
        text.push_str(&format!(
            "[[relay.destinations]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n\n\
             [[relay.routes]]\napplication = \"app\"\ndestination = \"{name}\"\ntable = \"events\"\noperation = \"insert\"\ncolumns = {{ seq = \"seq\" }}\n\n"
        ));
    }
    text
}

/// Every `seq` in `events`, and how many rows there are.
async fn seqs(db: &Scratch) -> (usize, BTreeSet<u64>) {
    let text = if db.url.starts_with("postgres") {
        "seq::text"
    } else {
        "CAST(seq AS CHAR)"
    };
    let rows = db
        .rows(&format!("SELECT {text} FROM events"))
        .await
        .unwrap_or_default();
    let set = rows
        .iter()
        .filter_map(|r| r[0].as_deref().and_then(|s| s.parse().ok()))
        .collect();
    (rows.len(), set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_acknowledged_before_a_sigkill_are_delivered_exactly_once() {
    let dir = TempDir::new();
    let pg = Scratch::create(Server::Postgres).await.unwrap();
    let my = Scratch::create(Server::Mysql).await.unwrap();
    let ddl = "CREATE TABLE events (seq bigint NOT NULL)";
    pg.exec(ddl).await.unwrap();
    my.exec(ddl).await.unwrap();
    let listen = unused_addr();
    let path = dir.write("lintas.toml", &config(listen, &pg.url, &my.url));
    let path = path.to_str().unwrap();
    let url = format!("http://{listen}/v1/records");
    let client = HttpClient::new();
    let auth = format!("Bearer {KEY}");

    let first = Lintas::spawn(&dir, &["run", "-c", path]);
    wait_until("lintas to accept records", PATIENCE, || async {
        client
            .send(Method::POST, &url, &[("authorization", &auth)], "[]")
            .await
            .is_ok_and(|r| r.status == 400)
    })
    .await;

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<u64> = (0..10).map(|i| p * 1_000_000 + n + i).collect();
                    n += 10;
                    let body = format!(
                        "[{}]",
                        batch
                            .iter()
                            .map(|s| format!("{{\"seq\":{s}}}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    match client
                        .send(Method::POST, &url, &[("authorization", &auth)], body)
                        .await
                    {
                        Ok(r) if r.status == 202 => acked.lock().unwrap().extend(batch),
                        _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    wait_until("2000 records acknowledged", PATIENCE, || async {
        acked.lock().unwrap().len() >= 2000
    })
    .await;
    // Kill while records are being ingested and delivered.
    drop(first);
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let second = Lintas::spawn(&dir, &["run", "-c", path]);
    for db in [&pg, &my] {
        wait_until("every acknowledged record delivered", PATIENCE, || async {
            seqs(db).await.1.is_superset(&acked)
        })
        .await;
    }
    // Give delivery a moment beyond the acknowledged ones (records stored but not
    // acknowledged before the kill may arrive too), then check for duplicates.
    wait_until("delivery to settle", PATIENCE, || async {
        let (pg_rows, pg_set) = seqs(&pg).await;
        let (my_rows, my_set) = seqs(&my).await;
        pg_set == my_set && pg_rows == my_rows
    })
    .await;
    for db in [&pg, &my] {
        let (rows, set) = seqs(db).await;
        assert_eq!(
            rows,
            set.len(),
            "no record written twice; lintas said:\n{}",
            second.read("stderr")
        );
        assert!(set.is_superset(&acked));
    }
}

/// `[relay]` + `[backplane]` of one cluster node.
fn cluster_config(listen: std::net::SocketAddr, prefix: &str, pg: &str) -> String {
    let hash = relay::keys::to_hex(&relay::keys::hash(KEY));
    format!(
        "data_dir = \"data-{port}\"\n\n[backplane]\nredis = \"redis://127.0.0.1:6379\"\nprefix = \"{prefix}\"\nlease = \"1s\"\n\n\
         [relay]\nlisten = \"{listen}\"\nretry_min = \"50ms\"\nretry_max = \"500ms\"\nheartbeat = \"200ms\"\n\n\
         [[relay.applications]]\nname = \"app\"\nkey_sha256 = \"{hash}\"\n\n\
         [[relay.destinations]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"{pg}\"\n\n\
         [[relay.routes]]\napplication = \"app\"\ndestination = \"pg\"\ntable = \"events\"\noperation = \"insert\"\ncolumns = {{ seq = \"seq\" }}\n",
        port = listen.port()
    )
}

/// Pending entries of the destination's consumer group, by consumer.
async fn pending(redis: &mut redis::aio::MultiplexedConnection, prefix: &str) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(format!("{prefix}:{{relay}}:stream"))
        .arg("pg")
        .query_async(redis)
        .await
        .unwrap_or(redis::Value::Nil);
    match summary {
        redis::Value::Array(v) => match v.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_the_other_node_delivers_what_a_killed_node_had_pending() {
    let dir = TempDir::new();
    let pg = Scratch::create(Server::Postgres).await.unwrap();
    pg.exec("CREATE TABLE events (seq bigint NOT NULL)")
        .await
        .unwrap();
    let prefix = unique("lintas-it");
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let listens = [unused_addr(), unused_addr()];
    let mut nodes = Vec::new();
    for (i, listen) in listens.iter().enumerate() {
        let path = dir.write(
            &format!("node{i}.toml"),
            &cluster_config(*listen, &prefix, &pg.url),
        );
        nodes.push(Lintas::spawn_named(
            &dir,
            &format!("node{i}"),
            &["run", "-c", path.to_str().unwrap()],
        ));
    }
    let client = HttpClient::new();
    let auth = format!("Bearer {KEY}");
    for listen in listens {
        let url = format!("http://{listen}/v1/records");
        wait_until("both nodes to accept records", PATIENCE, || async {
            client
                .send(Method::POST, &url, &[("authorization", &auth)], "[]")
                .await
                .is_ok_and(|r| r.status == 400)
        })
        .await;
    }
    let proxy = TestNode::start(&format!(
        "[proxy.pools.relay]\nstrategy = \"round_robin\"\nbackends = [{{ name = \"a\", address = \"{}\" }}, {{ name = \"b\", address = \"{}\" }}]\n\n\
         [[proxy.listeners]]\nname = \"relay\"\nmode = \"http\"\nlisten = \"127.0.0.1:0\"\npool = \"relay\"\n",
        listens[0], listens[1]
    ))
    .await;
    let url = proxy.url("relay", "/v1/records").await;
    let post = |from: u64, n: u64| {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        async move {
            for s in from..from + n {
                let r = client
                    .send(
                        Method::POST,
                        &url,
                        &[("authorization", &auth)],
                        format!("{{\"seq\":{s}}}"),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status, 202, "{}", r.body);
            }
        }
    };
    post(0, 50).await;
    wait_until("the first 50 delivered", PATIENCE, || async {
        count(&pg).await == ["50", "50"]
    })
    .await;

    // Hold the table so the delivering node reads records but cannot commit them.
    let mut blocker = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    post(50, 100).await;
    wait_until(
        "the delivering node to hold records pending",
        PATIENCE,
        || {
            let mut redis = redis.clone();
            let prefix = prefix.clone();
            async move { pending(&mut redis, &prefix).await > 0 }
        },
    )
    .await;
    let holder: String =
        redis::AsyncCommands::get(&mut redis, format!("{prefix}:kv:lease:relay:pg"))
            .await
            .unwrap();
    let victim = nodes
        .iter()
        .position(|n| holder.split('-').any(|part| part == n.pid().to_string()))
        .unwrap_or_else(|| panic!("lease holder {holder} is neither node"));
    drop(nodes.remove(victim));
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();

    wait_until("the survivor to deliver all 150 once", PATIENCE, || async {
        count(&pg).await == ["150", "150"]
    })
    .await;
    wait_until("nothing left pending", PATIENCE, || {
        let mut redis = redis.clone();
        let prefix = prefix.clone();
        async move { pending(&mut redis, &prefix).await == 0 }
    })
    .await;
    let now: String = redis::AsyncCommands::get(&mut redis, format!("{prefix}:kv:lease:relay:pg"))
        .await
        .unwrap();
    assert!(
        now.split('-').any(|p| p == nodes[0].pid().to_string()),
        "{now}"
    );
    assert_eq!(
        count(&pg).await,
        ["150", "150"],
        "survivor log:\n{}",
        nodes[0].read("stderr")
    );
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut redis, format!("{prefix}:*"))
        .await
        .unwrap();
    let _: () = redis::AsyncCommands::del(&mut redis, keys).await.unwrap();
}

/// Rows and distinct `seq`s in `events`.
async fn count(pg: &Scratch) -> Vec<String> {
    let rows = pg
        .rows("SELECT COUNT(*)::text, COUNT(DISTINCT seq)::text FROM events")
        .await
        .unwrap();
    rows[0].iter().map(|v| v.clone().unwrap()).collect()
}

#[tokio::test]
async fn a_reload_adds_declared_destinations_and_the_admin_routes_need_credentials() {
    let dir = TempDir::new();
    let mut urls = Vec::new();
    for name in ["one", "two"] {
        let path = dir.path().join(format!("{name}.db"));
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (v TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        urls.push(format!("sqlite://{}", path.display()));
    }
    let hash = relay::keys::to_hex(&relay::keys::hash(KEY));
    let password_hash = admin::Auth::hash_password("pw");
    let config = |dests: &[(&str, &str)]| {
        let mut text = format!(
            "data_dir = \"data\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\nuser = \"admin\"\npassword_hash = \"{password_hash}\"\n\n\
             [relay]\nlisten = \"127.0.0.1:0\"\n\n[[relay.applications]]\nname = \"app\"\nkey_sha256 = \"{hash}\"\n\n"
        );
        for (name, url) in dests {
            text.push_str(&format!(
                "[[relay.destinations]]\nname = \"{name}\"\nkind = \"sqlite\"\nurl = \"{url}\"\n\n\
                 [[relay.routes]]\napplication = \"app\"\ndestination = \"{name}\"\ntable = \"t\"\noperation = \"insert\"\ncolumns = {{ v = \"v\" }}\n\n"
            ));
        }
        text
    };
    let path = dir.write("lintas.toml", &config(&[("one", &urls[0])]));
    let node = TestNode::start_file(&path).await;
    let relay = node.node.relay.clone().unwrap();
    let client = HttpClient::new();
    let ingest = format!("http://{}/v1/records", relay.local_addr());
    let auth = format!("Bearer {KEY}");
    let post = |v: &'static str| {
        let (client, ingest, auth) = (client.clone(), ingest.clone(), auth.clone());
        async move {
            let r = client
                .send(
                    Method::POST,
                    &ingest,
                    &[("authorization", &auth)],
                    format!("{{\"v\":\"{v}\"}}"),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 202, "{}", r.body);
        }
    };
    let rows = |url: String| async move {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let v: Vec<String> = sqlx::query_scalar("SELECT v FROM t ORDER BY rowid")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        v
    };
    post("before").await;
    wait_until("`one` to get the first record", PATIENCE, || async {
        rows(urls[0].clone()).await == ["before"]
    })
    .await;

    dir.write(
        "lintas.toml",
        &config(&[("one", &urls[0]), ("two", &urls[1])]),
    );
    node.node.reload().await.unwrap();
    post("after").await;
    wait_until("both to get the second record", PATIENCE, || async {
        rows(urls[0].clone()).await == ["before", "after"]
            && rows(urls[1].clone()).await == ["after"]
    })
    .await;

    let admin = format!("http://{}/api/relay", node.node.admin_addr.unwrap());
    let r = client.get(&admin).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, r#"{"error":"authentication required"}"#)
    );
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::prelude::BASE64_STANDARD, "admin:pw")
    );
    let r = client
        .send(Method::GET, &admin, &[("authorization", &basic)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let names: Vec<&str> = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(v["destinations"][1]["declared"], true);
}
