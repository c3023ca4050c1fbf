//! Messages to the client: from the session's queue into flight and onto the write buffer.
//!
//! [`Connection::fill`] runs after every wake-up, read and write: with the session locked
//! once, it takes queued messages in order while the write buffer is below the high-water
//! mark and — for QoS 1 and 2 — while the in-flight window has room, drops the expired
//! ones and the ones larger than the client's Maximum Packet Size (both counted), gives the
//! rest a packet identifier and encodes them. [`Connection::resend`] writes, after a
//! resumed session's CONNACK, every message still in flight again with DUP (or its PUBREL,
//! for a QoS 2 message the client already received), in the order they were first sent;
//! one too large for the new connection's Maximum Packet Size is dropped and counted.

use bytes::BytesMut;
use tokio::time::Instant;

use super::{Connection, HIGH_WATER};
use crate::codec::{self, Ack, EncodeError, Packet, PacketId, Properties, Publish, QoS, Version};
use crate::session::{InFlight, Outgoing, Phase};
use crate::stats::Drop;

impl Connection {
    /// Moves what the window allows from the queue to the write buffer.
    pub(super) fn fill(&mut self) {
        if self.out.len() >= HIGH_WATER {
            return;
        }
        let now = Instant::now();
        let stats = self.broker.stats();
        let mut state = self.session.lock();
        while self.out.len() < HIGH_WATER {
            let Some(next) = state.queue.front() else {
                break;
            };
            if next.qos != QoS::AtMostOnce && state.inflight.len() >= self.window {
                break;
            }
            let Some(out) = state.queue.pop_front() else {
                break;
            };
            if out.message.expired(now) {
                stats.dropped(Drop::Expired);
                continue;
            }
            let id = match out.qos {
                QoS::AtMostOnce => None,
                _ => state.next_packet_id(),
            };
            match encode_publish(
                &mut self.out,
                self.version,
                self.out_max,
                &out,
                id,
                false,
                now,
            ) {
                Ok(()) => stats.sent(out.qos),
                Err(_) => {
                    stats.dropped(Drop::TooLarge);
                    continue;
                }
            }
            if let Some(id) = id {
                let phase = match out.qos {
                    QoS::ExactlyOnce => Phase::AwaitingPubRec,
                    _ => Phase::AwaitingPubAck,
                };
                state.inflight.push_back(InFlight { id, out, phase });
            }
        }
    }

    /// Writes every message in flight again (see the module documentation).
    pub(super) fn resend(&mut self) {
        let now = Instant::now();
        let (version, max) = (self.version, self.out_max);
        let stats = self.broker.stats();
        let mut state = self.session.lock();
        let buf = &mut self.out;
        state.inflight.retain(|f| match f.phase {
            Phase::AwaitingPubAck | Phase::AwaitingPubRec => {
                let sent = encode_publish(buf, version, max, &f.out, Some(f.id), true, now);
                if sent.is_err() {
                    stats.dropped(Drop::TooLarge);
                }
                sent.is_ok()
            }
            Phase::AwaitingPubComp => {
                let pubrel = Packet::PubRel(Ack::success(f.id));
                codec::encode(&pubrel, version, max, buf).is_ok()
            }
        });
    }
}

/// Encodes `out` as a PUBLISH with packet identifier `id` onto `buf` for a client of
/// `version` that accepts packets up to `max` bytes.
fn encode_publish(
    buf: &mut BytesMut,
    version: Version,
    max: u32,
    out: &Outgoing,
    id: Option<PacketId>,
    dup: bool,
    now: Instant,
) -> Result<(), EncodeError> {
    let properties = match version {
        Version::V5 => out.message.properties_at(now, &out.identifiers),
        Version::V311 => Properties::default(),
    };
    let packet = Packet::Publish(Publish {
        dup,
        qos: out.qos,
        retain: out.retain,
        topic: out.message.topic.clone(),
        packet_id: id,
        properties,
        payload: out.message.payload.clone(),
    });
    codec::encode(&packet, version, max, buf)
}
