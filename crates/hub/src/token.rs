//! Who a client is and which rooms it may join: HS256 tokens (docs/hub-protocol.md,
//! "Tokens"), checked with `jsonwebtoken`, and the room patterns they and `[hub]
//! anonymous_rooms` grant.
//!
//! Only HS256 is accepted, whatever the token's header says: a token announcing `none` or
//! an asymmetric algorithm (the classic confusion attack, an RSA public key used as an HMAC
//! secret) is refused before any key is used. `exp` is required and checked without leeway
//! beyond a few seconds of clock skew between the application minting tokens and this
//! node; `nbf` is honoured when present.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::protocol::{MAX_USER, Room};

/// Clock difference allowed between whoever signs tokens and this node, in seconds.
const LEEWAY_SECS: u64 = 5;

/// A room name, or a prefix ending in `*` (`"team-*"`; `"*"` is every room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPattern(String);

impl RoomPattern {
    /// Every room.
    pub fn any() -> Self {
        Self("*".into())
    }

    /// `s` as a pattern, or why it is not one.
    pub fn parse(s: &str) -> Result<Self, String> {
        let name = s.strip_suffix('*').unwrap_or(s);
        if name.contains('*') {
            return Err(format!(
                "{s:?}: `*` may only end a room pattern (\"team-*\")"
            ));
        }
        if !name.is_empty() {
            Room::parse(name).map_err(|e| format!("{s:?}: {e}"))?;
        }
        Ok(Self(s.to_owned()))
    }

    /// Whether `room` is granted.
    pub fn matches(&self, room: &Room) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => room.as_str().starts_with(prefix),
            None => room.as_str() == self.0,
        }
    }
}

impl<'de> Deserialize<'de> for RoomPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client that proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id messages are sent to and presence lists.
    pub user: String,
    /// What presence shows.
    pub name: String,
    /// The rooms it may join; `None`: those `[hub] anonymous_rooms` grants.
    pub rooms: Option<Vec<RoomPattern>>,
}

impl Identity {
    /// An anonymous client named `name`: its id is the name behind `~`, which no token's
    /// `sub` may start with.
    pub fn anonymous(name: &str) -> Self {
        Self {
            user: format!("~{name}"),
            name: name.to_owned(),
            rooms: None,
        }
    }
}

/// The claims the hub reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    name: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
}

/// Checks tokens against the secret of `[hub] token_secret_env`.
pub struct Tokens {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens(HS256, secret withheld)")
    }
}

impl Tokens {
    /// Tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Who `token` says the client is, or why it is refused (the `unauthorized` error's
    /// message: it tells the client what to fix, and nothing about the secret).
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidSignature => "the token's signature is wrong".to_owned(),
                ErrorKind::InvalidAlgorithm => "the token must be signed with HS256".to_owned(),
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("the token has no {claim:?} claim")
                }
                ErrorKind::Json(e) => format!("the token's header or claims do not read: {e}"),
                _ => format!("the token does not read: {e}"),
            },
        )?;
        let Claims { sub, name, rooms } = data.claims;
        check_user("sub", &sub)?;
        if sub.starts_with('~') {
            return Err("the token's sub may not start with `~` (anonymous users' ids do)".into());
        }
        let name = name.unwrap_or_else(|| sub.clone());
        check_user("name", &name)?;
        let rooms = rooms
            .iter()
            .map(|r| RoomPattern::parse(r).map_err(|e| format!("the token's rooms: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Identity {
            user: sub,
            name,
            rooms: Some(rooms),
        })
    }
}

/// Checks a user id or name the way the protocol reads them.
pub(crate) fn check_user(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_USER {
        return Err(format!("the token's {what} has 1 to {MAX_USER} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("the token's {what} has a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("signed")
    }

    fn room(s: &str) -> Room {
        Room::parse(s).expect("a room")
    }

    #[test]
    fn a_good_token_names_the_user_and_its_rooms() {
        let tokens = Tokens::new(b"secret");
        let t = sign(
            &json!({"sub": "alice", "name": "Alice", "rooms": ["lobby", "team-*"], "exp": now() + 60}),
            b"secret",
        );
        let id = tokens.verify(&t).expect("accepted");
        assert_eq!((id.user.as_str(), id.name.as_str()), ("alice", "Alice"));
        let rooms = id.rooms.expect("rooms");
        let may = |r: &str| rooms.iter().any(|p| p.matches(&room(r)));
        assert!(may("lobby") && may("team-a") && may("team-"));
        assert!(!may("lobby2") && !may("ops") && !may("team"));
    }

    #[test]
    fn bad_tokens_say_what_is_wrong() {
        let tokens = Tokens::new(b"secret");
        let cases = [
            (
                sign(&json!({"sub": "a", "exp": now() - 60}), b"secret"),
                "the token has expired",
            ),
            (
                sign(&json!({"sub": "a", "exp": now() + 60}), b"other"),
                "the token's signature is wrong",
            ),
            (
                sign(&json!({"sub": "a"}), b"secret"),
                "the token has no \"exp\" claim",
            ),
            (
                sign(
                    &json!({"sub": "a", "exp": now() + 60, "nbf": now() + 3600}),
                    b"secret",
                ),
                "the token is not valid yet (nbf)",
            ),
            (
                sign(&json!({"sub": "~bob", "exp": now() + 60}), b"secret"),
                "the token's sub may not start with `~` (anonymous users' ids do)",
            ),
            (
                sign(
                    &json!({"sub": "a", "exp": now() + 60, "rooms": ["a*b"]}),
                    b"secret",
                ),
                "the token's rooms: \"a*b\": `*` may only end a room pattern (\"team-*\")",
            ),
        ];
        for (token, why) in cases {
            assert_eq!(tokens.verify(&token), Err(why.to_owned()));
        }
    }

    #[test]
    fn unsigned_and_other_algorithms_are_refused() {
        use base64::Engine;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let claims = b64(&json!({"sub": "a", "exp": now() + 60}));
        let tokens = Tokens::new(b"secret");
        for (alg, why) in [
            (
                "none",
                "the token's header or claims do not read: unknown variant `none`",
            ),
            ("HS512", "the token must be signed with HS256"),
            ("RS256", "the token must be signed with HS256"),
        ] {
            let token = format!("{}.{claims}.", b64(&json!({"alg": alg, "typ": "JWT"})));
            let refused = tokens.verify(&token).expect_err("refused");
            assert!(refused.starts_with(why), "{alg}: {refused}");
        }
    }

    #[test]
    fn anonymous_ids_cannot_meet_token_ids() {
        let id = Identity::anonymous("bob");
        assert_eq!((id.user.as_str(), id.name.as_str()), ("~bob", "bob"));
        assert_eq!(id.rooms, None);
    }
}
