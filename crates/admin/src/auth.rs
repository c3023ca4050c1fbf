//! HTTP basic auth against an argon2 hash, with a cache so only the first request pays.
//!
//! Argon2 is slow on purpose (tens of milliseconds and ~19 MiB per check), which is right for
//! a guess and wrong for a stats page that refreshes every five seconds. So:
//!
//! - **Right credentials** are verified with argon2 once; then a *keyed* SHA-256 of the whole
//!   `Authorization` value is remembered. The key is random per process, so the cache holds
//!   nothing that reveals or can be tested against the password, and lookups compare every
//!   entry in constant time.
//! - **Anything else that parses as credentials** goes through argon2 every time, whether the
//!   user name or the password is wrong: the answer takes as long either way, so timing tells
//!   nothing about which user names exist. The user name is compared as keyed digests in
//!   constant time.
//! - Verifications run on tokio's blocking pool, at most a few at once (a semaphore), so a
//!   flood of guesses queues up instead of taking every core and gigabytes of memory.
//!
//! Only the PHC hash is kept: a password read from the environment is hashed at start and
//! dropped. Nothing here logs credentials.

use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::{AdminConfig, check_hash};

/// Distinct verified `Authorization` values remembered; the oldest is forgotten past this.
/// One client usually sends one value, so a handful covers every tool an operator uses.
const MAX_CACHED: usize = 16;

/// Argon2 verifications running at once, at most.
const MAX_VERIFYING: usize = 4;

/// Domain separation of the two things digested with the same key.
const TAG_HEADER: u8 = 1;
const TAG_USER: u8 = 2;

/// Who may use the admin listener: a user name and an argon2 hash of the password.
pub struct Auth {
    /// Expected user name (not secret; shown by `Debug`).
    user: String,
    /// Keyed digest of `user`, compared in constant time.
    user_digest: [u8; 32],
    /// The argon2 PHC string; shared with blocking verification tasks.
    hash: Arc<str>,
    /// Random per process; keys every digest so the cache cannot be tested offline.
    key: [u8; 32],
    /// Keyed digests of `Authorization` values argon2 accepted.
    verified: Mutex<Vec<[u8; 32]>>,
    /// Bounds concurrent argon2 runs (CPU and memory).
    verifying: Semaphore,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Builds the checker from the `[admin]` section: with `password_env`, reads that
    /// variable, hashes it (random salt) and drops the plain text; with `password_hash`,
    /// uses the hash as it is. The error says which setting to fix.
    pub fn from_config(cfg: &AdminConfig) -> Result<Auth, String> {
        match (&cfg.password_env, &cfg.password_hash) {
            (None, Some(hash)) => {
                check_hash(hash)?;
                Ok(Self::with_hash(&cfg.user, hash))
            }
            (Some(var), None) => {
                let password = match std::env::var(var) {
                    Ok(p) if !p.is_empty() => p,
                    Ok(_) => {
                        return Err(format!(
                            "environment variable `{var}` named by admin.password_env is empty; \
                             put the admin password in it"
                        ));
                    }
                    Err(std::env::VarError::NotPresent) => {
                        return Err(format!(
                            "environment variable `{var}` named by admin.password_env is not set; \
                             export it with the admin password, or set admin.password_hash \
                             (see `lintas hash-password`)"
                        ));
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        return Err(format!(
                            "environment variable `{var}` named by admin.password_env is not \
                             valid UTF-8; use a UTF-8 password"
                        ));
                    }
                };
                Ok(Self::from_password(&cfg.user, &password))
            }
            (Some(_), Some(_)) => {
                Err("set either admin.password_env or admin.password_hash, not both".into())
            }
            (None, None) => Err(
                "the admin listener needs a password: set admin.password_env or \
                 admin.password_hash"
                    .into(),
            ),
        }
    }

    /// A checker for a password the caller already knows (the demo generates one and prints
    /// it); only its hash is kept.
    pub fn from_password(user: &str, password: &str) -> Auth {
        Self::with_hash(user, &Self::hash_password(password))
    }

    /// An argon2id PHC string for `password` with a random salt and the crate's default
    /// parameters, for `lintas hash-password` and `admin.password_hash`.
    pub fn hash_password(password: &str) -> String {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .expect("16 random bytes are a valid argon2 salt");
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 with default parameters hashes any password shorter than 4 GiB")
            .to_string()
    }

