//! Sessions across connections: wills, persistent sessions resumed with what was queued
//! and what was in flight, takeover, keep alive.

use bytes::Bytes;
use mqtt::codec::{Connect, Disconnect, Packet, Properties, QoS, ReasonCode, Version, Will};

use crate::harness::{Node, connect, publish, subscribe};

fn with_will(version: Version, client_id: &str, delay: Option<u32>) -> Connect {
    Connect {
        will: Some(Will {
            properties: Properties {
                will_delay_interval: delay,
                ..Properties::default()
            },
            topic: "wills/gone".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
        }),
        ..connect(version, client_id)
    }
}

#[tokio::test]
async fn a_will_is_published_on_an_abrupt_close_and_not_after_disconnect() {
    let node = Node::start("").await;
    let mut watcher = node.client(Version::V311, "watcher").await;
    watcher
        .subscribe(subscribe(1, "wills/#", QoS::AtLeastOnce))
        .await;

    let (polite, _) = node.raw(with_will(Version::V311, "polite", None)).await;
    let mut polite = polite;
    polite
        .send(&Packet::Disconnect(Disconnect::default()))
        .await;
    assert!(polite.closed().await.is_empty());

    let (abrupt, _) = node.raw(with_will(Version::V311, "abrupt", None)).await;
    drop(abrupt);

    let will = watcher.recv_publish().await;
    assert_eq!(
        (&will.topic[..], &will.payload[..]),
        ("wills/gone", &b"bye"[..])
    );
    assert_eq!(will.qos, QoS::AtLeastOnce);
    watcher.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn disconnect_with_will_message_publishes_it() {
    let node = Node::start("").await;
    let mut watcher = node.client(Version::V5, "watcher").await;
    watcher
        .subscribe(subscribe(1, "wills/#", QoS::AtMostOnce))
        .await;
    let (mut c, _) = node.raw(with_will(Version::V5, "c", None)).await;
    c.send(&Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::DisconnectWithWillMessage,
        properties: Properties::default(),
    }))
    .await;
    assert_eq!(&watcher.recv_publish().await.payload[..], b"bye");
    node.stop().await;
}

#[tokio::test]
async fn a_persistent_session_gets_what_was_queued_while_it_was_away() {
    let node = Node::start("").await;
    for version in [Version::V311, Version::V5] {
        let mut persistent = connect(version, "away");
        persistent.clean_start = false;
        persistent.properties.session_expiry_interval = (version == Version::V5).then_some(3600);
        let (mut c, ack) = node.raw(persistent.clone()).await;
        assert!(!ack.session_present);
        c.subscribe(subscribe(1, "news", QoS::ExactlyOnce)).await;
        c.send(&Packet::Disconnect(Disconnect::default())).await;
        c.closed().await;

        let mut publisher = node.client(version, "pub").await;
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            let id = u16::try_from(i).expect("small") + 1;
            publisher.publish(publish("news", "queued", qos, id)).await;
        }
        let (mut c, ack) = node.raw(persistent).await;
        assert!(ack.session_present, "{version}");
        let a = c.recv_publish().await;
        let b = c.recv_publish().await;
        assert_eq!(
            [a.qos, b.qos],
            [QoS::AtLeastOnce, QoS::ExactlyOnce],
            "QoS 0 is not queued offline"
        );
        c.ping().await;
        c.send(&Packet::Disconnect(Disconnect::default())).await;
        c.closed().await;
        let (c, ack) = node.raw(connect(version, "away")).await;
        assert!(!ack.session_present, "a clean start discards the session");
        drop(c);
    }
    node.stop().await;
}

