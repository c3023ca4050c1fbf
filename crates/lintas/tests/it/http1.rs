//! The HTTP/1 forwarding path byte by byte: framing of request and response bodies, kept-alive
//! connections on both sides, HTTP/1.0 clients, smuggling guards and backends that break the
//! protocol or the connection.
//!
//! Clients are raw sockets and backends are scripted by hand ([`ScriptedServer`]), so every
//! test states the exact bytes each side sees, and which connection they arrive on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use testkit::{PATIENCE, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    ScriptedServer, TestNode, backends_toml, raw_exchange, read_n, read_until_closed, tcp_server,
    wait_backend,
};

const HOST: &str = "Host: lintas.test";

/// A complete response a scripted backend sends, and the client gets unchanged.
const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

/// Listener `web` in front of a pool holding one scripted backend, `script`.
async fn scripted() -> (ScriptedServer, TestNode) {
    let backend = ScriptedServer::start().await;
    let node = TestNode::single("http", &backends_toml([("script", backend.addr, 1)]), "").await;
    (backend, node)
}

async fn connect(node: &TestNode) -> TcpStream {
    TcpStream::connect(node.addr("web").await).await.unwrap()
}

async fn send(s: &mut TcpStream, bytes: &str) {
    s.write_all(bytes.as_bytes()).await.unwrap();
}

