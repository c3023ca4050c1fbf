//! The relay against real databases: the machine's PostgreSQL and MariaDB (a scratch
//! database per test) and SQLite files, over real sockets.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with the failing call's message"
)]

mod admin_api;
mod delivery;
mod destinations;
mod fuzz;
mod harness;
mod ingest;
mod metrics;
mod outage;
mod refusals;
mod secrets;
