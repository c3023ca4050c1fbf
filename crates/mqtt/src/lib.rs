//! lintas's MQTT broker: MQTT 3.1.1 and 5.0 on one port, nodes forming one cluster through
//! the backplane (messages cross nodes; sessions moving between nodes is next). The
//! design, a message's path and the cluster: docs/mqtt.md.
//!
//! # Layout
//!
//! - [`codec`]: every control packet of both versions, decoded and encoded, with the
//!   size checked before anything is allocated.
//! - [`topic`]: topic names and filters as the specification allows them, the
//!   subscription tree that finds who a message goes to, and retained messages.
//! - [`auth`]: who may connect (users with argon2 hashes, guessing throttled) and what each
//!   client may publish and subscribe to (Mosquitto-style ACL rules).
//! - [`config`]: the `[mqtt]` section and what each limit does when reached.
//! - [`message`]: an application message as it is routed, queued and retained.
//! - [`session`]: one client's session (subscriptions, queue, messages in flight), the
//!   state the cluster will carry between nodes.
//! - [`broker`]: the node's sessions, subscriptions and retained messages, and
//!   [`Broker::route`], which hands a message to every matching local session.
//! - [`connection`]: one client connection as one task, CONNECT to close.
//! - [`will`]: wills, with their delay and cancellation.
//! - [`stats`]: counters, `/metrics` families and the `$SYS` numbers.
//! - [`transport`]: MQTT over WebSocket for browsers (and TLS through `net::tls`).
//! - [`cluster`]: what makes nodes sharing a backplane one broker — the route table, and
//!   messages forwarded to the nodes whose clients need them.
//! - `listener`: TCP, TLS, WebSocket and secure WebSocket listeners, one connection task.
//! - [`service`]: the broker as a lintas service (listeners, admin routes).
//!
//! `docs/mqtt.md` follows a message from a publisher to its subscribers through these.

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection;
mod listener;
pub mod message;
pub mod service;
pub mod session;
pub mod stats;
pub mod topic;
pub mod transport;
pub mod will;

pub use broker::Broker;
pub use config::MqttConfig;
