//! A destination cut off under load: its records are held and arrive once when it is back,
//! and the other destination never pauses.

use std::time::Duration;

use relay::status::{RelayEvent, State};
use testkit::link::Link;
use testkit::scratch::{Scratch, Server};
use testkit::{PATIENCE, TempDir, wait_until};

use crate::harness::{Node, config, destination, flat, route, sqlite, sqlite_rows};

async fn count_lite(url: &str) -> usize {
    sqlite_rows(url, "SELECT CAST(COUNT(*) AS TEXT) FROM events").await[0][0]
        .as_deref()
        .unwrap_or("0")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_cut_destination_gets_every_record_once_and_the_other_never_pauses() {
    let dir = TempDir::new();
    let pg = Scratch::create(Server::Postgres).await.unwrap();
    pg.exec("CREATE TABLE events (seq integer NOT NULL, body text)")
        .await
        .unwrap();
    let link = Link::start(pg.addr()).await.unwrap();
    let lite = sqlite(
        dir.path(),
        "events.db",
        "CREATE TABLE events (seq INTEGER NOT NULL, body TEXT)",
    )
    .await;
    let text = config(&format!(
        "{}{}{}{}",
        destination("flaky", "postgres", &pg.url_via(link.addr())),
        destination("steady", "sqlite", &lite),
        route(
            "flaky",
            "events",
            "insert",
            "seq = \"seq\", body = \"body\"",
            ""
        ),
        route(
            "steady",
            "events",
            "insert",
            "seq = \"seq\", body = \"body\"",
            ""
        ),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    let mut events = node.relay.subscribe();
    let flaky = node.relay.catalog().destination("flaky").unwrap().id;

    // Load: 60 requests of 5 records, one every 10 ms, from a task of its own.
    let producer = {
        let client = node.client.clone();
        let url = node.ingest.clone();
        tokio::spawn(async move {
            for i in 0..60u32 {
                let records: Vec<String> = (0..5)
                    .map(|j| format!(r#"{{"seq": {}, "body": "r{}"}}"#, i * 5 + j, i * 5 + j))
                    .collect();
                let r = client
                    .send(
                        http::Method::POST,
                        &url,
                        &[("authorization", &format!("Bearer {}", crate::harness::KEY))],
                        format!("[{}]", records.join(",")),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status, 202, "{}", r.body);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    wait_until("some records to reach both", PATIENCE, || async {
        count_lite(&lite).await >= 20
            && node
                .relay
                .status(flaky)
                .is_some_and(|s| s.next_offset.is_some_and(|n| n > 0))
    })
    .await;
    link.cut();
    wait_until("flaky to be marked down", PATIENCE, || async {
        node.relay
            .status(flaky)
            .is_some_and(|s| s.state == State::Down)
    })
    .await;
    let delivered_when_cut = node.relay.status(flaky).unwrap().next_offset.unwrap();
    producer.await.unwrap();
    // The steady destination gets everything while flaky is down.
    wait_until("steady to have all 300", PATIENCE, || async {
        count_lite(&lite).await == 300
    })
    .await;
    let status = node.relay.status(flaky).unwrap();
    assert_eq!(status.state, State::Down);
    assert_eq!(
        status.next_offset,
        Some(delivered_when_cut),
        "nothing reached flaky while cut"
    );
    assert!(
        status.attempts >= 1 && status.last_error.is_some(),
        "{status:?}"
    );

    link.restore();
    node.wait_delivered().await;
    let q = "SELECT COUNT(*)::text, COUNT(DISTINCT seq)::text, MIN(seq)::text, MAX(seq)::text FROM events";
    assert_eq!(
        flat(pg.rows(q).await.unwrap()),
        [["300", "300", "0", "299"]]
    );
    assert_eq!(
        flat(
            sqlite_rows(
                &lite,
                "SELECT CAST(COUNT(*) AS TEXT), CAST(COUNT(DISTINCT seq) AS TEXT) FROM events"
            )
            .await
        ),
        [["300", "300"]]
    );
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(match e {
            RelayEvent::DestinationDown { destination, .. } => format!("{destination} down"),
            RelayEvent::DestinationUp { destination } => format!("{destination} up"),
        });
    }
    assert_eq!(seen, ["flaky down", "flaky up"]);
    node.stop().await;
}
