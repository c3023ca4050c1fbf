//! The backplane's tests: the compliance suite every backend passes (the same test
//! functions against the embedded backend and against the machine's Redis), what only one
//! backend does, the embedded log on a real file system, and the log's recovery fuzzer.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with the failing call's message"
)]

mod compliance;
mod embedded;
mod fuzz;
mod harness;
mod log;
mod redis;
