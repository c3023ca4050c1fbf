//! The `[mqtt]` section: where the broker listens and the limits it holds every client to.
//!
//! Every limit has a written behaviour when it is reached, because a broker meets greedy and
//! broken clients as a matter of course: connections wait in the kernel's backlog beyond
//! `max_connections`; a packet over `max_packet_size` closes its connection (DISCONNECT
//! 0x95 in 5.0); a client with more than `receive_maximum` QoS 1/2 messages unacknowledged
//! towards us is disconnected (0x93); a session's outbound messages beyond `max_inflight`
//! unacknowledged wait in its queue, and beyond `max_queued` waiting they are dropped and
//! counted — QoS 1 and 2 included, as Mosquitto does with `max_queued_messages`, because
//! the alternative (blocking publishers, or unbounded memory) lets one slow subscriber hurt
//! everyone else. A session holds at most `max_subscriptions` filters; a SUBSCRIBE
//! filter beyond them is refused alone (SUBACK 0x97), as EMQX does with its own
//! `max_subscriptions`, so one client cannot grow the subscription tree (and every node's
//! route table) without end.
//!
//! Sessions are capped in time too. A 5.0 client asks for a Session Expiry Interval and
//! gets at most `session_expiry_max`; a 3.1.1 client with `clean_session = 0` cannot say
//! how long it wants, so it gets `persistent_session_expiry` (one day by default). Mosquitto
//! keeps such sessions forever unless `persistent_client_expiration` is set; we cap them
//! because a client that goes away for good (a reinstalled device with a new id) would
//! otherwise hold its subscriptions and a queue of up to `max_queued` messages until the
//! next restart, and on a cluster until Redis is flushed.

use std::net::SocketAddr;
use std::time::Duration;

use configkit::{Issues, KeyPath};
use serde::Deserialize;

use crate::auth::{AclRule, AuthConfig, User};
use crate::topic::{DEFAULT_MAX_LEVELS, MAX_LEVELS_CEILING};

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Where clients connect (MQTT 3.1.1 and 5.0 on one port).
    pub listen: SocketAddr,
    /// Where clients connect over TLS (`tls` holds the certificate), e.g. `0.0.0.0:8883`.
    pub tls_listen: Option<SocketAddr>,
    /// Where browsers connect with MQTT over WebSocket, e.g. `127.0.0.1:8083`.
    pub ws_listen: Option<SocketAddr>,
    /// Where browsers connect with MQTT over secure WebSocket (`tls`).
    pub wss_listen: Option<SocketAddr>,
    /// The HTTP path of the WebSocket upgrade.
    pub ws_path: String,
    /// The certificate and key of `tls_listen` and `wss_listen`.
    pub tls: Option<net::TlsConfig>,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// CONNECT must arrive whole within this after the connection is accepted.
    #[serde(with = "configkit::duration")]
    pub connect_timeout: Duration,
    /// Largest packet accepted from a client, fixed header included; announced in 5.0's
    /// CONNACK.
    pub max_packet_size: u32,
    /// QoS 1 and 2 PUBLISH a client may have unacknowledged towards us; announced in 5.0's
    /// CONNACK, and a client exceeding it is disconnected (0x93).
    pub receive_maximum: u16,
    /// QoS 1 and 2 messages we send a session before waiting for acknowledgements; lowered
    /// to the client's Receive Maximum when it announces one.
    pub max_inflight: u16,
    /// Messages waiting per session beyond the in-flight window; when full, new ones are
    /// dropped and counted (QoS 1 and 2 too, as in Mosquitto).
    pub max_queued: usize,
    /// Subscriptions one session may hold: each costs memory and, in a cluster, an entry in
    /// every node's route table. A filter beyond it is refused with SUBACK 0x97 Quota
    /// exceeded (3.1.1: 0x80); subscribing again to a filter held replaces it and is let
    /// through.
    pub max_subscriptions: usize,
    /// Most levels a topic name or filter may have.
    pub max_topic_levels: usize,
    /// Longest keep alive a client may ask for, in seconds; a 5.0 client asking more (or 0)
    /// is told this in Server Keep Alive, a 3.1.1 client asking more (or 0: no keep alive)
    /// is refused (0x02), as Mosquitto 2 does: 3.1.1 has no way to tell it. 0 lifts the cap
    /// (Mosquitto's `max_keepalive 0`): every client keeps what it asks, 0 included, and a
    /// silent one then holds its connection until it goes.
    pub max_keep_alive: u16,
    /// Topic aliases a 5.0 client may use towards us; announced in CONNACK.
    pub topic_alias_maximum: u16,
    /// Cap on the Session Expiry Interval a 5.0 client asks for.
    #[serde(with = "configkit::duration")]
    pub session_expiry_max: Duration,
    /// How long a 3.1.1 `clean_session = 0` session outlives its connection.
    #[serde(with = "configkit::duration")]
    pub persistent_session_expiry: Duration,
    /// Most retained messages kept; a retained message to a new topic beyond it is routed
    /// but not retained (counted).
    pub max_retained: usize,
    /// How shared subscriptions hand a message to one member of their group.
    pub shared_strategy: SharedStrategy,
    /// How often `$SYS/broker/...` topics are published; 0 turns them off.
    #[serde(with = "configkit::duration")]
    pub sys_interval: Duration,
    /// In a cluster, how long the subscriptions of a node that died (or shut down) keep
    /// drawing messages into its inbox, for its sessions' clients to find on the node they
    /// reconnect to (`crate::cluster::adopt`). After it, the surviving nodes adopt the
    /// sessions whose clients have not come back, so that those keep receiving.
    #[serde(with = "configkit::duration")]
    pub dead_node_grace: Duration,
    /// Whether a client without a user name may connect (see [`crate::auth`]); off, so a
    /// broker is closed until someone opens it.
    pub allow_anonymous: bool,
    /// The user names clients may connect with, each with its password's argon2 hash.
    pub users: Vec<User>,
    /// Access rules (Mosquitto's `topic` and `pattern` lines); none: a client that
    /// connected may do anything.
    pub acl: Vec<AclRule>,
}

