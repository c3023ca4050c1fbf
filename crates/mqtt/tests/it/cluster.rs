//! Brokers forming one cluster on a real Redis: three nodes in one process, each with its
//! own backplane connection under one prefix (as three lintas processes would have), and
//! clients over TCP. A message published on one node reaches every matching subscription
//! in the cluster once; a node without a matching subscription receives nothing; shared
//! groups are split across nodes by their members.

use std::collections::BTreeMap;

use mqtt::codec::{Ack, Packet, Publish, QoS, Version};
use mqtt::topic::TopicName;
use testkit::{PATIENCE, wait_until};

use super::cluster_routes::{Cluster, redis_url};
use super::harness::{Node, Raw, publish, subscribe};

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

/// The messages `raw` receives until `marker` arrives, as `topic:payload:QoS`; QoS 1 and 2
/// acknowledged as they come (a QoS 2 message's PUBREL may come after later messages).
async fn until_marker(raw: &mut Raw, marker: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let p: Publish = match raw.recv().await {
            Packet::Publish(p) => p,
            Packet::PubRel(rel) => {
                raw.send(&Packet::PubComp(Ack::success(rel.packet_id)))
                    .await;
                continue;
            }
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        };
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => raw.send(&Packet::PubAck(Ack::success(id))).await,
            (QoS::ExactlyOnce, Some(id)) => raw.send(&Packet::PubRec(Ack::success(id))).await,
            _ => {}
        }
        let text = String::from_utf8(p.payload.to_vec()).expect("UTF-8");
        if text == marker {
            return got;
        }
        got.push(format!("{}:{text}:{:?}", p.topic, p.qos));
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
