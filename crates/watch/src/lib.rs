//! The watch service: what is up, what is down, and who is told.
//!
//! # Layout (being built; see docs/ARCHITECTURE.md)
//!
//! - [`engine`]: state changes into alerts — down, reminders while down, up, a flapping
//!   guard, silences and maintenance windows — as pure logic over explicit times.

pub mod engine;
