//! The relay in the real binary: killed with SIGKILL in the middle of ingest and delivery,
//! restarted, and every acknowledged record is in every destination exactly once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::Method;
use testkit::scratch::{Scratch, Server};
use testkit::{HttpClient, PATIENCE, wait_until};

use crate::cli::Lintas;
use crate::harness::{TempDir, unused_addr};

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
