//! The mqtt crate's integration tests: the topic index fuzzer, which holds the subscription
//! tree, the per-client fan-out and the retained store to a matcher written from the
//! specification's text.

mod topic_fuzz;
