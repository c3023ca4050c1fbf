//! One client connection, from CONNECT to close, as one task.
//!
//! The task is generic over the byte stream (`AsyncRead + AsyncWrite`), so TLS and
//! WebSocket can wrap the TCP stream later. After the handshake (`handshake.rs`) it runs
//! one `select!` loop over: bytes from the client, decoded into packets and handled in
//! order (`inbound.rs`); the session's wake-up, which moves queued messages into flight as
//! the window allows and encodes them into one write buffer (`outbound.rs`); writing that
//! buffer, concurrently with reading so neither side can block the other; the keep-alive
//! deadline; being taken over by another connection; and the node's shutdown. The write
//! buffer is refilled only below [`HIGH_WATER`], so a client that reads slowly leaves its
//! messages in the session's bounded queue rather than in an unbounded buffer here, and the
//! client is not read from while more than [`PAUSE_READING`] bytes wait for it.
//!
//! Deliveries go out before the acknowledgements of the messages they carry: after a read
//! whose PUBLISHes were routed, the write first yields once to the thread's scheduler, so the
//! subscribers' connections on the same worker thread write first (as Mosquitto writes to the
//! subscribers before it answers the publisher). Otherwise every delivery waited for the
//! publisher's PUBACK write, a system call that on loopback also wakes the publisher to read
//! it.
//!
//! A protocol violation closes the connection after a DISCONNECT with its reason code (5.0)
//! and is counted; the will is published when the connection ends other than by a normal
//! DISCONNECT or the node's shutdown.

mod acks;
mod handshake;
mod inbound;
mod outbound;
mod read;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

pub use handshake::MAX_CLIENT_ID_BYTES;

use crate::auth::Identity;
use crate::broker::{Attached, Broker};
use crate::codec::{self, ByteString, Disconnect, Packet, Properties, ReasonCode, Version};
use crate::session::{ClientId, Session, Wake, WillSpec};
use handshake::{Opening, keep_alive_limit};

/// Bytes waiting to be written beyond which no more messages are taken from the session's
/// queue until the client has read some.
const HIGH_WATER: usize = 64 * 1024;

/// Bytes waiting to be written beyond which the client is not read from until it has read
/// some: its answers (PUBACK, SUBACK, PINGRESP) are bounded like its messages, and a client
/// that sends without reading is held back by TCP rather than by our memory.
const PAUSE_READING: usize = 4 * HIGH_WATER;

/// How long a goodbye (a refusing CONNACK, a DISCONNECT) may take to write before the
/// connection is closed anyway.
const GOODBYE: Duration = Duration::from_secs(2);

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// DISCONNECT from the client; `will` when it asked for its will (0x04).
    Client {
        /// Whether the will is published.
        will: bool,
    },
    /// The connection broke or went silent, or the client broke the protocol (the
    /// DISCONNECT to send a 5.0 client, if any).
    Abnormal(Option<ReasonCode>),
    /// Another connection took the session (5.0: DISCONNECT 0x8E).
    TakenOver,
    /// The node is shutting down (5.0: DISCONNECT 0x8B); no will.
    Shutdown,
}

/// A protocol violation: the reason code the 5.0 DISCONNECT carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Violation(ReasonCode);

/// What a handled packet means for the connection.
type Handled = Result<(), Close>;

/// Why handling a packet ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The client broke the protocol.
    Violation(Violation),
    /// The client said DISCONNECT.
    Client {
        /// It asked for its will (0x04).
        will: bool,
    },
}

impl From<Violation> for Close {
    fn from(v: Violation) -> Self {
        Self::Violation(v)
    }
}

/// A client connection after CONNECT.
struct Connection {
    broker: Arc<Broker>,
    session: Arc<Session>,
    client_id: ClientId,
    /// Who the client is, for the ACL.
    identity: Identity,
    /// This connection's attachment to the session.
    generation: u64,
    version: Version,
    /// The client's Maximum Packet Size.
    out_max: u32,
    /// Outbound QoS 1 and 2 messages in flight at most: `max_inflight` and the client's
    /// Receive Maximum, whichever is lower.
    window: usize,
    /// Inbound topic aliases (5.0), index alias − 1; grown as aliases are set.
    aliases: Vec<Option<ByteString>>,
    /// The will, until a normal DISCONNECT discards it.
    will: Option<WillSpec>,
    /// Encoded packets not yet written.
    out: BytesMut,
    /// Acknowledgements waiting for their messages to be durable on other nodes.
    acks: acks::Acks,
    /// A PUBLISH handled in the last read matched subscribers: their connections on this
    /// thread write before this one's acknowledgement (see the module documentation).
    routed: bool,
}

