//! CONNECT's user name and password against the configured users (see the
//! [module](super) documentation for the rules and the answers).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hash::RandomState;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use admin::auth::{Guesses, HashedPassword, MAX_VERIFYING, Throttle, Verifier, keyed, source};
use subtle::ConstantTimeEq;

use crate::codec::{ReasonCode, Version};

/// A connected client as access control sees it: who it proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name whose password it gave; none for an anonymous client.
    username: Option<Box<str>>,
    /// Its client identifier, which `%c` in a rule stands for.
    client_id: Box<str>,
}

impl Identity {
    /// An identity for a client already checked (only [`Auth::connect`] and tests make
    /// one: rules for a user must not apply to a client that did not prove to be it).
    pub(crate) fn new(username: Option<&str>, client_id: &str) -> Self {
        Self {
            username: username.map(Into::into),
            client_id: client_id.into(),
        }
    }

    /// The user name it proved; none for an anonymous client.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Its client identifier.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// Why a CONNECT was refused; [`reason_code`](Self::reason_code) is its CONNACK answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An unknown user name, a wrong or missing password, or a password without a user name.
    #[error("bad user name or password")]
    BadCredentials,
    /// No user name, and anonymous clients are not allowed.
    #[error("anonymous clients are not allowed; connect with a user name and password")]
    AnonymousNotAllowed,
    /// This user name failed too often from this address lately (or is being checked
    /// twice already); not checked.
    #[error("too many failed logins for this user name from this address; {}", retry(.0))]
    Throttled(Throttle),
}

impl Refusal {
    /// The CONNACK reason code for a client speaking `version`; for 3.1.1 always one of the
    /// six it has ([`ReasonCode::to_v311_connack`]).
    ///
    /// A throttled client is told 0x9F Connection rate exceeded (5.0) or 0x03 Server
    /// unavailable (3.1.1) rather than that its password is wrong, since it was not
    /// checked: a device with the right password retries after its backoff instead of
    /// reporting bad credentials.
    pub fn reason_code(self, version: Version) -> ReasonCode {
        match (self, version) {
            (Self::BadCredentials, _) => ReasonCode::BadUserNameOrPassword,
            (Self::AnonymousNotAllowed, _) => ReasonCode::NotAuthorized,
            (Self::Throttled(_), Version::V5) => ReasonCode::ConnectionRateExceeded,
            (Self::Throttled(_), Version::V311) => ReasonCode::ServerUnavailable,
        }
    }
}

/// When a throttled client may try again, for its refusal's message.
fn retry(throttle: &Throttle) -> String {
    match throttle {
        Throttle::Backoff(wait) => format!("try again in {} s", wait.as_secs_f64().ceil()),
        Throttle::Busy => "one is being checked already; try again in 1 s".to_owned(),
    }
}

/// Who may connect: the configured users' hashes and the guessing limits. Built by
/// [`super::AuthConfig::build`].
pub struct Auth {
    /// Whether a client without a user name may connect.
    allow_anonymous: bool,
    /// Each user's hash, by user name.
    users: HashMap<Box<str>, Arc<HashedPassword>>,
    /// Checked for an unknown user name, at the cost of the first user's hash.
    decoy: Arc<HashedPassword>,
    /// Runs argon2 off the async runtime, bounded in CPU and memory.
    verifier: Verifier,
    /// Failures and checks in flight per user name and client address.
    guesses: Arc<Guesses<(IpAddr, u64)>>,
    /// Keys the digest of user names in `guesses`, so a table entry stays small whatever
    /// the name's length and collisions cannot be aimed at.
    names: RandomState,
    /// Random per process; keys the digests in `verified`.
    key: [u8; 32],
    /// Keyed digest of the password argon2 last accepted, per user: a client reconnecting
    /// with it is let in without argon2 (at most one entry per configured user).
    verified: Mutex<HashMap<Box<str>, [u8; 32]>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("allow_anonymous", &self.allow_anonymous)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The checker for `users` (name, parsed hash) in the order configured.
    pub(super) fn new(allow_anonymous: bool, users: Vec<(&str, HashedPassword)>) -> Self {
        let decoy = HashedPassword::decoy(users.first().map(|(_, hash)| hash));
        Self {
            allow_anonymous,
            users: users
                .into_iter()
                .map(|(name, hash)| (name.into(), Arc::new(hash)))
                .collect(),
            decoy: Arc::new(decoy),
            verifier: Verifier::new(MAX_VERIFYING),
            guesses: Arc::default(),
            names: RandomState::new(),
            key: rand::random(),
            verified: Mutex::default(),
        }
    }

