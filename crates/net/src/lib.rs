//! What every lintas listener shares, so that a lesson learned about slow or hostile clients
//! on one service protects them all.
//!
//! # Layout
//!
//! - [`WorkerThreads`] and [`Workers`]: one current-thread runtime per core, each accepting
//!   on its own `SO_REUSEPORT` socket of every listener ([`bind`]).
//! - [`Limits`]: the connection cap and the timeouts of one listener, with their defaults.
//! - [`Permits`]: connection slots taken before accepting, resizable on reload.
//! - [`accept_loop`]: permit, accept, retry accept errors with a backoff, hand over.
//! - [`Idle`]: an I/O wrapper that fails a connection on which nothing has moved for a
//!   while — the guard against silent clients, for protocols lintas does not parse itself.
//! - [`MinRate`]: the minimum data rate a body must keep after a grace period, which catches
//!   the client that dribbles a byte a second (an inactivity timeout never fires on it).
//! - [`serve_router`]: an axum router served with a permit taken *before* accept, hyper's
//!   head timeout, [`Idle`] on every connection and a graceful drain; the admin API and the
//!   relay's ingest are served this way. [`serve_connection`] is its one connection, for a
//!   listener that accepts on its own (the hub, on every worker), with the permit handed to
//!   an upgraded connection ([`UpgradePermit`]).
//! - [`tls`]: the TLS acceptor built from PEM files, for every listener that terminates TLS.
//! - [`probe`]: the TCP connect and HTTP GET of a health check, shared by the proxy's
//!   active checks and the targets watch checks itself.
//!
//! The proxy's own HTTP/1 loop applies the same [`Limits`] itself (it parses heads and
//! bodies byte by byte), and its h2 connections go through hyper with [`Idle`].

#![forbid(unsafe_code)]

mod accept;
mod idle;
mod limits;
mod permits;
pub mod probe;
mod rate;
mod serve;
pub mod tls;
mod workers;

pub use accept::accept_loop;
pub use idle::Idle;
pub use limits::Limits;
pub use permits::{Permit, Permits};
pub use rate::MinRate;
pub use serve::{UpgradePermit, serve_connection, serve_router};
pub use tls::TlsConfig;
pub use workers::{WorkerThreads, Workers, bind};
