//! Clients that trickle or go silent, on every stage of an HTTP listener's connection: the
//! TLS handshake, the h2c preface, the request head, the request body, an h2 connection and
//! a WebSocket tunnel. Each must give its connection back within its timeout; none may hold
//! it by sending a byte now and then.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use testkit::PATIENCE;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::{
    Backends, ScriptedServer, TempDir, TestNode, backends_toml, read_n, read_until_closed,
    tls_listener,
};

const HOST: &str = "Host: lintas.test";

/// Listener `web` with `listener` lines, in front of one scripted backend.
async fn scripted(listener: &str) -> (ScriptedServer, TestNode) {
    let backend = ScriptedServer::start().await;
    let node = TestNode::single(
        "http",
        &backends_toml([("script", backend.addr, 1)]),
        listener,
    )
    .await;
    (backend, node)
}

fn own_answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Writes `bytes` one at a time, `every` apart, until lintas closes the connection; what
/// lintas sent back. Fails if lintas is still reading after [`PATIENCE`].
async fn trickle(s: &mut TcpStream, bytes: &[u8], every: Duration) -> String {
    let started = Instant::now();
    for b in bytes.iter().cycle() {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
        assert!(
            started.elapsed() < PATIENCE,
            "lintas still reads a trickle after {PATIENCE:?}"
        );
        // The answer may already be there while writes still succeed.
        let mut probe = [0u8; 1];
        if let Ok(n) = s.try_read(&mut probe) {
            let mut out = probe[..n].to_vec();
            out.extend(read_until_closed(s).await);
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
    String::from_utf8_lossy(&read_until_closed(s).await).into_owned()
}

/// Regression: `request_timeout` restarted on every read of a head, so a client sending one
/// byte a second held its connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_byte_by_byte_is_cut_at_head_timeout() {
    let (mut backend, node) = scripted("head_timeout = \"500ms\"").await;
    let mut client = TcpStream::connect(node.addr("web").await).await.unwrap();
    client
        .write_all(format!("GET / HTTP/1.1\r\n{HOST}\r\n").as_bytes())
        .await
        .unwrap();

    let answer = trickle(&mut client, b"X-Pad: a\r\n", Duration::from_millis(50)).await;

    assert_eq!(
        answer,
        own_answer(
            "408 Request Timeout",
            "request head not received within 500ms (head_timeout)\n"
        )
    );
    assert_eq!(backend.untaken(), 0);
}

/// Regression: request bodies had no inactivity timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_is_answered_408_and_does_not_count_against_the_backend() {
    let (mut backend, node) = scripted("body_timeout = \"300ms\"").await;
    let mut client = TcpStream::connect(node.addr("web").await).await.unwrap();
    client
        .write_all(
            format!("POST /upload HTTP/1.1\r\n{HOST}\r\nContent-Length: 100\r\n\r\n0123456789")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut conn = backend.accept().await;

    assert_eq!(
        String::from_utf8_lossy(&read_until_closed(&mut client).await),
        own_answer(
            "408 Request Timeout",
            "request timeout: no body data for 300ms\n"
        )
    );
    // The backend got the head and the first bytes; its connection is closed, never pooled.
    let seen = String::from_utf8_lossy(&read_until_closed(&mut conn).await).into_owned();
    assert!(seen.ends_with("\r\n\r\n0123456789"), "{seen:?}");
    assert_eq!(node.backend("web", "script").failures, 0);
}

/// Regression: a body dribbled a byte at a time was never cut (no inactivity timeout
/// fires on it); now it must keep `min_body_rate` after a 5 s grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_under_min_body_rate_is_cut_after_the_grace_period() {
    let (mut backend, node) = scripted("min_body_rate = 1000").await;
    let mut client = TcpStream::connect(node.addr("web").await).await.unwrap();
    client
        .write_all(
            format!("POST /upload HTTP/1.1\r\n{HOST}\r\nContent-Length: 100000\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let _conn = backend.accept().await;

    let answer = trickle(&mut client, b"a", Duration::from_millis(100)).await;

    assert_eq!(
        answer,
        own_answer(
            "408 Request Timeout",
            "request timeout: body data slower than 1000 bytes/s\n"
        )
    );
}

/// Regression: a WebSocket tunnel had no inactivity timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_tunnel_is_closed_after_idle_timeout() {
    let (mut backend, node) = scripted("idle_timeout = \"400ms\"").await;
    let mut client = TcpStream::connect(node.addr("web").await).await.unwrap();
    client
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\n{HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut conn = backend.accept().await;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(read_n(&mut conn, 1).await[0]);
    }
    let switching =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    conn.write_all(switching.as_bytes()).await.unwrap();
    let expected =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nconnection: upgrade\r\n\r\n";
    assert_eq!(
        String::from_utf8_lossy(&read_n(&mut client, expected.len()).await),
        expected
    );

    // Traffic keeps it open...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b"ping").await.unwrap();
        assert_eq!(read_n(&mut conn, 4).await, b"ping");
    }
    // ...silence closes both sides.
    assert_eq!(read_until_closed(&mut client).await, b"");
    assert_eq!(read_until_closed(&mut conn).await, b"");
}

