//! A message on its way from one node to another, as bytes on the backplane.
//!
//! The message itself travels as a 5.0 PUBLISH packet written and read by the crate's own
//! codec — the one every client packet goes through, fuzzed and checked against another
//! implementation — so every forwarded property survives the hop and no second format of
//! a message exists. What the receiving node needs besides is put in front of it: whether
//! the message is for the node's plain subscriptions, and which shared groups it was
//! handed to (the publishing node chose this node for them, so no other node delivers it
//! to those groups).
//!
//! ```text
//! envelope: u8 FORMAT | u16 len, origin node | u64 seq | u8 flags (bit 0: plain)
//!           | u16 n | n × (u16 len, group) | PUBLISH
//! batch:    (u32 len, envelope)*            — QoS 0 envelopes in one pub/sub message
//! ```
//!
//! The origin node and its sequence number name the message across the cluster: a node
//! resuming the sessions of a dead one uses them to tell what that node already had from
//! what it never read (`super::adopt`).
//!
//! The Message Expiry Interval is written as what is left of it at sending (whole seconds,
//! rounded up), so a message that expires while it travels still expires.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use crate::codec::{self, Packet, PacketId, Publish, Version};
use crate::message::Message;

/// The first byte of every envelope: its layout.
const FORMAT: u8 = 1;

/// The largest envelope read back: a PUBLISH at the protocol's own limit plus the header.
const MAX_PACKET: u32 = 268_435_460;

/// One message for another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node it was published on and its number there.
    pub id: MessageId,
    /// The message.
    pub message: Message,
    /// Whether the node's plain (non-shared) subscriptions get it.
    pub plain: bool,
    /// The shared groups (`$share/{group}/{filter}`) whose member on that node gets it.
    pub groups: Vec<String>,
}

/// A message's name in the cluster: the node it was published on, and its number there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MessageId {
    /// The node.
    pub origin: super::NodeId,
    /// Its number on that node (from 1; 0 for messages without one).
    pub seq: u64,
}

/// Why bytes from the backplane are not an envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// They end before the envelope does, or go on after it.
    #[error("truncated or trailing bytes")]
    Length,
    /// Another layout (a newer node in a rolling upgrade).
    #[error("unknown envelope format {0}")]
    Format(u8),
    /// A node or group name is not UTF-8.
    #[error("a node or group name is not UTF-8")]
    Group,
    /// The message is not a PUBLISH the codec reads.
    #[error("the message: {0}")]
    Publish(String),
}

impl Envelope {
    /// Appends the envelope to `out`, with `message`'s expiry counted down to `now`.
    pub fn encode(&self, now: Instant, out: &mut BytesMut) {
        out.put_u8(FORMAT);
        put_str(out, &self.id.origin);
        out.put_u64(self.id.seq);
        out.put_u8(u8::from(self.plain));
        out.put_u16(u16::try_from(self.groups.len()).unwrap_or(u16::MAX));
        for group in self.groups.iter().take(usize::from(u16::MAX)) {
            put_str(out, group);
        }
        let m = &self.message;
        let publish = stored_publish(m, (m.qos, m.retain), &[], now);
        // A message the broker accepted always encodes: it was read by the same codec.
        if let Err(e) = codec::encode(&Packet::Publish(publish), Version::V5, u32::MAX, out) {
            tracing::error!(error = %e, "a forwarded message did not encode");
        }
    }

    /// Reads one envelope, the whole of `bytes`, received at `now`.
    pub fn decode(bytes: &[u8], now: Instant) -> Result<Self, EnvelopeError> {
        let mut r = bytes;
        if r.remaining() < 1 {
            return Err(EnvelopeError::Length);
        }
        let format = r.get_u8();
        if format != FORMAT {
            return Err(EnvelopeError::Format(format));
        }
        let origin = get_str(&mut r)?;
        if r.remaining() < 11 {
            return Err(EnvelopeError::Length);
        }
        let seq = r.get_u64();
        let plain = r.get_u8() & 1 == 1;
        let n = r.get_u16();
        let mut groups = Vec::with_capacity(usize::from(n).min(16));
        for _ in 0..n {
            groups.push(get_str(&mut r)?);
        }
        let mut packet = BytesMut::from(r);
        let publish = match codec::decode(&mut packet, Version::V5, MAX_PACKET) {
            Ok(Some(Packet::Publish(p))) if packet.is_empty() => p,
            Ok(Some(_)) => return Err(EnvelopeError::Publish("not a PUBLISH".into())),
            Ok(None) => return Err(EnvelopeError::Length),
            Err(e) => return Err(EnvelopeError::Publish(e.to_string())),
        };
        let topic = publish.topic.clone();
        Ok(Self {
            id: MessageId {
                origin: origin.into(),
                seq,
            },
            message: Message::from_publish(publish, topic, now),
            plain,
            groups,
        })
    }
}

