//! A Python client script of `tests/clients/` run as a process: its plan in a file, one
//! command a line on its standard input, one JSON event a line on its standard output, its
//! standard error in a file quoted when it fails. Killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::harness::TempDir;

/// A running client script.
pub struct Script {
    /// Its name in messages (and its files' prefix).
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    stderr: PathBuf,
}

impl Script {
    /// Runs `tests/clients/SCRIPT` with `plan` (written to `NAME.plan.json` in `dir`) under
    /// the test venv's Python.
    pub fn start(dir: &TempDir, name: &str, script: &str, plan: &Value) -> Self {
        let plan = dir.write(&format!("{name}.plan.json"), &plan.to_string());
        let stderr = dir.path().join(format!("{name}.stderr"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/clients")
            .join(script);
        let mut child = Command::new(testkit::paho::python_with_websockets())
            .arg(script)
            .arg(plan)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            stdin,
            events,
            stderr,
        }
    }

    /// The next event within `within`; `None` if none came. Panics, quoting the script's
    /// standard error, when it ended.
    pub async fn next_event(&mut self, within: Duration) -> Option<Value> {
        let event = tokio::time::timeout(within, self.events.recv())
            .await
            .ok()?;
        let Some(event) = event else {
            panic!(
                "{}: the script ended; its stderr:\n{}",
                self.name,
                self.stderr()
            );
        };
        Some(event)
    }

    /// What it wrote to its standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Writes `command` and a newline to its standard input.
    pub fn command(&mut self, command: &str) {
        writeln!(self.stdin, "{command}")
            .unwrap_or_else(|e| panic!("{}: cannot write {command:?}: {e}", self.name));
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
