//! What lintas nodes share.
//!
//! ARCHITECTURE.md names three things: durable streams with consumer groups (the relay's
//! records), pub/sub (hub rooms, MQTT routing, events) and a small key/value space. Each has
//! an embedded implementation for a single node and a Redis one for several. So far this
//! crate holds the embedded durable stream, [`SegmentLog`]; the `Backplane` trait arrives
//! with its second implementation (Redis Streams).

mod log;

pub use log::{Entry, LogError, LogOptions, MAX_RECORD, SegmentLog};