/// Serves one client on `stream` until it goes, is taken over or the node shuts down.
pub async fn serve<S>(broker: Arc<Broker>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut input = BytesMut::new();
    // Boxed: the handshake's futures (authentication, a refusal's goodbye) are needed once,
    // and inline they would make the task of every connection larger for as long as it
    // lasts (by some 400 bytes).
    let Some((mut conn, attached, limit)) =
        Box::pin(open(&broker, &mut reader, &mut writer, &mut input, peer)).await
    else {
        return;
    };
    let version = conn.version;
    let end = conn
        .run(&mut reader, &mut writer, &mut input, &attached.wake, limit)
        .await;
    let reason = match end {
        End::Abnormal(reason) => reason,
        End::TakenOver => Some(ReasonCode::SessionTakenOver),
        End::Shutdown => Some(ReasonCode::ServerShuttingDown),
        End::Client { .. } => None,
    };
    if let (Some(reason_code), Version::V5) = (reason, version) {
        let packet = Packet::Disconnect(Disconnect {
            reason_code,
            properties: Properties::default(),
        });
        conn.send(&packet);
    }
    let will = match end {
        End::Client { will } => will,
        End::Abnormal(_) | End::TakenOver => true,
        End::Shutdown => false,
    };
    if let Some(spec) = conn.will.take().filter(|_| will) {
        crate::will::on_abnormal_close(&broker, &conn.session, conn.generation, spec);
    }
    // Let go first, so a connection taking the session over waits no longer than this;
    // then the goodbye, which a slow client may take its time to read.
    if end == End::TakenOver {
        broker.release(&conn.session, conn.generation);
    } else {
        broker.detach(&conn.session, conn.generation);
    }
    broker.closed();
    let _ = tokio::time::timeout(GOODBYE, async {
        writer.write_all(&conn.out).await?;
        writer.shutdown().await
    })
    .await;
    broker.stats().disconnected();
    debug!(client = %conn.client_id, ?end, "closed");
}

/// CONNECT to CONNACK: the connection attached to its session, with the CONNACK (and
/// what the session had waiting) in its write buffer, and its keep-alive limit; `None`
/// when the client was refused or went (a refusal's CONNACK is written here).
async fn open<R, W>(
    broker: &Arc<Broker>,
    reader: &mut R,
    writer: &mut W,
    input: &mut BytesMut,
    peer: SocketAddr,
) -> Option<(Connection, Attached, Option<Duration>)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let opening = tokio::select! {
        opening = handshake::read_connect(broker, reader, input) => opening,
        () = broker.shutdown().cancelled() => Opening::Refuse(None),
    };
    let connect = match opening {
        Opening::Connect(connect) => connect,
        Opening::Refuse(answer) => {
            if let Some((version, code)) = answer {
                let packet = Packet::ConnAck(handshake::refused(code));
                goodbye(writer, &packet, version).await;
            }
            return None;
        }
    };
    let version = connect.version;
    let credentials = (connect.username.clone(), connect.password.clone());
    let admitted = match handshake::accept(broker, connect) {
        Ok(accepted) => handshake::admit(broker, &accepted, credentials, peer)
            .await
            .map(|identity| (accepted, identity))
            .map_err(Some),
        Err(code) => Err(code),
    };
    let (accepted, identity) = match admitted {
        Ok(a) => a,
        Err(code) => {
            if let Some(code) = code {
                let packet = Packet::ConnAck(handshake::refused(code));
                goodbye(writer, &packet, version).await;
            }
            return None;
        }
    };
    broker.settle(&accepted.client_id).await;
    let carried = broker
        .claim(&accepted.client_id, !accepted.clean_start)
        .await;
    let mut attached = broker.attach(&accepted.client_id, accepted.clean_start, version, peer);
    attached.session.lock().expiry_interval = accepted.expiry;
    if let Some(carried) = carried {
        broker.install(&attached.session, carried);
        attached.present = true;
    }
    drop(broker.keep(&attached.session));
    broker.stats().connected();
    debug!(client = %accepted.client_id, %peer, %version, present = attached.present, "connected");
    let cfg = broker.config();
    let connack = handshake::connack(broker, &accepted, attached.present);
    let mut conn = Connection {
        broker: broker.clone(),
        session: attached.session.clone(),
        client_id: accepted.client_id,
        identity,
        generation: attached.generation,
        version,
        out_max: accepted.max_packet_size,
        window: usize::from(cfg.max_inflight.min(accepted.receive_maximum)),
        aliases: Vec::new(),
        will: accepted.will,
        out: BytesMut::new(),
        acks: acks::Acks::default(),
        routed: false,
    };
    conn.send(&Packet::ConnAck(connack));
    if attached.present {
        conn.resend();
    }
    conn.fill();
    Some((conn, attached, keep_alive_limit(accepted.keep_alive)))
}

/// Writes `packet` and closes, within [`GOODBYE`].
async fn goodbye<W: AsyncWrite + Unpin>(writer: &mut W, packet: &Packet, version: Version) {
    let mut buf = BytesMut::new();
    if codec::encode(packet, version, u32::MAX, &mut buf).is_ok() {
        let _ = tokio::time::timeout(GOODBYE, async {
            writer.write_all(&buf).await?;
            writer.shutdown().await
        })
        .await;
    }
}

