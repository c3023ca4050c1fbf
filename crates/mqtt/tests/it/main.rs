//! The mqtt crate's integration tests, one binary: the codec's fuzz targets (round trip on
//! random and mutated packets, and the differential against rumqttc's decoders).

mod codec_fuzz;