/// Regression: TLS handshakes had no timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_handshake_is_cut_at_handshake_timeout() {
    let dir = TempDir::new();
    let (tls, _cert) = tls_listener(&dir);
    let (_backend, node) = scripted(&format!("{tls}\nhandshake_timeout = \"300ms\"")).await;
    let mut client = TcpStream::connect(node.addr("web").await).await.unwrap();
    // Half a ClientHello record header, then nothing.
    client.write_all(&[0x16, 0x03]).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await, b"");
}

/// Regression: the h2c preface pushed the idle timer back on every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_preface_trickled_byte_by_byte_is_cut_at_head_timeout() {
    let (_backend, node) = scripted("head_timeout = \"400ms\"").await;
    let mut client = TcpStream::connect(node.addr("web").await).await.unwrap();
    let answer = trickle(
        &mut client,
        b"PRI * HTTP/2.0\r\n",
        Duration::from_millis(50),
    )
    .await;
    assert_eq!(answer, "");
}

/// Regression: h2 connections ran without a timer: an idle h2 client kept its connection
/// for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_h2_connection_is_closed_after_idle_timeout() {
    let (_backend, node) = scripted("idle_timeout = \"400ms\"").await;
    let mut client = TcpStream::connect(node.addr("web").await).await.unwrap();
    // The preface and an empty SETTINGS frame, then silence.
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let got = read_until_closed(&mut client).await;
    // lintas's SETTINGS (and its ack of ours, and a GOAWAY) came first, then the close.
    assert_eq!(got.get(3), Some(&0x04), "{got:?}");
}

/// A request body streamed frame by frame, as an h2 client uploads.
type Upload = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// POSTs `parts` to `/echo` of listener `web` as an h2c client; the status and body
/// lintas answered with.
async fn h2_upload(
    node: &TestNode,
    parts: impl futures_util::Stream<Item = Bytes> + Send + 'static,
) -> (u16, Bytes) {
    let client: Client<_, Upload> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let body = StreamBody::new(parts.map(|b| Ok(Frame::data(b))).boxed());
    let req = http::Request::post(node.url("web", "/echo").await)
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("no answer to an h2 upload")
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// Regression: an h2 request body streamed to the backend with no timer: a client that
/// stopped halfway held its stream and a backend connection. Now it is answered 408, and
/// the backend's health does not pay for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_request_body_that_stops_is_answered_408() {
    let b = Backends::start(&["app1"]).await;
    let node = TestNode::single("http", &b.toml(), "body_timeout = \"300ms\"").await;
    // A first part, then nothing, with the stream held open.
    let parts = stream::iter([Bytes::from_static(b"first part")]).chain(stream::pending());

    let (status, body) = h2_upload(&node, parts).await;

    assert_eq!(status, 408);
    assert_eq!(&body[..], b"request timeout: no body data for 300ms\n");
    assert_eq!(node.backend("web", "app1").failures, 0);
}

/// Regression: on the h2 path `request_timeout` covered the upload too, so an h2 upload
/// that kept moving for longer than it was cut with a 504 (and counted against the
/// backend). It now counts from the body's last progress, as on the HTTP/1 path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upload_that_keeps_moving_outlasts_request_timeout() {
    let b = Backends::start(&["app1"]).await;
    let node = TestNode::single("http", &b.toml(), "request_timeout = \"400ms\"").await;
    // Twelve parts, 100 ms apart: 1.2 s of upload against a 400 ms request_timeout.
    let parts = stream::unfold(0u8, |i| async move {
        (i < 12).then_some(())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Bytes::from(vec![b'a' + i; 10]), i + 1))
    });

    let (status, body) = h2_upload(&node, parts).await;

    assert_eq!(status, 200);
    let sent: Vec<u8> = (0..12u8).flat_map(|i| vec![b'a' + i; 10]).collect();
    assert_eq!(&body[..], &sent[..]);
    assert_eq!(node.backend("web", "app1").failures, 0);
}
