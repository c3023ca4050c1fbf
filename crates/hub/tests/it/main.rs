//! The hub crate's integration tests, one binary: the protocol's reader, exactly
//! (`protocol`), and fuzzed (`protocol_fuzz`).

mod protocol;
mod protocol_fuzz;
