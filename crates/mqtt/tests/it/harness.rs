//! A broker started in-process on an ephemeral port, and a raw client that speaks packets
//! through the crate's own codec, for exact assertions on what goes over the wire.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqtt::codec::{
    self, Ack, ConnAck, Connect, Packet, PacketId, Properties, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, Version,
};
use mqtt::{Broker, MqttConfig};
use service::Service;
use testkit::{PATIENCE, TempDir};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running broker.
pub struct Node {
    pub broker: Arc<Broker>,
    pub addr: SocketAddr,
    pub metrics: admin::Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    dir: TempDir,
}

impl Node {
    /// A broker with `[mqtt]` set to `text` (the listen address is always ephemeral,
    /// `$SYS` is off unless `text` sets `sys_interval`, and anonymous clients are allowed
    /// unless `text` says otherwise).
    pub async fn start(text: &str) -> Self {
        Self::start_on(text, None).await
    }

    /// [`Node::start`] on `backplane` (a cluster node when it is Redis), or on an embedded
    /// one of its own.
    pub async fn start_on(text: &str, backplane: Option<Arc<dyn backplane::Backplane>>) -> Self {
        let sys = if text.contains("sys_interval") {
            ""
        } else {
            "sys_interval = \"0s\"
"
        };
        let open = if text.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous = true
"
        };
        let text = format!(
            "listen = \"127.0.0.1:0\"
{sys}{open}{text}"
        );
        let cfg: MqttConfig = toml::from_str(&text).expect("the test section parses");
        let mut issues = configkit::Issues::default();
        cfg.validate(&configkit::KeyPath::root("mqtt"), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        Self::boot(cfg, TempDir::new(), backplane).await
    }

    /// Stops the broker (cleanly, as `lintas` does on SIGTERM) and starts it again with the
    /// same settings on the same data directory and embedded backplane, on a new port:
    /// what a restart of a single node keeps.
    pub async fn restart(self) -> Self {
        let cfg = self.broker.config().clone();
        let dir = self.stop_keeping_dir().await;
        Self::boot(cfg, dir, None).await
    }

    async fn boot(
        cfg: MqttConfig,
        dir: TempDir,
        backplane: Option<Arc<dyn backplane::Backplane>>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let deps = service::Deps::new(
            net::Workers::default(),
            tracker.clone(),
            dir.path().to_owned(),
            match backplane {
                Some(b) => b,
                None => backplane::open(None, dir.path())
                    .await
                    .expect("embedded backplane"),
            },
        );
        let metrics = deps.metrics.clone();
        let broker = Broker::start(&cfg, deps, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("broker start: {e}"));
        Self {
            addr: broker.local_addr(),
            broker,
            metrics,
            shutdown,
            tracker,
            dir,
        }
    }

    /// Where the node keeps its state (its embedded backplane's files).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops the broker and waits for every task.
    pub async fn stop(self) {
        self.stop_keeping_dir().await;
    }

    async fn stop_keeping_dir(self) -> TempDir {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(PATIENCE, self.tracker.wait())
            .await
            .expect("the broker stops");
        self.dir
    }

    /// A raw client, connected with `connect` and its CONNACK read.
    pub async fn raw(&self, connect: Connect) -> (Raw, ConnAck) {
        let mut raw = Raw::open(self.addr, connect.version).await;
        let ack = raw.connect(connect).await;
        (raw, ack)
    }

    /// A raw client that connected successfully as `client_id`.
    pub async fn client(&self, version: Version, client_id: &str) -> Raw {
        let (raw, ack) = self.raw(connect(version, client_id)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
        raw
    }
}

/// A CONNECT with a clean start and the longest keep alive: as good as none for a test's
/// length, where 0 (none) would be refused to a 3.1.1 client (`max_keep_alive`).
pub fn connect(version: Version, client_id: &str) -> Connect {
    Connect {
        version,
        clean_start: true,
        keep_alive: u16::MAX,
        properties: Properties::default(),
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
    }
}

/// A packet identifier.
pub fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).expect("packet ids are not 0")
}

/// A PUBLISH.
pub fn publish(topic: &str, payload: &'static str, qos: QoS, id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        properties: Properties::default(),
        payload: Bytes::from_static(payload.as_bytes()),
    }
}

/// A SUBSCRIBE of one filter at `qos`.
pub fn subscribe(id: u16, filter: &str, qos: QoS) -> Subscribe {
    subscribe_with(
        id,
        filter,
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
    )
}

/// A SUBSCRIBE of one filter with `options`.
pub fn subscribe_with(id: u16, filter: &str, options: SubscriptionOptions) -> Subscribe {
    Subscribe {
        packet_id: pid(id),
        properties: Properties::default(),
        filters: vec![(filter.into(), options)],
    }
}

/// A byte stream to the broker: TCP, TLS or WebSocket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A client connection speaking packets.
pub struct Raw {
    stream: Box<dyn Io>,
    buf: BytesMut,
    pub version: Version,
}

impl Raw {
    /// A TCP connection to `addr`; nothing sent yet.
    pub async fn open(addr: SocketAddr, version: Version) -> Self {
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect to the broker");
        Self::over(Box::new(tcp), version)
    }

