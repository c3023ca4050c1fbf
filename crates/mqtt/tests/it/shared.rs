//! Shared subscriptions: one member of a group per message, in turn.

use mqtt::codec::{QoS, Version};

use crate::harness::{Node, Raw, publish, subscribe};

async fn group(node: &Node) -> Vec<Raw> {
    let mut members = Vec::new();
    for name in ["w1", "w2", "w3"] {
        let mut m = node.client(Version::V5, name).await;
        m.subscribe(subscribe(1, "$share/workers/jobs/+", QoS::AtLeastOnce))
            .await;
        members.push(m);
    }
    members
}

#[tokio::test]
async fn six_messages_to_a_group_of_three_go_two_to_each() {
    for strategy in ["round_robin", "least_inflight"] {
        let node = Node::start(&format!("shared_strategy = \"{strategy}\"")).await;
        let mut members = group(&node).await;
        let mut publisher = node.client(Version::V5, "boss").await;
        for i in 1..=6 {
            publisher
                .publish(publish("jobs/build", "job", QoS::AtLeastOnce, i))
                .await;
        }
        let counts: Vec<usize> = node
            .broker
            .clients()
            .iter()
            .filter(|c| c.client_id.starts_with('w'))
            .map(|c| c.queued + c.inflight)
            .collect();
        assert_eq!(counts, [2, 2, 2], "{strategy}");
        for m in &mut members {
            m.recv_publish().await;
            m.recv_publish().await;
            m.ping().await;
        }
        node.stop().await;
    }
}