/// Reads exactly as many bytes as `expected` has and compares them, as text for a readable
/// difference.
async fn expect_exactly(s: &mut TcpStream, expected: &str) {
    let got = read_n(s, expected.len()).await;
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

/// The head lintas sends a backend for an HTTP/1.1 `request` (`METHOD TARGET`) with
/// `headers`: the headers in their order, then the forwarding headers.
fn to_backend(request: &str, headers: &[&str]) -> String {
    to_backend_as("HTTP/1.1", request, headers)
}

/// [`to_backend`] for a request of HTTP `version`, which lintas keeps.
fn to_backend_as(version: &str, request: &str, headers: &[&str]) -> String {
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    format!(
        "{request} {version}\r\n{headers}x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
    )
}

/// Sends the HTTP/1.1 request `request` (`METHOD TARGET`) on `client`, checks that `conn`
/// receives it as lintas forwards it, answers [`OK`] and checks the client gets exactly that.
async fn ok_round_trip(client: &mut TcpStream, conn: &mut TcpStream, request: &str) {
    send(client, &format!("{request} HTTP/1.1\r\n{HOST}\r\n\r\n")).await;
    expect_exactly(conn, &to_backend(request, &[HOST])).await;
    send(conn, OK).await;
    expect_exactly(client, OK).await;
}

/// Sends the HTTP/1.1 request `request` on `client` and returns the backend connection it
/// arrives on, after checking it arrived as lintas forwards it.
async fn forwarded(
    client: &mut TcpStream,
    backend: &mut ScriptedServer,
    request: &str,
) -> TcpStream {
    send(client, &format!("{request} HTTP/1.1\r\n{HOST}\r\n\r\n")).await;
    let mut conn = backend.accept().await;
    expect_exactly(&mut conn, &to_backend(request, &[HOST])).await;
    conn
}

/// An answer lintas writes itself before closing the connection.
fn own_answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads one request head through its blank line, a byte at a time so that nothing after it
/// is consumed; `None` when the peer closes first.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match s.read_u8().await {
            Ok(b) => head.push(b),
            Err(_) => return None,
        }
    }
    Some(text(&head))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_reaches_the_backend_in_its_framing() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    send(
        &mut client,
        &format!("POST /upload HTTP/1.1\r\n{HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"),
    )
    .await;
    let mut conn = backend.accept().await;
    expect_exactly(
        &mut conn,
        &to_backend("POST /upload", &[HOST, "Transfer-Encoding: chunked"]),
    )
    .await;
    // Each piece goes out once the previous one reached the backend, so the body is still
    // arriving while lintas forwards it; pieces end inside chunk data and inside the trailer
    // section, never inside a chunk-size line (which lintas holds until it is whole).
    for piece in [
        "5;name=value\r\nhel",
        "lo\r\n7\r\n, world\r\n0\r\n",
        "X-Checksum: abc\r\n\r\n",
    ] {
        send(&mut client, piece).await;
        expect_exactly(&mut conn, piece).await;
    }
    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nreceived\n";
    send(&mut conn, answer).await;
    expect_exactly(&mut client, answer).await;

    ok_round_trip(&mut client, &mut conn, "GET /next").await;
    assert_eq!(backend.untaken(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_streams_intact_and_its_backend_connection_is_reused() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    let mut conn = forwarded(&mut client, &mut backend, "GET /stream").await;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    send(&mut conn, head).await;
    expect_exactly(&mut client, head).await;
    // Each chunk is written once the client has the previous one: lintas streams the body.
    for chunk in [
        "4\r\none \r\n",
        "4;x=y\r\ntwo \r\n",
        "5\r\nthree\r\n",
        "0\r\n\r\n",
    ] {
        send(&mut conn, chunk).await;
        expect_exactly(&mut client, chunk).await;
    }

    // The next request goes out on the same backend connection.
    ok_round_trip(&mut client, &mut conn, "GET /again").await;
    assert_eq!(backend.untaken(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_ends_at_its_head_whatever_its_content_length() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    let mut conn = forwarded(&mut client, &mut backend, "HEAD /file").await;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n";
    send(&mut conn, head).await;
    expect_exactly(&mut client, head).await;

    // Had lintas waited for 100 body bytes, this exchange would hang or come out shifted.
    ok_round_trip(&mut client, &mut conn, "GET /file").await;
    assert_eq!(backend.untaken(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_and_not_modified_responses_end_at_their_head() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;
    let mut conn = forwarded(&mut client, &mut backend, "DELETE /item").await;
    let no_content = "HTTP/1.1 204 No Content\r\nX-Deleted: item\r\n\r\n";
    send(&mut conn, no_content).await;
    expect_exactly(&mut client, no_content).await;

    // A 304 may carry the Content-Length of the representation; still no body follows.
    send(
        &mut client,
        &format!("GET /page HTTP/1.1\r\n{HOST}\r\nIf-None-Match: \"v1\"\r\n\r\n"),
    )
    .await;
    expect_exactly(
        &mut conn,
        &to_backend("GET /page", &[HOST, "If-None-Match: \"v1\""]),
    )
    .await;
    let not_modified = "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n";
    send(&mut conn, not_modified).await;
    expect_exactly(&mut client, not_modified).await;

    ok_round_trip(&mut client, &mut conn, "GET /next").await;
    assert_eq!(backend.untaken(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_not_forwarded_and_the_final_one_is() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    let mut conn = forwarded(&mut client, &mut backend, "GET /page").await;
    send(
        &mut conn,
        "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n",
    )
    .await;
    send(&mut conn, "HTTP/1.1 100 Continue\r\n\r\n").await;
    let last =
        "HTTP/1.1 200 OK\r\nLink: </app.css>; rel=preload\r\nContent-Length: 5\r\n\r\npage\n";
    send(&mut conn, last).await;
    // The first bytes the client gets are the final response's.
    expect_exactly(&mut client, last).await;

    ok_round_trip(&mut client, &mut conn, "GET /next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered_by_lintas_and_not_forwarded() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    send(
        &mut client,
        &format!(
            "PUT /upload HTTP/1.1\r\n{HOST}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        ),
    )
    .await;
    expect_exactly(&mut client, "HTTP/1.1 100 Continue\r\n\r\n").await;
    let mut conn = backend.accept().await;
    expect_exactly(
        &mut conn,
        &to_backend("PUT /upload", &[HOST, "Content-Length: 5"]),
    )
    .await;
    send(&mut client, "hello").await;
    expect_exactly(&mut conn, "hello").await;
    let created = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    send(&mut conn, created).await;
    expect_exactly(&mut client, created).await;

    ok_round_trip(&mut client, &mut conn, "GET /upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    send(
        &mut client,
        &format!("GET /one HTTP/1.1\r\n{HOST}\r\n\r\nGET /two HTTP/1.1\r\n{HOST}\r\n\r\n"),
    )
    .await;
    let mut conn = backend.accept().await;
    let one = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\none\n";
    let two = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntwo\n";
    expect_exactly(&mut conn, &to_backend("GET /one", &[HOST])).await;
    send(&mut conn, one).await;
    expect_exactly(&mut conn, &to_backend("GET /two", &[HOST])).await;
    send(&mut conn, two).await;

    expect_exactly(&mut client, &format!("{one}{two}")).await;
    assert_eq!(backend.untaken(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_client_is_closed_after_its_response_unless_it_asked_for_keep_alive() {
    let (mut backend, node) = scripted().await;

    let mut once = connect(&node).await;
    send(&mut once, &format!("GET /old HTTP/1.0\r\n{HOST}\r\n\r\n")).await;
    let mut conn = backend.accept().await;
    expect_exactly(&mut conn, &to_backend_as("HTTP/1.0", "GET /old", &[HOST])).await;
    send(&mut conn, OK).await;
    assert_eq!(
        text(&read_until_closed(&mut once).await),
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nconnection: close\r\n\r\nok\n"
    );

    let mut kept = connect(&node).await;
    let kept_ok = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nconnection: keep-alive\r\n\r\nok\n";
    for path in ["/first", "/second"] {
        send(
            &mut kept,
            &format!("GET {path} HTTP/1.0\r\n{HOST}\r\nConnection: keep-alive\r\n\r\n"),
        )
        .await;
        // The backend connection of the first client was kept (its HTTP/1.1 answer did not
        // close it); the requests keep their HTTP/1.0.
        let head = to_backend_as("HTTP/1.0", &format!("GET {path}"), &[HOST]);
        expect_exactly(&mut conn, &head).await;
        send(&mut conn, OK).await;
        expect_exactly(&mut kept, kept_ok).await;
    }
    assert_eq!(backend.untaken(), 0);
}

/// RFC 9112 §6.1: a server must not send `Transfer-Encoding` in answer to an HTTP/1.0
/// request — an HTTP/1.0 client does not know chunked framing. lintas forwards an HTTP/1.0
/// request as HTTP/1.0, so the backend answers in a framing the client reads (here: the body
/// up to the close), and lintas passes that on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_request_reaches_the_backend_as_http10_and_its_answer_ends_at_close() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    send(
        &mut client,
        &format!("GET /stream HTTP/1.0\r\n{HOST}\r\n\r\n"),
    )
    .await;
    let mut conn = backend.accept().await;
    expect_exactly(
        &mut conn,
        &to_backend_as("HTTP/1.0", "GET /stream", &[HOST]),
    )
    .await;
    send(&mut conn, "HTTP/1.0 200 OK\r\n\r\nhello world").await;
    drop(conn);

    assert_eq!(
        text(&read_until_closed(&mut client).await),
        "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello world"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_delimited_by_close_is_forwarded_whole_and_closes_the_client() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    let mut conn = forwarded(&mut client, &mut backend, "GET /legacy").await;
    send(
        &mut conn,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
    )
    .await;
    expect_exactly(
        &mut client,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nconnection: close\r\n\r\n",
    )
    .await;
    for part in ["first part, ", "second part"] {
        send(&mut conn, part).await;
        expect_exactly(&mut client, part).await;
    }
    drop(conn);

    assert_eq!(text(&read_until_closed(&mut client).await), "");
    wait_backend(&node, "web", "script", "script in_flight back to 0", |b| {
        b.in_flight == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connection_closed_by_the_backend_is_not_reused() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;
    let mut first = forwarded(&mut client, &mut backend, "GET /first").await;
    send(&mut first, OK).await;
    expect_exactly(&mut client, OK).await;

    // The backend closes the idle connection (its keep-alive timeout, say). Loopback
    // delivers the FIN before the request below, so lintas sees it when it checks out.
    drop(first);
    let mut second = forwarded(&mut client, &mut backend, "GET /second").await;
    send(&mut second, OK).await;
    expect_exactly(&mut client, OK).await;

    let listener = node.listener("web");
    assert_eq!((listener.connect_failures, listener.retries), (0, 0));
    assert_eq!(node.backend("web", "script").failures, 0);
}

/// The race the pool's check cannot see: the backend closes a kept-alive connection just as
/// lintas sends a request on it (its keep-alive timeout fired). A connection that was reused
/// and ends before any response byte is that race as far as lintas can tell, and a GET is
/// safe to send again: on a new connection, to the same backend, without counting a failure
/// against it — which also serves a pool of one backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_a_kept_alive_connection_closed_under_it_is_sent_again_on_a_new_one() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;
    let mut first = forwarded(&mut client, &mut backend, "GET /first").await;
    send(&mut first, OK).await;
    expect_exactly(&mut client, OK).await;

    send(
        &mut client,
        &format!("GET /second HTTP/1.1\r\n{HOST}\r\n\r\n"),
    )
    .await;
    expect_exactly(&mut first, &to_backend("GET /second", &[HOST])).await;
    drop(first);

    let mut early = vec![0u8; 4096];
    let mut second = tokio::select! {
        conn = backend.accept() => conn,
        n = client.read(&mut early) => panic!(
            "lintas answered instead of sending the GET again:\n{}",
            text(&early[..n.unwrap()])
        ),
    };
    expect_exactly(&mut second, &to_backend("GET /second", &[HOST])).await;
    send(&mut second, OK).await;
    expect_exactly(&mut client, OK).await;
    assert_eq!(node.backend("web", "script").failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_ambiguous_framing_are_refused_before_any_backend_sees_them() {
    let (mut backend, node) = scripted().await;
    let addr = node.addr("web").await;
    let cases = [
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "both Transfer-Encoding and Content-Length are present",
        ),
        ("Content-Length: 12x", "invalid Content-Length `12x`"),
        (
            "Content-Length: 5\r\nContent-Length: 6",
            "conflicting Content-Length headers",
        ),
        (
            "Transfer-Encoding: chunked, identity",
            "a request's Transfer-Encoding must end in chunked",
        ),
        (
            "Connection: content-length\r\nContent-Length: 5",
            "the Connection header names `content-length`, which is not hop-by-hop",
        ),
        (
            "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked",
            "the Connection header names `transfer-encoding`, which is not hop-by-hop",
        ),
        (
            "Connection: host\r\nContent-Length: 5",
            "the Connection header names `host`, which is not hop-by-hop",
        ),
        (
            "Content-Length: 5\u{a0}",
            "invalid Content-Length `5\\u{a0}`",
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding applies chunked more than once",
        ),
        ("Host: second.test", "more than one Host header"),
    ];

    for (framing, why) in cases {
        let request = format!("POST /upload HTTP/1.1\r\n{HOST}\r\n{framing}\r\n\r\n0\r\n\r\n");
        let answer = raw_exchange(addr, request.as_bytes()).await;
        assert_eq!(
            text(&answer),
            own_answer("400 Bad Request", &format!("bad request: {why}\n")),
            "{framing}"
        );
    }
    let others = [
        (
            "POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding is not allowed in an HTTP/1.0 request",
        ),
        ("GET / HTTP/1.1\r\n\r\n", "missing Host header"),
        (
            "GET / HTTP/1.1\r\nHost: admin@lintas.test\r\n\r\n",
            "invalid Host header `admin@lintas.test`",
        ),
    ];
    for (request, why) in others {
        let answer = raw_exchange(addr, request.as_bytes()).await;
        assert_eq!(
            text(&answer),
            own_answer("400 Bad Request", &format!("bad request: {why}\n")),
            "{request}"
        );
    }
    assert_eq!(backend.untaken(), 0);
    assert_eq!(node.backend("web", "script").requests, 0);
    assert_eq!(node.listener("web").responses, [0, 0, 0, 13, 0]);
}

/// Regression: lintas worked out the body's length, then dropped `Content-Length` because
/// `Connection` named it, and forwarded the body, which the backend read as the start of a
/// second request on a pooled connection — and the next client's request (its cookie
/// included) completed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_content_length_cannot_smuggle_a_request() {
    let (mut backend, node) = scripted().await;
    let smuggled = "GET /capture HTTP/1.1\r\nHost: lintas.test\r\nX-Swallow: ";
    let attack = format!(
        "POST / HTTP/1.1\r\n{HOST}\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let answer = raw_exchange(node.addr("web").await, attack.as_bytes()).await;
    assert_eq!(
        text(&answer),
        own_answer(
            "400 Bad Request",
            "bad request: the Connection header names `content-length`, which is not hop-by-hop\n"
        )
    );

    let mut victim = connect(&node).await;
    send(
        &mut victim,
        &format!("GET /account HTTP/1.1\r\n{HOST}\r\nCookie: sid=victim\r\n\r\n"),
    )
    .await;
    let mut conn = backend.accept().await;
    expect_exactly(
        &mut conn,
        &to_backend("GET /account", &[HOST, "Cookie: sid=victim"]),
    )
    .await;
    send(&mut conn, OK).await;
    expect_exactly(&mut victim, OK).await;
    assert_eq!(backend.untaken(), 0);
}

/// Regression: chunk-size lines and trailers were read with `httparse`'s lenient chunk
/// parser (a bare LF inside an extension, an empty size line) and split on CRLF only, then
/// forwarded raw — so a backend taking a bare LF as a line end read a request hidden in
/// the body. Now the line is refused before any of it is forwarded, and the backend
/// connection that saw the head is closed, never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_framing_a_backend_could_read_otherwise_is_refused_and_never_forwarded() {
    let (mut backend, node) = scripted().await;
    let addr = node.addr("web").await;
    let hidden = "GET /hidden HTTP/1.1\r\nHost: lintas.test\r\n\r\n";
    let cases = [
        (
            format!("2;x\n{hidden}\r\nok\r\n0\r\n\r\n"),
            "chunk-size line ended by a bare LF",
        ),
        (format!("2\r\nok\r\n\r\n{hidden}"), "chunk size missing"),
        (
            format!("2\r\nok\r\n0\r\nX: a\n{hidden}"),
            "trailer line ended by a bare LF",
        ),
        (
            "0\r\nContent-Length: 40\r\n\r\n".to_string(),
            "trailer field `content-length` is not allowed",
        ),
        (
            format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(5000)),
            "chunk-size line longer than 4096 bytes",
        ),
    ];
    let head = format!("POST /upload HTTP/1.1\r\n{HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (body, why) in cases {
        let answer = raw_exchange(addr, format!("{head}{body}").as_bytes()).await;
        assert_eq!(
            text(&answer),
            own_answer("400 Bad Request", &format!("bad request: {why}\n")),
            "{body:?}"
        );
        let mut conn = backend.accept().await;
        let seen = text(&read_until_closed(&mut conn).await);
        assert!(
            !seen.contains("/hidden"),
            "{body:?} reached the backend: {seen:?}"
        );
    }
    assert_eq!(backend.untaken(), 0);
}

/// Reads until the peer ends the connection; whether it ended with a clean end-of-file
/// rather than a reset, and what came before.
async fn read_to_end_of_connection(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the connection was not closed in time");
    (out, end)
}

/// RFC 9112 §9.6: closing a connection while the client is still sending makes the kernel
/// reset it, and a reset can destroy the answer before the client reads it; a server
/// half-closes first and reads on for a while (lintas's `linger`). Here the client is still
/// sending when lintas refuses its head: the rest of an oversized head, or the body of a
/// request with ambiguous framing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_request_head_is_answered_then_closed_cleanly_while_the_client_still_sends() {
    let (mut backend, node) = scripted().await;
    let filler = "a".repeat(64 * 1024);
    let cases = [
        (
            format!("GET / HTTP/1.1\r\n{HOST}\r\nX-Big: {filler}\r\n\r\n"),
            own_answer(
                "431 Request Header Fields Too Large",
                "request head larger than 16384 bytes or with more than 100 headers\n",
            ),
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{HOST}\r\nContent-Length: {}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{filler}",
                filler.len()
            ),
            own_answer(
                "400 Bad Request",
                "bad request: both Transfer-Encoding and Content-Length are present\n",
            ),
        ),
    ];

    for (request, expected) in cases {
        let mut client = connect(&node).await;
        send(&mut client, &request).await;
        let (answer, end) = read_to_end_of_connection(&mut client).await;
        assert_eq!(text(&answer), expected);
        assert!(
            end.is_ok(),
            "the answer was followed by {end:?}, not a clean close"
        );
    }
    assert_eq!(backend.untaken(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_response_head_is_answered_502_without_naming_the_backend() {
    let (mut backend, node) = scripted().await;
    let cases = [
        // A backend address pointing at an SSH server.
        "SSH-2.0-OpenSSH_9.6\r\n",
        // Both Transfer-Encoding and Content-Length.
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];

    for response in cases {
        let mut client = connect(&node).await;
        send(&mut client, &format!("GET / HTTP/1.1\r\n{HOST}\r\n\r\n")).await;
        // The previous case's connection was dropped, not pooled: each case connects anew.
        let mut conn = backend.accept().await;
        expect_exactly(&mut conn, &to_backend("GET /", &[HOST])).await;
        send(&mut conn, response).await;

        assert_eq!(
            text(&read_until_closed(&mut client).await),
            own_answer(
                "502 Bad Gateway",
                "bad gateway: the server sent an invalid response\n"
            )
        );
        // The broken connection is closed, not pooled (once lintas stops lingering on the
        // client's).
        drop(client);
        assert_eq!(text(&read_until_closed(&mut conn).await), "");
    }
    assert_eq!(node.backend("web", "script").failures, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_closing_inside_its_body_frees_the_backend_and_the_listener_serves_on() {
    let (mut backend, node) = scripted().await;
    let mut quitter = connect(&node).await;
    send(
        &mut quitter,
        &format!("POST /upload HTTP/1.1\r\n{HOST}\r\nContent-Length: 100\r\n\r\n0123456789"),
    )
    .await;
    let mut conn = backend.accept().await;
    expect_exactly(
        &mut conn,
        &(to_backend("POST /upload", &[HOST, "Content-Length: 100"]) + "0123456789"),
    )
    .await;

    drop(quitter);

    // A connection holding a partial request is closed, never pooled.
    assert_eq!(text(&read_until_closed(&mut conn).await), "");
    wait_backend(&node, "web", "script", "script in_flight back to 0", |b| {
        b.in_flight == 0
    })
    .await;
    let mut next = connect(&node).await;
    send(&mut next, &format!("GET / HTTP/1.1\r\n{HOST}\r\n\r\n")).await;
    let mut fresh = backend.accept().await;
    expect_exactly(&mut fresh, &to_backend("GET /", &[HOST])).await;
    send(&mut fresh, OK).await;
    expect_exactly(&mut next, OK).await;
}

/// What one of [`drops_first_request`]'s backends read.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    backend: &'static str,
    request: String,
    answered: bool,
}

/// Backends `one` and `two` (as a `backends = [...]` line) that read requests of
/// `body_len`-byte bodies and record them in the returned list. The first request of all is
/// read and its connection closed without an answer; later ones get `200` with the
/// answering backend's name as body.
async fn drops_first_request(body_len: usize) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dropped = Arc::new(AtomicBool::new(false));
    let mut list: Vec<(&str, SocketAddr, u32)> = Vec::new();
    for name in ["one", "two"] {
        let (seen, dropped) = (seen.clone(), dropped.clone());
        let addr = tcp_server(move |mut s| {
            let (seen, dropped) = (seen.clone(), dropped.clone());
            async move {
                while let Some(mut request) = read_head(&mut s).await {
                    let mut body = vec![0u8; body_len];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    request.push_str(&text(&body));
                    let answered = dropped.swap(true, Ordering::SeqCst);
                    seen.lock().unwrap().push(Seen {
                        backend: name,
                        request,
                        answered,
                    });
                    if !answered {
                        return;
                    }
                    let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{name}\n");
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        })
        .await;
        list.push((name, addr, 1));
    }
    (backends_toml(list), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_sent_again_after_its_backend_closed_without_answering() {
    let (backends, seen) = drops_first_request(5).await;
    let node = TestNode::single("http", &backends, "").await;

    let answer = raw_exchange(
        node.addr("web").await,
        format!("POST /order HTTP/1.1\r\n{HOST}\r\nContent-Length: 5\r\n\r\nhello").as_bytes(),
    )
    .await;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let [first] = &seen[..] else {
        panic!(
            "the POST reached the backends {} times: {seen:?}",
            seen.len()
        );
    };
    assert_eq!(
        first.request,
        to_backend("POST /order", &[HOST, "Content-Length: 5"]) + "hello"
    );
    assert_eq!(
        text(&answer),
        own_answer(
            "502 Bad Gateway",
            "bad gateway: the server failed after the request was sent; requests that are \
             not idempotent or have a body are not retried\n"
        )
    );
    assert_eq!(node.listener("web").retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_sent_again_to_another_backend_after_one_closed_without_answering() {
    let (backends, seen) = drops_first_request(0).await;
    let node = TestNode::single("http", &backends, "").await;
    let mut client = connect(&node).await;

    send(
        &mut client,
        &format!("GET /replay HTTP/1.1\r\n{HOST}\r\n\r\n"),
    )
    .await;
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
    let got = text(&read_n(&mut client, head.len() + 4).await);

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let (dropper, other) = match seen.first().map(|s| s.backend) {
        Some("one") => ("one", "two"),
        _ => ("two", "one"),
    };
    let request = to_backend("GET /replay", &[HOST]);
    assert_eq!(
        seen,
        [
            Seen {
                backend: dropper,
                request: request.clone(),
                answered: false
            },
            Seen {
                backend: other,
                request,
                answered: true
            },
        ]
    );
    assert_eq!(got, format!("{head}{other}\n"));
    let listener = node.listener("web");
    assert_eq!((listener.retries, listener.connect_failures), (1, 0));

    // The client connection is still in use.
    send(
        &mut client,
        &format!("GET /after HTTP/1.1\r\n{HOST}\r\n\r\n"),
    )
    .await;
    let got = tokio::time::timeout(PATIENCE, read_head(&mut client)).await;
    assert_eq!(got.unwrap().as_deref(), Some(head));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_byte_counters_count_what_crossed_each_way() {
    let (mut backend, node) = scripted().await;
    let mut client = connect(&node).await;

    let mut conn = forwarded(&mut client, &mut backend, "GET /counted").await;
    send(&mut conn, OK).await;
    expect_exactly(&mut client, OK).await;

    // The response is counted once it has been written to the client, which may be just
    // after the client read it.
    let sent = to_backend("GET /counted", &[HOST]).len() as u64;
    let counted = || {
        let c = node.backend("web", "script");
        (c.bytes_in, c.bytes_out)
    };
    wait_until("the response to be counted", PATIENCE, || async {
        counted().1 > 0
    })
    .await;
    assert_eq!(counted(), (sent, OK.len() as u64));
}
