//! Hubs forming one cluster on a real Redis: nodes in one process, each with its own
//! backplane connection under one prefix, as separate lintas processes would have.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{PATIENCE, TempDir};

use super::harness::{Client, Node, prefix, redis_backplane};

/// Three nodes of one cluster.
async fn cluster(tag: &str, n: usize, text: &str) -> (Vec<Node>, TempDir) {
    let prefix = prefix(tag);
    let dir = TempDir::new();
    let mut nodes = Vec::new();
    for _ in 0..n {
        let b = redis_backplane(&prefix, &dir).await;
        nodes.push(Node::start_on(text, Some(b)).await);
    }
    (nodes, dir)
}

/// Reads `c` until it has `n` messages of `room`; their (from, data) in order.
async fn messages(c: &mut Client, room: &str, n: usize) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        let f = c.next().await;
        if f["type"] == "message" && f["room"] == room {
            got.push((f["offset"].as_u64().expect("offset"), f["data"].clone()));
        }
    }
    got
}

#[tokio::test]
async fn room_messages_from_every_node_reach_every_member_once_in_offset_order() {
    let (nodes, _dir) = cluster("order", 3, "publish_rate = 100000").await;
    let mut readers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = node.anonymous(&format!("reader{i}")).await;
        c.join("room").await;
        readers.push(c);
    }
    let mut writers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = node.anonymous(&format!("writer{i}")).await;
        c.join("room").await;
        writers.push(c);
    }
    // Three writers on three nodes at once: 3 × 100 messages.
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, mut c)| {
            tokio::spawn(async move {
                for n in 0..100u64 {
                    let (reply, _) = c
                        .ask(
                            n,
                            json!({"type": "publish", "room": "room", "data": [w, n]}),
                        )
                        .await;
                    assert_eq!(reply["type"], "published", "{reply}");
                }
                c
            })
        })
        .collect();
    let mut per_reader = Vec::new();
    for r in &mut readers {
        per_reader.push(messages(r, "room", 300).await);
    }
    for t in tasks {
        t.await.expect("a writer");
    }
    for got in &per_reader {
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..300).collect::<Vec<_>>(),
            "gapless, in order, once"
        );
        // Each writer's own messages in the order it sent them.
        for w in 0..3u64 {
            let mine: Vec<u64> = got
                .iter()
                .filter(|(_, d)| d[0] == w)
                .map(|(_, d)| d[1].as_u64().expect("n"))
                .collect();
            assert_eq!(mine, (0..100).collect::<Vec<_>>());
        }
    }
    assert_eq!(per_reader[0], per_reader[1]);
    assert_eq!(per_reader[1], per_reader[2]);
    for r in &mut readers {
        let extra = r.maybe(Duration::from_millis(300)).await;
        assert!(
            extra.as_ref().is_none_or(|f| f["type"] != "message"),
            "nothing twice: {extra:?}"
        );
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn direct_messages_and_presence_cross_nodes() {
    let (nodes, _dir) = cluster("direct", 2, "presence_timeout = \"2s\"").await;
    let mut a = nodes[0].anonymous("a").await;
    let mut b = nodes[1].anonymous("b").await;
    let mut b2 = nodes[0].anonymous("b").await;
    a.join("r").await;
    let joined = b.join("r").await;
    // Presence may already list a (its record or its event arrived), or not yet: the
    // event tells it at the latest.
    let listed = joined["presence"].as_array().expect("presence").len();
    assert!(listed == 1 || listed == 2, "{joined}");
    assert_eq!(
        a.next().await,
        json!({"type": "user_joined", "room": "r", "user": "~b", "name": "b"})
    );
    let (sent, _) = a
        .ask(1, json!({"type": "send", "to": "~b", "data": {"hi": 1}}))
        .await;
    assert_eq!(sent["type"], "sent");
    for c in [&mut b, &mut b2] {
        let got = c.next().await;
        assert_eq!(got["type"], "direct", "{got}");
        assert_eq!(got["data"], json!({"hi": 1}));
    }
    // The count covers b's connection on the other node once its presence record is read.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (sent, _) = a
            .ask(2, json!({"type": "send", "to": "~b", "data": 0}))
            .await;
        if sent["connections"] == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's node never counted b's two connections"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (p, _) = a.ask(3, json!({"type": "presence", "room": "r"})).await;
    assert_eq!(
        p["users"],
        json!([{"user": "~a", "name": "a"}, {"user": "~b", "name": "b"}])
    );
    drop(b);
    let left = loop {
        let f = a.next().await;
        if f["type"] == "user_left" {
            break f;
        }
    };
    assert_eq!(
        left,
        json!({"type": "user_left", "room": "r", "user": "~b", "name": "b"})
    );
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_client_recovers_on_another_node_what_it_missed() {
    let (nodes, _dir) = cluster("recover", 2, "history_size = 50").await;
    let mut publisher = nodes[0].anonymous("p").await;
    publisher.join("r").await;
    let mut a = nodes[0].anonymous("a").await;
    let epoch = a.join("r").await["epoch"].clone();
    publisher
        .send(json!({"type": "publish", "room": "r", "data": 0}))
        .await;
    assert_eq!(a.next().await["offset"], 0);
    drop(a);
    for n in 1..=10 {
        let (reply, _) = publisher
            .ask(n, json!({"type": "publish", "room": "r", "data": n}))
            .await;
        assert_eq!(reply["offset"], n);
    }
    // Back on the other node, which never had the room.
    let mut back = nodes[1].anonymous("a").await;
    let (joined, _) = back
        .ask(
            1,
            json!({"type": "join", "room": "r", "recover": {"epoch": epoch, "offset": 1}}),
        )
        .await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let data: Vec<u64> = joined["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"].as_u64().expect("data"))
        .collect();
    assert_eq!(data, (1..=10).collect::<Vec<_>>());
    assert_eq!(joined["offset"], 11);
    publisher
        .send(json!({"type": "publish", "room": "r", "data": 11}))
        .await;
    let next = loop {
        let f = back.next().await;
        if f["type"] == "message" {
            break f;
        }
    };
    assert_eq!(
        (next["offset"].as_u64(), next["data"].as_u64()),
        (Some(11), Some(11))
    );
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_stopped_nodes_users_leave_presence() {
    let (mut nodes, _dir) = cluster("leave", 2, "presence_timeout = \"1s\"").await;
    let mut watcher = nodes[0].anonymous("w").await;
    watcher.join("r").await;
    let mut gone = nodes[1].anonymous("gone").await;
    gone.join("r").await;
    assert_eq!(watcher.next().await["type"], "user_joined");
    let second = nodes.pop().expect("node 2");
    drop(gone);
    second.stop().await;
    let left = watcher.next().await;
    assert_eq!(
        left,
        json!({"type": "user_left", "room": "r", "user": "~gone", "name": "gone"})
    );
    for n in nodes {
        n.stop().await;
    }
}
