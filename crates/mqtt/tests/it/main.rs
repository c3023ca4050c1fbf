//! The mqtt crate's integration tests, one binary: the codec's fuzz targets (round trip on
//! random and mutated packets, and the differential against rumqttc's decoders), the
//! topic index fuzzer, which holds the subscription tree, the per-client fan-out and the
//! retained store to a matcher written from the specification's text, and the broker
//! started in-process and driven over TCP by raw packets and by rumqttc.

mod broker_fuzz;
mod codec_fuzz;
mod flow;
mod harness;
mod retained;
mod sessions;
mod shared;
mod third_party;
mod topic_fuzz;
mod v5;
