//! The on-disk record: `[len u32][crc32 u32][offset u64][payload]`, little-endian.
//!
//! The CRC covers the offset and the payload, so a torn write (a record cut by a crash), a
//! stale byte range and a record from the wrong place are all caught on recovery.

/// Bytes before the payload.
pub(crate) const HEADER: usize = 16;

/// Largest payload accepted; checked before anything is allocated for it.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

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
    /// The bytes end inside a record (a torn write at the tail, or a short read).
    Incomplete,
    /// Not a valid record: wrong checksum or impossible length.
    Corrupt(&'static str),
}

/// Decodes the record at `pos` of `buf`.
pub(crate) fn decode(buf: &[u8], pos: usize) -> Decoded {
    let Some(header) = buf.get(pos..pos + HEADER) else {
        return Decoded::Incomplete;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
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
    h.update(&offset_bytes);
    h.update(payload);
    if h.finalize() != crc {
        return Decoded::Corrupt("checksum mismatch");
    }
    Decoded::Record {
        offset: u64::from_le_bytes(offset_bytes),
        start,
        end: start + len,
    }
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
}
