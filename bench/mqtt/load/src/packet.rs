//! MQTT 3.1.1 packets, encoded by hand, and a fixed-header reader.
//!
//! The load tool needs five packets (CONNECT, SUBSCRIBE, PUBLISH at QoS 0/1, PUBACK) and
//! to split an incoming byte stream into packets. Writing them by hand keeps the client's
//! cost per message tiny and identical for every broker: a client library would add its own
//! queues, allocations and keep-alive logic and partly measure itself. Encoders append to a
//! caller's buffer so a batch of packets goes out in one `write_all`.

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt};

/// CONNECT's packet type and flags.
const CONNECT: u8 = 0x10;
/// CONNACK.
pub const CONNACK: u8 = 0x20;
/// PUBLISH without flags (QoS bits are 1..=2).
pub const PUBLISH: u8 = 0x30;
/// PUBACK.
pub const PUBACK: u8 = 0x40;
/// SUBSCRIBE with its mandatory flags 0b0010.
const SUBSCRIBE: u8 = 0x82;
/// SUBACK.
pub const SUBACK: u8 = 0x90;
/// Largest packet the reader accepts: the tool's own payloads are small, so anything
/// bigger means the stream is out of step.
const MAX_PACKET: usize = 1 << 20;

/// Appends MQTT's variable-length "remaining length".
fn put_len(buf: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Appends a length-prefixed UTF-8 string.
fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// CONNECT with a clean session, no credentials, no will.
pub fn connect(buf: &mut Vec<u8>, client_id: &str, keep_alive_s: u16) {
    buf.push(CONNECT);
    put_len(buf, 10 + 2 + client_id.len());
    put_str(buf, "MQTT");
    buf.push(4); // protocol level 3.1.1
    buf.push(0x02); // clean session
    buf.extend_from_slice(&keep_alive_s.to_be_bytes());
    put_str(buf, client_id);
}

/// SUBSCRIBE to one filter.
pub fn subscribe(buf: &mut Vec<u8>, packet_id: u16, filter: &str, qos: u8) {
    buf.push(SUBSCRIBE);
    put_len(buf, 2 + 2 + filter.len() + 1);
    buf.extend_from_slice(&packet_id.to_be_bytes());
    put_str(buf, filter);
    buf.push(qos);
}

/// PUBLISH at QoS 0 (`packet_id` ignored) or 1.
pub fn publish(buf: &mut Vec<u8>, topic: &str, qos: u8, packet_id: u16, payload: &[u8]) {
    buf.push(PUBLISH | (qos << 1));
    let id_len = if qos > 0 { 2 } else { 0 };
    put_len(buf, 2 + topic.len() + id_len + payload.len());
    put_str(buf, topic);
    if qos > 0 {
        buf.extend_from_slice(&packet_id.to_be_bytes());
    }
    buf.extend_from_slice(payload);
}

/// PUBACK for a QoS 1 PUBLISH.
pub fn puback(buf: &mut Vec<u8>, packet_id: u16) {
    buf.push(PUBACK);
    buf.push(2);
    buf.extend_from_slice(&packet_id.to_be_bytes());
}

/// The parts of a received PUBLISH the tool uses.
#[derive(Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    /// 0 or 1; 1 must be acknowledged.
    pub qos: u8,
    /// Present when `qos` is 1.
    pub packet_id: u16,
    /// Application payload.
    pub payload: &'a [u8],
}

/// Reads a PUBLISH's variable header; `first` is the fixed header's first byte.
pub fn parse_publish(first: u8, body: &[u8]) -> Result<Publish<'_>> {
    let qos = (first >> 1) & 3;
    if body.len() < 2 {
        bail!("PUBLISH of {} bytes has no topic length", body.len());
    }
    let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2 + topic_len;
    let mut packet_id = 0;
    if qos > 0 {
        let id = body
            .get(at..at + 2)
            .context("PUBLISH at QoS > 0 without a packet id")?;
        packet_id = u16::from_be_bytes([id[0], id[1]]);
        at += 2;
    }
    let payload = body
        .get(at..)
        .context("PUBLISH shorter than its topic length")?;
    Ok(Publish {
        qos,
        packet_id,
        payload,
    })
}

