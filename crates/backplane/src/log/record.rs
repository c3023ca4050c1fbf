//! The on-disk record: `[len u32][crc32 u32][offset u64][payload]`, little-endian.
//!
//! The CRC covers the offset and the payload, so a torn write (a record cut by a crash), a
//! stale byte range and a record from the wrong place are all caught on recovery.
//!
//! A **mark** (the idempotency key of an append, see [`Mark`]) is a record of its own with
//! the top bit of `len` set; its CRC also covers a kind byte, so a flipped flag bit is
//! caught like any other damage. A mark takes no offset: its `offset` field is the log's
//! next offset where it was written. Lengths never reach the top bit ([`MAX_RECORD`] is far
//! below it), so segments written before marks existed read unchanged.

/// Bytes before the payload.
pub(crate) const HEADER: usize = 16;

/// Largest payload accepted; checked before anything is allocated for it.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// The `len` bit that makes a record a mark.
const MARK_FLAG: u32 = 1 << 31;

/// Bytes of a mark's payload before its key.
const MARK_FIXED: usize = 8 + 4 + 8 + 8;

/// The idempotency key of one append, kept in the log beside the records it covers, so the
/// keys are exactly as durable as the records (same write, same sync) and come back on
/// open without knowing what the records hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The key, as the caller gave it.
    pub key: String,
    /// The append's first offset.
    pub first: u64,
    /// How many records it stored.
    pub count: u32,
    /// Hash of what the caller sent, to tell a retry from another request reusing the key.
    pub body_hash: u64,
    /// When it was appended (ms since the Unix epoch): the window counts from here.
    pub at_ms: u64,
}

/// Appends the encoding of one record to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&offset.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends the encoding of `mark`, written where the log's next offset is `at`, covering
/// `(first, count)` (which replace the mark's own).
pub(crate) fn encode_mark(out: &mut Vec<u8>, at: u64, mark: &Mark, (first, count): (u64, u32)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&mark.body_hash.to_le_bytes());
    out.extend_from_slice(&mark.at_ms.to_le_bytes());
    out.extend_from_slice(mark.key.as_bytes());
    let len = (out.len() - start - HEADER) as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[1]);
    crc.update(&at.to_le_bytes());
    crc.update(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(len | MARK_FLAG).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&at.to_le_bytes());
}

/// What lies at a position of a segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole, valid record; `end` is where the next one starts.
    Record {
        /// The record's offset.
        offset: u64,
        /// Where its payload starts.
        start: usize,
        /// One past its last byte.
        end: usize,
    },
    /// A whole, valid mark, written where the next offset was `at`.
    Mark {
        /// The log's next offset when it was written.
        at: u64,
        /// What it says.
        mark: Mark,
        /// One past its last byte.
        end: usize,
    },
    /// The bytes end inside a record (a torn write at the tail, or a short read).
    Incomplete,
    /// Not a valid record: wrong checksum or impossible length.
    Corrupt(&'static str),
}

/// The payload length a header at `pos` announces, if the header is there.
pub(crate) fn announced_len(buf: &[u8], pos: usize) -> Option<usize> {
    let h = buf.get(pos..pos + 4)?;
    Some((u32::from_le_bytes([h[0], h[1], h[2], h[3]]) & !MARK_FLAG) as usize)
}

/// Decodes the record at `pos` of `buf`.
pub(crate) fn decode(buf: &[u8], pos: usize) -> Decoded {
    let Some(header) = buf.get(pos..pos + HEADER) else {
        return Decoded::Incomplete;
    };
    let raw_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let is_mark = raw_len & MARK_FLAG != 0;
    let len = (raw_len & !MARK_FLAG) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut offset_bytes = [0u8; 8];
    offset_bytes.copy_from_slice(&header[8..16]);
    if len > MAX_RECORD {
        return Decoded::Corrupt("record length over the maximum");
    }
    let start = pos + HEADER;
    let Some(payload) = buf.get(start..start + len) else {
        return Decoded::Incomplete;
    };
    let mut h = crc32fast::Hasher::new();
    if is_mark {
        h.update(&[1]);
    }
    h.update(&offset_bytes);
    h.update(payload);
    if h.finalize() != crc {
        return Decoded::Corrupt("checksum mismatch");
    }
    let offset = u64::from_le_bytes(offset_bytes);
    if !is_mark {
        return Decoded::Record {
            offset,
            start,
            end: start + len,
        };
    }
    match parse_mark(payload) {
        Some(mark) => Decoded::Mark {
            at: offset,
            mark,
            end: start + len,
        },
        None => Decoded::Corrupt("unreadable idempotency mark"),
    }
}

fn parse_mark(payload: &[u8]) -> Option<Mark> {
    let fixed = payload.get(..MARK_FIXED)?;
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&fixed[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let count = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    Some(Mark {
        first: u64_at(0),
        count,
        body_hash: u64_at(12),
        at_ms: u64_at(20),
        key: String::from_utf8(payload[MARK_FIXED..].to_vec()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, b"hello");
        encode(&mut buf, 8, b"");
        assert_eq!(
            decode(&buf, 0),
            Decoded::Record {
                offset: 7,
                start: 16,
                end: 21
            }
        );
        assert_eq!(
            decode(&buf, 21),
            Decoded::Record {
                offset: 8,
                start: 37,
                end: 37
            }
        );
        assert_eq!(decode(&buf, 37), Decoded::Incomplete);
        assert_eq!(decode(&buf[..30], 21), Decoded::Incomplete);
        let mut flipped = buf.clone();
        flipped[18] ^= 1;
        assert_eq!(decode(&flipped, 0), Decoded::Corrupt("checksum mismatch"));
    }

    #[test]
    fn a_mark_round_trips_and_a_flipped_flag_is_damage() {
        let mark = Mark {
            key: "shop:order-17".into(),
            first: 9,
            count: 3,
            body_hash: 0xdead_beef,
            at_ms: 1_764_000_000_000,
        };
        let mut buf = Vec::new();
        encode_mark(&mut buf, 9, &mark, (9, 3));
        let end = buf.len();
        assert_eq!(decode(&buf, 0), Decoded::Mark { at: 9, mark, end });
        let mut flipped = buf.clone();
        flipped[3] ^= 0x80;
        assert_eq!(decode(&flipped, 0), Decoded::Corrupt("checksum mismatch"));
        let mut record = Vec::new();
        encode(&mut record, 9, b"a record");
        record[3] ^= 0x80;
        assert_eq!(decode(&record, 0), Decoded::Corrupt("checksum mismatch"));
    }
}
