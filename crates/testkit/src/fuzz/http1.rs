//! HTTP/1 for fuzz targets: a grammar of requests with the mutations where parsers
//! disagree, and a strict reference parser (hyper's server) that says which requests a
//! byte string holds.
//!
//! Each case is one to three pipelined requests, built from a grammar (methods, targets,
//! HTTP/1.0 and 1.1, `Host`, `Connection` tokens, extra headers, `Content-Length` and
//! chunked bodies with extensions and trailers) and then mutated byte-wise at the places
//! parsers disagree about: line ends (bare LF, bare CR), whitespace around names and
//! values, obs-fold, duplicated or dropped lines, case, chunk sizes and stray bytes.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::PATIENCE;

/// A request as a parser read it, reduced to what lintas must carry unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// End-to-end headers in order, names lower-cased; the headers lintas rewrites
    /// (hop-by-hop, `Connection`-listed, `X-Forwarded-*`, `Expect`) left out.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, decoded.
    pub body: Vec<u8>,
    /// Trailer fields, names lower-cased.
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = |v: &[(String, Vec<u8>)]| {
            v.iter()
                .map(|(n, v)| format!("{n}: {}", v.escape_ascii()))
                .collect::<Vec<_>>()
        };
        write!(
            f,
            "{} {} {:?} headers {:?} body {:?} trailers {:?}",
            self.method,
            self.target,
            self.version,
            fields(&self.headers),
            self.body.escape_ascii().to_string(),
            fields(&self.trailers)
        )
    }
}

/// Headers lintas removes or rewrites by design (RFC 9110 §7.6.1, forwarding headers).
const REWRITTEN: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "expect",
];

/// Headers lintas drops when spelled with `_` for `-` (CGI-style backends read them as the
/// real ones).
fn is_underscore_twin(name: &str) -> bool {
    name.contains('_')
        && [
            "x-forwarded-for",
            "x-forwarded-proto",
            "host",
            "content-length",
            "transfer-encoding",
        ]
        .contains(&name.replace('_', "-").as_str())
}

/// The request as read, once its body has been read to its end; `None` when the body broke
/// off (a truncated or malformed body is not a request the parser read).
async fn seen(req: Request<Incoming>) -> Option<Seen> {
    let (parts, body) = req.into_parts();
    let listed: Vec<String> = parts
        .headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .collect();
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| {
            !REWRITTEN.contains(&n.as_str())
                && !listed.iter().any(|l| l == n.as_str())
                && !is_underscore_twin(n.as_str())
        })
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().trim_ascii().to_vec()))
        .collect();
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame.ok()?.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.extend(
                        t.iter()
                            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())),
                    );
                }
            }
        }
    }
    Some(Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        version: format!("{:?}", parts.version),
        headers,
        body: data,
        trailers,
    })
}

