//! Layer 4: sessions through `mode = "tcp"` listeners, byte for byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::harness::{
    TestNode, backends_toml, listener_toml, read_n, read_until_closed, single_config, tcp_server,
    unique,
};

/// A TCP listener `web` in front of the single backend `target`, with `listener` lines.
async fn tcp_node(target: SocketAddr, listener: &str) -> TestNode {
    TestNode::single("tcp", &backends_toml([("target", target, 1)]), listener).await
}

/// A server that reads each connection to its end, reports what it read, then writes
/// `reply` and closes.
async fn recording_server(reply: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = tcp_server(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            let _ = tx.send(got);
            let _ = s.write_all(reply).await;
        }
    })
    .await;
    (addr, rx)
}

/// An MQTT control packet: type and flags, remaining length, body.
fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// An MQTT UTF-8 string: two-byte length, then the bytes.
fn mqtt_str(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_session_through_tcp_listener_survives_an_idle_pause() {
    let node = tcp_node("127.0.0.1:1883".parse().unwrap(), "idle_timeout = \"10s\"").await;
    let mut s = TcpStream::connect(node.addr("web").await).await.unwrap();
    let client_id = unique("lintas-it");
    let topic = unique("lintas-it/topic");

    let connect = [mqtt_str("MQTT"), vec![4, 0x02, 0, 60], mqtt_str(&client_id)].concat();
    s.write_all(&mqtt_packet(0x10, &connect)).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, [0x20, 0x02, 0x00, 0x00], "CONNACK");

    let subscribe = [vec![0, 1], mqtt_str(&topic), vec![0]].concat();
    s.write_all(&mqtt_packet(0x82, &subscribe)).await.unwrap();
    assert_eq!(
        read_n(&mut s, 5).await,
        [0x90, 0x03, 0x00, 0x01, 0x00],
        "SUBACK"
    );

    let publish = mqtt_packet(0x30, &[mqtt_str(&topic), b"hi".to_vec()].concat());
    s.write_all(&publish).await.unwrap();
    assert_eq!(
        read_n(&mut s, publish.len()).await,
        publish,
        "PUBLISH delivered back"
    );

    // The point of this test is an idle session, so here a plain sleep is the behaviour.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(&[0xC0, 0x00]).await.unwrap();
    assert_eq!(
        read_n(&mut s, 2).await,
        [0xD0, 0x00],
        "PINGRESP after the pause"
    );

    s.write_all(&[0xE0, 0x00]).await.unwrap();
    assert_eq!(
        read_until_closed(&mut s).await,
        b"",
        "the broker closes after DISCONNECT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_reaches_the_backend_and_its_answer_comes_back() {
    let (server, mut rx) = recording_server(b"pong").await;
    let node = tcp_node(server, "").await;
    let mut s = TcpStream::connect(node.addr("web").await).await.unwrap();

    s.write_all(b"ping").await.unwrap();
    s.shutdown().await.unwrap();

    assert_eq!(read_until_closed(&mut s).await, b"pong");
    assert_eq!(rx.recv().await.unwrap(), b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_is_closed_after_idle_timeout() {
    let silent = tcp_server(|s| async move {
        let _held = s;
        std::future::pending::<()>().await;
    })
    .await;
    let node = tcp_node(silent, "idle_timeout = \"300ms\"").await;
    let addr = node.addr("web").await;
    // Taken before connecting: the proxy's session may start before this task resumes.
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();

    let read = read_until_closed(&mut s).await;

    assert_eq!(read, b"");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_headers_precede_the_client_bytes() {
    let (server, mut seen) = recording_server(b"").await;
    let text = single_config(
        "tcp",
        &backends_toml([("target", server, 1)]),
        "proxy_protocol = \"v1\"",
    ) + &listener_toml("v2", "tcp", "proxy_protocol = \"v2\"");
    let node = TestNode::start(&text).await;
    let mut session = async |listener: &str| {
        let mut s = TcpStream::connect(node.addr(listener).await).await.unwrap();
        let client_port = s.local_addr().unwrap().port();
        s.write_all(b"hello").await.unwrap();
        s.shutdown().await.unwrap();
        read_until_closed(&mut s).await;
        (client_port, seen.recv().await.unwrap())
    };

    let (port, got) = session("web").await;
    let listener_port = node.addr("web").await.port();
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("PROXY TCP4 127.0.0.1 127.0.0.1 {port} {listener_port}\r\nhello")
    );

    let (port, got) = session("v2").await;
    let listener_port = node.addr("v2").await.port();
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want.extend([0x21, 0x11, 0x00, 0x0C, 127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend(port.to_be_bytes());
    want.extend(listener_port.to_be_bytes());
    want.extend(b"hello");
    assert_eq!(got, want);
}
