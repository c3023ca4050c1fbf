//! The connection task against in-memory streams that note the order of its writes.

use std::num::NonZeroU16;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use super::serve;
use crate::broker::testing::broker;
use crate::codec::{
    self, Connect, Packet, Properties, Publish, QoS, Subscribe, SubscriptionOptions, Version,
};
use crate::config::MqttConfig;

/// Which connection wrote, in the order the broker's writes happened.
type Writes = Arc<Mutex<Vec<&'static str>>>;

/// The broker's end of a connection: writes are noted under `name` in `writes`.
struct Noted {
    stream: DuplexStream,
    name: &'static str,
    writes: Writes,
}

impl AsyncRead for Noted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Noted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(1..)) = written {
            self.writes.lock().expect("writes").push(self.name);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A 3.1.1 client connected to a connection task of `broker` on this thread.
struct Client {
    stream: DuplexStream,
    input: BytesMut,
}

impl Client {
    async fn connect(
        broker: &Arc<crate::Broker>,
        id: &str,
        name: &'static str,
        writes: &Writes,
    ) -> Self {
        let (stream, server) = tokio::io::duplex(64 * 1024);
        let noted = Noted {
            stream: server,
            name,
            writes: writes.clone(),
        };
        let peer = "127.0.0.1:1".parse().expect("address");
        tokio::spawn(serve(broker.clone(), noted, peer));
        let mut client = Self {
            stream,
            input: BytesMut::new(),
        };
        client
            .send(&Packet::Connect(Box::new(Connect {
                version: Version::V311,
                clean_start: true,
                keep_alive: u16::MAX,
                properties: Properties::default(),
                client_id: id.into(),
                will: None,
                username: None,
                password: None,
            })))
            .await;
        assert!(matches!(client.recv().await, Packet::ConnAck(_)));
        client
    }

    async fn send(&mut self, packet: &Packet) {
        let mut buf = BytesMut::new();
        codec::encode(packet, Version::V311, u32::MAX, &mut buf).expect("encode");
        self.stream.write_all(&buf).await.expect("write");
    }

    async fn recv(&mut self) -> Packet {
        loop {
            if let Some(packet) =
                codec::decode(&mut self.input, Version::V311, u32::MAX).expect("decode")
            {
                return packet;
            }
            let read = self.stream.read_buf(&mut self.input).await.expect("read");
            assert_ne!(read, 0, "the broker closed the connection");
        }
    }
}

/// Mosquitto's order, and what bench/mqtt's latency phase measures: a QoS 1 message reaches
/// a subscriber served on the same thread before its publisher's PUBACK is written, so the
/// delivery does not wait for that write (nor for the publisher it wakes).
#[tokio::test]
async fn a_delivery_is_written_before_the_publishers_puback() {
    let broker = broker(MqttConfig::default());
    let writes = Writes::default();
    let mut subscriber = Client::connect(&broker, "sub", "subscriber", &writes).await;
    let id = |n| NonZeroU16::new(n).expect("packet id");
    subscriber
        .send(&Packet::Subscribe(Subscribe {
            packet_id: id(1),
            properties: Properties::default(),
            filters: vec![(
                "t".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            )],
        }))
        .await;
    assert!(matches!(subscriber.recv().await, Packet::SubAck(_)));
    let mut publisher = Client::connect(&broker, "pub", "publisher", &writes).await;
    writes.lock().expect("writes").clear();

    publisher
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: Some(id(7)),
            properties: Properties::default(),
            payload: Bytes::from_static(b"m"),
        }))
        .await;
    match publisher.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id, id(7)),
        other => panic!("expected PUBACK 7, got {other:?}"),
    }
    match subscriber.recv().await {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"m"),
        other => panic!("expected the PUBLISH, got {other:?}"),
    }
    assert_eq!(*writes.lock().expect("writes"), ["subscriber", "publisher"]);
}