    /// A client on an opened `stream` (a TLS session, a WebSocket); nothing sent yet.
    pub fn over(stream: Box<dyn Io>, version: Version) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Sends CONNECT and returns the CONNACK.
    pub async fn connect(&mut self, connect: Connect) -> ConnAck {
        self.send(&Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Packet::ConnAck(c) => c,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends `packet`.
    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(packet, self.version, u32::MAX, &mut out).expect("test packets encode");
        self.send_bytes(&out).await;
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the broker");
        // TLS and WebSocket hold what is written until flushed.
        self.stream.flush().await.expect("flush to the broker");
    }

    /// The next packet, or `None` when the broker closed the connection.
    pub async fn next(&mut self) -> Option<Packet> {
        let read = async {
            loop {
                match codec::decode(&mut self.buf, self.version, u32::MAX) {
                    Ok(Some(packet)) => return Some(packet),
                    Ok(None) => {}
                    Err(e) => panic!("the broker sent a malformed packet: {e}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the broker answers in time")
    }

    /// The next packet; panics if the connection closes.
    pub async fn recv(&mut self) -> Packet {
        self.next().await.expect("the connection stays open")
    }

    /// The next PUBLISH, acknowledging QoS 1 and completing QoS 2 as a client does.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => {
                self.ack(&p).await;
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Acknowledges `p` (for QoS 2: PUBREC, then PUBREL's PUBCOMP when it comes).
    pub async fn ack(&mut self, p: &Publish) {
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.send(&Packet::PubAck(codec::Ack::success(id))).await;
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.send(&Packet::PubRec(codec::Ack::success(id))).await;
                match self.recv().await {
                    Packet::PubRel(rel) if rel.packet_id == id => {}
                    other => panic!("expected PUBREL {id}, got {other:?}"),
                }
                self.send(&Packet::PubComp(codec::Ack::success(id))).await;
            }
            _ => {}
        }
    }

    /// Subscribes and returns the SUBACK's codes.
    pub async fn subscribe(&mut self, s: Subscribe) -> Vec<ReasonCode> {
        let id = s.packet_id;
        self.send(&Packet::Subscribe(s)).await;
        match self.recv().await {
            Packet::SubAck(ack) if ack.packet_id == id => ack.reason_codes,
            other => panic!("expected SUBACK {id}, got {other:?}"),
        }
    }

    /// Publishes and reads the acknowledgement flow to its end; returns the reason code of
    /// PUBACK or PUBREC (Success for QoS 0).
    pub async fn publish(&mut self, p: Publish) -> ReasonCode {
        let (qos, id) = (p.qos, p.packet_id);
        self.send(&Packet::Publish(p)).await;
        match (qos, id) {
            (QoS::AtLeastOnce, Some(id)) => match self.recv().await {
                Packet::PubAck(a) if a.packet_id == id => a.reason_code,
                other => panic!("expected PUBACK {id}, got {other:?}"),
            },
            (QoS::ExactlyOnce, Some(id)) => {
                let code = match self.recv().await {
                    Packet::PubRec(a) if a.packet_id == id => a.reason_code,
                    other => panic!("expected PUBREC {id}, got {other:?}"),
                };
                self.send(&Packet::PubRel(codec::Ack::success(id))).await;
                match self.recv().await {
                    Packet::PubComp(a) if a.packet_id == id => {}
                    other => panic!("expected PUBCOMP {id}, got {other:?}"),
                }
                code
            }
            _ => ReasonCode::Success,
        }
    }

    /// A round trip: PINGREQ answered by PINGRESP, which proves every packet the broker
    /// sent before it has been read (the broker answers in order).
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Waits for the broker to close the connection; returns what it sent first.
    pub async fn closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.next().await {
            got.push(p);
        }
        got
    }
}

/// The next message `raw` receives, acknowledged as it comes (a QoS 2 message's PUBREL
/// may come after later messages): its payload and `topic:payload:QoS`.
pub async fn next_message(raw: &mut Raw) -> (String, String) {
    loop {
        let p: Publish = match raw.recv().await {
            Packet::Publish(p) => p,
            Packet::PubRel(rel) => {
                raw.send(&Packet::PubComp(Ack::success(rel.packet_id)))
                    .await;
                continue;
            }
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        };
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => raw.send(&Packet::PubAck(Ack::success(id))).await,
            (QoS::ExactlyOnce, Some(id)) => raw.send(&Packet::PubRec(Ack::success(id))).await,
            _ => {}
        }
        let text = String::from_utf8(p.payload.to_vec()).expect("UTF-8");
        let label = format!("{}:{text}:{:?}", p.topic, p.qos);
        return (text, label);
    }
}

/// The next `n` messages `raw` receives, as `topic:payload:QoS`.
pub async fn next_messages(raw: &mut Raw, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(next_message(raw).await.1);
    }
    got
}

/// A 5.0 CONNECT of `client` resuming its session, which lasts an hour.
pub fn resuming(client: &str) -> Connect {
    let mut c = connect(Version::V5, client);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c
}
