//! MQTT 5.0 features: receive maximum, topic aliases, message expiry, properties forwarded,
//! no local, subscription identifiers, maximum packet sizes, assigned identifiers and the
//! CONNACK refusals of both versions.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use mqtt::codec::{
    Packet, Properties, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};

use crate::harness::{Node, Raw, connect, pid, publish, subscribe, subscribe_with};

#[tokio::test]
async fn connack_announces_the_limits_and_assigns_an_identifier() {
    let node = Node::start("receive_maximum = 5\nmax_packet_size = 4096\nmax_keep_alive = 60\nsession_expiry_max = \"1h\"").await;
    let mut c = connect(Version::V5, "");
    c.keep_alive = 0;
    c.properties.session_expiry_interval = Some(u32::MAX);
    let (_raw, ack) = node.raw(c).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let p = &ack.properties;
    assert_eq!(p.receive_maximum, NonZeroU16::new(5));
    assert_eq!(p.maximum_packet_size, NonZeroU32::new(4096));
    assert_eq!(p.topic_alias_maximum, Some(10));
    assert_eq!(
        p.server_keep_alive,
        Some(60),
        "keep alive 0 gets the server's"
    );
    assert_eq!(p.session_expiry_interval, Some(3600));
    let id = p
        .assigned_client_identifier
        .as_deref()
        .expect("an identifier is assigned");
    assert!(id.starts_with("lintas-"), "{id}");
    assert_eq!(node.broker.clients()[0].client_id, id);
    node.stop().await;
}

#[tokio::test]
async fn bad_connects_are_refused_with_each_version_s_code() {
    let node = Node::start("max_keep_alive = 60").await;
    // 3.1.1: empty identifier without a clean session.
    let mut c = connect(Version::V311, "");
    c.clean_start = false;
    let (mut raw, ack) = node.raw(c).await;
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    assert!(raw.closed().await.is_empty());
    // 3.1.1: a keep alive above the maximum cannot be told, so it is refused.
    let mut c = connect(Version::V311, "k");
    c.keep_alive = 61;
    assert_eq!(
        node.raw(c).await.1.reason_code,
        ReasonCode::ClientIdentifierNotValid
    );
    // Too long an identifier.
    let long = "x".repeat(mqtt::connection::MAX_CLIENT_ID_BYTES + 1);
    let (_, ack) = node.raw(connect(Version::V5, &long)).await;
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    // An unknown protocol level gets the 3.1.1 answer 0x01.
    let mut raw = Raw::open(node.addr, Version::V311).await;
    raw.send_bytes(&[
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02, 0x00, 0x00, 0x00, 0x00,
    ])
    .await;
    match raw.next().await {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.reason_code, ReasonCode::UnsupportedProtocolVersion)
        }
        other => panic!("expected CONNACK 0x01, got {other:?}"),
    }
    // A 5.0 will to a wildcard topic.
    let mut c = connect(Version::V5, "w");
    c.will = Some(mqtt::codec::Will {
        properties: Properties::default(),
        topic: "a/#".into(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
    });
    assert_eq!(
        node.raw(c).await.1.reason_code,
        ReasonCode::TopicNameInvalid
    );
    assert_eq!(node.broker.stats().snapshot().connections_total, 0);
    node.stop().await;
}

#[tokio::test]
async fn a_3_1_1_keep_alive_of_0_is_refused_unless_max_keep_alive_is_0() {
    for (section, want, told) in [
        // The default cap, 65535: 3.1.1 cannot be told it, so no keep alive is refused (as
        // Mosquitto 2 does); 5.0 is told the cap.
        ("", ReasonCode::ClientIdentifierNotValid, Some(u16::MAX)),
        // No cap (Mosquitto's max_keepalive 0): no keep alive, as asked.
        ("max_keep_alive = 0", ReasonCode::Success, None),
    ] {
        let node = Node::start(section).await;
        let mut c = connect(Version::V311, "silent");
        c.keep_alive = 0;
        let (mut raw, ack) = node.raw(c).await;
        assert_eq!(ack.reason_code, want, "[mqtt] {section}");
        if want != ReasonCode::Success {
            assert!(raw.closed().await.is_empty(), "closed after the refusal");
        }
        let mut c = connect(Version::V5, "silent-5");
        c.keep_alive = 0;
        let (_raw, ack) = node.raw(c).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert_eq!(ack.properties.server_keep_alive, told, "[mqtt] {section}");
        node.stop().await;
    }
}

