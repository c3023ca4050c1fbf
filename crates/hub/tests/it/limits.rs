//! What a hub does with clients that lie, stall or flood: each gets a clear error frame or
//! close code, and the connections beside it are not affected.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use super::harness::{Client, Node, now, refused_upgrade, token};

#[tokio::test]
async fn bad_frames_get_error_frames_and_too_many_in_a_row_close_the_connection() {
    let node = Node::start("max_errors = 3").await;
    let mut neighbour = node.anonymous("n").await;
    neighbour.join("r").await;
    let mut c = node.anonymous("c").await;
    c.join("r").await;
    neighbour.next().await;
    let cases = [
        (
            "nope",
            json!({"type": "error", "code": "bad_request", "message": "a frame is a JSON object"}),
        ),
        (
            r#"{"type":"publish","id":4,"room":"r"}"#,
            json!({"type": "error", "id": 4, "code": "bad_request", "message": "data is missing", "at": "data"}),
        ),
    ];
    for (sent, want) in cases {
        c.send_text(sent).await;
        assert_eq!(c.next().await, want, "{sent}");
    }
    // A good frame resets the count.
    c.send(json!({"type": "publish", "room": "r", "data": 1}))
        .await;
    assert_eq!(c.next().await["type"], "message");
    assert_eq!(c.next().await["type"], "published");
    for _ in 0..3 {
        c.send_text("{").await;
    }
    for _ in 0..3 {
        assert_eq!(c.next().await["code"], "bad_request");
    }
    assert_eq!(c.closed().await, (1008, "3 bad frames in a row".into()));
    assert_eq!(neighbour.next().await["data"], 1);
    assert_eq!(neighbour.next().await["type"], "user_left");
    node.stop().await;
}

#[tokio::test]
async fn refused_requests_say_why() {
    let node = Node::start("max_rooms = 2\npublish_rate = 3").await;
    let mut c = node.with_token("alice", &["team-*", "lobby"]).await;
    let cases = [
        (
            json!({"type": "join", "room": "ops"}),
            json!({"code": "forbidden", "message": "you may not join room \"ops\"", "at": "room"}),
        ),
        (
            json!({"type": "publish", "room": "lobby", "data": 1}),
            json!({"code": "not_joined", "message": "join room \"lobby\" first", "at": "room"}),
        ),
        (
            json!({"type": "connect", "name": "again"}),
            json!({"code": "bad_request", "message": "this connection is connected already"}),
        ),
    ];
    for (id, (request, mut want)) in cases.into_iter().enumerate() {
        let (reply, _) = c.ask(id as u64, request).await;
        want["type"] = "error".into();
        want["id"] = id.into();
        assert_eq!(reply, want);
    }
    c.join("team-a").await;
    c.join("lobby").await;
    let (reply, _) = c.ask(7, json!({"type": "join", "room": "team-b"})).await;
    assert_eq!(
        reply,
        json!({"type": "error", "id": 7, "code": "too_many_rooms", "message": "a connection may be in 2 rooms at most", "at": "room"})
    );
    let mut limited = 0;
    for n in 0..10 {
        let (reply, _) = c
            .ask(
                100 + n,
                json!({"type": "publish", "room": "lobby", "data": n}),
            )
            .await;
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate_limited");
            assert_eq!(
                reply["message"],
                "more than 3 messages per second; this one was not sent"
            );
            limited += 1;
        }
    }
    assert!(
        limited >= 6,
        "a burst of 3 and then about 3 per second: {limited} refused"
    );
    node.stop().await;
}

#[tokio::test]
async fn connect_is_first_and_tokens_are_checked() {
    let node = Node::start("allow_anonymous = false").await;
    let cases = [
        (
            json!({"type": "join", "room": "r"}),
            "unauthorized",
            "the first frame must be connect",
        ),
        (
            json!({"type": "connect", "name": "x"}),
            "unauthorized",
            "this hub does not allow anonymous clients; connect with a token",
        ),
        (
            json!({"type": "connect", "token": token(&json!({"sub": "a", "exp": now() - 100}))}),
            "unauthorized",
            "the token has expired",
        ),
        (
            json!({"type": "connect", "token": "a.b.c"}),
            "unauthorized",
            "the token does not read: Base64 error: Invalid input length: 1",
        ),
    ];
    for (first, code, message) in cases {
        let mut c = Client::open(&node.url()).await;
        c.send(first.clone()).await;
        let error = c.next().await;
        assert_eq!(
            (error["code"].as_str(), error["message"].as_str()),
            (Some(code), Some(message)),
            "{first}"
        );
        assert_eq!(c.closed().await, (4001, message.to_owned()));
    }
    node.stop().await;
}