/// How one member of a shared subscription group is picked for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedStrategy {
    /// Every connected member in turn.
    RoundRobin,
    /// The connected member with the fewest messages in flight and queued.
    LeastInflight,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            tls_listen: None,
            ws_listen: None,
            wss_listen: None,
            ws_path: "/mqtt".into(),
            tls: None,
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1024 * 1024,
            receive_maximum: 100,
            max_inflight: 100,
            max_queued: 1000,
            max_subscriptions: 1024,
            max_topic_levels: DEFAULT_MAX_LEVELS,
            max_keep_alive: u16::MAX,
            topic_alias_maximum: 10,
            session_expiry_max: Duration::from_secs(7 * 24 * 3600),
            persistent_session_expiry: Duration::from_secs(24 * 3600),
            max_retained: 100_000,
            shared_strategy: SharedStrategy::RoundRobin,
            sys_interval: Duration::from_secs(10),
            dead_node_grace: Duration::from_secs(60),
            allow_anonymous: false,
            users: Vec::new(),
            acl: Vec::new(),
        }
    }
}

/// The smallest maximum packet size that still lets a client CONNECT with a modest will
/// and publish small messages; below it every client would fail in confusing ways.
const MIN_PACKET_SIZE: u32 = 128;

impl MqttConfig {
    /// Who may connect and what they may do, as the `auth` module reads it.
    pub fn auth(&self) -> AuthConfig {
        AuthConfig {
            allow_anonymous: self.allow_anonymous,
            users: self.users.clone(),
            acl: self.acl.clone(),
        }
    }

    /// Reports every problem of the section under `at`, without I/O.
    pub fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.max_connections == 0 {
            issues.push(at.key("max_connections"), "needs at least 1 connection");
        }
        if self.max_subscriptions == 0 {
            issues.push(
                at.key("max_subscriptions"),
                "must be at least 1 (no client could subscribe)",
            );
        }
        if self.dead_node_grace.is_zero() {
            issues.push(at.key("dead_node_grace"), "must be above zero");
        }
        if self.connect_timeout.is_zero() {
            issues.push(at.key("connect_timeout"), "must be above zero");
        }
        if !(MIN_PACKET_SIZE..=crate::codec::MAX_PACKET_SIZE).contains(&self.max_packet_size) {
            issues.push(
                at.key("max_packet_size"),
                format!(
                    "must be between {MIN_PACKET_SIZE} and {} bytes",
                    crate::codec::MAX_PACKET_SIZE
                ),
            );
        }
        for (key, value) in [
            ("receive_maximum", self.receive_maximum),
            ("max_inflight", self.max_inflight),
        ] {
            if value == 0 {
                issues.push(at.key(key), "must be at least 1");
            }
        }
        if !(1..=MAX_LEVELS_CEILING).contains(&self.max_topic_levels) {
            issues.push(
                at.key("max_topic_levels"),
                format!("must be between 1 and {MAX_LEVELS_CEILING}"),
            );
        }
        for (key, d) in [
            ("session_expiry_max", self.session_expiry_max),
            ("persistent_session_expiry", self.persistent_session_expiry),
        ] {
            if d.as_secs() > u64::from(u32::MAX) {
                issues.push(
                    at.key(key),
                    "must be at most 4294967295 seconds (MQTT's largest interval)",
                );
            }
        }
        for (key, addr) in [
            ("tls_listen", self.tls_listen),
            ("wss_listen", self.wss_listen),
        ] {
            if addr.is_some() && self.tls.is_none() {
                issues.push(
                    at.key(key),
                    "needs a certificate: add tls = { cert = \"...\", key = \"...\" } to [mqtt]",
                );
            }
        }
        if !self.ws_path.starts_with('/') {
            issues.push(at.key("ws_path"), "must start with /");
        }
        let mut bound: Vec<(&str, SocketAddr)> = vec![("listen", self.listen)];
        for (key, addr) in self.listeners().skip(1) {
            if let Some((first, _)) = bound.iter().find(|(_, a)| *a == addr && addr.port() != 0) {
                issues.push(
                    at.key(key),
                    format!("{addr} is already mqtt.{first}; give each listener its own port"),
                );
            }
            bound.push((key, addr));
        }
        self.auth().validate(at, issues);
    }

    /// Every listener's key and address, `listen` first.
    pub fn listeners(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> {
        [
            ("listen", Some(self.listen)),
            ("tls_listen", self.tls_listen),
            ("ws_listen", self.ws_listen),
            ("wss_listen", self.wss_listen),
        ]
        .into_iter()
        .filter_map(|(key, addr)| addr.map(|a| (key, a)))
    }

    /// `session_expiry_max` in the seconds MQTT counts in.
    pub(crate) fn session_expiry_max_secs(&self) -> u32 {
        secs(self.session_expiry_max)
    }

    /// `persistent_session_expiry` in the seconds MQTT counts in.
    pub(crate) fn persistent_session_secs(&self) -> u32 {
        secs(self.persistent_session_expiry)
    }
}

