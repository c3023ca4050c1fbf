//! The Python with paho-mqtt that MQTT tests drive third-party clients with.
//!
//! The broker's conformance suite and the cluster tests both run their scripts with
//! [`python`], the venv of [`crate::pyenv`] holding paho-mqtt [`PAHO`].

use std::path::PathBuf;

/// The paho-mqtt release the venv holds; `scripts/test` installs this one.
pub const PAHO: &str = "2.2.0";

/// The venv's python, checked to import paho-mqtt 2.x; panics saying how to get it.
pub fn python() -> PathBuf {
    crate::pyenv::python(
        "import paho.mqtt; assert paho.mqtt.__version__.startswith('2.')",
        "paho-mqtt 2.x",
        &format!("paho-mqtt=={PAHO}"),
    )
}
