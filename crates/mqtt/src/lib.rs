//! lintas's MQTT broker: MQTT 3.1.1 and 5.0 on one port, nodes forming one cluster through
//! the backplane.
//!
//! # Layout (being built; see docs/MQTT.md)
//!
//! - [`auth`]: who may connect (users with argon2 hashes, guessing throttled) and what each
//!   client may publish and subscribe to (Mosquitto-style ACL rules).
//! - [`codec`]: every control packet of both versions, decoded and encoded, with the
//!   size checked before anything is allocated.
//! - [`topic`]: topic names and filters as the specification allows them, the
//!   subscription tree that finds who a message goes to, and retained messages.
//! - [`cluster`]: what makes nodes sharing a backplane one broker — the route table.
//! - [`transport`]: MQTT over WebSocket for browsers (and TLS through `net::tls`).

pub mod auth;
pub mod cluster;
pub mod codec;
pub mod topic;
pub mod transport;
