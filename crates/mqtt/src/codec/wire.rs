//! The data representations of MQTT §1.5, read from a frozen packet body and written to a
//! `BytesMut`.
//!
//! [`Reader`] walks one packet's body (already split off the connection's buffer and
//! frozen) and hands out strings and binary data as slices of it, so nothing is copied;
//! every read checks the bytes that are left first, so a length field pointing past the
//! packet is an error, never a panic or an allocation. Errors are bare [`Problem`]s: the
//! decoder adds the packet and the field.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::Problem;

/// Largest value a variable byte integer holds (§1.5.5): also the largest remaining length.
pub const VAR_INT_MAX: u32 = 268_435_455;

/// A cursor over one packet's body.
pub struct Reader {
    /// What is left of the body; slices of it share its storage.
    buf: Bytes,
}

impl Reader {
    /// Reads the whole of `body`.
    pub fn new(body: Bytes) -> Self {
        Self { buf: body }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was read: trailing bytes make a packet malformed.
    pub fn finish(&self) -> Result<(), Problem> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(Problem::TrailingBytes(n)),
        }
    }

    fn need(&self, n: usize) -> Result<(), Problem> {
        if self.buf.len() < n {
            return Err(Problem::Truncated);
        }
        Ok(())
    }

    /// A one-byte integer.
    pub fn u8(&mut self) -> Result<u8, Problem> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    /// A two-byte big-endian integer.
    pub fn u16(&mut self) -> Result<u16, Problem> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    /// A four-byte big-endian integer.
    pub fn u32(&mut self) -> Result<u32, Problem> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer: at most four bytes, minimally encoded.
    pub fn var_int(&mut self) -> Result<u32, Problem> {
        match parse_var_int(&self.buf)? {
            VarInt::Complete { value, len } => {
                self.buf.advance(len);
                Ok(value)
            }
            VarInt::Incomplete => Err(Problem::Truncated),
        }
    }

    /// `n` bytes as a slice of the body.
    pub fn take(&mut self, n: usize) -> Result<Bytes, Problem> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything not yet read (a PUBLISH payload), handed over without touching the
    /// reference count.
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary data: a two-byte length and that many bytes.
    pub fn binary(&mut self) -> Result<Bytes, Problem> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string (§1.5.4): well-formed (so no surrogates) and without U+0000.
    pub fn string(&mut self) -> Result<ByteString, Problem> {
        let bytes = self.binary()?;
        if bytes.contains(&0) {
            return Err(Problem::NulChar);
        }
        ByteString::try_from(bytes).map_err(|_| Problem::InvalidUtf8)
    }
}

/// What the start of a buffer holds as a variable byte integer.
pub enum VarInt {
    /// The integer and how many bytes it took.
    Complete {
        /// Its value.
        value: u32,
        /// Its encoded length, 1 to 4.
        len: usize,
    },
    /// The buffer ends inside it.
    Incomplete,
}

/// Parses a variable byte integer at the start of `buf` without consuming it, so the
/// fixed header can be examined before the whole packet has arrived.
pub fn parse_var_int(buf: &[u8]) -> Result<VarInt, Problem> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of 0 after the first means a shorter encoding existed.
            if i > 0 && byte == 0 {
                return Err(Problem::VarIntNotMinimal);
            }
            return Ok(VarInt::Complete { value, len: i + 1 });
        }
    }
    if buf.len() >= 4 {
        return Err(Problem::VarIntTooLong);
    }
    Ok(VarInt::Incomplete)
}

/// Bytes `value` takes as a variable byte integer.
pub fn var_int_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A string or binary field too long for its two-byte length.
#[derive(Debug)]
pub struct Overlong {
    /// Which field.
    pub field: &'static str,
    /// Its length.
    pub len: usize,
}

/// Where the encoder writes: a buffer, or a [`Counter`] that only adds up the length. The
/// encoder is written once against this trait, so the size it reports is the size it writes.
pub trait Sink {
    /// Raw bytes.
    fn bytes(&mut self, data: &[u8]);

