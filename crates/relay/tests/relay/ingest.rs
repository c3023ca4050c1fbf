//! Ingest: every bad input answered exactly, nothing stored for a refused request;
//! Idempotency-Key across retries, concurrency and restarts.

use http::Method;
use testkit::TempDir;

use crate::harness::{Node, config, destination, flat, route, sqlite, sqlite_rows};

/// `[relay]` with `extra` settings, delivering `shop`'s items to the SQLite file at `url`.
fn items_config(url: &str, extra: &str) -> String {
    let text = config(&format!(
        "{}{}",
        destination("db", "sqlite", url),
        route(
            "db",
            "items",
            "upsert",
            "name = \"name\", price = \"price\"",
            "\"name\""
        )
    ));
    format!("{extra}{text}")
}

async fn items_node(dir: &TempDir, extra: &str) -> (Node, String) {
    let url = sqlite(
        dir.path(),
        "items.db",
        "CREATE TABLE items (name TEXT PRIMARY KEY, price REAL)",
    )
    .await;
    let node = Node::start(&dir.path().join("data"), &items_config(&url, extra)).await;
    (node, url)
}

#[tokio::test]
async fn bad_input_is_refused_exactly_and_nothing_is_stored() {
    let dir = TempDir::new();
    let (node, url) = items_node(&dir, "max_body_bytes = 200\n").await;
    let cases: &[(&str, u16, &str)] = &[
        (
            r#"{"name": "tea","#,
            400,
            r#"{"error":"malformed JSON: EOF while parsing an object at line 1 column 15"}"#,
        ),
        (
            "[{\"name\": \"a\"},\n 3]",
            400,
            r#"{"error":"record 1 is not a JSON object (records are objects of field: value)"}"#,
        ),
        (
            "[]",
            400,
            r#"{"error":"the array is empty: send at least one record"}"#,
        ),
        (
            "\"tea\"",
            400,
            r#"{"error":"expected a JSON object or an array of objects at line 1 column 1"}"#,
        ),
        (
            "",
            400,
            r#"{"error":"empty body: send a JSON object or an array of objects"}"#,
        ),
        (
            r#"[{"name": "a"}, {"price": 2}]"#,
            422,
            r#"{"error":"record 1 has no value for `name`, which route shop → db.items needs as a key","field":"name","record":1}"#,
        ),
        (
            r#"{"name": null, "price": 2}"#,
            422,
            r#"{"error":"record 0 has no value for `name`, which route shop → db.items needs as a key","field":"name","record":0}"#,
        ),
    ];
    for (body, status, answer) in cases {
        let r = node.post(body).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (*status, *answer),
            "for {body:?}"
        );
    }
    let big = format!("[{}]", vec![r#"{"name":"x"}"#; 40].join(","));
    let r = node.post(&big).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            413,
            r#"{"error":"a body of 521 bytes is over the 200-byte limit (relay.max_body_bytes); send fewer records per request"}"#
        )
    );
    let r = node.post_with(&[], "{}").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.header("www-authenticate")),
        (
            401,
            r#"{"error":"missing API key: send the application's key as Authorization: Bearer <key>"}"#,
            "Bearer realm=\"lintas\""
        )
    );
    let r = node
        .post_with(&[("authorization", "Bearer nope")], r#"{"name":"a"}"#)
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            401,
            r#"{"error":"unknown API key: check the key, or rotate it through the admin API"}"#
        )
    );
    let r = node
        .client
        .send(
            Method::POST,
            &node.ingest.replace("/v1/records", "/v1/nope"),
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            404,
            r#"{"error":"no such endpoint; POST records to /v1/records"}"#
        )
    );
    assert_eq!(node.end().await, 0, "a refused request stores nothing");

    // Fields no route uses are accepted and dropped at the destination.
    let ids = node
        .ingest(r#"{"name": "tea", "price": 2.5, "sub_category": "green"}"#)
        .await;
    assert_eq!(ids, [0]);
    node.wait_delivered().await;
    assert_eq!(
        flat(sqlite_rows(&url, "SELECT name, CAST(price AS TEXT) FROM items").await),
        [["tea", "2.5"]]
    );
    node.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_ids_even_after_a_restart() {
    let dir = TempDir::new();
    let (node, url) = items_node(&dir, "").await;
    let auth = format!("Bearer {}", crate::harness::KEY);
    let body = r#"[{"name": "a", "price": 1}, {"name": "b", "price": 2}]"#;
    let with_key = |key: &'static str| {
        [
            ("authorization", auth.clone()),
            ("idempotency-key", key.to_owned()),
        ]
    };
    let send = |node: &Node, key: &'static str, body: &'static str| {
        let headers = with_key(key);
        let client = node.client.clone();
        let url = node.ingest.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client.send(Method::POST, &url, &h, body).await.unwrap()
        }
    };
    let first = send(&node, "order-1", body).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (202, r#"{"ids":[0,1]}"#)
    );
    assert_eq!(first.header("idempotent-replayed"), "");
    let again = send(&node, "order-1", body).await;
    assert_eq!(
        (again.status, again.body.as_str()),
        (202, r#"{"ids":[0,1]}"#)
    );
    assert_eq!(again.header("idempotent-replayed"), "true");
    let other = send(&node, "order-1", r#"{"name": "c"}"#).await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (
            422,
            r#"{"error":"this Idempotency-Key was already used with a different body; use a new key for a new request"}"#
        )
    );
    // Concurrent requests with one new key store once.
    let racers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(send(&node, "order-2", r#"{"name": "c", "price": 3}"#)))
        .collect();
    for r in racers {
        let r = r.await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (202, r#"{"ids":[2]}"#));
    }
    assert_eq!(node.end().await, 3);
    node.wait_delivered().await;
    node.stop().await;

    let node = Node::start(&dir.path().join("data"), &items_config(&url, "")).await;
    let after = send(&node, "order-1", body).await;
    assert_eq!(
        (after.status, after.body.as_str()),
        (202, r#"{"ids":[0,1]}"#)
    );
    assert_eq!(
        node.end().await,
        3,
        "the retry after a restart stored nothing"
    );
    let r = node
        .post_with(&[("authorization", &auth), ("idempotency-key", "")], "{}")
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            400,
            r#"{"error":"Idempotency-Key must be 1 to 255 visible ASCII characters"}"#
        )
    );
    node.wait_delivered().await;
    assert_eq!(
        flat(
            sqlite_rows(
                &url,
                "SELECT name, CAST(price AS TEXT) FROM items ORDER BY name"
            )
            .await
        ),
        [["a", "1.0"], ["b", "2.0"], ["c", "3.0"]]
    );
    node.stop().await;
}

/// Everything read until the server closes the connection, within [`testkit::PATIENCE`].
async fn until_closed(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(testkit::PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("ingest kept a slow client's connection open")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Regression: ingest was served by bare `axum::serve`: no connection cap, and half-sent
/// heads and stalled bodies held their connections (600 heads for 35 s and more).
#[tokio::test]
async fn half_sent_heads_are_closed_and_stalled_bodies_answered_408() {
    use tokio::io::AsyncWriteExt;
    let dir = TempDir::new();
    let (node, _url) =
        items_node(&dir, "head_timeout = \"300ms\"\nbody_timeout = \"300ms\"\n").await;
    let addr = node.relay.local_addr();

    let mut head = tokio::net::TcpStream::connect(addr).await.unwrap();
    head.write_all(b"POST /v1/records HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut head).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
        "{answer}"
    );

    let mut body = tokio::net::TcpStream::connect(addr).await.unwrap();
    body.write_all(
        format!(
            "POST /v1/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
            crate::harness::KEY
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = until_closed(&mut body).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer.ends_with(r#"{"error":"the body stopped for 300ms (relay.body_timeout)"}"#),
        "{answer}"
    );
    assert_eq!(node.end().await, 0);
    node.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let dir = TempDir::new();
    let (node, _url) = items_node(&dir, "").await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme}  {}", crate::harness::KEY);
        let r = node
            .post_with(&[("authorization", &auth)], r#"{"name":"a"}"#)
            .await;
        assert_eq!(r.status, 202, "{scheme}: {}", r.body);
    }
    let r = node
        .post_with(
            &[("authorization", &format!("Basic {}", crate::harness::KEY))],
            r#"{"name":"a"}"#,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    node.stop().await;
}
