//! The mqtt crate's integration tests, one binary: the codec's fuzz targets (round trip on
//! random and mutated packets, and the differential against rumqttc's decoders) and the
//! topic index fuzzer, which holds the subscription tree, the per-client fan-out and the
//! retained store to a matcher written from the specification's text.

mod codec_fuzz;
mod topic_fuzz;
