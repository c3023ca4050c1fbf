//! Argon2 verification off the async runtime, bounded in CPU and memory, against any number
//! of PHC hashes: the admin listener checks one, the MQTT broker one per configured user.
//!
//! A [`HashedPassword`] is a parsed PHC string. A [`Verifier`] owns what the checks share:
//! a semaphore of [`Verifier::new`]`(max)` permits, taken before a check starts ([`Slot`]),
//! and a pool of at most that many argon2 working memories. The permit moves into the
//! blocking job, so a client that hangs up does not free its slot while its argon2 run goes
//! on.
//!
//! The pool exists because `argon2`'s own `verify_password` allocates the whole working
//! memory (19 MiB with the default parameters) on every call. glibc serves such a block with
//! `mmap` at first, but after freeing one it raises its mmap threshold and serves the next
//! from a thread's heap arena, which it does not give back: guesses spread over tokio's
//! blocking threads took the process to gigabytes that stayed. Here a buffer is taken from
//! the pool (resized if the hash's memory cost differs) and put back, so the memory argon2
//! can hold is bounded by the number of permits.

use std::sync::{Arc, Mutex};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A parsed argon2 hash: what a password is checked against.
pub struct HashedPassword {
    /// The algorithm, version and cost parameters recorded in the hash.
    argon2: Argon2<'static>,
    /// The salt, decoded.
    salt: Vec<u8>,
    /// The hash output a right password produces.
    expected: Vec<u8>,
}

impl std::fmt::Debug for HashedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashedPassword")
            .field("params", self.argon2.params())
            .finish_non_exhaustive()
    }
}

impl HashedPassword {
    /// Parses an argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`). The error
    /// says what is wrong (as "password_hash is ...", the setting's name in every section
    /// that takes one) and how to make a good hash.
    pub fn parse(phc: &str) -> Result<Self, String> {
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
        })
    }

    /// A hash no password matches that costs what a check against `like` costs (argon2's
    /// defaults without one): checked in place of a user that does not exist, so that the
    /// answer takes as long as for one that does and timing tells no user names.
    pub fn decoy(like: Option<&HashedPassword>) -> Self {
        let random = |len: usize| (0..len).map(|_| rand::random::<u8>()).collect::<Vec<u8>>();
        Self {
            argon2: like.map_or_else(Argon2::default, |h| h.argon2.clone()),
            salt: random(like.map_or(16, |h| h.salt.len())),
            expected: random(like.map_or(Params::DEFAULT_OUTPUT_LEN, |h| h.expected.len())),
        }
    }

    /// Whether `password` hashes to the expected output (compared in constant time), with
    /// working memory from `memory`. Blocks for the whole argon2 run.
    fn matches(&self, password: &[u8], memory: &Memory) -> bool {
        let mut blocks = memory.take();
        blocks.resize(self.argon2.params().block_count(), Block::default());
        let mut out = vec![0u8; self.expected.len()];
        let hashed = self
            .argon2
            .hash_password_into_with_memory(password, &self.salt, &mut out, &mut blocks)
            .is_ok();
        memory.give_back(blocks);
        hashed && bool::from(out.ct_eq(&self.expected))
    }
}

/// Working memories not in use; at most `max` are kept.
#[derive(Debug)]
struct Memory {
    /// Buffers free for the next run.
    idle: Mutex<Vec<Vec<Block>>>,
    /// How many buffers are kept: the number of verifications that may run at once.
    max: usize,
}

impl Memory {
    fn take(&self) -> Vec<Block> {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, blocks: Vec<Block>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max {
            idle.push(blocks);
        }
    }
}

/// Runs argon2 checks on tokio's blocking pool, at most `max` at once, sharing `max`
/// working memories between them.
#[derive(Debug)]
pub struct Verifier {
    /// One permit per check that may run; a permit moves into its blocking job.
    permits: Arc<Semaphore>,
    /// The working memories the runs share.
    memory: Arc<Memory>,
}