#[tokio::test]
async fn connect_must_come_within_the_timeout() {
    let node = Node::start("connect_timeout = \"200ms\"").await;
    let mut raw = Raw::open(node.addr, Version::V5).await;
    assert!(raw.closed().await.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn exceeding_our_receive_maximum_disconnects_with_0x93() {
    let node = Node::start("receive_maximum = 2").await;
    let mut c = node.client(Version::V5, "greedy").await;
    for id in 1..=3 {
        c.send(&Packet::Publish(publish("q", "m", QoS::ExactlyOnce, id)))
            .await;
    }
    let got = c.closed().await;
    assert!(
        matches!(&got[..], [Packet::PubRec(_), Packet::PubRec(_), Packet::Disconnect(d)]
        if d.reason_code == ReasonCode::ReceiveMaximumExceeded),
        "{got:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn the_client_s_receive_maximum_bounds_what_we_send_unacknowledged() {
    let node = Node::start("").await;
    let mut c = connect(Version::V5, "slow");
    c.properties.receive_maximum = NonZeroU16::new(2);
    let (mut slow, _) = node.raw(c).await;
    slow.subscribe(subscribe(1, "w", QoS::AtLeastOnce)).await;
    let mut publisher = node.client(Version::V5, "pub").await;
    for id in 1..=5 {
        publisher
            .publish(publish("w", "m", QoS::AtLeastOnce, id))
            .await;
    }
    let mut held = Vec::new();
    for _ in 0..2 {
        match slow.recv().await {
            Packet::Publish(p) => held.push(p),
            other => panic!("{other:?}"),
        }
    }
    slow.ping().await;
    let info = &node.broker.clients()[1];
    assert_eq!(
        (info.client_id.as_str(), info.inflight, info.queued),
        ("slow", 2, 3)
    );
    for p in &held {
        slow.ack(p).await;
    }
    for _ in 0..3 {
        slow.recv_publish().await;
    }
    slow.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn topic_aliases_are_resolved_and_bad_ones_refused() {
    let node = Node::start("topic_alias_maximum = 2").await;
    let mut sub = node.client(Version::V5, "sub").await;
    sub.subscribe(subscribe(1, "alias/#", QoS::AtMostOnce))
        .await;
    let mut c = node.client(Version::V5, "pub").await;
    let aliased = |topic: &str, alias: u16, payload: &'static str| Publish {
        properties: Properties {
            topic_alias: NonZeroU16::new(alias),
            ..Properties::default()
        },
        ..publish(topic, payload, QoS::AtMostOnce, 0)
    };
    c.publish(aliased("alias/long/name", 1, "set")).await;
    c.publish(aliased("", 1, "used")).await;
    for payload in [&b"set"[..], b"used"] {
        let got = sub.recv_publish().await;
        assert_eq!(
            (&got.topic[..], &got.payload[..]),
            ("alias/long/name", payload)
        );
        assert_eq!(got.properties.topic_alias, None);
    }
    c.send(&Packet::Publish(aliased("", 2, "unset"))).await;
    let got = c.closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
        "{got:?}"
    );
    let mut c = node.client(Version::V5, "pub2").await;
    c.send(&Packet::Publish(aliased("alias/x", 3, "over")))
        .await;
    let got = c.closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::TopicAliasInvalid),
        "{got:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn properties_travel_with_the_message_and_expiry_counts_down() {
    let node = Node::start("").await;
    let mut sub = node.client(Version::V5, "sub").await;
    let mut s = subscribe(1, "p/#", QoS::AtLeastOnce);
    s.properties.subscription_identifiers = vec![NonZeroU32::new(42).expect("non-zero")];
    sub.subscribe(s).await;
    let mut s = subscribe(2, "p/+", QoS::AtMostOnce);
    s.properties.subscription_identifiers = vec![NonZeroU32::new(7).expect("non-zero")];
    sub.subscribe(s).await;
    let mut publisher = node.client(Version::V5, "pub").await;
    let props = Properties {
        message_expiry_interval: Some(100),
        content_type: Some("application/json".into()),
        response_topic: Some("replies/1".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        payload_format_indicator: Some(true),
        user: vec![
            ("a".into(), "1".into()),
            ("a".into(), "2".into()),
            ("b".into(), "3".into()),
        ],
        ..Properties::default()
    };
    publisher
        .publish(Publish {
            properties: props.clone(),
            ..publish("p/x", "{}", QoS::AtLeastOnce, 1)
        })
        .await;
    let got = sub.recv_publish().await;
    let p = &got.properties;
    assert!(matches!(p.message_expiry_interval, Some(99 | 100)), "{p:?}");
    assert_eq!(p.content_type, props.content_type);
    assert_eq!(p.response_topic, props.response_topic);
    assert_eq!(p.correlation_data, props.correlation_data);
    assert_eq!(p.payload_format_indicator, Some(true));
    assert_eq!(p.user, props.user, "user properties keep their order");
    let ids: Vec<u32> = p.subscription_identifiers.iter().map(|i| i.get()).collect();
    assert_eq!(ids, [7, 42], "one copy carrying both identifiers");
    assert_eq!(got.qos, QoS::AtLeastOnce, "the higher QoS of the two");
    sub.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn an_expired_message_is_dropped_from_the_queue() {
    let node = Node::start("").await;
    let mut persistent = connect(Version::V5, "away");
    persistent.clean_start = false;
    persistent.properties.session_expiry_interval = Some(60);
    let (mut c, _) = node.raw(persistent.clone()).await;
    c.subscribe(subscribe(1, "e", QoS::AtLeastOnce)).await;
    drop(c);
    testkit::wait_until("the client is gone", testkit::PATIENCE, || async {
        node.broker.clients().is_empty()
    })
    .await;
    let mut publisher = node.client(Version::V5, "pub").await;
    let expiring = |interval, payload| Publish {
        properties: Properties {
            message_expiry_interval: Some(interval),
            ..Properties::default()
        },
        ..publish("e", payload, QoS::AtLeastOnce, 1)
    };
    // An interval of 0 has passed by the time anything is sent.
    publisher.publish(expiring(0, "short")).await;
    publisher.publish(expiring(600, "long")).await;
    let (mut c, _) = node.raw(persistent).await;
    let got = c.recv_publish().await;
    assert_eq!(&got.payload[..], b"long");
    c.ping().await;
    assert_eq!(node.broker.stats().snapshot().dropped_expired, 1);
    node.stop().await;
}

#[tokio::test]
async fn no_local_keeps_a_client_s_own_messages_from_it() {
    let node = Node::start("").await;
    let mut c = node.client(Version::V5, "echo").await;
    let opts = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..SubscriptionOptions::default()
    };
    c.subscribe(subscribe_with(1, "n", opts)).await;
    assert_eq!(
        c.publish(publish("n", "mine", QoS::AtLeastOnce, 1)).await,
        ReasonCode::NoMatchingSubscribers
    );
    let mut other = node.client(Version::V5, "other").await;
    other
        .publish(publish("n", "theirs", QoS::AtMostOnce, 0))
        .await;
    assert_eq!(&c.recv_publish().await.payload[..], b"theirs");
    // No Local on a shared subscription is a Protocol Error.
    c.send(&Packet::Subscribe(subscribe_with(2, "$share/g/n", opts)))
        .await;
    let got = c.closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
        "{got:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn invalid_filters_get_their_code_per_version() {
    let node = Node::start("").await;
    for (version, code) in [
        (Version::V311, ReasonCode::UnspecifiedError),
        (Version::V5, ReasonCode::TopicFilterInvalid),
    ] {
        let mut c = node.client(version, "f").await;
        let s = Subscribe {
            packet_id: pid(1),
            properties: Properties::default(),
            filters: vec![
                ("a/#/b".into(), SubscriptionOptions::default()),
                ("ok/+".into(), SubscriptionOptions::default()),
            ],
        };
        assert_eq!(
            c.subscribe(s).await,
            [code, ReasonCode::Success],
            "{version}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn packet_sizes_are_enforced_both_ways() {
    let node = Node::start("max_packet_size = 256").await;
    let mut small = connect(Version::V5, "small");
    small.properties.maximum_packet_size = NonZeroU32::new(64);
    let (mut small, _) = node.raw(small).await;
    small
        .subscribe(subscribe(1, "big/#", QoS::AtLeastOnce))
        .await;
    let mut publisher = node.client(Version::V5, "pub").await;
    let payload: &'static str = "0123456789012345678901234567890123456789012345678901234567890123";
    publisher
        .publish(publish("big/1", payload, QoS::AtLeastOnce, 1))
        .await;
    publisher
        .publish(publish("big/2", "fits", QoS::AtLeastOnce, 2))
        .await;
    assert_eq!(&small.recv_publish().await.payload[..], b"fits");
    small.ping().await;
    assert_eq!(node.broker.stats().snapshot().dropped_too_large, 1);

    let huge: &'static str = Box::leak("x".repeat(300).into_boxed_str());
    publisher
        .send(&Packet::Publish(publish("big/3", huge, QoS::AtMostOnce, 0)))
        .await;
    let got = publisher.closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PacketTooLarge),
        "{got:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn disconnect_may_not_give_a_session_without_expiry_one() {
    let node = Node::start("").await;
    let mut c = node.client(Version::V5, "zero").await;
    c.send(&Packet::Disconnect(mqtt::codec::Disconnect {
        reason_code: ReasonCode::Success,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
    }))
    .await;
    let got = c.closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
        "{got:?}"
    );

    node.stop().await;
}