    /// A one-byte integer.
    fn byte(&mut self, value: u8) {
        self.bytes(&[value]);
    }

    /// A two-byte big-endian integer.
    fn u16(&mut self, value: u16) {
        self.bytes(&value.to_be_bytes());
    }

    /// A four-byte big-endian integer.
    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_be_bytes());
    }

    /// A variable byte integer; the caller keeps `value` within [`VAR_INT_MAX`].
    fn var_int(&mut self, mut value: u32) {
        let mut buf = [0u8; 4];
        let mut len = 0;
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                buf[len] = byte;
                len += 1;
                break;
            }
            buf[len] = byte | 0x80;
            len += 1;
            if len == buf.len() {
                break;
            }
        }
        self.bytes(&buf[..len]);
    }

    /// Binary data or a string's bytes, after their two-byte length.
    fn binary(&mut self, field: &'static str, data: &[u8]) -> Result<(), Overlong> {
        let len = u16::try_from(data.len()).map_err(|_| Overlong {
            field,
            len: data.len(),
        })?;
        self.u16(len);
        self.bytes(data);
        Ok(())
    }
}

impl Sink for BytesMut {
    fn bytes(&mut self, data: &[u8]) {
        self.put_slice(data);
    }
}

/// A [`Sink`] that counts.
#[derive(Default)]
pub struct Counter(pub usize);

impl Sink for Counter {
    fn bytes(&mut self, data: &[u8]) {
        self.0 += data.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var_int(bytes: &[u8]) -> Result<VarInt, Problem> {
        parse_var_int(bytes)
    }

    #[test]
    fn var_int_boundaries_round_trip() {
        for value in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            VAR_INT_MAX,
        ] {
            let mut out = BytesMut::new();
            out.var_int(value);
            assert_eq!(out.len(), var_int_len(value), "length of {value}");
            match var_int(&out).expect("decodes") {
                VarInt::Complete { value: v, len } => {
                    assert_eq!((v, len), (value, out.len()));
                }
                VarInt::Incomplete => panic!("{value} reported incomplete"),
            }
        }
    }

    #[test]
    fn var_int_spec_examples() {
        let mut out = BytesMut::new();
        out.var_int(321);
        assert_eq!(&out[..], &[0xc1, 0x02]);
        out.clear();
        out.var_int(VAR_INT_MAX);
        assert_eq!(&out[..], &[0xff, 0xff, 0xff, 0x7f]);
    }

    #[test]
    fn var_int_of_five_bytes_is_rejected() {
        assert!(matches!(
            var_int(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(Problem::VarIntTooLong)
        ));
    }

    #[test]
    fn var_int_not_minimal_is_rejected() {
        assert!(matches!(
            var_int(&[0x80, 0x00]),
            Err(Problem::VarIntNotMinimal)
        ));
        assert!(matches!(
            var_int(&[0xff, 0x80, 0x00]),
            Err(Problem::VarIntNotMinimal)
        ));
    }

    #[test]
    fn var_int_cut_short_is_incomplete() {
        assert!(matches!(var_int(&[0x80, 0x80]), Ok(VarInt::Incomplete)));
        assert!(matches!(var_int(&[]), Ok(VarInt::Incomplete)));
    }

    #[test]
    fn string_rejects_nul_and_surrogates() {
        let mut r = Reader::new(Bytes::from_static(&[0, 3, b'a', 0, b'b']));
        assert!(matches!(r.string(), Err(Problem::NulChar)));
        // U+D800 encoded as if it were a scalar value (CESU-style) is not UTF-8.
        let mut r = Reader::new(Bytes::from_static(&[0, 3, 0xed, 0xa0, 0x80]));
        assert!(matches!(r.string(), Err(Problem::InvalidUtf8)));
    }

    #[test]
    fn string_longer_than_the_body_is_truncated() {
        let mut r = Reader::new(Bytes::from_static(&[0, 5, b'a']));
        assert!(matches!(r.string(), Err(Problem::Truncated)));
    }
}
