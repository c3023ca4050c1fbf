//! What makes several nodes one broker, on the backplane they share (see docs/mqtt.md,
//! "Cluster"): [`routes`], the table of which nodes subscribe to what.

pub mod routes;

pub use routes::{NodeId, RouteError, RouteTable};
