//! What lintas nodes share.
//!
//! ARCHITECTURE.md names three things: durable streams with consumer groups (the relay's
//! records), pub/sub (hub rooms, MQTT routing, events) and a small key/value space. Each has
//! an embedded implementation for a single node and a Redis one for several. So far this
//! crate holds the durable stream in both forms: [`SegmentLog`] (embedded) and
//! [`RedisStream`] (Redis Streams with consumer groups and leases); pub/sub and key/value
//! arrive with the services that need them.

pub mod config;
mod log;
pub mod redis_stream;

pub use config::BackplaneConfig;
pub use log::{Entry, LogError, LogOptions, MAX_RECORD, SegmentLog};
pub use redis_stream::{Appended, RedisError, RedisStream};
