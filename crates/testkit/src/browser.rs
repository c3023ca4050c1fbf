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

/// `<target>/test-artifacts/NAME`, emptied and created: where a browser test leaves its
/// screenshots (only this run's, so a failure shot from an earlier run cannot mislead).
pub fn artifacts(name: &str) -> PathBuf {
    let dir = crate::pyenv::target_dir().join("test-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A Playwright script run by [`python`]: its stdout read as JSON lines (events), its stdin
/// for the test's answers, its stderr kept in a file for the failure message. Killed if
/// still running when dropped.
pub struct Script {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    events: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: PathBuf,
    name: String,
}

impl Script {
    /// Starts `path` with `args`, its stderr going to `stderr`.
    pub fn start(path: &Path, args: &[&str], stderr: PathBuf) -> Script {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(python())
            .arg(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("a file for the script's stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take().expect("piped stdin");
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Script {
            child,
            stdin,
            events,
            stderr,
            name,
        }
    }

    /// The next event the script prints (non-JSON lines are `null`), or `None` once it has
    /// exited; panics with its stderr and `context` after `patience` of silence.
    pub async fn next_event(
        &mut self,
        patience: std::time::Duration,
        context: impl FnOnce() -> String,
    ) -> Option<serde_json::Value> {
        let Ok(line) = tokio::time::timeout(patience, self.events.recv()).await else {
            panic!(
                "{} said nothing for {patience:?}; its stderr:\n{}\n{}",
                self.name,
                self.stderr_text(),
                context()
            );
        };
        let line = line?;
        eprintln!("{}: {line}", self.name);
        Some(serde_json::from_str(&line).unwrap_or(serde_json::Value::Null))
    }

    /// Answers the script with one line.
    pub fn answer(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").expect("the script reads its stdin");
        self.stdin.flush().expect("the script reads its stdin");
    }

    /// Waits for the script to exit: whether it succeeded.
    pub fn succeeded(&mut self) -> (bool, String) {
        let status = self.child.wait().expect("the script's exit status");
        (status.success(), format!("{status}"))
    }

    /// What the script wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
