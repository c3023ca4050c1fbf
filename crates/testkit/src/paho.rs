//! The Python with paho-mqtt and websockets that MQTT and hub tests drive third-party
//! clients with.
//!
//! `scripts/test` makes a venv at `<target>/pyenv` holding paho-mqtt [`PAHO`] and
//! websockets [`WEBSOCKETS`], so the system's Python is left as it is. The broker's conformance suite and the cluster tests
//! both run their scripts with [`python`]; a missing venv is a failure that says how to
//! make it, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The paho-mqtt release the venv holds; `scripts/test` installs this one.
pub const PAHO: &str = "2.2.0";

/// The websockets release the venv holds (the hub's tests' clients); `scripts/test`
/// installs this one.
pub const WEBSOCKETS: &str = "17.4";

/// The venv's python, checked to import paho-mqtt 2.x and websockets; panics saying how to
/// get them.
pub fn python() -> PathBuf {
    let python = target_dir().join("pyenv/bin/python");
    let fix = format!(
        "run scripts/test, or: python3 -m venv {0} && {0}/bin/pip install paho-mqtt=={PAHO} websockets=={WEBSOCKETS}",
        python
            .parent()
            .and_then(Path::parent)
            .unwrap_or(&python)
            .display()
    );
    let probe = Command::new(&python)
        .args([
            "-c",
            "import paho.mqtt, websockets; assert paho.mqtt.__version__.startswith('2.')",
        ])
        .output();
    match probe {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "{} has no paho-mqtt 2.x or no websockets ({}): {fix}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run {}: {e}: {fix}", python.display()),
    }
}

/// `CARGO_TARGET_DIR`, else the directory three levels above the running test binary
/// (`<target>/debug/deps/it-...`), which is where `scripts/test` puts the venv.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's own path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} is not under <target>/<profile>/deps", exe.display()))
}