/// `message` as a PUBLISH kept on the backplane rather than sent on a connection: sent with
/// `qos` and `retain`, its Subscription Identifiers `identifiers`, its expiry counted down
/// to `now`, and a placeholder packet identifier for QoS 1 and 2.
pub(super) fn stored_publish(
    message: &Message,
    (qos, retain): (codec::QoS, bool),
    identifiers: &[std::num::NonZeroU32],
    now: Instant,
) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: message.topic.clone(),
        packet_id: (qos != codec::QoS::AtMostOnce).then_some(PacketId::MIN),
        properties: message.properties_at(now, identifiers),
        payload: message.payload.clone(),
    }
}

/// Appends `s` with a u16 length (cut at 65,535 bytes, on a character boundary).
pub(super) fn put_str(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

/// Reads what [`put_str`] wrote.
pub(super) fn get_str(r: &mut &[u8]) -> Result<String, EnvelopeError> {
    if r.remaining() < 2 {
        return Err(EnvelopeError::Length);
    }
    let len = usize::from(r.get_u16());
    if r.remaining() < len {
        return Err(EnvelopeError::Length);
    }
    let s = std::str::from_utf8(&r[..len]).map_err(|_| EnvelopeError::Group)?;
    let s = s.to_owned();
    r.advance(len);
    Ok(s)
}

/// Appends `envelope` to a batch.
pub fn push_framed(batch: &mut BytesMut, envelope: &[u8]) {
    batch.put_u32(u32::try_from(envelope.len()).unwrap_or(u32::MAX));
    batch.put_slice(envelope);
}

/// The envelopes of a batch, each read with [`Envelope::decode`]; stops at the first
/// framing error (the rest of that batch cannot be found).
pub fn framed(mut batch: Bytes) -> impl Iterator<Item = Result<Bytes, EnvelopeError>> {
    std::iter::from_fn(move || {
        if batch.is_empty() {
            return None;
        }
        if batch.len() < 4 {
            batch.clear();
            return Some(Err(EnvelopeError::Length));
        }
        let len = batch.get_u32() as usize;
        if batch.len() < len {
            batch.clear();
            return Some(Err(EnvelopeError::Length));
        }
        Some(Ok(batch.split_to(len)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Properties, QoS};
    use std::time::Duration;

    fn message(qos: QoS) -> Message {
        let publish = Publish {
            dup: false,
            qos,
            retain: true,
            topic: "a/b".into(),
            packet_id: (qos != QoS::AtMostOnce).then_some(PacketId::MIN),
            properties: Properties {
                message_expiry_interval: Some(10),
                content_type: Some("text/plain".into()),
                user: vec![("k".into(), "v".into())],
                ..Properties::default()
            },
            payload: Bytes::from_static(b"hello"),
        };
        Message::from_publish(publish, "a/b".into(), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn an_envelope_reads_back_with_its_groups_properties_and_remaining_expiry() {
        let sent = Envelope {
            id: MessageId {
                origin: "node-1".into(),
                seq: 42,
            },
            message: message(QoS::ExactlyOnce),
            plain: true,
            groups: vec!["$share/g/a/+".into(), "$share/h/#".into()],
        };
        tokio::time::advance(Duration::from_millis(3_500)).await;
        let mut out = BytesMut::new();
        sent.encode(Instant::now(), &mut out);
        let now = Instant::now();
        let got = Envelope::decode(&out, now).expect("reads back");
        assert_eq!(got.id, sent.id);
        assert_eq!(got.plain, sent.plain);
        assert_eq!(got.groups, sent.groups);
        assert_eq!(got.message.properties, sent.message.properties);
        assert_eq!(
            (&got.message.topic, &got.message.payload, got.message.qos),
            (&sent.message.topic, &sent.message.payload, sent.message.qos)
        );
        assert!(got.message.retain);
        assert_eq!(got.message.expires_at, Some(now + Duration::from_secs(7)));
    }

    #[test]
    fn a_batch_splits_into_its_envelopes_and_bad_bytes_are_errors() {
        let mut batch = BytesMut::new();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let mut one = BytesMut::new();
            let e = Envelope {
                id: MessageId::default(),
                message: message(qos),
                plain: true,
                groups: Vec::new(),
            };
            e.encode(Instant::now(), &mut one);
            push_framed(&mut batch, &one);
        }
        let parts: Vec<_> = framed(batch.freeze()).collect();
        assert_eq!(parts.len(), 2);
        for part in parts {
            let bytes = part.expect("framed");
            assert!(Envelope::decode(&bytes, Instant::now()).is_ok());
        }
        assert_eq!(
            framed(Bytes::from_static(&[0, 0, 0, 9, 1])).collect::<Vec<_>>(),
            [Err(EnvelopeError::Length)]
        );
        assert_eq!(
            Envelope::decode(&[2, 0, 0, 0], Instant::now()),
            Err(EnvelopeError::Format(2))
        );
        assert_eq!(
            Envelope::decode(
                &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 5, b'a'],
                Instant::now()
            ),
            Err(EnvelopeError::Length)
        );
    }
}
