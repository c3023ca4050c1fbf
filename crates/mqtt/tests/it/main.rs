//! The mqtt crate's integration tests, one binary: the codec's fuzz targets (round trip on
//! random and mutated packets, and the differential against rumqttc's decoders) and the
//! topic index fuzzer, which holds the subscription tree, the per-client fan-out and the
//! retained store to a matcher written from the specification's text; and the conformance
//! suites run with third-party clients (paho-mqtt, mosquitto_pub/mosquitto_sub).

mod cluster_routes;
mod codec_fuzz;
mod thirdparty;
mod topic_fuzz;