    /// Checks a CONNECT's credentials from `peer`: the client's identity, or why it is
    /// refused. `client_id` is the one the session will have (the broker's assigned one if
    /// the client sent none), which `%c` in rules stands for.
    ///
    /// Waits for an argon2 check on tokio's blocking pool unless the client is anonymous,
    /// throttled, or gives the password argon2 last accepted for its user (remembered as a
    /// keyed digest, so reconnecting costs a SHA-256 and answers before any limit: guessers
    /// cannot keep a device with the right password out). A failure is counted even if this
    /// future is dropped once argon2 runs.
    pub async fn connect(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
        peer: IpAddr,
    ) -> Result<Identity, Refusal> {
        let Some(name) = username else {
            return match (password, self.allow_anonymous) {
                (Some(_), _) => Err(Refusal::BadCredentials),
                (None, true) => Ok(Identity::new(None, client_id)),
                (None, false) => Err(Refusal::AnonymousNotAllowed),
            };
        };
        let digest = password.map(|p| keyed(&self.key, 0, p));
        if digest.is_some_and(|d| self.was_verified(name, &d)) {
            return Ok(Identity::new(Some(name), client_id));
        }
        let guesser = (source(peer), self.names.hash_one(name));
        let ticket = self
            .guesses
            .admit(guesser, Instant::now())
            .map_err(Refusal::Throttled)?;
        let slot = self.verifier.slot().await;
        ticket.recheck(Instant::now()).map_err(Refusal::Throttled)?;
        let (hash, known) = self.hash_for(name);
        let has_password = password.is_some();
        let verified = slot
            .verify(
                hash,
                password.unwrap_or_default().to_vec(),
                move |matched| {
                    let ok = matched && known && has_password;
                    ticket.finish(ok, Instant::now());
                    ok
                },
            )
            .await
            .unwrap_or(false);
        if verified {
            if let Some(digest) = digest {
                self.lock_verified().insert(name.into(), digest);
            }
            Ok(Identity::new(Some(name), client_id))
        } else {
            Err(Refusal::BadCredentials)
        }
    }

