//! The other listeners: MQTT over TLS and over WebSocket (plain and secure) reach the same
//! broker as plain TCP, and a client that opens a socket and never finishes the TLS
//! handshake or the upgrade is closed after `connect_timeout`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt::codec::{QoS, ReasonCode, Version};
use mqtt::transport::websocket::WsStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{Io, Node, Raw, connect, publish, subscribe};

/// A broker with every listener, its certificate made in `dir`.
async fn node(dir: &Path) -> Node {
    let (cert, key) = testkit::tls::self_signed(dir).expect("openssl makes a certificate");
    Node::start(&format!(
        "tls_listen = \"127.0.0.1:0\"\nws_listen = \"127.0.0.1:0\"\nwss_listen = \"127.0.0.1:0\"\n\
         connect_timeout = \"1s\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert.display(),
        key.display()
    ))
    .await
}

/// A TLS session to `key`'s listener, trusting the test's certificate.
async fn tls(node: &Node, key: &str, dir: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("cert.pem")).expect("the certificate") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = node
        .broker
        .endpoint(key)
        .expect("the listener is configured");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
        .expect("the TLS handshake")
}

/// The WebSocket upgrade over `stream` to `/mqtt`, offering the `mqtt` subprotocol.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    scheme: &str,
) -> Box<dyn Io> {
    let mut req = format!("{scheme}://localhost/mqtt")
        .into_client_request()
        .expect("a request");
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    let (ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("the upgrade");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mqtt");
    Box::new(WsStream::new(ws))
}

#[tokio::test]
async fn tls_and_websocket_clients_reach_the_same_broker_as_tcp() {
    let dir = TempDir::new();
    let node = node(dir.path()).await;
    let ws_addr = node.broker.endpoint("ws_listen").expect("ws_listen");
    let clients: Vec<(&str, Box<dyn Io>)> = vec![
        ("tls", Box::new(tls(&node, "tls_listen", dir.path()).await)),
        (
            "ws",
            upgrade(TcpStream::connect(ws_addr).await.expect("connect"), "ws").await,
        ),
        (
            "wss",
            upgrade(tls(&node, "wss_listen", dir.path()).await, "wss").await,
        ),
    ];
    let mut subscribers = Vec::new();
    for (name, stream) in clients {
        let mut raw = Raw::over(stream, Version::V5);
        let ack = raw.connect(connect(Version::V5, name)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success, "{name}");
        assert_eq!(
            raw.subscribe(subscribe(1, "t/#", QoS::AtLeastOnce)).await,
            [ReasonCode::GrantedQos1],
            "{name}"
        );
        subscribers.push((name, raw));
    }
    let mut tcp = node.client(Version::V311, "tcp").await;
    assert_eq!(
        tcp.publish(publish("t/1", "over every transport", QoS::AtLeastOnce, 1))
            .await,
        ReasonCode::Success
    );
    for (name, raw) in &mut subscribers {
        let got = raw.recv_publish().await;
        assert_eq!(
            (&*got.topic, &got.payload[..]),
            ("t/1", &b"over every transport"[..]),
            "{name}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_opening_is_closed_after_connect_timeout() {
    let dir = TempDir::new();
    let node = node(dir.path()).await;
    for key in ["tls_listen", "ws_listen", "wss_listen", "listen"] {
        let addr = node.broker.endpoint(key).expect("configured");
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut [0u8; 64]))
            .await
            .unwrap_or_else(|_| panic!("{key}: still open after 20 s"));
        assert!(matches!(read, Ok(0) | Err(_)), "{key}: {read:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{key}: closed before connect_timeout ({:?})",
            started.elapsed()
        );
    }
    node.stop().await;
}
