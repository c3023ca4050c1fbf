//! API keys: 256 random bits shown once, stored as their SHA-256.
//!
//! A fast hash is right here, unlike for passwords: the key is random and long, so there is
//! nothing to guess from its hash, and ingest checks it on every request (argon2 would cost
//! more than the rest of the request).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of every key, so a leaked one is recognisable in logs and scanners.
pub const PREFIX: &str = "lk_";

/// A new random key.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What the store keeps of `key`.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key in an `Authorization: Bearer <key>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1), so `bearer <key>` is the same; any other scheme gives `None`.
pub fn from_authorization(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}

/// Lower-case hex of a hash, as `key_sha256` takes it.
pub fn to_hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_round_trip_through_hex() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
        let h = hash(&a);
        assert_eq!(parse_sha256(&to_hex(&h)), Some(h));
        assert_eq!(
            to_hex(&hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_sha256("zz"), None);
    }

    #[test]
    fn bearer_keys_are_found_whatever_the_scheme_case() {
        assert_eq!(from_authorization("Bearer lk_a"), Some("lk_a"));
        assert_eq!(from_authorization("bEaReR   lk_a "), Some("lk_a"));
        assert_eq!(from_authorization("Basic lk_a"), None);
        assert_eq!(from_authorization("Bearerlk_a"), None);
    }
}
