//! Brokers forming one cluster on a real Redis: three nodes in one process, each with its
//! own backplane connection under one prefix (as three lintas processes would have), and
//! clients over TCP. A message published on one node reaches every matching subscription
//! in the cluster once; a node without a matching subscription receives nothing; shared
//! groups are split across nodes by their members.

use std::collections::BTreeMap;
use std::time::Duration;

use mqtt::codec::{Packet, Publish, QoS, Version};
use mqtt::topic::TopicName;
use testkit::{PATIENCE, wait_until};

use super::cluster_routes::{Cluster, redis_url};
use super::harness::{Node, Raw, next_message, next_messages, publish, resuming, subscribe};

/// `n` broker nodes of one cluster.
async fn nodes(tag: &str, n: usize) -> (Cluster, Vec<Node>) {
    let cluster = Cluster::new(&redis_url(), tag);
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Node::start_on("", Some(cluster.backplane().await)).await);
    }
    (cluster, nodes)
}

/// The other nodes `node` would send a message on `topic` to, and the shared groups with
/// their member counts.
fn remote(node: &Node, topic: &str) -> (usize, u32) {
    let table = node.broker.cluster().expect("a cluster node").routes();
    let name = TopicName::parse(topic, 32).expect("a valid name");
    let (mut nodes, mut members) = (0, 0);
    table.matching(
        name,
        |_| nodes += 1,
        |_, m| members += m.iter().map(|(_, n)| n).sum::<u32>(),
    );
    (nodes, members)
}

/// Waits until `node` routes `topic` to `want` other nodes and `members` remote group
/// members.
async fn routed(node: &Node, topic: &str, want: (usize, u32)) {
    wait_until(
        &format!("{topic} to be routed to {want:?}"),
        PATIENCE,
        || async { remote(node, topic) == want },
    )
    .await;
}

