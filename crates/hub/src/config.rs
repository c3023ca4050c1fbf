//! The `[hub]` section: where the hub listens, who may connect, and the limits every
//! connection is held to.
//!
//! Each limit says what happens when it is reached, because a chat server meets scripts
//! that spam, tabs left open for days and phones on a bad network: a connection whose queue
//! reaches `max_queued` frames (a client that stopped reading) is closed with 4008 and
//! counted, so one slow reader never grows the node's memory nor delays its room; a frame
//! over `max_message` closes its connection (1009); publishes beyond `publish_rate` per
//! second are refused one by one (`rate_limited`); joins beyond `max_rooms` are refused
//! (`too_many_rooms`); connections beyond `max_connections` wait in the kernel's backlog.

use std::net::SocketAddr;
use std::time::Duration;

use configkit::{Issues, KeyPath};
use serde::Deserialize;

use crate::protocol::Room;
use crate::token::RoomPattern;

/// `[hub]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Where clients connect: the WebSocket at `/ws`, the chat page at `/chat`, the
    /// publish API at `/api/hub/publish`.
    pub listen: SocketAddr,
    /// Whether a client may connect with a name and no token; off, so a hub is closed
    /// until someone opens it.
    pub allow_anonymous: bool,
    /// The rooms anonymous clients may join: names, or prefixes ending in `*` (`"*"`: all).
    pub anonymous_rooms: Vec<RoomPattern>,
    /// The environment variable holding the secret tokens are signed with (HS256); the
    /// secret itself is never in the file.
    pub token_secret_env: Option<String>,
    /// The `Origin`s browsers may connect from (`https://chat.example.com`, or `"*"`);
    /// empty: only pages served by this host (the `Origin` names the `Host` asked for).
    /// Clients that send no `Origin` (not browsers) are not concerned.
    pub allowed_origins: Vec<String>,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest frame a client may send, in bytes; a larger one closes its connection (1009).
    pub max_message: usize,
    /// Frames waiting to be written to one connection; a connection that lets this many
    /// pile up is closed (4008) rather than allowed to grow the node's memory.
    pub max_queued: usize,
    /// Rooms one connection may be in at once.
    pub max_rooms: usize,
    /// Publishes and direct messages one connection may send per second (a burst of as
    /// many is allowed).
    pub publish_rate: u32,
    /// Bad frames in a row before the connection is closed (1008).
    pub max_errors: u32,
    /// The upgrade and the `connect` frame must both arrive within this.
    #[serde(with = "configkit::duration")]
    pub connect_timeout: Duration,
    /// How often the hub pings each connection.
    #[serde(with = "configkit::duration")]
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed (4002).
    #[serde(with = "configkit::duration")]
    pub pong_timeout: Duration,
    /// Messages kept per room for `history` and recovery.
    pub history_size: usize,
    /// How long a message stays in its room's history.
    #[serde(with = "configkit::duration")]
    pub history_ttl: Duration,
    /// In a cluster, how soon a dead node's users leave presence; each node renews its
    /// presence a few times within it.
    #[serde(with = "configkit::duration")]
    pub presence_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            allow_anonymous: false,
            anonymous_rooms: vec![RoomPattern::any()],
            token_secret_env: None,
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_message: 64 * 1024,
            max_queued: 1024,
            max_rooms: 100,
            publish_rate: 100,
            max_errors: 10,
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            history_size: 100,
            history_ttl: Duration::from_secs(600),
            presence_timeout: Duration::from_secs(10),
        }
    }
}

/// Smallest `max_message` that still holds a `connect` with a token and a short message.
const MIN_MESSAGE: usize = 1024;

/// Largest `max_message`: one frame is read whole into memory before it is parsed.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl HubConfig {
    /// Reports every problem of the section under `at`, without I/O.
    pub fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if !self.allow_anonymous && self.token_secret_env.is_none() {
            issues.push(
                at.key("token_secret_env"),
                "nobody could connect: name the environment variable holding the token secret, or set allow_anonymous = true",
            );
        }
        if let Some(var) = &self.token_secret_env
            && var.is_empty()
        {
            issues.push(at.key("token_secret_env"), "names no variable");
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                issues.push(
                    at.key("allowed_origins").index(i),
                    format!("{origin:?} is not an origin; write \"https://host[:port]\" or \"*\""),
                );
            }
        }
        if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&self.max_message) {
            issues.push(
                at.key("max_message"),
                format!("must be between {MIN_MESSAGE} and {MAX_MESSAGE} bytes"),
            );
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            ("max_queued", self.max_queued),
            ("max_rooms", self.max_rooms),
            ("history_size", self.history_size),
            ("publish_rate", self.publish_rate as usize),
            ("max_errors", self.max_errors as usize),
        ] {
            if value == 0 {
                issues.push(at.key(key), "must be at least 1");
            }
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("history_ttl", self.history_ttl),
            ("presence_timeout", self.presence_timeout),
        ] {
            if value.is_zero() {
                issues.push(at.key(key), "must be above zero");
            }
        }
        if self.presence_timeout < Duration::from_secs(1) {
            issues.push(
                at.key("presence_timeout"),
                "must be at least 1s (each node renews its presence several times within it)",
            );
        }
    }

    /// Whether an anonymous client may join `room`.
    pub(crate) fn anonymous_may_join(&self, room: &Room) -> bool {
        self.anonymous_rooms.iter().any(|p| p.matches(room))
    }

    /// How often this node renews its presence: four times per `presence_timeout`.
    pub(crate) fn presence_tick(&self) -> Duration {
        self.presence_timeout / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(cfg: &HubConfig) -> Vec<String> {
        let mut issues = Issues::default();
        cfg.validate(&KeyPath::root("hub"), &mut issues);
        issues
            .0
            .into_iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect()
    }

    #[test]
    fn the_default_is_closed_and_says_how_to_open_it() {
        assert_eq!(
            problems(&HubConfig::default()),
            [
                "hub.token_secret_env: nobody could connect: name the environment variable holding the token secret, or set allow_anonymous = true"
            ]
        );
        let open = HubConfig {
            allow_anonymous: true,
            ..HubConfig::default()
        };
        assert!(problems(&open).is_empty());
    }

    #[test]
    fn every_bad_limit_is_named() {
        let cfg = HubConfig {
            allow_anonymous: true,
            allowed_origins: vec!["chat.example.com".into(), "*".into()],
            max_message: 10,
            max_queued: 0,
            ping_interval: Duration::ZERO,
            presence_timeout: Duration::from_millis(200),
            ..HubConfig::default()
        };
        assert_eq!(
            problems(&cfg),
            [
                "hub.allowed_origins[0]: \"chat.example.com\" is not an origin; write \"https://host[:port]\" or \"*\"",
                "hub.max_message: must be between 1024 and 16777216 bytes",
                "hub.max_queued: must be at least 1",
                "hub.ping_interval: must be above zero",
                "hub.presence_timeout: must be at least 1s (each node renews its presence several times within it)",
            ]
        );
    }
}