/// Serves one HTTP/1 connection with hyper, sending every request it reads to `out`.
pub async fn record<I>(io: I, out: mpsc::UnboundedSender<Seen>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let out = out.clone();
        async move {
            if let Some(seen) = seen(req).await {
                let _ = out.send(seen);
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    // A client half-closes after its last request: hyper must still serve what it read.
    let _ = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// What the reference parser reads from `bytes` sent on one connection.
pub async fn reference(bytes: &[u8]) -> Vec<Seen> {
    let (mut client, server) = tokio::io::duplex(bytes.len() + 64 * 1024);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let served = tokio::spawn(record(server, tx));
    client
        .write_all(bytes)
        .await
        .expect("the duplex holds the whole case");
    client.shutdown().await.expect("a duplex half-closes");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, client.read_to_end(&mut sink)).await;
    let _ = served.await;
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// One of `from`, uniformly.
pub fn pick<'a, T>(rng: &mut StdRng, from: &'a [T]) -> &'a T {
    &from[rng.random_range(0..from.len())]
}

/// One request from the grammar.
pub fn request(rng: &mut StdRng) -> Vec<u8> {
    let method = *pick(
        rng,
        &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"],
    );
    let target = *pick(
        rng,
        &[
            "/",
            "/a?b=1",
            "/%20x",
            "*",
            "http://lintas.test/abs",
            "/a/../b",
        ],
    );
    let version = if rng.random_bool(0.15) {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let mut lines: Vec<String> = vec![format!("{method} {target} {version}")];
    // One request in ten with a Host lintas refuses, so most reach the backend.
    match rng.random_range(0..30) {
        0 => {}
        1 => lines.push("Host: a.test\r\nHost: b.test".into()),
        2 => lines.push("Host: user@lintas.test".into()),
        _ => lines.push("Host: lintas.test".into()),
    }
    for _ in 0..rng.random_range(0..4) {
        let line = *pick(
            rng,
            &[
                "Accept: */*",
                "Cookie: sid=1",
                "X-Forwarded-For: 10.0.0.1",
                "Connection: keep-alive",
                "Connection: close",
                "Connection: x-a",
                "X-A: 1",
                "Connection: content-length",
                "Connection: transfer-encoding",
                "Connection: host",
                "Keep-Alive: timeout=5",
                "TE: trailers",
                "Trailer: X-Sum",
                "X-Empty:",
                "X-Tab:\tv\t",
            ],
        );
        lines.push(line.into());
    }
    let body = match rng.random_range(0..4) {
        0 => Vec::new(),
        1 => {
            let body = b"hello world".repeat(rng.random_range(0..3));
            lines.push(format!("Content-Length: {}", body.len()));
            body
        }
        _ => {
            let te = *pick(
                rng,
                &[
                    "chunked",
                    "chunked",
                    "Chunked",
                    "gzip, chunked",
                    "chunked, gzip",
                ],
            );
            lines.push(format!("Transfer-Encoding: {te}"));
            chunked(rng)
        }
    };
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

/// A chunked body: chunks with sizes in either case, extensions, trailers.
pub fn chunked(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(0..3) {
        let n = rng.random_range(1..20usize);
        let size = if rng.random_bool(0.5) {
            format!("{n:x}")
        } else {
            format!("{n:X}")
        };
        let ext = *pick(rng, &["", "", ";a", ";a=b", ";a=\"q;\\\"x\"", " ; a = b"]);
        out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if rng.random_bool(0.3) {
        let trailers: [&[u8]; 2] = [b"X-Sum: 1\r\n", b"X-A: b\r\nX-B: c\r\n"];
        let chosen: &&[u8] = pick(rng, &trailers);
        out.extend_from_slice(chosen);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Byte-level mutations where HTTP/1 parsers are known to disagree.
pub fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.random_range(0..4) {
        if bytes.is_empty() {
            return;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..12) {
            // A CRLF becomes a bare LF or a bare CR.
            0 | 1 => {
                if let Some(i) = bytes[at..].windows(2).position(|w| w == b"\r\n") {
                    if rng.random_bool(0.5) {
                        bytes.remove(at + i);
                    } else {
                        bytes.remove(at + i + 1);
                    }
                }
            }
            // Whitespace before a colon, after a value, or starting a line (obs-fold).
            2 => {
                if let Some(i) = bytes[at..].iter().position(|&b| b == b':') {
                    bytes.insert(at + i, *pick(rng, b" \t"));
                }
            }
            3 => {
                if let Some(i) = bytes[at..].windows(2).position(|w| w == b"\r\n") {
                    let fold: [&[u8]; 3] = [b" ", b"\t", b" x\r\n"];
                    let fold = *pick(rng, &fold);
                    bytes.splice(at + i + 2..at + i + 2, fold.iter().copied());
                }
            }
            // A stray byte: NUL, high bit, form feed, vertical tab, comma, plus.
            4 => bytes.insert(
                at,
                *pick(rng, &[0u8, 0x80, 0xa0, 0x0c, 0x0b, b',', b'+', b'"']),
            ),
            // A byte changed or dropped.
            5 => bytes[at] = rng.random(),
            6 => drop(bytes.remove(at)),
            // A line duplicated.
            7 => {
                let start = bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                if let Some(len) = bytes[start..].iter().position(|&b| b == b'\n') {
                    let line = bytes[start..=start + len].to_vec();
                    bytes.splice(start..start, line);
                }
            }
            // A digit changed (lengths, chunk sizes).
            8 => {
                if let Some(i) = bytes[at..].iter().position(u8::is_ascii_hexdigit) {
                    bytes[at + i] = *pick(rng, b"0123456789abcdefABCDEF");
                }
            }
            // Case flipped.
            9 => bytes[at] = bytes[at].to_ascii_uppercase(),
            // Truncated.
            10 => bytes.truncate(at),
            // A framing header slipped in.
            _ => {
                if let Some(i) = bytes[at..].windows(2).position(|w| w == b"\r\n") {
                    let header = *pick(
                        rng,
                        &[
                            &b"\r\nContent-Length: 3"[..],
                            b"\r\nTransfer-Encoding: chunked",
                            b"\r\nContent-Length:  4 ",
                            b"\r\nTransfer-Encoding:\tchunked",
                            b"\r\nContent-Length: 0",
                        ],
                    );
                    bytes.splice(at + i..at + i, header.iter().copied());
                }
            }
        }
    }
}

/// One case: one to three pipelined requests, mutated four times in five.
pub fn case(rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        bytes.extend(request(rng));
    }
    if rng.random_bool(0.8) {
        mutate(rng, &mut bytes);
    }
    bytes
}