/// The messages `raw` receives until `marker` arrives, as `topic:payload:QoS`.
async fn until_marker(raw: &mut Raw, marker: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let (text, label) = next_message(raw).await;
        if text == marker {
            return got;
        }
        got.push(label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_every_matching_subscription_in_the_cluster_once() {
    let (cluster, nodes) = nodes("forward", 3).await;
    let mut on_one = nodes[0].client(Version::V5, "one").await;
    on_one
        .subscribe(subscribe(1, "a/#", QoS::ExactlyOnce))
        .await;
    let mut on_two = nodes[1].client(Version::V311, "two").await;
    on_two
        .subscribe(subscribe(1, "a/b", QoS::ExactlyOnce))
        .await;
    on_two
        .subscribe(subscribe(2, "a/+", QoS::AtLeastOnce))
        .await;
    let mut on_three = nodes[2].client(Version::V5, "three").await;
    on_three
        .subscribe(subscribe(1, "end", QoS::AtLeastOnce))
        .await;
    on_one
        .subscribe(subscribe(2, "end", QoS::AtLeastOnce))
        .await;
    on_two
        .subscribe(subscribe(3, "end", QoS::AtLeastOnce))
        .await;
    routed(&nodes[2], "a/b", (2, 0)).await;
    routed(&nodes[0], "end", (2, 0)).await;

    let mut publisher = nodes[2].client(Version::V5, "publisher").await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let id = u16::try_from(i + 1).expect("small");
        publisher.publish(publish("a/b", "m", qos, id)).await;
        publisher
            .publish(publish("b/x", "elsewhere", qos, id))
            .await;
    }
    publisher
        .publish(publish("end", "end", QoS::AtLeastOnce, 9))
        .await;
    let want = ["a/b:m:AtMostOnce", "a/b:m:AtLeastOnce", "a/b:m:ExactlyOnce"];
    assert_eq!(until_marker(&mut on_one, "end").await, want);
    assert_eq!(until_marker(&mut on_two, "end").await, want);
    assert_eq!(
        until_marker(&mut on_three, "end").await,
        Vec::<String>::new()
    );

    // Node 3's only subscription was `end`: nothing else was ever sent to its inbox.
    let three = nodes[2].broker.cluster().expect("cluster").node().clone();
    let inbox = cluster
        .backplane()
        .await
        .stream(
            &mqtt::cluster::inbox::stream(&three),
            mqtt::cluster::inbox::options(),
        )
        .await
        .expect("the inbox opens");
    assert_eq!(inbox.end().await.expect("its end"), 0);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_spans_nodes_each_member_taking_its_turn() {
    let (_cluster, nodes) = nodes("shared", 3).await;
    let mut members = Vec::new();
    for (node, client) in [(0, "w1"), (1, "w2"), (1, "w3")] {
        let mut raw = nodes[node].client(Version::V5, client).await;
        raw.subscribe(subscribe(1, "$share/workers/jobs/+", QoS::AtLeastOnce))
            .await;
        raw.subscribe(subscribe(2, "done", QoS::AtLeastOnce)).await;
        members.push(raw);
    }
    routed(&nodes[2], "jobs/1", (0, 3)).await;
    routed(&nodes[2], "done", (2, 0)).await;
    let mut publisher = nodes[2].client(Version::V5, "boss").await;
    for i in 0..30u16 {
        publisher
            .publish(publish("jobs/1", "job", QoS::AtLeastOnce, i + 1))
            .await;
    }
    publisher
        .publish(publish("done", "end", QoS::AtLeastOnce, 99))
        .await;
    let mut counts = BTreeMap::new();
    for (raw, client) in members.iter_mut().zip(["w1", "w2", "w3"]) {
        counts.insert(client, until_marker(raw, "end").await.len());
    }
    assert_eq!(counts, BTreeMap::from([("w1", 10), ("w2", 10), ("w3", 10)]));
    for node in nodes {
        node.stop().await;
    }
}

/// Publishes `count` QoS 1 messages `0..count` on `topic` from `publisher`.
async fn send(publisher: &mut Raw, topic: &str, count: u16) {
    for i in 0..count {
        let text: &'static str = ["0", "1", "2", "3", "4"][usize::from(i)];
        publisher
            .publish(publish(topic, text, QoS::AtLeastOnce, i + 1))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_with_its_queued_messages_to_the_node_its_client_reconnects_to() {
    let (_cluster, nodes) = nodes("move", 3).await;
    let (mut client, ack) = nodes[0].raw(resuming("mover")).await;
    assert!(!ack.session_present);
    client
        .subscribe(subscribe(1, "m/#", QoS::AtLeastOnce))
        .await;
    client
        .send(&Packet::Disconnect(mqtt::codec::Disconnect::default()))
        .await;
    // Published on the session's own node, so they are in its queue when the client moves
    // (a message still on its way to that node's inbox at the moment of a takeover is the
    // gap docs/mqtt.md lists).
    let mut local = nodes[0].client(Version::V5, "local").await;
    send(&mut local, "m/x", 3).await;
    let mut publisher = nodes[2].client(Version::V5, "publisher").await;

    let (mut client, ack) = nodes[1].raw(resuming("mover")).await;
    assert!(ack.session_present, "the session came from node 1");
    for want in ["0", "1", "2"] {
        assert_eq!(client.recv_publish().await.payload, want.as_bytes());
    }
    // Its subscription is routed to node 2 now, and node 1 holds nothing of it.
    routed(&nodes[2], "m/x", (1, 0)).await;
    wait_until("node 1 to drop the session", PATIENCE, || async {
        nodes[0].broker.index_sizes().0 == 0
    })
    .await;
    publisher
        .publish(publish("m/x", "3", QoS::AtLeastOnce, 9))
        .await;
    assert_eq!(client.recv_publish().await.payload, &b"3"[..]);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_connected_on_two_nodes_keeps_only_its_newest_connection() {
    let (_cluster, nodes) = nodes("twice", 2).await;
    let mut first = nodes[0].client(Version::V5, "twice").await;
    let _second = nodes[1].client(Version::V5, "twice").await;
    let goodbye = tokio::time::timeout(PATIENCE, first.closed())
        .await
        .expect("the first connection is closed");
    assert!(
        matches!(&goodbye[..], [Packet::Disconnect(d)] if d.reason_code == mqtt::codec::ReasonCode::SessionTakenOver),
        "{goodbye:?}"
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_a_node_that_is_gone_resumes_its_subscriptions_elsewhere() {
    let (_cluster, mut nodes) = nodes("gone", 3).await;
    let (mut client, _) = nodes[0].raw(resuming("orphan")).await;
    client
        .subscribe(subscribe(1, "o/+", QoS::AtLeastOnce))
        .await;
    client.subscribe(subscribe(2, "p", QoS::AtMostOnce)).await;
    routed(&nodes[2], "o/1", (1, 0)).await;
    nodes.remove(0).stop().await;
    drop(client);

    let (mut client, ack) = nodes[0].raw(resuming("orphan")).await;
    assert!(ack.session_present);
    // Its new node, and the gone one, whose routes are kept for the grace.
    routed(&nodes[1], "o/1", (2, 0)).await;
    let mut publisher = nodes[1].client(Version::V5, "publisher").await;
    send(&mut publisher, "o/1", 1).await;
    assert_eq!(client.recv_publish().await.payload, &b"0"[..]);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_client_stays_away_past_the_grace_is_adopted_and_keeps_its_messages() {
    let cluster = Cluster::new(&redis_url(), "adopt");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let backplane = Some(cluster.backplane().await);
        nodes.push(Node::start_on("dead_node_grace = \"1s\"", backplane).await);
    }
    let (mut client, _) = nodes[0].raw(resuming("away")).await;
    client
        .subscribe(subscribe(1, "a/+", QoS::AtLeastOnce))
        .await;
    drop(client);
    routed(&nodes[1], "a/1", (1, 0)).await;
    let mut publisher = nodes[1].client(Version::V5, "publisher").await;
    send(&mut publisher, "a/1", 1).await;
    let gone = nodes[0]
        .broker
        .cluster()
        .expect("a cluster node")
        .node()
        .clone();
    nodes.remove(0).stop().await;
    // Past the grace, one of the others adopts the session: it holds the subscription,
    // and the publisher's node no longer routes to the gone node.
    wait_until("the session to be adopted", PATIENCE, || async {
        let held: usize = nodes.iter().map(|n| n.broker.index_sizes().0).sum();
        let table = nodes[0].broker.cluster().expect("a cluster node").routes();
        let mut to_gone = false;
        let name = TopicName::parse("a/1", 32).expect("a valid name");
        table.matching(name, |n| to_gone |= *n == gone, |_, _| {});
        held == 1 && !to_gone
    })
    .await;
    let adopter = usize::from(nodes[1].broker.index_sizes().0 == 1);
    if adopter == 1 {
        routed(&nodes[0], "a/1", (1, 0)).await;
    }
    // Published after the grace: without the adoption it would reach nobody.
    publisher
        .publish(publish("a/1", "1", QoS::AtLeastOnce, 9))
        .await;
    // The client comes back to the node that did not adopt it: the session moves again.
    let (mut client, ack) = nodes[1 - adopter].raw(resuming("away")).await;
    assert!(ack.session_present);
    assert_eq!(
        next_messages(&mut client, 2).await,
        ["a/1:0:AtLeastOnce", "a/1:1:AtLeastOnce"]
    );
    // A grace and a lease after the adoption, the gone node's inbox and journal are deleted.
    let keys: Vec<String> = ["inbox", "journal"]
        .iter()
        .flat_map(|s| {
            let base = format!("{}:{{mqtt:{s}:{gone}}}", cluster.prefix());
            [format!("{base}:stream"), format!("{base}:id")]
        })
        .collect();
    let redis = redis::Client::open(redis_url())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let present = || {
        let mut redis = redis.clone();
        let keys = keys.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(&keys)
                .query_async::<u64>(&mut redis)
                .await
                .expect("EXISTS")
        }
    };
    assert!(present().await > 0, "{keys:?} were there");
    wait_until(
        "the gone node's streams to be deleted",
        PATIENCE,
        || async { present().await == 0 },
    )
    .await;
    for node in nodes {
        node.stop().await;
    }
}

/// A retained QoS 1 message `payload` on `topic`.
fn retained(topic: &str, payload: &'static str, id: u16) -> Publish {
    let mut p = publish(topic, payload, QoS::AtLeastOnce, id);
    p.retain = true;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_the_clusters() {
    let (cluster, mut nodes) = nodes("retained", 2).await;
    let mut publisher = nodes[0].client(Version::V5, "publisher").await;
    publisher.publish(retained("r/a", "kept", 1)).await;
    publisher.publish(retained("r/b", "cleared", 2)).await;
    publisher.publish(retained("r/b", "", 3)).await;
    wait_until("node 2 to hold r/a", PATIENCE, || async {
        nodes[1].broker.index_sizes().1 == 1
    })
    .await;
    // A node started later reads them from the backplane.
    nodes.push(Node::start_on("", Some(cluster.backplane().await)).await);
    for node in &nodes[1..] {
        let mut sub = node.client(Version::V5, "reader").await;
        sub.subscribe(subscribe(1, "r/#", QoS::AtLeastOnce)).await;
        let p = sub.recv_publish().await;
        assert_eq!(
            (&p.topic[..], &p.payload[..], p.retain),
            ("r/a", &b"kept"[..], true)
        );
        sub.subscribe(subscribe(2, "end", QoS::AtLeastOnce)).await;
        routed(&nodes[0], "end", (1, 0)).await;
        publisher
            .publish(publish("end", "end", QoS::AtLeastOnce, 9))
            .await;
        assert_eq!(until_marker(&mut sub, "end").await, Vec::<String>::new());
        sub.send(&Packet::Disconnect(mqtt::codec::Disconnect::default()))
            .await;
        routed(&nodes[0], "end", (0, 0)).await;
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queued_messages_of_a_node_that_is_gone_are_read_back_from_its_journal() {
    let (_cluster, mut nodes) = nodes("journal", 3).await;
    let (mut client, _) = nodes[0].raw(resuming("durable")).await;
    client
        .subscribe(subscribe(1, "d/+", QoS::ExactlyOnce))
        .await;
    client.subscribe(subscribe(2, "e", QoS::AtMostOnce)).await;
    client
        .send(&Packet::Disconnect(mqtt::codec::Disconnect::default()))
        .await;
    routed(&nodes[2], "d/x", (1, 0)).await;
    // Three from another node (through node 1's inbox), two from node 1 itself, one QoS 0
    // (not kept for an absent client) and one the subscription downgrades to QoS 0.
    let mut remote = nodes[2].client(Version::V5, "remote").await;
    send(&mut remote, "d/x", 3).await;
    let mut local = nodes[0].client(Version::V5, "local").await;
    local
        .publish(publish("d/y", "3", QoS::ExactlyOnce, 1))
        .await;
    local
        .publish(publish("d/y", "q0", QoS::AtMostOnce, 0))
        .await;
    local
        .publish(publish("e", "downgraded", QoS::AtLeastOnce, 2))
        .await;
    local
        .publish(publish("d/y", "4", QoS::AtLeastOnce, 3))
        .await;
    nodes.remove(0).stop().await;

    let (mut client, ack) = nodes[0].raw(resuming("durable")).await;
    assert!(ack.session_present);
    let got: Vec<String> = next_messages(&mut client, 5).await;
    // Each publisher's messages in the order it sent them (§4.6); the two publishers'
    // interleave as node 1 happened to route them (the remote ones when it read its inbox).
    let of =
        |topic: &str| -> Vec<&String> { got.iter().filter(|m| m.starts_with(topic)).collect() };
    assert_eq!(
        [of("d/x:"), of("d/y:")].concat(),
        [
            "d/x:0:AtLeastOnce",
            "d/x:1:AtLeastOnce",
            "d/x:2:AtLeastOnce",
            "d/y:3:ExactlyOnce",
            "d/y:4:AtLeastOnce"
        ]
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_a_gone_nodes_sessions_wait_in_its_inbox_for_their_clients() {
    let (_cluster, mut nodes) = nodes("inbox", 3).await;
    let (mut client, _) = nodes[0].raw(resuming("waiting")).await;
    client
        .subscribe(subscribe(1, "w/+", QoS::AtLeastOnce))
        .await;
    routed(&nodes[2], "w/x", (1, 0)).await;
    let mut remote = nodes[2].client(Version::V5, "remote").await;
    send(&mut remote, "w/x", 2).await;
    // Delivered but not acknowledged: in flight when the node goes.
    for want in ["0", "1"] {
        let p = client.recv().await;
        assert!(
            matches!(&p, Packet::Publish(p) if p.payload == want.as_bytes()),
            "{p:?}"
        );
    }
    nodes.remove(0).stop().await;
    drop(client);
    // The gone node's routes are kept: these wait in its inbox.
    routed(&nodes[1], "w/x", (1, 0)).await;
    for (i, text) in ["2", "3"].into_iter().enumerate() {
        let id = u16::try_from(i).expect("small") + 10;
        remote
            .publish(publish("w/x", text, QoS::AtLeastOnce, id))
            .await;
    }
    let (mut client, ack) = nodes[0].raw(resuming("waiting")).await;
    assert!(ack.session_present);
    assert_eq!(
        next_messages(&mut client, 4).await,
        [
            "w/x:0:AtLeastOnce",
            "w/x:1:AtLeastOnce",
            "w/x:2:AtLeastOnce",
            "w/x:3:AtLeastOnce"
        ]
    );
    // What is published after it resumed comes both ways while the gone node's routes are
    // kept (directly, and through that node's inbox): queued once.
    routed(&nodes[1], "w/x", (2, 0)).await;
    remote
        .publish(publish("w/x", "4", QoS::AtLeastOnce, 20))
        .await;
    remote
        .publish(publish("w/x", "5", QoS::AtLeastOnce, 21))
        .await;
    assert_eq!(
        next_messages(&mut client, 2).await,
        ["w/x:4:AtLeastOnce", "w/x:5:AtLeastOnce"]
    );
    // The gone node's inbox is read every 500 ms: three reads bring no second copy.
    let more = tokio::time::timeout(Duration::from_millis(1_500), client.recv()).await;
    assert!(more.is_err(), "a second copy: {more:?}");
    for node in nodes {
        node.stop().await;
    }
}
