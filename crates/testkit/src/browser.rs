//! Headless Chromium for tests of the pages lintas serves: Debian's `chromium` package,
//! driven by Playwright for Python from the venv of [`crate::pyenv`] (Playwright's own
//! browser download is never used). `scripts/test` installs both.

use std::path::{Path, PathBuf};

/// The Playwright release the venv holds; `scripts/test` installs this one.
pub const PLAYWRIGHT: &str = "1.65.2";

/// Debian's Chromium, which the scripts launch.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The venv's python, checked to import Playwright, with [`CHROMIUM`] installed; panics
/// saying how to get them.
pub fn python() -> PathBuf {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/test, or: apt-get install chromium"
    );
    crate::pyenv::python(
        "import playwright.sync_api",
        "Playwright",
        &format!("playwright=={PLAYWRIGHT}"),
    )
}

/// `<target>/test-artifacts/NAME`, created: where a browser test leaves its screenshots.
pub fn artifacts(name: &str) -> PathBuf {
    let dir = crate::pyenv::target_dir().join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
