//! One hub, real sockets: rooms, order, presence, direct messages, history and recovery,
//! the publish API — each frame asserted whole.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::HttpClient;

use super::harness::{Node, now, token};

/// The `message` frame `from` (anonymous `name`) sends `data` in `room` at `offset`, as
/// received: `time` is copied from `got` after checking it is recent.
fn message(got: &Value, room: &str, name: &str, data: Value, offset: u64) -> Value {
    let time = got["time"].as_u64().expect("a time");
    let now_ms = now() * 1000;
    assert!(time + 60_000 > now_ms && time <= now_ms + 1000, "{got}");
    json!({
        "type": "message", "room": room, "from": format!("~{name}"), "name": name,
        "data": data, "time": time, "epoch": got["epoch"], "offset": offset,
    })
}

#[tokio::test]
async fn room_messages_reach_every_member_in_order_and_the_publisher_is_answered() {
    let node = Node::start("").await;
    let mut alice = node.anonymous("alice").await;
    let mut bob = node.anonymous("bob").await;
    let joined = alice.join("lobby").await;
    assert_eq!(
        joined,
        json!({"type": "joined", "id": 1_000_001, "room": "lobby", "epoch": joined["epoch"],
               "offset": 0, "presence": [{"user": "~alice", "name": "alice"}]})
    );
    let epoch = joined["epoch"].clone();
    assert!(epoch.as_str().is_some_and(|e| !e.is_empty()));
    bob.join("lobby").await;
    assert_eq!(
        alice.next().await,
        json!({"type": "user_joined", "room": "lobby", "user": "~bob", "name": "bob"})
    );
    for n in 0..20u64 {
        let (reply, before) = alice
            .ask(
                n,
                json!({"type": "publish", "room": "lobby", "data": {"n": n}}),
            )
            .await;
        assert_eq!(
            reply,
            json!({"type": "published", "id": n, "room": "lobby", "epoch": epoch, "offset": n})
        );
        assert_eq!(
            before,
            [message(&before[0], "lobby", "alice", json!({"n": n}), n)]
        );
    }
    for n in 0..20u64 {
        let got = bob.next().await;
        assert_eq!(got, message(&got, "lobby", "alice", json!({"n": n}), n));
    }
    assert_eq!(
        bob.maybe(Duration::from_millis(200)).await,
        None,
        "nothing twice"
    );
    node.stop().await;
}

