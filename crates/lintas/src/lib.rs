//! The `lintas` binary's library half: configuration, wiring and the demo.
//!
//! The binary only wires; every service lives in its own crate (`proxy`, `admin`, …). This
//! library exists so the integration tests can start a node in-process exactly as
//! `lintas run` does.
//!
//! # Layout
//!
//! - [`config`]: the TOML file — parse, validate, and position every error as
//!   `file:line:col`.
//! - [`run`]: start the configured services, reload on SIGHUP, drain on SIGINT/SIGTERM.
//! - [`watched`]: what the watch service follows by itself (proxy pools, relay destinations).
//! - [`demo`]: `lintas demo` and the demo backend it balances.

pub mod config;
pub mod demo;
pub mod run;
pub mod watched;
