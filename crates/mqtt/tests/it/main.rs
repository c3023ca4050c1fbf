//! The mqtt crate's integration tests, one binary: the codec's fuzz targets (round trip on
//! random and mutated packets, and the differential against rumqttc's decoders), the
//! topic index fuzzer, which holds the subscription tree, the per-client fan-out and the
//! retained store to a matcher written from the specification's text, the ACL's fuzzers,
//! which hold the relations between filters and the ACL's decisions to brute force over
//! that matcher; the cluster route table on Redis; and the conformance suites run with
//! third-party clients (paho-mqtt, mosquitto_pub/mosquitto_sub).

mod acl_fuzz;
mod cluster_routes;
mod codec_fuzz;
mod thirdparty;
mod topic_fuzz;