/// A validated duration in whole seconds.
fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(text: &str) -> Vec<String> {
        let cfg: MqttConfig = toml::from_str(text).expect("the section parses");
        let mut issues = Issues::default();
        cfg.validate(&KeyPath::root("mqtt"), &mut issues);
        issues
            .0
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect()
    }

    #[test]
    fn an_empty_section_is_the_defaults() {
        let cfg: MqttConfig = toml::from_str("").expect("empty parses");
        assert_eq!(cfg, MqttConfig::default());
        assert_eq!(cfg.listen, "127.0.0.1:1883".parse().expect("address"));
        assert_eq!(cfg.persistent_session_secs(), 86_400);
        assert_eq!(
            issues(""),
            [
                "mqtt.allow_anonymous: no client can connect: declare [[mqtt.users]] (name, \
              password_hash), or set allow_anonymous = true"
            ],
            "closed by default"
        );
        assert!(issues("allow_anonymous = true").is_empty());
    }

    #[test]
    fn durations_are_written_as_text() {
        let cfg: MqttConfig =
            toml::from_str("connect_timeout = \"2s\"\nsys_interval = \"0s\"").expect("parses");
        assert_eq!(cfg.connect_timeout, Duration::from_secs(2));
        assert!(cfg.sys_interval.is_zero());
    }

    #[test]
    fn every_bad_limit_is_reported_at_its_key() {
        assert_eq!(
            issues(
                "allow_anonymous = true\nmax_connections = 0\nconnect_timeout = \"0s\"\n\
                 max_packet_size = 10\n\
                 receive_maximum = 0\nmax_topic_levels = 5000\n\
                 session_expiry_max = \"200years\"\nmax_subscriptions = 0"
            ),
            [
                "mqtt.max_connections: needs at least 1 connection",
                "mqtt.max_subscriptions: must be at least 1 (no client could subscribe)",
                "mqtt.connect_timeout: must be above zero",
                "mqtt.max_packet_size: must be between 128 and 268435460 bytes",
                "mqtt.receive_maximum: must be at least 1",
                "mqtt.max_topic_levels: must be between 1 and 1000",
                "mqtt.session_expiry_max: must be at most 4294967295 seconds (MQTT's largest interval)",
            ]
        );
        assert!(
            issues("allow_anonymous = true\nmax_keep_alive = 0").is_empty(),
            "0 lifts the cap, as Mosquitto's max_keepalive 0 does"
        );
    }

    #[test]
    fn tls_listeners_need_a_certificate_and_every_listener_its_own_port() {
        assert_eq!(
            issues(
                "allow_anonymous = true\nlisten = \"127.0.0.1:1884\"\n\
                 tls_listen = \"127.0.0.1:8883\"\nws_listen = \"127.0.0.1:1884\"\n\
                 wss_listen = \"127.0.0.1:8883\"\nws_path = \"mqtt\""
            ),
            [
                "mqtt.tls_listen: needs a certificate: add tls = { cert = \"...\", key = \"...\" } to [mqtt]",
                "mqtt.wss_listen: needs a certificate: add tls = { cert = \"...\", key = \"...\" } to [mqtt]",
                "mqtt.ws_path: must start with /",
                "mqtt.ws_listen: 127.0.0.1:1884 is already mqtt.listen; give each listener its own port",
                "mqtt.wss_listen: 127.0.0.1:8883 is already mqtt.tls_listen; give each listener its own port",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<MqttConfig>("max_conections = 5").expect_err("typo refused");
        assert!(err.to_string().contains("max_conections"), "{err}");
    }
}
