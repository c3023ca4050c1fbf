//! The relay's metrics after a known sequence of ingests, refusals, an outage and its end.

use testkit::link::Link;
use testkit::scratch::{Scratch, Server};
use testkit::{PATIENCE, TempDir, wait_until};

use crate::harness::{Node, config, destination, route};

#[tokio::test]
async fn ingest_refusals_backlog_and_delivery_are_counted_exactly() {
    let dir = TempDir::new();
    let pg = Scratch::create(Server::Postgres).await.unwrap();
    pg.exec("CREATE TABLE events (seq integer NOT NULL)")
        .await
        .unwrap();
    let link = Link::start(pg.addr()).await.unwrap();
    let text = config(&format!(
        "{}{}",
        destination("pg", "postgres", &pg.url_via(link.addr())),
        route("pg", "events", "insert", "seq = \"seq\"", ""),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    wait_until("the destination to connect", PATIENCE, || async {
        node.samples("lintas_relay_backlog") == ["lintas_relay_backlog{destination=\"pg\"} 0"]
    })
    .await;

    link.cut();
    node.ingest(r#"[{"seq": 1}, {"seq": 2}]"#).await;
    node.ingest(r#"{"seq": 3}"#).await;
    assert_eq!(node.post(r#"{"seq": 4"#).await.status, 400);
    assert_eq!(node.post("[]").await.status, 400);
    let stranger = node
        .post_with(&[("authorization", "Bearer nope")], r#"{"seq": 5}"#)
        .await;
    assert_eq!(stranger.status, 401);
    assert_eq!(
        node.samples("lintas_relay_ingest"),
        [
            "lintas_relay_ingest_refused_total{reason=\"malformed\"} 2",
            "lintas_relay_ingest_refused_total{reason=\"unauthorized\"} 1",
            "lintas_relay_ingested_total{application=\"shop\"} 3",
        ]
    );
    // Nothing reaches the destination while the link is cut: all three wait.
    assert_eq!(
        node.samples("lintas_relay_backlog"),
        ["lintas_relay_backlog{destination=\"pg\"} 3"]
    );

    link.restore();
    node.wait_delivered().await;
    assert_eq!(
        node.samples("lintas_relay_backlog"),
        ["lintas_relay_backlog{destination=\"pg\"} 0"]
    );
    assert_eq!(
        node.samples("lintas_relay_delivered"),
        ["lintas_relay_delivered_total{destination=\"pg\"} 3"]
    );
    assert_eq!(
        node.samples("lintas_relay_dead_letters"),
        ["lintas_relay_dead_letters_total{destination=\"pg\"} 0"]
    );
    let latency = node.samples("lintas_relay_delivery_latency_seconds_");
    assert!(
        latency.contains(
            &"lintas_relay_delivery_latency_seconds_count{destination=\"pg\"} 3".to_owned()
        ),
        "{latency:?}"
    );
    // Buckets are cumulative: all three records are in the last one.
    assert!(
        latency.contains(
            &"lintas_relay_delivery_latency_seconds_bucket{le=\"+Inf\",destination=\"pg\"} 3"
                .to_owned()
        ),
        "{latency:?}"
    );
    node.stop().await;
}