    fn with_hash(user: &str, hash: &str) -> Auth {
        let key = rand::random::<[u8; 32]>();
        Auth {
            user: user.into(),
            user_digest: keyed(&key, TAG_USER, user.as_bytes()),
            hash: hash.into(),
            key,
            verified: Mutex::new(Vec::new()),
            verifying: Semaphore::new(MAX_VERIFYING),
        }
    }

    /// The user name expected in basic auth.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether an `Authorization` header value carries the right user and password.
    ///
    /// Fast for a value accepted before; otherwise waits for an argon2 verification on the
    /// blocking pool. Malformed values (not `Basic`, not base64, no `:`) are refused at once:
    /// they carry no guess to time.
    pub async fn verify(&self, authorization: &[u8]) -> bool {
        let digest = keyed(&self.key, TAG_HEADER, authorization);
        if self.is_cached(&digest) {
            return true;
        }
        let Some((user, password)) = basic_credentials(authorization) else {
            return false;
        };
        let user_ok = keyed(&self.key, TAG_USER, user.as_bytes()).ct_eq(&self.user_digest);
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let hash = self.hash.clone();
        let password_ok =
            tokio::task::spawn_blocking(move || check_password(&hash, password.as_bytes()))
                .await
                .unwrap_or(false);
        let ok = bool::from(user_ok & subtle::Choice::from(u8::from(password_ok)));
        if ok {
            self.remember(digest);
        }
        ok
    }

    fn is_cached(&self, digest: &[u8; 32]) -> bool {
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let hit = cache
            .iter()
            .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(digest));
        hit.into()
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.contains(&digest) {
            return;
        }
        if cache.len() >= MAX_CACHED {
            cache.remove(0);
        }
        cache.push(digest);
    }
}

/// Argon2 verification with the parameters recorded in the hash itself.
fn check_password(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

/// SHA-256 of `key || tag || bytes`: a keyed digest (no length-extension concern, since it is
/// only ever compared for equality).
fn keyed(key: &[u8; 32], tag: u8, bytes: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(key)
        .chain_update([tag])
        .chain_update(bytes)
        .finalize()
        .into()
}

/// `Basic base64(user:password)` → (user, password); the password may contain `:`.
fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn parses_basic_credentials() {
        assert_eq!(
            basic_credentials(&header("admin", "a:b c")),
            Some(("admin".into(), "a:b c".into()))
        );
        assert_eq!(
            basic_credentials(b"basic YWRtaW46cHc="),
            Some(("admin".into(), "pw".into()))
        );
        assert_eq!(basic_credentials(b"Bearer YWRtaW46cHc="), None);
        assert_eq!(basic_credentials(b"Basic !!!"), None);
        assert_eq!(basic_credentials(b"Basic YWRtaW4="), None); // "admin", no colon
    }

    #[tokio::test]
    async fn right_credentials_pass_and_are_cached_wrong_ones_never() {
        let auth = Auth::from_password("admin", "s3cret");
        assert!(!auth.verify(&header("admin", "wrong")).await);
        assert!(!auth.verify(&header("root", "s3cret")).await);
        assert!(auth.verified.lock().unwrap().is_empty());
        assert!(auth.verify(&header("admin", "s3cret")).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(auth.verify(&header("admin", "s3cret")).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(!auth.verify(&header("admin", "s3cret2")).await);
    }

    #[test]
    fn hash_is_argon2id_phc_and_never_the_password() {
        let hash = Auth::hash_password("s3cret");
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(!hash.contains("s3cret"));
        assert_ne!(hash, Auth::hash_password("s3cret"), "salts must differ");
        assert!(check_password(&hash, b"s3cret"));
        assert!(!check_password(&hash, b"s3cre"));
        let auth = Auth::from_password("admin", "s3cret");
        assert_eq!(format!("{auth:?}"), "Auth { user: \"admin\", .. }");
    }

    #[test]
    fn config_errors_name_the_setting() {
        let cfg = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            user: "admin".into(),
            password_env: Some("LINTAS_ADMIN_TEST_SURELY_UNSET".into()),
            password_hash: None,
        };
        let err = Auth::from_config(&cfg).unwrap_err();
        assert!(
            err.starts_with(
                "environment variable `LINTAS_ADMIN_TEST_SURELY_UNSET` named by admin.password_env is not set"
            ),
            "{err}"
        );
        let cfg = AdminConfig {
            password_env: None,
            password_hash: Some(Auth::hash_password("pw")),
            ..cfg
        };
        assert_eq!(Auth::from_config(&cfg).unwrap().user(), "admin");
    }
}
