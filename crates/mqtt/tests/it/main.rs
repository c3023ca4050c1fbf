//! The mqtt crate's integration tests, one binary: the codec's fuzz targets (round trip on
//! random and mutated packets, and the differential against rumqttc's decoders), the
//! topic index fuzzer, which holds the subscription tree, the per-client fan-out and the
//! retained store to a matcher written from the specification's text, the ACL's fuzzers
//! (filter relations and the ACL's decisions against brute force); the broker started
//! in-process and driven over TCP by raw packets, by rumqttc and by third-party clients
//! (paho-mqtt, mosquitto_pub/mosquitto_sub), and fuzzed with packet streams; and the
//! cluster on Redis: its route table, messages crossing nodes, sessions moving between them,
//! and the decoders of what nodes read back from the backplane, fuzzed.

mod access;
mod acl_fuzz;
mod broker_fuzz;
mod cluster;
mod cluster_fuzz;
mod cluster_routes;
mod codec_fuzz;
mod flow;
mod harness;
mod restart;
mod retained;
mod rumqttc_clients;
mod sessions;
mod shared;
mod thirdparty;
mod topic_fuzz;
mod transports;
mod v5;
