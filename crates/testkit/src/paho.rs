//! The Python with paho-mqtt that MQTT tests drive third-party clients with, and with
//! websockets, that the hub's cluster tests do.
//!
//! The broker's conformance suite and the cluster tests run their scripts with [`python`],
//! the venv of [`crate::pyenv`] holding paho-mqtt [`PAHO`]; the hub's with
//! [`python_with_websockets`], the same venv holding websockets [`WEBSOCKETS`].

use std::path::PathBuf;

/// The paho-mqtt release the venv holds; `scripts/test` installs this one.
pub const PAHO: &str = "2.2.0";

/// The websockets release the venv holds; `scripts/test` installs this one.
pub const WEBSOCKETS: &str = "17.4";

/// The venv's python, checked to import paho-mqtt 2.x; panics saying how to get it.
pub fn python() -> PathBuf {
    crate::pyenv::python(
        "import paho.mqtt; assert paho.mqtt.__version__.startswith('2.')",
        "paho-mqtt 2.x",
        &format!("paho-mqtt=={PAHO}"),
    )
}

/// The venv's python, checked to import paho-mqtt 2.x and websockets; panics saying how to
/// get them.
pub fn python_with_websockets() -> PathBuf {
    crate::pyenv::python(
        "import websockets, paho.mqtt; assert paho.mqtt.__version__.startswith('2.')",
        "paho-mqtt 2.x and websockets",
        &format!("paho-mqtt=={PAHO} websockets=={WEBSOCKETS}"),
    )
}
