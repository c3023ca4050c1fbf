//! HTTP basic auth against an argon2 hash, with a cache so only the first request pays, and
//! limits so guessing cannot take the machine or keep the administrator out.
//!
//! Argon2 is slow on purpose (tens of milliseconds and ~19 MiB per check), which is right for
//! a guess and wrong for a stats page that refreshes every five seconds. So:
//!
//! - **Right credentials** are verified with argon2 once; then a *keyed* SHA-256 of the whole
//!   `Authorization` value is remembered. The key is random per process, so the cache holds
//!   nothing that reveals or can be tested against the password, and lookups compare every
//!   entry in constant time. The cache answers before any limit below: an administrator who
//!   is logged in keeps working whatever the guessers do.
//! - **Anything else that parses as credentials** goes through argon2 every time, whether the
//!   user name or the password is wrong: the answer takes as long either way, so timing tells
//!   nothing about which user names exist. The user name is compared as keyed digests in
//!   constant time.
//! - **Per client address** (`guesses`): five free failures, then a wait that doubles per
//!   failure (1 s up to 5 min), and at most two checks in flight; a throttled request is
//!   answered 429 at once, without argon2.
//! - **Globally**: at most [`MAX_VERIFYING`] argon2 runs at once, on tokio's blocking pool
//!   ([`Verifier`]). The permit moves into the blocking job, so a client that hangs up does
//!   not free its slot while its argon2 run goes on; and the runs share a pool of that many
//!   working memories, so the memory they can hold is bounded (about 4 × 19 MiB with the
//!   default parameters) and does not pile up in allocator arenas.
//!
//! The MQTT broker checks its users' passwords with the same pieces: [`HashedPassword`],
//! [`Verifier`] and [`Guesses`] (counting a user name with an address).
//!
//! Only the PHC hash is kept: a password read from the environment is hashed at start and
//! dropped. Nothing here logs credentials.

mod argon;
mod guesses;
pub mod sessions;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminConfig;
pub use argon::{HashedPassword, Slot, Verifier};
pub use guesses::{Guesses, Throttle, Ticket, source};
pub use sessions::Sessions;

/// Distinct verified `Authorization` values remembered; the oldest is forgotten past this.
/// One client usually sends one value, so a handful covers every tool an operator uses.
const MAX_CACHED: usize = 16;

/// Argon2 verifications running at once, at most (each holds one working memory).
pub const MAX_VERIFYING: usize = 4;

/// Domain separation of the two things digested with the same key.
const TAG_HEADER: u8 = 1;
const TAG_USER: u8 = 2;

/// The answer to a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The right user and password.
    Granted,
    /// No credentials, malformed ones, or wrong ones.
    Denied,
    /// Not checked: the client's address must wait (see [`Throttle`]).
    Throttled(Throttle),
}

/// Who may use the admin listener: a user name and an argon2 hash of the password.
pub struct Auth {
    /// Expected user name (not secret; shown by `Debug`).
    user: String,
    /// Keyed digest of `user`, compared in constant time.
    user_digest: [u8; 32],
    /// The parsed hash; shared with blocking jobs.
    hash: Arc<HashedPassword>,
    /// Random per process; keys every digest so the cache cannot be tested offline.
    key: [u8; 32],
    /// Keyed digests of `Authorization` values argon2 accepted.
    verified: Mutex<Vec<[u8; 32]>>,
    /// Bounds concurrent argon2 runs (CPU and memory).
    verifier: Verifier,
    /// Failures and checks in flight per client address.
    guesses: Arc<Guesses>,
    /// Browser sessions opened by `POST /login` with the same password.
    sessions: Sessions,
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
            (None, Some(hash)) => Self::with_hash(&cfg.user, hash),
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
            .expect("hash_password makes a hash HashedPassword parses")
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

    /// A checker for `user` and the argon2 PHC string `hash`; the error says what is wrong
    /// with the hash.
    pub(crate) fn with_hash(user: &str, hash: &str) -> Result<Auth, String> {
        let key = rand::random::<[u8; 32]>();
        Ok(Auth {
            user: user.into(),
            user_digest: keyed(&key, TAG_USER, user.as_bytes()),
            hash: Arc::new(HashedPassword::parse(hash)?),
            key,
            verified: Mutex::new(Vec::new()),
            verifier: Verifier::new(MAX_VERIFYING),
            guesses: Arc::default(),
            sessions: Sessions::default(),
        })
    }

