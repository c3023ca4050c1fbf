//! Health probes: the one TCP connect and HTTP GET behind the proxy's active checks and the
//! targets watch checks itself.
//!
//! A probe is bounded as a whole by its timeout (connect, request and body together), asks
//! with `Connection: close` so no idle connection is left behind on the target, and reads a
//! body only when it must look for text in it — at most [`MAX_BODY`] bytes of it. What it
//! saw or what was wrong comes back as one line of text, for the stats page, the history and
//! alerts.

use std::time::Duration;

use bytes::Bytes;
use configkit::StatusRange;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, ToSocketAddrs};

/// Most body bytes read to look for [`HttpProbe::body_contains`]; a health page is small,
/// and a target must not make its checker buffer without end.
pub const MAX_BODY: usize = 64 * 1024;

/// The HTTP request a probe sends once connected, and what its answer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// Request method: GET, or HEAD for a check that should not make the target render a
    /// body, or whatever the target's health route answers.
    pub method: http::Method,
    /// Request target (path and query), e.g. `/health`.
    pub path: String,
    /// `Host` header: what a virtual-hosting target routes on.
    pub host: String,
    /// Statuses that pass.
    pub expect: StatusRange,
    /// Text the body must contain; without it the body is not read.
    pub body_contains: Option<String>,
    /// `User-Agent`, so the target's logs tell which part of lintas is asking.
    pub user_agent: &'static str,
}

/// Connects to `addr` and, with `http`, asks it; all within `timeout`. `Ok` carries what
/// was seen ("HTTP 200", "TCP connect ok"), `Err` what was wrong ("Connection refused
/// (os error 111)", "HTTP 500, expected 200-399", "no answer within 1s").
pub async fn probe(
    addr: impl ToSocketAddrs,
    http: Option<&HttpProbe>,
    timeout: Duration,
) -> Result<String, String> {
    tokio::time::timeout(timeout, attempt(addr, http))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                configkit::format_duration(timeout)
            ))
        })
}

async fn attempt(addr: impl ToSocketAddrs, http: Option<&HttpProbe>) -> Result<String, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let Some(http) = http else {
        return Ok("TCP connect ok".into());
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(http.method.clone())
        .uri(http.path.as_str())
        .header(header::HOST, http.host.as_str())
        .header(header::USER_AGENT, http.user_agent)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP request failed: {e}"))?;
    let status = resp.status().as_u16();
    if !http.expect.contains(status) {
        return Err(format!("HTTP {status}, expected {}", http.expect));
    }
    let Some(needle) = &http.body_contains else {
        return Ok(format!("HTTP {status}"));
    };
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    if String::from_utf8_lossy(&body).contains(needle.as_str()) {
        Ok(format!("HTTP {status}, body has {needle:?}"))
    } else {
        Err(format!("HTTP {status}, but the body lacks {needle:?}"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    /// A target that answers one connection with `response` and hands back the request head
    /// it read.
    async fn target(response: &'static str) -> (SocketAddr, oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            s.write_all(response.as_bytes()).await.expect("write");
            // Held open until the probe has read: `Connection: close` is the probe's to act on.
            let _ = s.read(&mut buf).await;
        });
        (addr, rx)
    }

    fn http(body_contains: Option<&str>) -> HttpProbe {
        HttpProbe {
            method: http::Method::GET,
            path: "/health?full=1".into(),
            host: "site.example:8080".into(),
            expect: StatusRange::default(),
            body_contains: body_contains.map(Into::into),
            user_agent: "lintas-test",
        }
    }

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn an_http_probe_sends_one_closing_get_and_passes_on_an_expected_status() {
        let (addr, head) = target("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(
            probe(addr, Some(&http(None)), PATIENCE).await,
            Ok("HTTP 204".into())
        );
        assert_eq!(
            head.await.expect("head"),
            "GET /health?full=1 HTTP/1.1\r\nhost: site.example:8080\r\nuser-agent: lintas-test\r\nconnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_status_outside_the_range_fails_naming_the_range() {
        let (addr, _) = target("HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(
            probe(addr, Some(&http(None)), PATIENCE).await,
            Err("HTTP 500, expected 200-399".into())
        );
        let (addr, _) = target("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let only_204 = HttpProbe {
            expect: "204".parse().expect("range"),
            ..http(None)
        };
        assert_eq!(
            probe(addr, Some(&only_204), PATIENCE).await,
            Err("HTTP 200, expected 204".into())
        );
    }

    #[tokio::test]
    async fn the_body_is_searched_only_when_asked() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nstatus ok";
        let (addr, _) = target(ok).await;
        assert_eq!(
            probe(addr, Some(&http(Some("ok"))), PATIENCE).await,
            Ok("HTTP 200, body has \"ok\"".into())
        );
        let (addr, _) = target(ok).await;
        assert_eq!(
            probe(addr, Some(&http(Some("ready"))), PATIENCE).await,
            Err("HTTP 200, but the body lacks \"ready\"".into())
        );
    }

    #[tokio::test]
    async fn a_tcp_probe_passes_on_connect_and_fails_on_refusal() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(
            probe(addr, None, PATIENCE).await,
            Ok("TCP connect ok".into())
        );
        drop(listener);
        assert_eq!(
            probe(addr, None, PATIENCE).await,
            Err("Connection refused (os error 111)".into())
        );
    }

    #[tokio::test]
    async fn a_target_that_never_answers_fails_at_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(
            probe(addr, Some(&http(None)), Duration::from_millis(200)).await,
            Err("no answer within 200ms".into())
        );
    }
}
