//! Messages through the broker: every QoS both ways, counted exactly, wildcards, `$` topics,
//! unsubscribing, the cap on a session's subscriptions, and a malformed packet that closes
//! only its own connection.

use bytes::Bytes;
use mqtt::codec::{Packet, QoS, ReasonCode, Unsubscribe, Version};

use crate::harness::{Node, pid, publish, subscribe};

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

#[tokio::test]
async fn every_qos_pair_is_delivered_once_at_the_lower_qos() {
    let node = Node::start("").await;
    for version in [Version::V311, Version::V5] {
        for sub_qos in QOS {
            let mut sub = node.client(version, "sub").await;
            let granted = sub.subscribe(subscribe(1, "qos/t", sub_qos)).await;
            assert_eq!(granted, [ReasonCode::from_u8(sub_qos as u8).expect("code")]);
            let mut publisher = node.client(version, "pub").await;
            for (i, pub_qos) in QOS.into_iter().enumerate() {
                let id = u16::try_from(i).expect("small") + 1;
                let code = publisher.publish(publish("qos/t", "m", pub_qos, id)).await;
                assert_eq!(code, ReasonCode::Success);
                let got = sub.recv_publish().await;
                assert_eq!(
                    got.qos,
                    pub_qos.min(sub_qos),
                    "{version} {sub_qos:?} {pub_qos:?}"
                );
                assert_eq!(&got.payload[..], b"m");
                assert!(!got.dup && !got.retain);
            }
            sub.ping().await;
            publisher
                .send(&Packet::Disconnect(Default::default()))
                .await;
            sub.send(&Packet::Disconnect(Default::default())).await;
            assert!(sub.closed().await.is_empty());
        }
    }
    let s = node.broker.stats().snapshot();
    assert_eq!(s.received, [6, 6, 6]);
    // Per version: QoS 0 = 3 + 1 + 1, QoS 1 = 2 + 1, QoS 2 = 1.
    assert_eq!(s.sent, [10, 6, 2]);
    node.stop().await;
}

#[tokio::test]
async fn a_qos_2_publish_sent_again_before_pubrel_is_routed_once() {
    let node = Node::start("").await;
    let mut sub = node.client(Version::V5, "sub").await;
    sub.subscribe(subscribe(1, "once", QoS::ExactlyOnce)).await;
    let mut publisher = node.client(Version::V5, "pub").await;
    let mut p = publish("once", "x", QoS::ExactlyOnce, 7);
    publisher.send(&Packet::Publish(p.clone())).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == pid(7)));
    p.dup = true;
    publisher.send(&Packet::Publish(p.clone())).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == pid(7)));
    publisher
        .send(&Packet::PubRel(mqtt::codec::Ack::success(pid(7))))
        .await;
    assert!(
        matches!(publisher.recv().await, Packet::PubComp(a) if a.reason_code == ReasonCode::Success)
    );
    // After PUBREL the identifier is free again: the same id is a new message.
    p.dup = false;
    p.payload = Bytes::from_static(b"y");
    assert_eq!(publisher.publish(p).await, ReasonCode::Success);

    let mut got = Vec::new();
    for _ in 0..2 {
        match sub.recv().await {
            Packet::Publish(p) => got.push(p.payload),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(got, [&b"x"[..], &b"y"[..]]);
    sub.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn wildcards_match_by_level_and_dollar_topics_only_by_name() {
    let node = Node::start("").await;
    let mut sub = node.client(Version::V311, "sub").await;
    for (i, filter) in ["a/+/c", "a/#", "#", "+/x"].iter().enumerate() {
        let id = u16::try_from(i).expect("small") + 1;
        sub.subscribe(subscribe(id, filter, QoS::AtMostOnce)).await;
    }
    let mut dollar = node.client(Version::V311, "dollar").await;
    dollar
        .subscribe(subscribe(1, "$other/#", QoS::AtMostOnce))
        .await;
    let mut publisher = node.client(Version::V311, "pub").await;
    for topic in ["a/b/c", "a", "b/x", "$other/x"] {
        publisher
            .publish(publish(topic, "m", QoS::AtLeastOnce, 1))
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.recv_publish().await.topic.to_string());
    }
    sub.ping().await;
    assert_eq!(
        got,
        ["a/b/c", "a", "b/x"],
        "one copy each; `$` topics skip `#` and `+`"
    );
    assert_eq!(&dollar.recv_publish().await.topic[..], "$other/x");
    dollar.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn unsubscribing_stops_delivery_and_says_whether_it_existed() {
    let node = Node::start("").await;
    let mut sub = node.client(Version::V5, "sub").await;
    sub.subscribe(subscribe(1, "u/#", QoS::AtLeastOnce)).await;
    sub.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(2),
        properties: Default::default(),
        filters: vec!["u/#".into(), "never".into()],
    }))
    .await;
    match sub.recv().await {
        Packet::UnsubAck(a) => assert_eq!(
            a.reason_codes,
            [ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
        ),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    let mut publisher = node.client(Version::V5, "pub").await;
    let code = publisher
        .publish(publish("u/1", "m", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(code, ReasonCode::NoMatchingSubscribers);
    sub.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn subscriptions_beyond_the_session_s_cap_are_refused_per_filter_and_replacing_one_is_not() {
    let node = Node::start("max_subscriptions = 2").await;
    let mut publisher = node.client(Version::V5, "pub").await;
    for (version, quota_exceeded) in [
        (Version::V5, ReasonCode::QuotaExceeded),
        // 3.1.1's SUBACK says 0x80 for any refusal.
        (Version::V311, ReasonCode::UnspecifiedError),
    ] {
        let mut sub = node.client(version, &format!("capped-{version:?}")).await;
        let mut s = subscribe(1, "a", QoS::AtLeastOnce);
        for filter in ["b", "c"] {
            s.filters
                .push(subscribe(1, filter, QoS::AtLeastOnce).filters.remove(0));
        }
        assert_eq!(
            sub.subscribe(s).await,
            [
                ReasonCode::GrantedQos1,
                ReasonCode::GrantedQos1,
                quota_exceeded
            ],
            "{version:?}: the third filter passes the cap, alone"
        );
        assert_eq!(
            sub.subscribe(subscribe(2, "b", QoS::AtMostOnce)).await,
            [ReasonCode::GRANTED_QOS_0],
            "{version:?}: at the cap, a filter held is replaced"
        );
        assert_eq!(
            publisher
                .publish(publish("c", "m", QoS::AtLeastOnce, 1))
                .await,
            ReasonCode::NoMatchingSubscribers,
            "{version:?}: the refused filter was not subscribed"
        );
        sub.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(3),
            properties: Default::default(),
            filters: vec!["a".into(), "b".into()],
        }))
        .await;
        assert!(matches!(sub.recv().await, Packet::UnsubAck(_)));
        assert_eq!(
            sub.subscribe(subscribe(4, "c", QoS::AtLeastOnce)).await,
            [ReasonCode::GrantedQos1],
            "{version:?}: room again after unsubscribing"
        );
    }
    assert_eq!(node.broker.stats().snapshot().subscriptions_refused, 2);
    node.stop().await;
}

#[tokio::test]
async fn a_malformed_packet_closes_only_its_own_connection() {
    let node = Node::start("").await;
    let mut sub = node.client(Version::V311, "sub").await;
    sub.subscribe(subscribe(1, "t", QoS::AtMostOnce)).await;
    let mut bad = node.client(Version::V5, "bad").await;
    // A PUBLISH with QoS 3.
    bad.send_bytes(&[0x36, 0x03, 0x00, 0x01, b't']).await;
    let got = bad.closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::MalformedPacket),
        "{got:?}"
    );
    let mut publisher = node.client(Version::V311, "pub").await;
    publisher
        .publish(publish("t", "still", QoS::AtMostOnce, 0))
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"still");
    assert_eq!(node.broker.stats().snapshot().protocol_errors, 1);
    node.stop().await;
}