impl Verifier {
    /// A verifier running at most `max` checks at once (each holds one working memory).
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            memory: Arc::new(Memory {
                idle: Mutex::new(Vec::new()),
                max,
            }),
        }
    }

    /// Waits for a free slot. Throttling decisions that may have changed while waiting are
    /// best taken again after this returns, before [`Slot::verify`].
    pub async fn slot(&self) -> Slot {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("a verifier never closes its semaphore");
        Slot {
            permit,
            memory: self.memory.clone(),
        }
    }

    /// Slots free now, for tests.
    pub fn available_slots(&self) -> usize {
        self.permits.available_permits()
    }

    /// Working memories allocated and idle, for tests.
    pub fn idle_buffers(&self) -> usize {
        self.memory.idle.lock().map(|m| m.len()).unwrap_or_default()
    }
}

/// The right to run one check; see [`Verifier::slot`].
#[derive(Debug)]
pub struct Slot {
    /// Held until argon2 has run, even if the caller stops waiting.
    permit: OwnedSemaphorePermit,
    /// Where the run's working memory comes from.
    memory: Arc<Memory>,
}

impl Slot {
    /// Checks `password` against `hash` on a blocking thread, then calls `then` with the
    /// verdict on that thread and returns what it returns. Everything that must happen once
    /// argon2 has run (counting a failure) belongs in `then`: it runs even if the caller's
    /// future is dropped. `None` if the job panicked.
    pub async fn verify<R: Send + 'static>(
        self,
        hash: Arc<HashedPassword>,
        password: Vec<u8>,
        then: impl FnOnce(bool) -> R + Send + 'static,
    ) -> Option<R> {
        let Slot { permit, memory } = self;
        tokio::task::spawn_blocking(move || {
            let ok = hash.matches(&password, &memory);
            drop(permit);
            then(ok)
        })
        .await
        .ok()
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
    fn agrees_with_argon2_verify_and_reuses_its_memory_across_hashes() {
        let memory = Memory {
            idle: Mutex::new(Vec::new()),
            max: 1,
        };
        for (alg, version, m_cost) in [
            (Algorithm::Argon2id, Version::V0x13, 64),
            (Algorithm::Argon2i, Version::V0x13, 128),
            (Algorithm::Argon2d, Version::V0x10, 8),
        ] {
            let params = Params::new(m_cost, 2, 1, None).unwrap();
            let hash = phc(&Argon2::new(alg, version, params), "s3cret");
            let check = HashedPassword::parse(&hash).unwrap();
            for _ in 0..2 {
                assert!(!check.matches(b"wrong", &memory), "{hash}");
                assert!(check.matches(b"s3cret", &memory), "{hash}");
            }
            assert_eq!(memory.idle.lock().unwrap().len(), 1);
        }
    }

    #[test]
    fn a_decoy_costs_what_its_model_costs_and_matches_nothing() {
        let params = Params::new(64, 3, 1, Some(24)).unwrap();
        let real = HashedPassword::parse(&phc(
            &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            "",
        ))
        .unwrap();
        let decoy = HashedPassword::decoy(Some(&real));
        assert_eq!(format!("{decoy:?}"), format!("{real:?}"));
        assert_eq!(decoy.salt.len(), real.salt.len());
        assert_eq!(decoy.expected.len(), 24);
        let memory = Memory {
            idle: Mutex::new(Vec::new()),
            max: 1,
        };
        assert!(real.matches(b"", &memory));
        assert!(!decoy.matches(b"", &memory));
        let default = HashedPassword::decoy(None);
        assert_eq!(default.argon2.params(), &Params::default());
        assert_eq!(default.expected.len(), Params::DEFAULT_OUTPUT_LEN);
    }

    #[test]
    fn refuses_what_it_cannot_verify_naming_the_setting() {
        let err = HashedPassword::parse("plain").unwrap_err();
        assert!(
            err.starts_with("password_hash is not a PHC string"),
            "{err}"
        );
        let err = HashedPassword::parse("$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
            .unwrap_err();
        assert!(err.starts_with("password_hash is a `scrypt` hash"), "{err}");
        let err = HashedPassword::parse("$argon2id$v=19$m=64,t=2,p=1$c2FsdHNhbHQ").unwrap_err();
        assert!(err.contains("no hash output"), "{err}");
    }
}
