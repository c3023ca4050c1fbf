//! MQTT over WebSocket (MQTT 5.0 §6, the same for 3.1.1): the server's side of the HTTP
//! upgrade, and the connection as a byte stream.
//!
//! The upgrade is accepted only on the configured path and only when the client offers the
//! `mqtt` subprotocol (or the `mqttv3.1` that older Paho JavaScript clients send); anything
//! else is answered 400 or 404 with a body that says what was expected, so a misconfigured
//! browser client sees why. Each WebSocket message is limited to the broker's maximum packet
//! size (an MQTT packet may span messages, and a message may hold several packets, so the
//! limit only bounds what tungstenite buffers; the codec enforces the packet limit itself).
//!
//! [`WsStream`] turns binary messages into bytes for the codec and each write into one
//! binary message: the connection task writes once per wake-up, so a batch of packets is
//! one message. A text message breaks §6.0 ("MQTT Control Packets MUST be sent in WebSocket
//! binary data frames") and fails the read, which closes the connection. Pings are
//! answered by tungstenite on the next read or flush.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The subprotocols a client may offer, the one §6.0 names first.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Read buffer per connection: enough for the packets of a busy client, small enough that
/// ten thousand idle browsers do not hold a megabyte each (tungstenite's default is 128 KiB).
const READ_BUFFER: usize = 8 * 1024;

/// Accepts the WebSocket upgrade of `stream` on `path`; `max_message` bounds one message.
pub async fn accept<S>(stream: S, path: &str, max_message: usize) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let check = Upgrade { path };
    let inner =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await?;
    Ok(WsStream::new(inner))
}

/// The checks on an upgrade request, for the path the broker serves.
struct Upgrade<'a> {
    path: &'a str,
}

impl Callback for Upgrade<'_> {
    /// Answers the upgrade request: the subprotocol chosen, or why it is refused.
    fn on_request(self, req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
        let path = self.path;
        let refuse = |status: StatusCode, why: String| {
            let mut r = ErrorResponse::new(Some(why));
            *r.status_mut() = status;
            r
        };
        if req.uri().path() != path {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "MQTT over WebSocket is served on {path}, not {}",
                    req.uri().path()
                ),
            ));
        }
        let offered = |protocol: &str| {
            req.headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim().eq_ignore_ascii_case(protocol))
        };
        // Ours in our order of preference, whatever order the client listed them in.
        let Some(chosen) = SUBPROTOCOLS.into_iter().find(|s| offered(s)) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "offer the WebSocket subprotocol `mqtt` (Sec-WebSocket-Protocol: mqtt), as MQTT §6.0 requires"
                    .into(),
            ));
        };
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        Ok(resp)
    }
}

/// An accepted MQTT-over-WebSocket connection as a byte stream.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// What is left of the last binary message read.
    read: Bytes,
}

impl<S> WsStream<S> {
    /// `inner`, an upgraded connection of either side, as a byte stream (a client's, for
    /// tests and tools that speak MQTT over WebSocket themselves).
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            read: Bytes::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.read = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: MQTT travels in binary messages only (§6.0)",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.inner);
        ready!(inner.poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io::Error::other(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::handshake::client::Response as ClientResponse;

    use super::*;

    /// A client's upgrade request for `path`, offering `protocol` if any.
    fn request(path: &str, protocol: Option<&str>) -> Request {
        let mut req = format!("ws://broker{path}")
            .into_client_request()
            .expect("a valid URL");
        if let Some(p) = protocol {
            req.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(p).expect("a header value"),
            );
        }
        req
    }

    /// The client's handshake result and the server's, over an in-memory pipe.
    async fn handshake(
        req: Request,
    ) -> (
        Result<(WebSocketStream<DuplexStream>, ClientResponse), WsError>,
        Result<WsStream<DuplexStream>, WsError>,
    ) {
        let (client, server) = duplex(64 * 1024);
        tokio::join!(
            tokio_tungstenite::client_async(req, client),
            accept(server, "/mqtt", 1024)
        )
    }

    /// Both ends of an accepted upgrade.
    async fn connected() -> (WebSocketStream<DuplexStream>, WsStream<DuplexStream>) {
        let (client, server) = handshake(request("/mqtt", Some("mqtt"))).await;
        let (client, _) = client.expect("the client's handshake");
        (client, server.expect("the server's handshake"))
    }

    #[tokio::test]
    async fn binary_messages_are_one_byte_stream_both_ways() {
        let (client, server) = handshake(request("/mqtt", Some("mqttv3.1, mqtt"))).await;
        let (mut client, resp) = client.expect("the client's handshake");
        assert_eq!(resp.headers()["sec-websocket-protocol"], "mqtt");
        let mut server = server.expect("the server's handshake");
        // A PINGREQ split over two messages, then a PINGREQ and a DISCONNECT in one.
        for part in [&[0xc0][..], &[0x00], &[0xc0, 0x00, 0xe0, 0x00]] {
            client
                .send(Message::Binary(Bytes::copy_from_slice(part)))
                .await
                .expect("sent");
        }
        let mut got = [0u8; 6];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(got, [0xc0, 0x00, 0xc0, 0x00, 0xe0, 0x00]);
        server
            .write_all(&[0xd0, 0x00, 0xd0, 0x00])
            .await
            .expect("written");
        server.flush().await.expect("flushed");
        let answer = client.next().await.expect("a message").expect("no error");
        assert_eq!(
            answer,
            Message::Binary(Bytes::from_static(&[0xd0, 0x00, 0xd0, 0x00]))
        );
        client.close(None).await.expect("closed");
        assert_eq!(server.read(&mut got).await.expect("end of stream"), 0);
    }

    #[tokio::test]
    async fn a_client_without_the_mqtt_subprotocol_is_told_to_offer_it() {
        let (client, server) = handshake(request("/mqtt", Some("chat"))).await;
        let Err(WsError::Http(resp)) = client else {
            panic!("the upgrade must be refused: {client:?}");
        };
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()),
            "offer the WebSocket subprotocol `mqtt` (Sec-WebSocket-Protocol: mqtt), as MQTT §6.0 requires"
        );
        assert!(server.is_err());
    }

    #[tokio::test]
    async fn another_path_is_not_found() {
        let (client, _) = handshake(request("/ws", Some("mqtt"))).await;
        let Err(WsError::Http(resp)) = client else {
            panic!("the upgrade must be refused: {client:?}");
        };
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()),
            "MQTT over WebSocket is served on /mqtt, not /ws"
        );
    }

    #[tokio::test]
    async fn a_text_message_fails_the_read() {
        let (mut client, mut server) = connected().await;
        client.send(Message::text("hello")).await.expect("sent");
        let err = server.read(&mut [0u8; 8]).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "a text WebSocket message: MQTT travels in binary messages only (§6.0)"
        );
    }

    #[tokio::test]
    async fn a_message_over_the_limit_fails_the_read() {
        let (mut client, mut server) = connected().await;
        client
            .send(Message::Binary(Bytes::from(vec![0u8; 1025])))
            .await
            .expect("sent");
        let err = server.read(&mut [0u8; 8]).await.expect_err("refused");
        assert!(err.to_string().contains("Space limit exceeded"), "{err}");
    }
}
