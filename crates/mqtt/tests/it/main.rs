//! The mqtt crate's integration tests, one binary: the codec's fuzz targets (round trip on
//! random and mutated packets, and the differential against rumqttc's decoders), the
//! topic index fuzzer, which holds the subscription tree, the per-client fan-out and the
//! retained store to a matcher written from the specification's text, and the ACL's
//! fuzzers, which hold the relations between filters and the ACL's decisions to brute
//! force over that matcher.

mod acl_fuzz;
mod codec_fuzz;
mod topic_fuzz;
