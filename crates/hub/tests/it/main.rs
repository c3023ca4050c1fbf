//! The hub crate's integration tests, one binary: the protocol's reader, exactly
//! (`protocol`) and fuzzed (`protocol_fuzz`); a single hub over real sockets (`single`,
//! `limits`); nodes forming a cluster on a real Redis (`cluster`).

mod cluster;
mod harness;
mod limits;
mod protocol;
mod protocol_fuzz;
mod single;