#[tokio::test]
async fn metrics_count_messages_by_qos_and_read_the_indexes() {
    let node = Node::start("").await;
    let mut sub = node.client(Version::V5, "sub").await;
    sub.subscribe(subscribe(1, "m/#", QoS::AtLeastOnce)).await;
    let mut publisher = node.client(Version::V5, "pub").await;
    publisher
        .publish(publish("m/1", "x", QoS::ExactlyOnce, 1))
        .await;
    sub.recv_publish().await;
    sub.ping().await;
    let text = node.metrics.encode().expect("metrics encode");
    let samples = testkit::samples(&text, "lintas_mqtt_");
    for expected in [
        "lintas_mqtt_connections 2",
        "lintas_mqtt_messages_received_total{qos=\"2\"} 1",
        "lintas_mqtt_messages_sent_total{qos=\"1\"} 1",
        "lintas_mqtt_subscriptions 1",
        "lintas_mqtt_retained 0",
    ] {
        assert!(
            samples.iter().any(|s| s == expected),
            "{expected} in {samples:#?}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn the_admin_api_shows_counters_and_clients() {
    use service::Service;
    let node = Node::start("").await;
    let mut sub = node.client(Version::V5, "sub").await;
    sub.subscribe(subscribe(1, "a/#", QoS::AtLeastOnce)).await;
    let _other = node.client(Version::V311, "other").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the admin test listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let routes = node.broker.routes();
    tokio::spawn(async move { axum::serve(listener, routes).await });
    let http = testkit::HttpClient::new();

    let overview: serde_json::Value =
        serde_json::from_str(&http.get(&format!("{base}/api/mqtt")).await.body).expect("JSON");
    assert_eq!(overview["listen"], node.addr.to_string());
    assert_eq!(overview["connections"], 2);
    assert_eq!(overview["subscriptions"], 1);

    let clients: serde_json::Value =
        serde_json::from_str(&http.get(&format!("{base}/api/mqtt/clients")).await.body)
            .expect("JSON");
    let summary: Vec<(String, String, u64)> = clients
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            (
                c["client_id"].as_str().expect("id").to_owned(),
                c["version"].as_str().expect("version").to_owned(),
                c["subscriptions"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("other".into(), "3.1.1".into(), 0),
            ("sub".into(), "5.0".into(), 1)
        ]
    );
    node.stop().await;
}

#[tokio::test]
async fn sys_topics_are_published_under_mosquitto_s_names() {
    let node = Node::start("sys_interval = \"50ms\"").await;
    let mut sub = node.client(Version::V311, "sys").await;
    sub.subscribe(subscribe(
        1,
        "$SYS/broker/clients/connected",
        QoS::AtMostOnce,
    ))
    .await;
    // The first value may predate this client (retained); the next ones count it.
    loop {
        let p = sub.recv_publish().await;
        assert_eq!(&p.topic[..], "$SYS/broker/clients/connected");
        if &p.payload[..] == b"1" {
            break;
        }
        assert_eq!(&p.payload[..], b"0", "only 0 before this client counts");
    }
    node.stop().await;
}