/// Splits a byte stream into packets: `next` hands out one packet at a time from what was
/// read, `fill` reads more. The buffer grows only up to the largest packet.
pub struct Reader {
    /// Bytes read and not yet handed out start at `start`.
    buf: Vec<u8>,
    /// Start of the first packet not yet handed out.
    start: usize,
}

impl Reader {
    /// A reader with a 64 KiB buffer: many small packets per `read` call.
    pub fn new() -> Self {
        Reader {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The next complete packet as (first byte, body), or `None` when more bytes are needed.
    pub fn next(&mut self) -> Result<Option<(u8, &[u8])>> {
        let rest = &self.buf[self.start..];
        let Some(&first) = rest.first() else {
            return Ok(None);
        };
        let mut len = 0usize;
        let mut shift = 0;
        let mut at = 1;
        loop {
            let Some(&byte) = rest.get(at) else {
                return Ok(None);
            };
            len |= ((byte & 0x7f) as usize) << shift;
            at += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                bail!("remaining length longer than 4 bytes (packet type {first:#04x})");
            }
        }
        if len > MAX_PACKET {
            bail!("packet of {len} bytes (type {first:#04x}) is over the {MAX_PACKET} limit");
        }
        if rest.len() < at + len {
            return Ok(None);
        }
        let body_start = self.start + at;
        self.start = body_start + len;
        Ok(Some((first, &self.buf[body_start..body_start + len])))
    }

    /// Reads at least one more byte; `Ok(false)` at the end of the stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, src: &mut R) -> Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        Ok(src.read_buf(&mut self.buf).await? > 0)
    }

    /// Reads until one packet is complete and returns its (first byte, body) as owned bytes.
    pub async fn read_packet<R: AsyncRead + Unpin>(
        &mut self,
        src: &mut R,
    ) -> Result<(u8, Vec<u8>)> {
        loop {
            if let Some((first, body)) = self.next()? {
                return Ok((first, body.to_vec()));
            }
            if !self.fill(src).await? {
                bail!("connection closed by the broker");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_bytes() {
        let mut buf = Vec::new();
        connect(&mut buf, "c1", 300);
        assert_eq!(
            buf,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0x01, 0x2c, 0, 2, b'c', b'1'
            ]
        );
    }

    #[test]
    fn subscribe_and_puback_bytes() {
        let mut buf = Vec::new();
        subscribe(&mut buf, 1, "a/+", 1);
        puback(&mut buf, 0x0102);
        assert_eq!(
            buf,
            [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'+', 1, 0x40, 2, 1, 2]
        );
    }

    #[test]
    fn publish_round_trips_through_reader() {
        let mut buf = Vec::new();
        publish(&mut buf, "t", 1, 7, &[9; 200]);
        publish(&mut buf, "t", 0, 0, b"xy");
        assert_eq!(&buf[..3], [0x32, 0xcd, 0x01]); // 2+1+2+200 = 205 = 77 + 128
        let mut r = Reader::new();
        r.buf.extend_from_slice(&buf[..100]);
        assert!(r.next().expect("valid").is_none());
        r.buf.extend_from_slice(&buf[100..]);
        let (first, body) = r.next().expect("valid").expect("complete");
        let p = parse_publish(first, body).expect("publish");
        assert_eq!((p.qos, p.packet_id, p.payload), (1, 7, &[9u8; 200][..]));
        let (first, body) = r.next().expect("valid").expect("complete");
        let p = parse_publish(first, body).expect("publish");
        assert_eq!((p.qos, p.packet_id, p.payload), (0, 0, &b"xy"[..]));
        assert!(r.next().expect("valid").is_none());
    }

    #[test]
    fn reader_rejects_five_byte_length() {
        let mut r = Reader::new();
        r.buf
            .extend_from_slice(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(r.next().is_err());
    }
}
