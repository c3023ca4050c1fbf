//! The Python venv at `<target>/pyenv` that tests drive third-party clients with: paho-mqtt
//! ([`crate::paho`]) and Playwright ([`crate::browser`]).
//!
//! `scripts/test` makes it and installs what the tests need, so the system's Python is left
//! as it is. A venv without what a test needs is a failure that says how to get it, never a
//! skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's python, once `probe` (Python code that raises when the package is missing or
/// the wrong release) runs in it; panics naming `what` and the `pip install` of `package`
/// that fixes it.
pub fn python(probe: &str, what: &str, package: &str) -> PathBuf {
    let python = target_dir().join("pyenv/bin/python");
    let fix = format!(
        "run scripts/test, or: python3 -m venv {0} && {0}/bin/pip install {package}",
        python
            .parent()
            .and_then(Path::parent)
            .unwrap_or(&python)
            .display()
    );
    match Command::new(&python).args(["-c", probe]).output() {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "{} has no {what} ({}): {fix}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run {}: {e}: {fix}", python.display()),
    }
}

/// `CARGO_TARGET_DIR`, else the directory three levels above the running test binary
/// (`<target>/debug/deps/it-...`), which is where `scripts/test` puts the venv.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's own path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} is not under <target>/<profile>/deps", exe.display()))
}
