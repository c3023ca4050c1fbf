//! Layer 7: what clients and backends see of a request going through an HTTP listener.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use testkit::{HttpClient, PATIENCE};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Backends, TempDir, TestNode, raw_exchange, tls_listener, wait_backend};

/// One HTTP/1.1 connection over `io`, its driver spawned.
async fn connection<I>(io: I) -> SendRequest<Empty<Bytes>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// `GET path` on `sender`'s connection: status and body.
async fn get_on(sender: &mut SendRequest<Empty<Bytes>>, host: &str, path: &str) -> (u16, String) {
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::new())
        .unwrap();
    // The connection task may not have taken the previous response off the connection yet;
    // sending before it has fails with "connection was not ready".
    let ready = async {
        sender.ready().await?;
        sender.send_request(req).await
    };
    let resp = tokio::time::timeout(PATIENCE, ready)
        .await
        .expect("no answer in time")
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The `/headers` body as sorted lines, for exact comparison whatever the header order.
fn sorted_lines(body: &str) -> Vec<String> {
    let mut lines: Vec<String> = body.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

async fn one_backend(listener: &str) -> (Backends, TestNode) {
    let b = Backends::start(&["app1"]).await;
    let node = TestNode::single("http", &b.toml(), listener).await;
    (b, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_added_and_hop_by_hop_headers_removed() {
    let (_b, node) = one_backend("").await;
    let url = node.url("web", "/headers").await;
    let host = format!("host: {}", node.addr("web").await);
    let client = HttpClient::new();
    let seen = async |headers: &[(&str, &str)]| {
        let r = client
            .send(http::Method::GET, &url, headers, "")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        sorted_lines(&r.body)
    };

    assert_eq!(
        seen(&[]).await,
        [
            host.as_str(),
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: http"
        ]
    );
    assert_eq!(
        seen(&[("X-Forwarded-For", "10.0.0.1")]).await,
        [
            host.as_str(),
            "x-forwarded-for: 10.0.0.1, 127.0.0.1",
            "x-forwarded-proto: http"
        ]
    );
    assert_eq!(
        seen(&[("Connection", "x-hop"), ("X-Hop", "1")]).await,
        [
            host.as_str(),
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: http"
        ]
    );
    // Regression: `X_Forwarded_For` passed through, and CGI-style backends read it as the
    // header lintas sets.
    assert_eq!(
        seen(&[("X_Forwarded_For", "6.6.6.6"), ("X_Other", "1")]).await,
        [
            host.as_str(),
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: http",
            "x_other: 1"
        ]
    );
}

/// The same header rules on the h2 path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_lose_underscore_spellings_of_forwarding_headers() {
    let (_b, node) = one_backend("").await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::get(node.url("web", "/headers").await)
        .header("x_forwarded_for", "6.6.6.6")
        .header("x_other", "1")
        .body(Empty::new())
        .unwrap();

    let resp = client.request(req).await.unwrap();

    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        sorted_lines(&String::from_utf8_lossy(&body)),
        [
            format!("host: {}", node.addr("web").await).as_str(),
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: http",
            "x_other: 1"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_post_body_is_echoed_intact() {
    let (_b, node) = one_backend("").await;
    let body: String = (0..100 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();

    let r = HttpClient::new()
        .send(
            http::Method::POST,
            &node.url("web", "/echo").await,
            &[],
            body.clone(),
        )
        .await
        .unwrap();

    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the echoed body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_answers_504_after_request_timeout() {
    let (_b, node) = one_backend("request_timeout = \"300ms\"").await;

    let r = HttpClient::new()
        .get(&node.url("web", "/work?ms=3000").await)
        .await;

    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "gateway timeout: the server did not answer in time\n")
    );
    assert_eq!(node.listener("web").timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_do_not_disturb_other_clients() {
    let (_b, node) = one_backend("max_header_bytes = 8192").await;
    let addr = node.addr("web").await;
    let host = addr.to_string();
    let mut neighbour = connection(TcpStream::connect(addr).await.unwrap()).await;
    assert_eq!(
        get_on(&mut neighbour, &host, "/").await,
        (200, "app1\n".into())
    );

    let garbage = raw_exchange(addr, b"GARBAGE\r\n\r\n").await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let oversized = raw_exchange(addr, big.as_bytes()).await;

    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let answer = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(
        text(&garbage),
        answer(
            "400 Bad Request",
            "bad request: malformed request head (invalid token)\n"
        )
    );
    assert_eq!(
        text(&oversized),
        answer(
            "431 Request Header Fields Too Large",
            "request head larger than 8192 bytes or with more than 100 headers\n"
        )
    );
    assert_eq!(
        get_on(&mut neighbour, &host, "/").await,
        (200, "app1\n".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_holds_one_in_flight_slot_until_closed() {
    let (_b, node) = one_backend("").await;
    let addr = node.addr("web").await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-backend"], "app1");
    let mut echo = async |msg: Message| {
        ws.send(msg).await.unwrap();
        tokio::time::timeout(PATIENCE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };

    assert_eq!(echo(Message::text("hello")).await, Message::text("hello"));
    assert_eq!(
        echo(Message::binary(vec![1u8, 2, 3])).await,
        Message::binary(vec![1u8, 2, 3])
    );
    assert_eq!(node.backend("web", "app1").in_flight, 1);

    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, ws.next()).await {}
    // The tunnel, and with it the slot, ends when both sides have closed their connection.
    drop(ws);
    wait_backend(&node, "web", "app1", "app1 in_flight back to 0", |b| {
        b.in_flight == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_clients_are_served() {
    let (_b, node) = one_backend("").await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();

    let resp = client
        .get(node.url("web", "/").await.parse().unwrap())
        .await
        .unwrap();

    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, http::Version::HTTP_2)
    );
    assert_eq!(resp.headers()["x-backend"], "app1");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"app1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_serves_https_and_marks_the_protocol() {
    let dir = TempDir::new();
    let (tls, cert) = tls_listener(&dir);
    let (_b, node) = one_backend(&tls).await;

    let tcp = TcpStream::connect(node.addr("web").await).await.unwrap();
    let stream = crate::harness::tls_connector(&cert)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut sender = connection(stream).await;

    let (status, body) = get_on(&mut sender, "localhost", "/headers").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        sorted_lines(&body),
        [
            "host: localhost",
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: https"
        ]
    );
}