#[tokio::test]
async fn binary_and_oversized_frames_close_with_their_codes() {
    let node = Node::start("max_message = 1024").await;
    let mut c = node.anonymous("c").await;
    c.send_message(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(
        c.closed().await,
        (
            1003,
            "binary frames are not part of the protocol; send JSON text frames".into()
        )
    );
    let mut c = node.anonymous("c").await;
    c.send_text(&format!(
        "{{\"type\":\"publish\",\"room\":\"r\",\"data\":\"{}\"}}",
        "x".repeat(2000)
    ))
    .await;
    assert_eq!(
        c.closed().await,
        (1009, "a frame is larger than 1024 bytes".into())
    );
    node.stop().await;
}

#[tokio::test]
async fn a_silent_socket_is_closed_at_the_connect_timeout() {
    let node = Node::start("connect_timeout = \"300ms\"").await;
    let mut c = Client::open(&node.url()).await;
    assert_eq!(
        c.closed().await,
        (4001, "no connect frame within connect_timeout".into())
    );
    // A socket that never even sends the upgrade's head is closed too.
    let mut raw = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    raw.write_all(b"GET /ws HTTP/1.1\r\n")
        .await
        .expect("written");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(
        testkit::PATIENCE,
        tokio::io::AsyncReadExt::read(&mut raw, &mut buf),
    )
    .await
    .expect("closed within the patience");
    assert!(matches!(n, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).contains("408"));
    node.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_closed() {
    let node = Node::start("ping_interval = \"200ms\"\npong_timeout = \"300ms\"").await;
    let mut c = node.anonymous("c").await;
    // tungstenite answers pings only while the client reads: not reading for a while is
    // not answering. Then the close is there to read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.closed().await.0, 4002);
    assert_eq!(node.hub.stats.snapshot().no_pong, 1);
    node.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_its_room_goes_on() {
    let node = Node::start("max_queued = 64\npublish_rate = 100000\nmax_message = 65536").await;
    let mut slow = node.anonymous("slow").await;
    slow.join("r").await;
    let mut fast = node.anonymous("fast").await;
    fast.join("r").await;
    let mut publisher = node.anonymous("p").await;
    publisher.join("r").await;
    fast.next().await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 1000 {
            let f = fast.next().await;
            if f["type"] == "message" {
                got.push(f["data"]["n"].as_u64().expect("n"));
            }
        }
        got
    });
    // 32 MiB in all: more than the kernel's socket buffers hold for a client that reads
    // nothing.
    let big = "y".repeat(32 * 1024);
    for n in 0..1000u64 {
        let publish = json!({"type": "publish", "room": "r", "data": {"n": n, "pad": big}});
        let (reply, _) = publisher.ask(n, publish).await;
        assert_eq!(reply["type"], "published");
    }
    let got = reader.await.expect("the fast reader");
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    testkit::wait_until(
        "the slow consumer is counted",
        testkit::PATIENCE,
        || async { node.hub.stats.snapshot().slow_consumers == 1 },
    )
    .await;
    let (code, reason) = slow.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (4008, "slow consumer: 64 frames were waiting to be read")
    );
    node.stop().await;
}

#[tokio::test]
async fn upgrades_from_other_sites_and_non_upgrades_are_refused() {
    let node = Node::start("").await;
    let (status, body) = refused_upgrade(&node.url(), &[("origin", "https://evil.example")]).await;
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            r#"{"error":"origin \"https://evil.example\" may not connect; list it in [hub] allowed_origins"}"#
        )
    );
    let own = format!("http://{}", node.addr);
    let mut ok = tokio_tungstenite::connect_async({
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = node.url().into_client_request().expect("request");
        req.headers_mut()
            .insert("origin", own.parse().expect("header"));
        req
    })
    .await
    .expect("the hub's own origin is let in")
    .0;
    ok.close(None).await.expect("closed");
    let plain = testkit::HttpClient::new()
        .get(&format!("http://{}/ws", node.addr))
        .await;
    assert_eq!(plain.status, 400);
    assert_eq!(
        plain.body,
        r#"{"error":"this is the hub's WebSocket endpoint: send a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)"}"#
    );
    node.stop().await;
}
