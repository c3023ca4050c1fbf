//! Argon2 verification against one PHC hash, with its working memory kept and reused.
//!
//! `argon2`'s own `verify_password` allocates the whole working memory (19 MiB with the
//! default parameters) on every call. glibc serves such a block with `mmap` at first, but
//! after freeing one it raises its mmap threshold and serves the next from a thread's heap
//! arena, which it does not give back: guesses spread over tokio's blocking threads took the
//! process to gigabytes that stayed. Here the memory comes from a pool of at most
//! [`super::MAX_VERIFYING`] buffers, allocated on first need and reused, so the memory argon2
//! can hold is bounded by the verification cap.

use std::sync::Mutex;

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

/// A parsed argon2 hash and the working memory to check passwords against it.
pub(crate) struct PasswordCheck {
    /// The algorithm, version and cost parameters recorded in the hash.
    argon2: Argon2<'static>,
    /// The salt, decoded.
    salt: Vec<u8>,
    /// The hash output a right password produces.
    expected: Vec<u8>,
    /// Working memory not in use; at most `max_buffers`.
    memory: Mutex<Vec<Vec<Block>>>,
    /// How many buffers are kept: the number of verifications that may run at once.
    max_buffers: usize,
}

impl PasswordCheck {
    /// Parses an argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`). The error
    /// names the setting and says how to make a good hash.
    pub(crate) fn from_phc(phc: &str, max_buffers: usize) -> Result<Self, String> {
        let invalid = |what: &dyn std::fmt::Display| {
            format!(
                "password_hash is not a usable argon2 hash ({what}); paste the whole output of \
                 `lintas hash-password`, starting with `$argon2id$`"
            )
        };
        let parsed = PasswordHash::new(phc).map_err(|e| {
            format!(
                "password_hash is not a PHC string ({e}); paste the whole output of \
                 `lintas hash-password`, starting with `$argon2id$`"
            )
        })?;
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|_| {
            format!(
                "password_hash is a `{}` hash; lintas verifies argon2 hashes only: make one with \
                 `lintas hash-password`",
                parsed.algorithm
            )
        })?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|e| invalid(&e))?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(|e| invalid(&e))?;
        let mut salt = [0u8; 64];
        let salt = parsed
            .salt
            .ok_or_else(|| invalid(&"no salt"))?
            .decode_b64(&mut salt)
            .map_err(|e| invalid(&e))?
            .to_vec();
        let expected = parsed
            .hash
            .ok_or_else(|| invalid(&"no hash output"))?
            .as_bytes()
            .to_vec();
        Ok(Self {
            argon2: Argon2::new(algorithm, version, params),
            salt,
            expected,
            memory: Mutex::new(Vec::new()),
            max_buffers,
        })
    }

    /// Whether `password` hashes to the expected output (compared in constant time). Blocks
    /// for the whole argon2 run: call it from a blocking thread.
    pub(crate) fn matches(&self, password: &[u8]) -> bool {
        let mut blocks = self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| vec![Block::default(); self.argon2.params().block_count()]);
        let mut out = vec![0u8; self.expected.len()];
        let hashed = self
            .argon2
            .hash_password_into_with_memory(password, &self.salt, &mut out, &mut blocks)
            .is_ok();
        let mut pool = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.max_buffers {
            pool.push(blocks);
        }
        hashed && bool::from(out.ct_eq(&self.expected))
    }

    /// Buffers allocated and idle, for tests.
    #[cfg(test)]
    pub(crate) fn idle_buffers(&self) -> usize {
        self.memory.lock().map(|m| m.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    fn phc(argon2: &Argon2<'_>, password: &str) -> String {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon2
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn agrees_with_argon2_verify_and_reuses_its_memory() {
        let params = Params::new(64, 2, 1, None).unwrap();
        for (alg, version) in [
            (Algorithm::Argon2id, Version::V0x13),
            (Algorithm::Argon2i, Version::V0x13),
            (Algorithm::Argon2d, Version::V0x10),
        ] {
            let hash = phc(&Argon2::new(alg, version, params.clone()), "s3cret");
            let check = PasswordCheck::from_phc(&hash, 1).unwrap();
            for _ in 0..2 {
                assert!(!check.matches(b"wrong"), "{hash}");
                assert!(check.matches(b"s3cret"), "{hash}");
            }
            assert_eq!(check.idle_buffers(), 1);
        }
    }

    #[test]
    fn refuses_what_it_cannot_verify_naming_the_setting() {
        let err = PasswordCheck::from_phc("plain", 1).err().unwrap();
        assert!(
            err.starts_with("password_hash is not a PHC string"),
            "{err}"
        );
        let err =
            PasswordCheck::from_phc("$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", 1)
                .err()
                .unwrap();
        assert!(err.starts_with("password_hash is a `scrypt` hash"), "{err}");
        let err = PasswordCheck::from_phc("$argon2id$v=19$m=64,t=2,p=1$c2FsdHNhbHQ", 1)
            .err()
            .unwrap();
        assert!(err.contains("no hash output"), "{err}");
    }
}
