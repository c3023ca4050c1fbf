//! The relay: applications POST records; lintas keeps them in a durable stream and delivers
//! each to every destination database that needs it, each taking only its own columns.
//!
//! # Layout
//!
//! Three parts, started together by [`Relay`] and sharing only what each is handed:
//!
//! - `objects`: applications, destinations and routes in the store, and the snapshot
//!   of them ([`catalog`]) that ingest and the workers read without touching the database.
//! - `ingest`: `POST /v1/records`: authenticate, check the records against the
//!   application's routes, append them to the [`stream`] (durable before the 202).
//! - `deliver`: one worker per destination reading the stream in order; [`batch`] turns
//!   entries into statements, [`destination`] writes them in one transaction with the
//!   stream offset, [`deliveries`] logs what was applied and keeps dead letters, [`status`]
//!   says how each destination is doing.
//!
//! Around them: [`sql`] builds statements for a destination's table at run time
//! (identifiers quoted per dialect, values bound as parameters), `admin` holds the
//! relay's admin routes (`/api/relay/...`), `telemetry` its metrics. The stream lives on
//! the node's backplane (`backplane::Stream`; see [`stream`]).

mod admin;
pub mod batch;
pub mod catalog;
pub mod config;
mod deliver;
pub mod deliveries;
pub mod destination;
mod ingest;
pub mod keys;
pub mod migrations;
mod objects;
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