    /// The user name expected in basic auth.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether an `Authorization` header value sent from `client` carries the right user and
    /// password.
    ///
    /// Fast for a value accepted before (from any address); otherwise, unless `client` is
    /// throttled, waits for an argon2 verification on the blocking pool. Malformed values (not
    /// `Basic`, not base64, no `:`) are refused at once: they carry no guess to time.
    pub async fn verify(&self, authorization: &[u8], client: IpAddr) -> Access {
        let digest = keyed(&self.key, TAG_HEADER, authorization);
        if self.is_cached(&digest) {
            return Access::Granted;
        }
        let Some((user, password)) = basic_credentials(authorization) else {
            return Access::Denied;
        };
        let access = self.verify_password(&user, password, client).await;
        if access == Access::Granted {
            self.remember(digest);
        }
        access
    }

    /// Whether `user` and `password` sent from `client` are right: the check behind both
    /// basic auth and the console's login, with the same throttling and argon2 cost.
    pub async fn verify_password(&self, user: &str, password: String, client: IpAddr) -> Access {
        let ticket = match self.guesses.admit(source(client), Instant::now()) {
            Ok(ticket) => ticket,
            Err(throttle) => return Access::Throttled(throttle),
        };
        let slot = self.verifier.slot().await;
        if let Err(throttle) = ticket.recheck(Instant::now()) {
            return Access::Throttled(throttle);
        }
        let user_ok = keyed(&self.key, TAG_USER, user.as_bytes()).ct_eq(&self.user_digest);
        // The failure is counted in the job, so a client that hangs up does not escape it.
        let ok = slot
            .verify(
                self.hash.clone(),
                password.into_bytes(),
                move |password_ok| {
                    let ok = bool::from(user_ok & subtle::Choice::from(u8::from(password_ok)));
                    ticket.finish(ok, Instant::now());
                    ok
                },
            )
            .await
            .unwrap_or(false);
        if ok { Access::Granted } else { Access::Denied }
    }

    /// The browser sessions of this listener.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
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

/// SHA-256 of `key || tag || bytes`: a keyed digest (no length-extension concern, since it is
/// only ever compared for equality). With a key random per process, it lets a cache of
/// verified credentials hold nothing that can be tested offline; the MQTT broker keeps its
/// own with it.
pub fn keyed(key: &[u8; 32], tag: u8, bytes: &[u8]) -> [u8; 32] {
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

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn right_credentials_pass_and_are_cached_wrong_ones_never() {
        let auth = Auth::from_password("admin", "s3cret");
        assert_eq!(
            auth.verify(&header("admin", "wrong"), HOME).await,
            Access::Denied
        );
        assert_eq!(
            auth.verify(&header("root", "s3cret"), HOME).await,
            Access::Denied
        );
        assert!(auth.verified.lock().unwrap().is_empty());
        assert_eq!(
            auth.verify(&header("admin", "s3cret"), HOME).await,
            Access::Granted
        );
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert_eq!(
            auth.verify(&header("admin", "s3cret"), HOME).await,
            Access::Granted
        );
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert_eq!(
            auth.verify(&header("admin", "s3cret2"), HOME).await,
            Access::Denied
        );
    }

    #[tokio::test]
    async fn an_abandoned_verification_keeps_its_permit_until_argon2_ends() {
        // Costly enough that the runs are still going when the callers give up.
        let slow = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8 * 1024, 40, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let hash = slow.hash_password(b"s3cret", &salt).unwrap().to_string();
        let auth = Arc::new(Auth::with_hash("admin", &hash).unwrap());
        let callers: Vec<_> = (0..MAX_VERIFYING as u8)
            .map(|i| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    let client = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, i));
                    auth.verify(&header("admin", "guess"), client).await
                })
            })
            .collect();
        testkit::wait_until("every permit to be taken", testkit::PATIENCE, || async {
            auth.verifier.available_slots() == 0
        })
        .await;
        for caller in &callers {
            caller.abort();
        }
        for caller in callers {
            assert!(caller.await.unwrap_err().is_cancelled());
        }
        assert_eq!(
            auth.verifier.available_slots(),
            0,
            "the callers hung up, but their argon2 runs go on and must keep their permits"
        );
        testkit::wait_until("the runs to end", testkit::PATIENCE, || async {
            auth.verifier.available_slots() == MAX_VERIFYING
        })
        .await;
        assert_eq!(auth.verifier.idle_buffers(), MAX_VERIFYING);
    }

    #[test]
    fn hash_is_argon2id_phc_and_never_the_password() {
        let hash = Auth::hash_password("s3cret");
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(!hash.contains("s3cret"));
        assert_ne!(hash, Auth::hash_password("s3cret"), "salts must differ");
        HashedPassword::parse(&hash).unwrap();
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
