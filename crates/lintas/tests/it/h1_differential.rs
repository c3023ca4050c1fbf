//! A differential fuzzer for the HTTP/1 path: generated and mutated requests are sent
//! through lintas to a recording backend, and the backend must see exactly the requests the
//! client sent — as a strict reference parser (hyper's server) reads the client's bytes —
//! or lintas must refuse them. A backend that sees a request the reference did not read
//! from the client's bytes is a smuggled request.
//!
//! Each case is one client connection carrying the requests of
//! [`testkit::fuzz::http1::case`]. The same grammar and reference drive the parser-level
//! target beside the proxy's HTTP/1 code (`proxy::http::h1::fuzz`), which tries far more
//! cases per second; this one covers what lies between the parsers and the sockets.
//!
//! Runs for `LINTAS_FUZZ_SECONDS` (default 10) from `LINTAS_FUZZ_SEED` (default random;
//! printed with any failure, with the failing bytes); see [`testkit::fuzz`]. A longer run:
//! `LINTAS_FUZZ_SECONDS=3600 cargo nextest run -p lintas --test it h1_differential`.

use std::net::SocketAddr;

use testkit::PATIENCE;
use testkit::fuzz::Fuzz;
use testkit::fuzz::http1::{Seen, case, record, reference};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::harness::{TestNode, backends_toml};

/// The recording backend: a hyper server on 127.0.0.1.
async fn backend() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(record(s, tx.clone()));
        }
    });
    (addr, rx)
}

/// Sends `bytes` to lintas on a new connection and half-closes it; returns when lintas
/// has closed the connection.
async fn through_lintas(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // lintas may refuse and close before it has read everything: a failed write is fine.
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut sink = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut sink))
        .await
        .expect("lintas neither answered nor closed")
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_exactly_the_requests_the_client_sent_or_none() {
    let mut fuzz = Fuzz::from_env("h1 differential");
    let (addr, mut seen_by_backend) = backend().await;
    let node = TestNode::single(
        "http",
        &backends_toml([("rec", addr, 1)]),
        "head_timeout = \"2s\"\nbody_timeout = \"2s\"\nretries = 0",
    )
    .await;
    let web = node.addr("web").await;
    let mut rng = fuzz.rng();
    let (mut forwarded, mut refused) = (0u64, 0u64);
    while fuzz.next_case() {
        let bytes = case(&mut rng);
        let expected = reference(&bytes).await;
        through_lintas(web, &bytes).await;
        let got: Vec<Seen> = std::iter::from_fn(|| seen_by_backend.try_recv().ok()).collect();
        let explain = || {
            format!(
                "{}: client sent \"{}\"\nreference read {expected:#?}\nbackend saw {got:#?}",
                fuzz.at(),
                bytes.escape_ascii()
            )
        };
        assert!(
            got.len() <= expected.len(),
            "backend saw more requests: {}",
            explain()
        );
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "backend saw another request: {}", explain());
        }
        forwarded += got.len() as u64;
        refused += (expected.len() - got.len()) as u64;
    }
    eprintln!(
        "h1 differential: {forwarded} requests forwarded, \
         {refused} read by the reference but refused by lintas"
    );
}