    /// Whether `digest` is that of the password argon2 last accepted for `name`.
    fn was_verified(&self, name: &str, digest: &[u8; 32]) -> bool {
        self.lock_verified()
            .get(name)
            .is_some_and(|known| bool::from(known.ct_eq(digest)))
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, [u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hash a password for `name` is checked against, and whether the user exists: an
    /// unknown name gets the decoy, so it goes through the same argon2 check.
    fn hash_for(&self, name: &str) -> (Arc<HashedPassword>, bool) {
        match self.users.get(name) {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy.clone(), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::auth::tests::{PW_HASH, PW_HASH_2};

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const AWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

    fn auth(allow_anonymous: bool) -> Auth {
        let parse = |hash| HashedPassword::parse(hash).expect("a valid test hash");
        Auth::new(
            allow_anonymous,
            vec![("alice", parse(PW_HASH)), ("bob", parse(PW_HASH_2))],
        )
    }

    #[tokio::test]
    async fn users_connect_with_their_password_only() {
        let auth = auth(false);
        assert_eq!(
            auth.connect(Some("alice"), Some(b"pw"), "c1", HOME).await,
            Ok(Identity::new(Some("alice"), "c1"))
        );
        assert_eq!(
            auth.connect(Some("bob"), Some(b"pw"), "", HOME).await,
            Ok(Identity::new(Some("bob"), ""))
        );
        for (user, password) in [
            (Some("alice"), Some(&b"pw2"[..])),
            (Some("alice"), Some(b"")),
            (Some("alice"), None),
            (Some("Alice"), Some(b"pw")),
            (Some("carol"), Some(b"pw")),
            (Some(""), Some(b"pw")),
            (None, Some(b"pw")),
        ] {
            assert_eq!(
                auth.connect(user, password, "c1", HOME).await,
                Err(Refusal::BadCredentials),
                "{user:?} {password:?}"
            );
        }
    }

    #[tokio::test]
    async fn anonymous_clients_only_when_allowed_and_never_with_a_password() {
        assert_eq!(
            auth(false).connect(None, None, "c1", HOME).await,
            Err(Refusal::AnonymousNotAllowed)
        );
        let open = auth(true);
        assert_eq!(
            open.connect(None, None, "c1", HOME).await,
            Ok(Identity::new(None, "c1"))
        );
        assert_eq!(
            open.connect(None, Some(b"pw"), "c1", HOME).await,
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            open.connect(Some("carol"), Some(b"pw"), "c1", HOME).await,
            Err(Refusal::BadCredentials),
            "allowing anonymous clients lets no unknown user name in"
        );
        assert_eq!(
            open.verifier.idle_buffers(),
            1,
            "only the user name went through argon2"
        );
    }

    #[tokio::test]
    async fn an_unknown_user_is_checked_against_a_decoy_like_a_real_user() {
        let auth = auth(false);
        let (hash, known) = auth.hash_for("carol");
        assert!(!known);
        assert!(Arc::ptr_eq(&hash, &auth.decoy));
        assert_eq!(
            format!("{:?}", auth.decoy),
            format!("{:?}", auth.users["alice"]),
            "the decoy costs what the first user's hash costs"
        );
        let (hash, known) = auth.hash_for("alice");
        assert!(known);
        assert!(Arc::ptr_eq(&hash, &auth.users["alice"]));
        assert_eq!(auth.verifier.idle_buffers(), 0);
        assert_eq!(
            auth.connect(Some("carol"), Some(b"pw"), "c1", HOME).await,
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            auth.verifier.idle_buffers(),
            1,
            "the unknown user's check ran argon2 (its working memory is now pooled)"
        );
    }

    #[tokio::test]
    async fn a_password_verified_once_answers_before_the_limits() {
        let auth = auth(false);
        assert!(
            auth.connect(Some("alice"), Some(b"pw"), "c1", AWAY)
                .await
                .is_ok()
        );
        for _ in 0..6 {
            assert_eq!(
                auth.connect(Some("alice"), Some(b"guess"), "c1", HOME)
                    .await,
                Err(Refusal::BadCredentials)
            );
        }
        // alice is throttled from HOME, yet her known password still gets in at once.
        assert_eq!(
            auth.connect(Some("alice"), Some(b"pw"), "c9", HOME).await,
            Ok(Identity::new(Some("alice"), "c9"))
        );
        assert!(matches!(
            auth.connect(Some("alice"), Some(b"guess"), "c1", HOME)
                .await,
            Err(Refusal::Throttled(_))
        ));
        assert_eq!(
            auth.lock_verified().len(),
            1,
            "one entry per user that got in"
        );
    }

    #[tokio::test]
    async fn guessing_is_throttled_per_user_name_and_address() {
        let auth = auth(false);
        for _ in 0..5 {
            assert_eq!(
                auth.connect(Some("alice"), Some(b"guess"), "c1", HOME)
                    .await,
                Err(Refusal::BadCredentials)
            );
        }
        // The sixth failure starts the backoff; the right password is not even checked.
        assert_eq!(
            auth.connect(Some("alice"), Some(b"guess"), "c1", HOME)
                .await,
            Err(Refusal::BadCredentials)
        );
        let Err(Refusal::Throttled(Throttle::Backoff(wait))) =
            auth.connect(Some("alice"), Some(b"pw"), "c1", HOME).await
        else {
            panic!("alice from HOME must be throttled");
        };
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Elsewhere, and for other names here, nothing changed.
        assert!(
            auth.connect(Some("alice"), Some(b"pw"), "c2", AWAY)
                .await
                .is_ok()
        );
        assert!(
            auth.connect(Some("bob"), Some(b"pw"), "c3", HOME)
                .await
                .is_ok()
        );
        assert_eq!(
            auth.connect(Some("carol"), Some(b"pw"), "c4", HOME).await,
            Err(Refusal::BadCredentials)
        );
    }

    #[test]
    fn connecting_can_run_on_any_task() {
        fn send<T: Send>(_: &T) {}
        let auth = auth(true);
        let connecting = auth.connect(Some("alice"), Some(b"pw"), "c1", HOME);
        send(&connecting);
        fn shared<T: Send + Sync>(_: &T) {}
        shared(&auth);
    }

    #[test]
    fn refusals_map_to_each_versions_connack_codes() {
        let throttled = Refusal::Throttled(Throttle::Busy);
        let cases = [
            (Refusal::BadCredentials, 0x86, 0x04),
            (Refusal::AnonymousNotAllowed, 0x87, 0x05),
            (throttled, 0x9F, 0x03),
        ];
        for (refusal, v5, v311) in cases {
            assert_eq!(refusal.reason_code(Version::V5) as u8, v5, "{refusal}");
            assert_eq!(
                refusal.reason_code(Version::V311).to_v311_connack(),
                Some(v311),
                "{refusal}"
            );
        }
        assert_eq!(
            Refusal::Throttled(Throttle::Backoff(Duration::from_millis(1500))).to_string(),
            "too many failed logins for this user name from this address; try again in 2 s"
        );
    }
}