#[tokio::test]
async fn data_is_relayed_as_the_exact_text_sent() {
    let node = Node::start("").await;
    let mut a = node.anonymous("a").await;
    let mut b = node.anonymous("b").await;
    a.join("r").await;
    b.join("r").await;
    a.next().await;
    a.send_text(
        r#"{"type":"publish","room":"r","data":{"big":123456789012345678901234567890,"f":1.10}}"#,
    )
    .await;
    let raw = b.next_text().await;
    assert!(
        raw.contains(r#","data":{"big":123456789012345678901234567890,"f":1.10},"#),
        "{raw}"
    );
    node.stop().await;
}

#[tokio::test]
async fn presence_lists_users_once_and_tells_of_last_leaves() {
    let node = Node::start("").await;
    let mut a = node.anonymous("a").await;
    let mut b1 = node.anonymous("b").await;
    let mut b2 = node.anonymous("b").await;
    a.join("r").await;
    b1.join("r").await;
    b2.join("r").await;
    assert_eq!(a.next().await["type"], "user_joined");
    let metrics = node.metrics.encode().expect("metrics");
    assert_eq!(
        testkit::samples(&metrics, "lintas_hub_connections"),
        [
            "lintas_hub_connections 3",
            "lintas_hub_connections_accepted_total 3",
            "lintas_hub_connections_closed_total{reason=\"bad_input\"} 0",
            "lintas_hub_connections_closed_total{reason=\"no_pong\"} 0",
            "lintas_hub_connections_closed_total{reason=\"slow_consumer\"} 0",
            "lintas_hub_connections_closed_total{reason=\"unauthorized\"} 0",
        ]
    );
    let (reply, _) = a.ask(5, json!({"type": "presence", "room": "r"})).await;
    assert_eq!(
        reply,
        json!({"type": "presence", "id": 5, "room": "r", "users": [
            {"user": "~a", "name": "a"}, {"user": "~b", "name": "b"}]})
    );
    let (left, _) = b1.ask(6, json!({"type": "leave", "room": "r"})).await;
    assert_eq!(left, json!({"type": "left", "id": 6, "room": "r"}));
    assert_eq!(
        a.maybe(Duration::from_millis(200)).await,
        None,
        "b is still in r"
    );
    drop(b2);
    assert_eq!(
        a.next().await,
        json!({"type": "user_left", "room": "r", "user": "~b", "name": "b"})
    );
    node.stop().await;
}

#[tokio::test]
async fn a_direct_message_reaches_every_connection_of_its_user() {
    let node = Node::start("").await;
    let mut a = node.anonymous("a").await;
    let mut b1 = node.anonymous("b").await;
    let mut b2 = node.anonymous("b").await;
    let (sent, _) = a
        .ask(3, json!({"type": "send", "to": "~b", "data": "psst"}))
        .await;
    assert_eq!(
        sent,
        json!({"type": "sent", "id": 3, "to": "~b", "connections": 2})
    );
    for b in [&mut b1, &mut b2] {
        let got = b.next().await;
        assert_eq!(
            got,
            json!({"type": "direct", "from": "~a", "name": "a", "data": "psst", "time": got["time"]})
        );
    }
    let (nobody, _) = a
        .ask(4, json!({"type": "send", "to": "~nobody", "data": 1}))
        .await;
    assert_eq!(nobody["connections"], 0);
    node.stop().await;
}

#[tokio::test]
async fn a_reconnecting_client_recovers_exactly_what_it_missed() {
    let node = Node::start("history_size = 5").await;
    let mut pub_ = node.anonymous("p").await;
    pub_.join("r").await;
    let mut a = node.anonymous("a").await;
    let joined = a.join("r").await;
    let epoch = joined["epoch"].as_str().expect("epoch").to_owned();
    pub_.next().await;
    pub_.send(json!({"type": "publish", "room": "r", "data": 0}))
        .await;
    assert_eq!(a.next().await["offset"], 0);
    drop(a);
    for n in 1..4 {
        pub_.send(json!({"type": "publish", "room": "r", "data": n}))
            .await;
    }
    // The publisher's own frames: user_left, then per publish a message and a reply.
    let mut seen = 0;
    while seen < 3 {
        if pub_.next().await["type"] == "published" {
            seen += 1;
        }
    }
    let mut back = node.anonymous("a").await;
    let (joined, _) = back
        .ask(
            9,
            json!({"type": "join", "room": "r", "recover": {"epoch": epoch, "offset": 1}}),
        )
        .await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["offset"], 4);
    let got: Vec<(u64, u64)> = joined["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().expect("o"),
                m["data"].as_u64().expect("d"),
            )
        })
        .collect();
    assert_eq!(got, [(1, 1), (2, 2), (3, 3)]);

    // Beyond the history (5 kept: offsets 4..9 after five more), or another epoch: no.
    for n in 4..10 {
        pub_.send(json!({"type": "publish", "room": "r", "data": n}))
            .await;
    }
    let mut late = node.anonymous("late").await;
    for (id, recover) in [
        (10, json!({"epoch": epoch, "offset": 1})),
        (11, json!({"epoch": "another", "offset": 9})),
    ] {
        let (j, _) = late
            .ask(id, json!({"type": "join", "room": "r", "recover": recover}))
            .await;
        assert_eq!(j["recovered"], false, "{j}");
        assert!(j.get("messages").is_none(), "{j}");
    }
    let (history, _) = late
        .ask(12, json!({"type": "history", "room": "r", "limit": 2}))
        .await;
    let offsets: Vec<u64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().expect("o"))
        .collect();
    assert_eq!(offsets, [8, 9]);
    node.stop().await;
}

#[tokio::test]
async fn applications_publish_over_http_with_a_token() {
    let node = Node::start("").await;
    let mut member = node.anonymous("m").await;
    member.join("news").await;
    let url = format!("http://{}/api/hub/publish", node.addr);
    let http = HttpClient::new();
    let good =
        token(&json!({"sub": "app", "name": "The App", "rooms": ["news"], "exp": now() + 60}));
    let bearer = format!("Bearer {good}");
    let post = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http.send(http::Method::POST, &url, &headers, body)
                .await
                .expect("an answer")
        }
    };
    let ok = post(
        vec![("authorization", bearer.clone())],
        r#"{"room":"news","data":{"headline":"hi"}}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let answer: Value = serde_json::from_str(&ok.body).expect("JSON");
    assert_eq!(answer["offset"], 0);
    let got = member.next().await;
    assert_eq!(
        got,
        json!({"type": "message", "room": "news", "from": "app", "name": "The App",
               "data": {"headline": "hi"}, "time": got["time"], "epoch": answer["epoch"], "offset": 0})
    );
    let cases = [
        (
            vec![],
            r#"{"room":"news","data":1}"#,
            401,
            "send the token as Authorization: Bearer <token>",
        ),
        (
            vec![("authorization", "Bearer nope".to_owned())],
            r#"{"room":"news","data":1}"#,
            401,
            "the token does not read: InvalidToken",
        ),
        (
            vec![("authorization", bearer.clone())],
            r#"{"room":"ops","data":1}"#,
            403,
            "the token does not allow room \"ops\"",
        ),
        (
            vec![("authorization", bearer.clone())],
            r#"{"room":"news"}"#,
            400,
            "the body must be {\"room\": string, \"data\": any JSON}: missing field `data` at line 1 column 15",
        ),
        (
            vec![("authorization", bearer.clone())],
            r#"{"room":"a b","data":1}"#,
            400,
            "the body must be {\"room\": string, \"data\": any JSON}: ' ' is not allowed in a room name (A-Z a-z 0-9 - _ . :) at line 1 column 13",
        ),
    ];
    for (headers, body, status, error) in cases {
        let r = post(headers, body).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (status, json!({"error": error}).to_string().as_str()),
            "{body}"
        );
    }
    assert_eq!(member.maybe(Duration::from_millis(200)).await, None);
    node.stop().await;
}
