//! The hub: WebSocket rooms, direct messages, presence, history and recovery, its nodes
//! linked through the backplane (docs/hub-protocol.md is the wire protocol).
//!
//! # Layout
//!
//! - [`protocol`]: the frames clients send, read strictly; [`frames`]: those the hub sends.
//! - [`config`]: `[hub]`; [`token`]: HS256 tokens and room patterns.
//! - `listener`: HTTP, the WebSocket upgrade (origin check, permits), the publish API.
//! - `connection`: one connection's task — requests, queue, pings, closes.
//! - [`outbox`]: a connection's bounded queue; a full one closes it (slow consumer).
//! - [`hub`]: the node's rooms and users; `room`: one room's members, order and history.
//! - `cluster`: the link to other nodes through Redis (streams, channels, presence).
//! - [`stats`]: counters, `/metrics`; `service`: the [`service::Service`] impl and admin routes.

mod cluster;
pub mod config;
mod connection;
pub mod frames;
pub mod hub;
mod listener;
pub mod outbox;
pub mod protocol;
mod room;
mod service;
pub mod stats;
pub mod token;

pub use config::HubConfig;
pub use hub::Hub;
pub use service::Reloaded;