#[tokio::test]
async fn messages_in_flight_are_sent_again_with_dup_on_resume() {
    let node = Node::start("").await;
    let mut persistent = connect(Version::V5, "flaky");
    persistent.clean_start = false;
    persistent.properties.session_expiry_interval = Some(3600);
    let (mut c, _) = node.raw(persistent.clone()).await;
    c.subscribe(subscribe(1, "jobs", QoS::ExactlyOnce)).await;
    let mut publisher = node.client(Version::V5, "pub").await;
    publisher
        .publish(publish("jobs", "one", QoS::AtLeastOnce, 1))
        .await;
    publisher
        .publish(publish("jobs", "two", QoS::ExactlyOnce, 2))
        .await;
    let one = match c.recv().await {
        Packet::Publish(p) => p,
        other => panic!("{other:?}"),
    };
    let two = match c.recv().await {
        Packet::Publish(p) => p,
        other => panic!("{other:?}"),
    };
    let two_id = two.packet_id.expect("QoS 2 has an id");
    c.send(&Packet::PubRec(mqtt::codec::Ack::success(two_id)))
        .await;
    assert!(matches!(c.recv().await, Packet::PubRel(r) if r.packet_id == two_id));
    drop(c);

    let (mut c, ack) = node.raw(persistent).await;
    assert!(ack.session_present);
    match c.recv().await {
        Packet::Publish(p) => {
            assert!(p.dup);
            assert_eq!((p.packet_id, &p.payload[..]), (one.packet_id, &b"one"[..]));
            c.ack(&p).await;
        }
        other => panic!("expected the PUBLISH again, got {other:?}"),
    }
    assert!(matches!(c.recv().await, Packet::PubRel(r) if r.packet_id == two_id));
    c.send(&Packet::PubComp(mqtt::codec::Ack::success(two_id)))
        .await;
    c.ping().await;
    wait_empty(&node).await;
    node.stop().await;
}

/// Waits until no client has anything in flight.
async fn wait_empty(node: &Node) {
    testkit::wait_until("nothing in flight", testkit::PATIENCE, || async {
        node.broker.clients().iter().all(|c| c.inflight == 0)
    })
    .await;
}

#[tokio::test]
async fn a_second_connection_takes_the_session_over() {
    let node = Node::start("").await;
    let mut persistent = connect(Version::V5, "twin");
    persistent.clean_start = false;
    persistent.properties.session_expiry_interval = Some(3600);
    let (mut first, _) = node.raw(persistent.clone()).await;
    first.subscribe(subscribe(1, "t", QoS::AtLeastOnce)).await;
    let (mut second, ack) = node.raw(persistent).await;
    assert!(ack.session_present);
    let got = first.closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SessionTakenOver),
        "{got:?}"
    );
    let mut publisher = node.client(Version::V5, "pub").await;
    publisher
        .publish(publish("t", "to the new one", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(&second.recv_publish().await.payload[..], b"to the new one");
    assert_eq!(node.broker.clients().len(), 2);

    let (mut old311, _) = node.raw(connect(Version::V311, "twin311")).await;
    let (_new311, _) = node.raw(connect(Version::V311, "twin311")).await;
    assert!(
        old311.closed().await.is_empty(),
        "3.1.1 has no DISCONNECT from the server"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_one_and_a_half_keep_alives_and_its_will_sent() {
    let node = Node::start("").await;
    let mut watcher = node.client(Version::V311, "watcher").await;
    watcher
        .subscribe(subscribe(1, "wills/#", QoS::AtMostOnce))
        .await;
    let mut silent = with_will(Version::V5, "silent", None);
    silent.keep_alive = 1;
    let started = std::time::Instant::now();
    let (mut c, _) = node.raw(silent).await;
    let got = c.closed().await;
    let waited = started.elapsed();
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::KeepAliveTimeout),
        "{got:?}"
    );
    assert!(
        waited >= std::time::Duration::from_millis(1_400),
        "{waited:?}"
    );
    assert_eq!(&watcher.recv_publish().await.payload[..], b"bye");
    node.stop().await;
}

#[tokio::test]
async fn the_node_shutting_down_says_so_to_5_0_clients() {
    let node = Node::start("").await;
    let mut c = node.client(Version::V5, "c").await;
    let broker = node.broker.clone();
    broker.shutdown().cancel();
    let got = c.closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ServerShuttingDown),
        "{got:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_full_session_queue_drops_new_messages_and_counts_them() {
    let node = Node::start("max_queued = 2").await;
    let mut persistent = connect(Version::V311, "away");
    persistent.clean_start = false;
    let (mut c, _) = node.raw(persistent.clone()).await;
    c.subscribe(subscribe(1, "q", QoS::AtLeastOnce)).await;
    c.send(&Packet::Disconnect(Disconnect::default())).await;
    c.closed().await;
    let mut publisher = node.client(Version::V311, "pub").await;
    for (id, payload) in [(1, "one"), (2, "two"), (3, "three")] {
        publisher
            .publish(publish("q", payload, QoS::AtLeastOnce, id))
            .await;
    }
    assert_eq!(node.broker.stats().snapshot().dropped_queue_full, 1);
    let (mut c, _) = node.raw(persistent).await;
    assert_eq!(&c.recv_publish().await.payload[..], b"one");
    assert_eq!(&c.recv_publish().await.payload[..], b"two");
    c.ping().await;
    node.stop().await;
}
