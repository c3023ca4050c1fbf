//! Backends, pools and the strategies that choose between them.
//!
//! This crate holds every decision the proxy makes about *where* a connection or request goes,
//! and nothing about *how* it gets there: there is no I/O here, so every strategy and every
//! health transition is tested with plain unit and property tests.
//!
//! # Layout
//!
//! - [`Backend`] is one upstream address with its weight, administrative state, health and
//!   live counters (in-flight, requests, failures, latency). Counters are atomics: the hot path
//!   never locks.
//! - [`Lease`] is what a pick hands out. It holds the backend's in-flight count up for as long
//!   as the request or connection lives and gives it back on drop, so least-connections never
//!   sees a count that only grows.
//! - [`Strategy`] (in [`strategy`]) picks one eligible backend; one file per algorithm.
//! - [`Pool`] owns a set of backends and the strategy over them behind an `ArcSwap`, so
//!   strategy, weights and membership change at run time without touching connections in
//!   flight. It also owns the health state machine ([`health`]) and publishes every state
//!   change as a [`HealthEvent`] on a broadcast channel that other services subscribe to.
//! - The pool's queue (`queue`) holds requests while every eligible backend is at its
//!   `max_connections`, and hands each freed slot to the one that waited longest.
//! - [`RiseFall`] turns a run of check results into up or down; the backends' health and
//!   watch's own targets share it.
//! - [`RateMeter`] and [`ResponseTime`]: what the stats page shows of a backend's traffic
//!   (requests per second, measured response time); strategies never read them.

mod backend;
pub mod health;
mod pool;
mod queue;
pub mod rate;
pub mod response_time;
mod rise_fall;
pub mod strategy;

pub use backend::{AdminState, Backend, BackendSpec, BackendStats, Lease, MAX_WEIGHT, Outcome};
pub use health::{CheckResult, Health, HealthEvent, HealthPolicy, LastCheck};
pub use pool::{BackendSnapshot, Pool, PoolError, PoolSnapshot, PoolState};
pub use queue::{QueuePolicy, QueueSnapshot, Refusal};
pub use rate::RateMeter;
pub use response_time::ResponseTime;
pub use rise_fall::RiseFall;
pub use strategy::{HashKey, StrategyKind, hash_key};
