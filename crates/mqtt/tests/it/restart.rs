//! A single node (the embedded backplane) keeps its persistent sessions and retained
//! messages across a restart: subscriptions, the QoS 1 and 2 messages queued or in flight,
//! and what is published for them between the restart and their clients' return.

use mqtt::codec::{Ack, Packet, QoS, ReasonCode, SubscriptionOptions, Version};

use super::harness::{
    Node, Raw, connect, next_message, next_messages, publish, resuming, subscribe, subscribe_with,
};

/// Restarts `node`, publishes `text` on `topic` at QoS 1 before `keeper` is back, then
/// resumes `keeper`'s session (which must be there): the node, the publisher and `keeper`.
async fn restart_publishing(node: Node, topic: &str, text: &'static str) -> (Node, Raw, Raw) {
    let node = node.restart().await;
    let mut publisher = node.client(Version::V5, "publisher").await;
    publisher
        .publish(publish(topic, text, QoS::AtLeastOnce, 1))
        .await;
    let (keeper, ack) = node.raw(resuming("keeper")).await;
    assert!(ack.session_present, "{ack:?}");
    (node, publisher, keeper)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_keeps_its_subscriptions_and_messages_across_a_restart() {
    let node = Node::start("").await;
    let (mut keeper, ack) = node.raw(resuming("keeper")).await;
    assert!(!ack.session_present);
    let mut jobs = subscribe_with(
        1,
        "jobs/+",
        SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            ..SubscriptionOptions::default()
        },
    );
    jobs.properties.subscription_identifiers = vec![std::num::NonZeroU32::new(7).expect("7")];
    assert_eq!(keeper.subscribe(jobs).await, [ReasonCode::GrantedQos2]);
    assert_eq!(
        keeper
            .subscribe(subscribe(2, "alerts", QoS::AtLeastOnce))
            .await,
        [ReasonCode::GrantedQos1]
    );
    // One message reaches the client and is never acknowledged: in flight at the restart.
    let mut publisher = node.client(Version::V5, "publisher").await;
    publisher
        .publish(publish("jobs/0", "in flight", QoS::AtLeastOnce, 1))
        .await;
    let Packet::Publish(first) = keeper.recv().await else {
        panic!("expected the first message");
    };
    assert_eq!(&first.payload[..], b"in flight");
    keeper
        .send(&Packet::Disconnect(mqtt::codec::Disconnect::default()))
        .await;
    drop(keeper);
    for (i, (topic, text, qos)) in [
        ("jobs/1", "one", QoS::AtLeastOnce),
        ("jobs/2", "two", QoS::ExactlyOnce),
        ("alerts", "three", QoS::AtLeastOnce),
        ("jobs/3", "not kept: QoS 0", QoS::AtMostOnce),
    ]
    .into_iter()
    .enumerate()
    {
        let id = u16::try_from(i).expect("few") + 2;
        assert_eq!(
            publisher.publish(publish(topic, text, qos, id)).await,
            ReasonCode::Success
        );
    }
    drop(publisher);

    // Published after the restart, before the client is back: queued for its session.
    let (node, mut publisher, mut keeper) = restart_publishing(node, "jobs/4", "four").await;
    assert_eq!(
        next_messages(&mut keeper, 5).await,
        [
            "jobs/0:in flight:AtLeastOnce",
            "jobs/1:one:AtLeastOnce",
            "jobs/2:two:ExactlyOnce",
            "alerts:three:AtLeastOnce",
            "jobs/4:four:AtLeastOnce",
        ]
    );
    // The PUBREL of "two" may come after the last message: read up to a PINGRESP, which
    // the broker sends after it.
    keeper.send(&Packet::PingReq).await;
    loop {
        match keeper.recv().await {
            Packet::PingResp => break,
            Packet::PubRel(rel) => {
                keeper
                    .send(&Packet::PubComp(Ack::success(rel.packet_id)))
                    .await;
            }
            other => panic!("expected PUBREL or PINGRESP, got {other:?}"),
        }
    }
    // Its subscriptions came back as they were: QoS, and the identifier.
    publisher
        .publish(publish("jobs/5", "five", QoS::ExactlyOnce, 2))
        .await;
    let Packet::Publish(five) = keeper.recv().await else {
        panic!("expected the message published after the client came back");
    };
    assert_eq!(
        (
            &five.payload[..],
            five.qos,
            five.properties.subscription_identifiers.clone()
        ),
        (
            &b"five"[..],
            QoS::ExactlyOnce,
            vec![std::num::NonZeroU32::new(7).expect("7")]
        )
    );
    keeper.ack(&five).await;
    keeper.ping().await;
    // The first run's journal is gone; this run's remains.
    let streams: Vec<String> = std::fs::read_dir(node.data_dir().join("streams"))
        .expect("the streams directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(streams, ["mqtt-journal-2"]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_client_acknowledged_are_not_sent_again_after_a_restart() {
    let node = Node::start("").await;
    let (mut keeper, _) = node.raw(resuming("keeper")).await;
    keeper.subscribe(subscribe(1, "t", QoS::AtLeastOnce)).await;
    let mut publisher = node.client(Version::V5, "publisher").await;
    publisher
        .publish(publish("t", "taken", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(next_message(&mut keeper).await.1, "t:taken:AtLeastOnce");
    keeper.ping().await;
    drop(keeper);
    // A clean stop writes the sessions' floors: what was acknowledged stays acknowledged.
    let (node, _, mut keeper) = restart_publishing(node, "t", "after").await;
    assert_eq!(next_message(&mut keeper).await.1, "t:after:AtLeastOnce");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_replaced_by_a_clean_one_is_not_restored() {
    let node = Node::start("").await;
    let (mut keeper, _) = node.raw(resuming("keeper")).await;
    keeper.subscribe(subscribe(1, "t", QoS::AtLeastOnce)).await;
    drop(keeper);
    let (mut clean, ack) = node.raw(connect(Version::V5, "keeper")).await;
    assert!(!ack.session_present);
    clean.ping().await;
    drop(clean);
    let node = node.restart().await;
    let (mut keeper, ack) = node.raw(resuming("keeper")).await;
    assert!(!ack.session_present, "{ack:?}");
    keeper.ping().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_survive_a_restart_the_latest_of_each_topic_and_none_refused() {
    let node = Node::start("max_retained = 2").await;
    let mut publisher = node.client(Version::V311, "publisher").await;
    let retained = |topic: &str, payload: &'static str, id: u16| {
        let mut p = publish(topic, payload, QoS::AtLeastOnce, id);
        p.retain = true;
        p
    };
    // Republished fast: the writes of one topic may be folded into the last.
    for (i, text) in ["1", "2", "3", "4", "5", "6", "7", "8", "last"]
        .into_iter()
        .enumerate()
    {
        let id = u16::try_from(i).expect("few") + 1;
        publisher.publish(retained("status/a", text, id)).await;
    }
    publisher
        .publish(retained("status/b", "gone soon", 20))
        .await;
    publisher.publish(retained("status/b", "", 21)).await;
    publisher.publish(retained("status/c", "kept", 22)).await;
    // Beyond max_retained: refused, and not written to disk either.
    publisher.publish(retained("status/d", "refused", 23)).await;
    publisher.ping().await;
    drop(publisher);
    let node = node.restart().await;
    let mut reader = node.client(Version::V311, "reader").await;
    reader
        .subscribe(subscribe(1, "status/+", QoS::AtLeastOnce))
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = reader.recv_publish().await;
        assert!(p.retain);
        got.push(format!(
            "{}={}",
            p.topic,
            String::from_utf8_lossy(&p.payload)
        ));
    }
    got.sort();
    assert_eq!(got, ["status/a=last", "status/c=kept"]);
    reader.ping().await;
    node.stop().await;
}
