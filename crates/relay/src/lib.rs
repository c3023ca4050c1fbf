//! The relay: applications POST records; lintas keeps them in a durable stream and delivers
//! each to every destination database that needs it, each taking only its own columns.
//!
//! # Layout (being built; see docs/ARCHITECTURE.md)
//!
//! - [`sql`]: statements built at run time for a destination's table — identifiers quoted per
//!   dialect, values always bound as parameters, multi-row batches kept under each driver's
//!   parameter limit.
//! - [`admin`]: the relay's admin routes (`/api/relay/...`).
//! - `telemetry`: ingest and delivery counters, backlog and latency, in the node's metrics
//!   registry.
//!
//! The stream lives on the node's backplane (`backplane::Stream`; see [`stream`]).

pub mod admin;
pub mod catalog;
pub mod config;
pub mod deliver;
pub mod deliveries;
pub mod destination;
mod ingest;
pub mod keys;
pub mod migrations;
pub mod record;
mod replay;
pub mod secrets;
mod service;
pub mod sql;
pub mod status;
pub mod stream;
mod telemetry;

pub use config::RelayConfig;
pub use migrations::MIGRATIONS;
pub use service::{Relay, Reloaded};
