//! CPU time of processes from `/proc/PID/stat`: the servers' (their pids given by the
//! caller) and the tool's own, read right before publishing starts and right after the
//! drain, so a phase's CPU cost leaves out connecting 10,000 clients; and the whole
//! machine's from `/proc/stat`, so the report can show what anything else used meanwhile.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

/// The span over which [`Watch::settle`] judges the servers quiet.
const QUIET_SPAN: Duration = Duration::from_millis(500);
/// Quiet: the servers together used at most this share of one core over [`QUIET_SPAN`].
const QUIET_SHARE: f64 = 0.1;
/// Quiet spans in a row that make the servers settled.
const QUIET_SPANS: u32 = 4;

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

/// Busy ticks of the whole machine (all cores): user, nice, system, irq, softirq, steal.
fn machine_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("/proc/stat's cpu line")?;
    if f.len() < 8 {
        bail!("/proc/stat's cpu line has {} fields", f.len());
    }
    // user nice system idle iowait irq softirq steal
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// The processes watched: the servers' pids and the tool itself.
pub struct Watch {
    pids: Vec<String>,
    clk_tck: f64,
}

/// CPU ticks of the servers together, of the tool and of the machine at one moment.
pub struct Mark {
    servers: Option<u64>,
    tool: u64,
    machine: u64,
}

/// CPU seconds between two marks.
pub struct Used {
    /// The servers together (None without pids).
    pub servers: Option<f64>,
    pub tool: f64,
    /// Every process on the machine, the kernel's interrupt work included.
    pub machine: f64,
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
            machine: machine_ticks()?,
        })
    }

    /// Waits until the servers are quiet (at most `QUIET_SHARE` of a core over each of
    /// `QUIET_SPANS` `QUIET_SPAN`s in a row), at most `limit`; whether they were. After
    /// 10,000 joins a server may still be working off their aftermath (the hub's presence
    /// events), and a measurement started then would time that rather than the messages; one
    /// quiet span was not enough (two lintas nodes had lulls between bursts of it).
    pub async fn settle(&self, limit: Duration) -> Result<bool> {
        if self.pids.is_empty() {
            return Ok(true);
        }
        let deadline = Instant::now() + limit;
        let mut before = self.mark()?;
        let mut quiet = 0;
        while Instant::now() < deadline {
            tokio::time::sleep(QUIET_SPAN).await;
            let now = self.mark()?;
            let used = self.used(&before, &now).servers.unwrap_or(0.0);
            if used <= QUIET_SHARE * QUIET_SPAN.as_secs_f64() {
                quiet += 1;
                if quiet == QUIET_SPANS {
                    return Ok(true);
                }
            } else {
                quiet = 0;
            }
            before = now;
        }
        Ok(false)
    }

    /// CPU seconds used from `a` to `b`.
    pub fn used(&self, a: &Mark, b: &Mark) -> Used {
        let s = |x: u64, y: u64| y.saturating_sub(x) as f64 / self.clk_tck;
        Used {
            servers: a.servers.zip(b.servers).map(|(x, y)| s(x, y)),
            tool: s(a.tool, b.tool),
            machine: s(a.machine, b.machine),
        }
    }
}
