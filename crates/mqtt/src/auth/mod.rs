//! Who may connect ([`Auth`]) and what each client may publish and subscribe to ([`Acl`]),
//! from the `allow_anonymous`, `users` and `acl` keys of `[mqtt]` ([`AuthConfig`]).
//!
//! ```toml
//! [mqtt]
//! allow_anonymous = false            # the default
//!
//! [[mqtt.users]]
//! name = "sensor-gw"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # lintas hash-password
//!
//! [[mqtt.acl]]                       # Mosquitto: user sensor-gw / topic readwrite plant/#
//! user = "sensor-gw"
//! topic = "plant/#"
//! access = "readwrite"
//!
//! [[mqtt.acl]]                       # Mosquitto: pattern write devices/%u/%c/#
//! topic = "devices/%u/%c/#"
//! access = "write"
//! ```
//!
//! # Connecting
//!
//! A client without a user name is let in only with `allow_anonymous = true` (off by
//! default: lintas's defaults are closed). A user name must be one of `users`, and its
//! password must match that user's argon2 hash; unlike Mosquitto without a password file,
//! an unknown user name is refused even when anonymous clients are allowed, because ACL
//! rules name users and an unchecked name would claim their rules. A password without a
//! user name (MQTT 5.0 allows it) names nobody and is refused.
//!
//! Argon2 is slow on purpose (tens of milliseconds and ~19 MiB per check with the default
//! parameters), so [`Auth::connect`] runs it on tokio's blocking pool with the admin
//! listener's machinery ([`admin::auth`]): at most [`admin::auth::MAX_VERIFYING`] checks at
//! once sharing as many working memories, and per source a few free failures, then a wait
//! that doubles per failure up to 5 min, and at most two checks in flight. A source here
//! is a user name (as sent, known or not) with the client's address (IPv4, or IPv6 /64), so
//! one device guessing cannot lock its user out from elsewhere, nor another user out from a
//! shared address. A throttled CONNECT is answered at once, without argon2. An unknown user
//! name is checked against a decoy hash with the first user's parameters, so it costs what a
//! wrong password costs and timing tells no user names: give every user a hash made the
//! same way.
//!
//! Devices reconnect often, and in crowds after a network blip, so once argon2 has accepted
//! a user's password a keyed SHA-256 of it is remembered (one per user, the key random per
//! process): the same password again is let in at once, before any limit, so guessers
//! cannot keep a device with the right password out either. Only the first CONNECT per user
//! after a start or reload pays for argon2.
//!
//! The CONNACK answers ([`Refusal::reason_code`]):
//!
//! | refusal | MQTT 5.0 | MQTT 3.1.1 |
//! |---|---|---|
//! | wrong or unknown user name or password, password alone | 0x86 Bad User Name or Password | 0x04 |
//! | no user name, anonymous clients not allowed | 0x87 Not authorized | 0x05 |
//! | too many failures from this source lately | 0x9F Connection rate exceeded | 0x03 Server unavailable |
//!
//! A hash is made with `lintas hash-password` (reads the password on standard input, prints
//! an `$argon2id$v=19$...` PHC string; the admin listener's `password_hash` takes the same),
//! or with Debian's `argon2` tool: `echo -n 'the password' | argon2 "$(openssl rand -hex 8)"
//! -id -e`. Its cost parameters are part of the string: a broker whose clients reconnect in
//! thousands after a restart may choose cheaper ones (`-m 12 -t 2`), since every CONNECT
//! with a password costs one check.
//!
//! # Access control
//!
//! Rules are Mosquitto's `topic` and `pattern` lines: a topic filter, the user it is for
//! (none: every client, anonymous ones included) and `read`, `write`, `readwrite` or `deny`.
//! In the filter, `%u` stands for the client's user name and `%c` for its client identifier
//! (the one the broker assigned, if the client sent none). A client's rules are those for its
//! user plus those for everyone. With no rules at all, every client that connected may do
//! anything; once there is one rule, what is not allowed is denied, and `deny` wins over any
//! allow.
//!
//! - A PUBLISH to a name is allowed if a `write` or `readwrite` rule's filter matches the
//!   name and no `deny` rule's does. A PUBLISH to `$SYS` or below (and a will there) is
//!   refused whatever the rules, with no rules too, as Mosquitto does: those topics are the
//!   broker's statistics, and a client's message there would fool monitoring. The broker drops a refused one; at QoS 1 or 2 it
//!   answers PUBACK/PUBREC 0x87 Not authorized (5.0), or, for 3.1.1, which has no way to
//!   say it, acknowledges it as usual, as Mosquitto does.
//! - A SUBSCRIBE filter is allowed if a `read` or `readwrite` rule's filter covers it (matches
//!   every name it can match: `a/#` covers `a/b/#`, `a/+` does not cover `a/#`) and no `deny`
//!   rule's filter overlaps it. Mosquitto lets a subscription overlapping a deny rule through
//!   and then checks every message it delivers; lintas refuses it, so nothing is checked per
//!   delivered message and the client learns at once: subscribe to the allowed branches. For
//!   a shared subscription (`$share/{group}/{filter}`), the filter after the group is
//!   checked. The broker answers a refused filter with SUBACK 0x80 (3.1.1) or 0x87 Not
//!   authorized (5.0). Retained messages a subscription receives are covered by the same
//!   check; UNSUBSCRIBE is not checked (it only takes away).
//!
//! A user name or client identifier containing `+`, `#` or `/` would widen a rule it is
//! substituted into (`%u/#` for the user `a/b` would reach into user `a`'s topics), and so
//! would one starting a rule with `$` (`%c/#` for the client `$SYS` would reach `$SYS/#`).
//! As Mosquitto does for the first, such a value is not substituted: an allow rule with
//! that placeholder does not apply to the client, and a deny rule with it denies the client
//! everything (it cannot tell what the rule was meant to close). A rule with `%u` does not
//! apply to an anonymous client.

mod acl;
mod config;
mod login;

pub use acl::{Access, Acl};
pub use config::{AclRule, AuthConfig, RuleAccess, User};
pub use login::{Auth, Identity, Refusal};

#[cfg(test)]
pub(crate) mod tests {
    use super::{Acl, Auth, AuthConfig};

    /// Anonymous clients allowed, no rules: for unit tests of the broker's other parts.
    pub(crate) fn open() -> (Auth, Acl) {
        let cfg = AuthConfig {
            allow_anonymous: true,
            ..AuthConfig::default()
        };
        cfg.build(&configkit::KeyPath::root("mqtt"))
            .expect("an open configuration is valid")
    }

    /// Cheap argon2id hashes (64 KiB, one pass; `argon2 SALT -id -m 6 -t 1 -e`), so tests do
    /// not wait for argon2: of "pw", and of "pw" with another salt.
    pub(crate) const PW_HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$Hgsbc6FDwl/qbUWxDrr+ZjetYYKE+7fDe5btmNdDfm0";
    pub(crate) const PW_HASH_2: &str = "$argon2id$v=19$m=64,t=1,p=1$ZmVkY2JhOTg3NjU0MzIxMA$EnwlDvbUHhD0zfPAqEpchx/c6fFz5JRhphLtpDnZSyI";
}
