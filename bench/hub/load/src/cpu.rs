//! CPU time of processes from `/proc/PID/stat`: the servers' (their pids given by the
//! caller) and the tool's own, read right before publishing starts and right after the
//! drain, so a phase's CPU cost leaves out connecting 10,000 clients.

use anyhow::{Context, Result, bail};

/// utime + stime of `pid` (`"self"` for this process) in clock ticks.
fn ticks(pid: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Field 2 (comm) is in parentheses and may hold spaces; after the last ')' the fields
    // start at 3 (state), so utime (14) and stime (15) are the 12th and 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("no ')' in stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 13 || f[0] == "Z" {
        bail!("process {pid} has exited");
    }
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// The processes watched: the servers' pids and the tool itself.
pub struct Watch {
    pids: Vec<String>,
    clk_tck: f64,
}

/// CPU ticks of the servers together and of the tool at one moment.
pub struct Mark {
    servers: Option<u64>,
    tool: u64,
}

impl Watch {
    pub fn new(pids: &str, clk_tck: f64) -> Self {
        Watch {
            pids: pids
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            clk_tck,
        }
    }

    pub fn mark(&self) -> Result<Mark> {
        let servers = if self.pids.is_empty() {
            None
        } else {
            Some(self.pids.iter().map(|p| ticks(p)).sum::<Result<u64>>()?)
        };
        Ok(Mark {
            servers,
            tool: ticks("self")?,
        })
    }

    /// Seconds of CPU the servers (None without pids) and the tool used from `a` to `b`.
    pub fn seconds(&self, a: &Mark, b: &Mark) -> (Option<f64>, f64) {
        let s = |x: u64, y: u64| y.saturating_sub(x) as f64 / self.clk_tck;
        (
            a.servers.zip(b.servers).map(|(x, y)| s(x, y)),
            s(a.tool, b.tool),
        )
    }
}
