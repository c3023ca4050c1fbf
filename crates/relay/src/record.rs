//! A record as kept in the stream: who sent it, when, under which idempotency key, and the
//! JSON object exactly as the producer sent it.
//!
//! Layout (little-endian): version `1` (u8), application name (u16 length and bytes; names,
//! unlike ids, are the same on every node), received at (u64, ms since the Unix epoch), idempotency key length (u16) and bytes; when the key is present, the
//! number of records the request carried (u32) and a hash of its body (u64); then the JSON.
//! Records are written without a key now: the backplane keeps idempotency keys itself.
//! Streams written before kept the key in the first record of its request, and
//! [`legacy_key`] reads it from there, once, when such a stream is opened.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;

/// The idempotency key of the request a record opened (in records written before the
/// backplane kept keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyMark {
    /// The `Idempotency-Key` header.
    pub key: String,
    /// How many records that request carried (consecutive offsets from this one).
    pub count: u32,
    /// Hash of the request body, to tell a retry from a different request reusing the key.
    pub body_hash: u64,
}

/// One record read back from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The application that sent it, by name.
    pub application: String,
    /// When lintas received it (ms since the Unix epoch).
    pub received_ms: u64,
    /// Set on the first record of a request that had an `Idempotency-Key`, in records
    /// written before the backplane kept keys; `None` in new records.
    pub idempotency: Option<IdempotencyMark>,
    /// The JSON object as sent.
    pub json: Bytes,
}

/// Why a payload is not a record (a stream written by another program or version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream entry is not a relay record: {0}")]
pub struct BadRecord(&'static str);

impl Record {
    /// The stream payload.
    pub fn encode(&self) -> Bytes {
        let key = self.idempotency.as_ref().map(|m| m.key.as_bytes());
        let mut out = BytesMut::with_capacity(
            32 + self.application.len() + key.map_or(0, <[u8]>::len) + self.json.len(),
        );
        out.put_u8(VERSION);
        out.put_u16_le(self.application.len() as u16);
        out.put_slice(self.application.as_bytes());
        out.put_u64_le(self.received_ms);
        match &self.idempotency {
            Some(mark) => {
                out.put_u16_le(mark.key.len() as u16);
                out.put_slice(mark.key.as_bytes());
                out.put_u32_le(mark.count);
                out.put_u64_le(mark.body_hash);
            }
            None => out.put_u16_le(0),
        }
        out.put_slice(&self.json);
        out.freeze()
    }

    /// Reads a payload written by [`Record::encode`].
    pub fn decode(payload: &Bytes) -> Result<Self, BadRecord> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], BadRecord> {
            let part = payload.get(at..at + n).ok_or(BadRecord("truncated"))?;
            at += n;
            Ok(part)
        };
        if take(1)?[0] != VERSION {
            return Err(BadRecord("unknown version"));
        }
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let app_len = u16::from_le_bytes(take(2)?.try_into().unwrap_or([0; 2])) as usize;
        let application = std::str::from_utf8(take(app_len)?)
            .map_err(|_| BadRecord("application name is not UTF-8"))?
            .to_owned();
        let received_ms = u64_of(take(8)?);
        let key_len = u16::from_le_bytes(take(2)?.try_into().unwrap_or([0; 2])) as usize;
        let idempotency = if key_len > 0 {
            let key = std::str::from_utf8(take(key_len)?)
                .map_err(|_| BadRecord("idempotency key is not UTF-8"))?
                .to_owned();
            let count = u32::from_le_bytes(take(4)?.try_into().unwrap_or([0; 4]));
            let body_hash = u64_of(take(8)?);
            Some(IdempotencyMark {
                key,
                count,
                body_hash,
            })
        } else {
            None
        };
        Ok(Self {
            application,
            received_ms,
            idempotency,
            json: payload.slice(at..),
        })
    }
}

/// The backplane key of an ingest request: the application and its `Idempotency-Key`.
pub fn idempotency_key(application: &str, key: &str) -> String {
    format!("{application}:{key}")
}

/// The idempotency key a record written before the backplane kept keys carried, as
/// `(backplane key, records, body hash, received ms)`: [`backplane::LegacyKeys`] for the
/// relay's stream.
pub fn legacy_key(payload: &Bytes) -> Option<(String, u32, u64, u64)> {
    let r = Record::decode(payload).ok()?;
    let mark = r.idempotency?;
    Some((
        idempotency_key(&r.application, &mark.key),
        mark.count,
        mark.body_hash,
        r.received_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_a_key() {
        for idempotency in [
            None,
            Some(IdempotencyMark {
                key: "order-17".into(),
                count: 3,
                body_hash: 0xdead_beef,
            }),
        ] {
            let r = Record {
                application: "shop".into(),
                received_ms: 1_764_000_000_000,
                idempotency,
                json: Bytes::from_static(br#"{"name":"tea"}"#),
            };
            assert_eq!(Record::decode(&r.encode()), Ok(r));
        }
        assert_eq!(
            Record::decode(&Bytes::from_static(&[1, 2])),
            Err(BadRecord("truncated"))
        );
        assert_eq!(
            Record::decode(&Bytes::from_static(&[9])),
            Err(BadRecord("unknown version"))
        );
    }
}