impl Connection {
    /// The loop of the module documentation.
    async fn run<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        input: &mut BytesMut,
        wake: &Wake,
        keep_alive: Option<Duration>,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let shutdown = self.broker.shutdown().clone();
        let max_packet_size = self.broker.config().max_packet_size;
        let silence = tokio::time::sleep(keep_alive.unwrap_or(Duration::MAX / 4));
        tokio::pin!(silence);
        // Packets already read with the CONNECT.
        if let Err(end) = self.handle_input(input, max_packet_size) {
            return end;
        }
        loop {
            // Nothing pending: hold no buffer while the client is quiet (`read.rs`).
            if input.is_empty() {
                *input = BytesMut::new();
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return End::Shutdown,
                () = wake.taken_over() => return self.last_words(reader, input, max_packet_size),
                read = read::read_some(reader, input),
                    if self.out.len() < PAUSE_READING && self.acks.len() < acks::MAX_WAITING =>
                {
                    match read {
                        Ok(0) | Err(_) => return End::Abnormal(None),
                        Ok(_) => {}
                    }
                    if let Some(limit) = keep_alive {
                        silence.as_mut().reset(Instant::now() + limit);
                    }
                    // What was queued before these packets goes out before their answers,
                    // so a PINGRESP follows every message routed before the PINGREQ.
                    self.fill();
                    if let Err(end) = self.handle_input(input, max_packet_size) {
                        return end;
                    }
                    self.fill();
                }
                () = wake.notified() => self.fill(),
                durable = self.acks.ready() => {
                    if let Err(end) = self.release_acks(durable) {
                        return end;
                    }
                }
                written = write_some(writer, &mut self.out, std::mem::take(&mut self.routed)),
                    if !self.out.is_empty() =>
                {
                    if written.is_err() {
                        return End::Abnormal(None);
                    }
                    self.fill();
                }
                () = &mut silence, if keep_alive.is_some() => {
                    return End::Abnormal(Some(ReasonCode::KeepAliveTimeout));
                }
            }
        }
    }

    /// Taken over: what the client sent before it connected again is handled first — a
    /// DISCONNECT there is its goodbye, not a connection to take over.
    fn last_words<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        input: &mut BytesMut,
        max_packet_size: u32,
    ) -> End {
        use futures_util::FutureExt;
        if let Some(Ok(1..)) = read::read_some(reader, input).now_or_never()
            && let Err(end) = self.handle_input(input, max_packet_size)
        {
            return end;
        }
        End::TakenOver
    }

    /// Decodes and handles every whole packet in `input`.
    fn handle_input(&mut self, input: &mut BytesMut, max_packet_size: u32) -> Result<(), End> {
        loop {
            let packet = match codec::decode(input, self.version, max_packet_size) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(e) => {
                    debug!(client = %self.client_id, error = %e, "malformed packet");
                    self.broker.stats().protocol_error();
                    return Err(End::Abnormal(Some(e.reason_code())));
                }
            };
            match self.handle(packet) {
                Ok(()) => {}
                Err(Close::Client { will }) => return Err(End::Client { will }),
                Err(Close::Violation(Violation(code))) => {
                    debug!(client = %self.client_id, reason = code.name(), "protocol violation");
                    self.broker.stats().protocol_error();
                    return Err(End::Abnormal(Some(code)));
                }
            }
        }
    }

    /// Sends the acknowledgements whose messages are durable now; a message that could not
    /// be made durable ends the connection without its acknowledgement (the client sends it
    /// again), its QoS 2 identifier forgotten so the new attempt is routed.
    fn release_acks(&mut self, durable: bool) -> Result<(), End> {
        let mut failed = None;
        let mut acks = std::mem::take(&mut self.acks);
        acks.release(durable, |ack| match ack {
            Ok(ack) => self.send(&ack),
            Err(ack) => failed = Some(ack),
        });
        self.acks = acks;
        match failed {
            None => Ok(()),
            Some(ack) => {
                if let Packet::PubRec(rec) = ack {
                    self.session.lock().inbound_qos2.remove(&rec.packet_id);
                }
                Err(End::Abnormal(Some(ReasonCode::UnspecifiedError)))
            }
        }
    }

    /// Sends `ack` for a message whose appends to other nodes are `forwarded`, after them
    /// and after every acknowledgement already waiting.
    fn acknowledge(&mut self, ack: Packet, forwarded: crate::cluster::Forwarded) {
        if let Some(ack) = self.acks.push(ack, forwarded) {
            self.send(&ack);
        }
    }

    /// Appends `packet` to the write buffer. Packets the broker builds always encode,
    /// except a PUBLISH over the client's maximum size, which `outbound.rs` handles itself.
    fn send(&mut self, packet: &Packet) {
        if let Err(e) = codec::encode(packet, self.version, self.out_max, &mut self.out) {
            debug!(client = %self.client_id, error = %e, "packet not sent");
        }
    }
}

/// Writes what it can of `out`; flushes once it is all written. `after_deliveries`: first
/// lets the tasks this one woke run (the connections its client's messages were queued for).
async fn write_some<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut BytesMut,
    after_deliveries: bool,
) -> std::io::Result<()> {
    if after_deliveries {
        tokio::task::yield_now().await;
    }
    writer.write_buf(out).await?;
    if out.is_empty() {
        writer.flush().await?;
        // An idle client holds no write buffer; the next answer allocates one.
        *out = BytesMut::new();
    }
    Ok(())
}
