//! Browser sessions for the console: a login with the admin password opens one, a cookie
//! carries its id, and every change made through it needs a CSRF token derived from that id.
//!
//! Basic auth suits tools but not people: a browser keeps the credentials until it quits,
//! cannot log out, and a page that fetches with credentials in the URL shows nothing. So the
//! console logs in once (`POST /login`, same argon2 check and guess limits as basic auth) and
//! gets a random 256-bit id in an `HttpOnly; SameSite=Strict` cookie.
//!
//! - **Only a keyed digest of each id is kept** (the key is random per process), so the table
//!   holds nothing that can be replayed, and looking an id up compares digests an attacker
//!   cannot compute.
//! - **Ids expire**: after [`IDLE`] without a request, and [`LIFETIME`] after login whatever
//!   the activity, as PostgreSQL's pgAdmin or HAProxy's Data Plane API sessions do. At most
//!   [`MAX_SESSIONS`] live at once; past that the least recently used is closed. A restart
//!   forgets every session (the key changes), which only asks people to log in again.
//! - **CSRF token** = keyed digest of the id under another tag: the page reads it from
//!   `GET /api/session` and sends it in `X-CSRF-Token` on every change; a page on another site
//!   cannot read it (same-origin policy), so the cookie alone never changes anything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use super::keyed;

/// The cookie that carries a session's id.
pub const COOKIE: &str = "lintas_session";

/// A session unused for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// A session is closed this long after its login, however busy.
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Sessions open at once, at most: one per person and browser is the normal case.
pub const MAX_SESSIONS: usize = 256;

/// Domain separation of the digests made with the table's key.
const TAG_ID: u8 = 1;
const TAG_CSRF: u8 = 2;

#[derive(Debug, Clone, Copy)]
struct Times {
    opened: Instant,
    last_used: Instant,
}

impl Times {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_used) >= IDLE
            || now.saturating_duration_since(self.opened) >= LIFETIME
    }
}

/// The live sessions of one admin listener.
pub struct Sessions {
    /// Random per process; keys the id digests and derives CSRF tokens.
    key: [u8; 32],
    /// Keyed digest of an id → when it was opened and last used.
    live: Mutex<HashMap<[u8; 32], Times>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            key: rand::random(),
            live: Mutex::new(HashMap::new()),
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Times>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session at `now` and returns its id (43 URL-safe characters), to be sent once
    /// in the cookie and never kept.
    pub fn open(&self, now: Instant) -> String {
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let mut live = self.lock();
        live.retain(|_, t| !t.expired(now));
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, t)| t.last_used)
                .map(|(digest, _)| *digest)
        {
            live.remove(&oldest);
        }
        live.insert(
            keyed(&self.key, TAG_ID, id.as_bytes()),
            Times {
                opened: now,
                last_used: now,
            },
        );
        id
    }

    /// Whether `id` is a live session at `now`; a live one counts as used.
    pub fn touch(&self, id: &str, now: Instant) -> bool {
        let digest = keyed(&self.key, TAG_ID, id.as_bytes());
        let mut live = self.lock();
        match live.get_mut(&digest) {
            Some(t) if !t.expired(now) => {
                t.last_used = now;
                true
            }
            Some(_) => {
                live.remove(&digest);
                false
            }
            None => false,
        }
    }

    /// Closes `id` (logout); an unknown id is ignored.
    pub fn close(&self, id: &str) {
        self.lock().remove(&keyed(&self.key, TAG_ID, id.as_bytes()));
    }

    /// The CSRF token of session `id`.
    pub fn csrf_token(&self, id: &str) -> String {
        URL_SAFE_NO_PAD.encode(keyed(&self.key, TAG_CSRF, id.as_bytes()))
    }

    /// Whether `token` is session `id`'s CSRF token (compared in constant time).
    pub fn csrf_matches(&self, id: &str, token: &[u8]) -> bool {
        self.csrf_token(id).as_bytes().ct_eq(token).into()
    }

    /// Sessions open now (expired ones included until they are next looked at).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id in a request's `Cookie` headers, if any.
pub fn cookie_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_idle_or_lifetime_ends() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let id = sessions.open(t0);
        assert_eq!(id.len(), 43);
        assert!(sessions.touch(&id, t0 + IDLE - Duration::from_secs(1)));
        assert!(sessions.touch(&id, t0 + 2 * IDLE - Duration::from_secs(2)));
        assert!(!sessions.touch(&id, t0 + 3 * IDLE), "idle for a whole IDLE");
        assert!(
            sessions.is_empty(),
            "an expired session is dropped when seen"
        );

        let busy = sessions.open(t0);
        let mut now = t0;
        while now + IDLE / 2 < t0 + LIFETIME {
            now += IDLE / 2;
            assert!(sessions.touch(&busy, now));
        }
        assert!(!sessions.touch(&busy, t0 + LIFETIME), "past its lifetime");
    }

    #[test]
    fn ids_are_unguessable_closed_on_logout_and_capped() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.open(now);
        let b = sessions.open(now);
        assert_ne!(a, b);
        assert!(!sessions.touch("not-a-session", now));
        sessions.close(&a);
        assert!(!sessions.touch(&a, now));
        assert!(sessions.touch(&b, now));
        for i in 0..MAX_SESSIONS {
            sessions.open(now + Duration::from_millis(1 + i as u64));
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            !sessions.touch(&b, now),
            "the least recently used went first"
        );
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.open(now);
        let b = sessions.open(now);
        let token = sessions.csrf_token(&a);
        assert!(sessions.csrf_matches(&a, token.as_bytes()));
        assert!(!sessions.csrf_matches(&b, token.as_bytes()));
        assert!(!sessions.csrf_matches(&a, b""));
        assert_ne!(token, a, "the token is not the id");
        let other = Sessions::default();
        assert_ne!(other.csrf_token(&a), token, "keys differ per process");
    }

    #[test]
    fn the_id_is_read_from_any_cookie_header() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append("cookie", "theme=dark".parse().unwrap());
        headers.append(
            "cookie",
            "x=1; lintas_session=abc; lintas_sessionx=no"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie_id(&headers), Some("abc"));
        assert_eq!(cookie_id(&axum::http::HeaderMap::new()), None);
    }
}
