//! Host metrics: sampled every `metrics_interval` into a history kept for
//! `metrics_retention`, for the console's graphs and the bot's `/cpu`, `/ram`, `/disk`,
//! `/system` and `/top`.
//!
//! Sampling reads `/proc` through `sysinfo` on a blocking thread (it is file I/O), never on
//! the event loop.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sysinfo::{
    CpuRefreshKind, Disks, MemoryRefreshKind, Networks, ProcessRefreshKind, ProcessesToUpdate,
    RefreshKind, System,
};
use tokio_util::sync::CancellationToken;

use crate::now_ms;

/// One sample of the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// CPU use over the last interval, all cores, percent.
    pub cpu: f32,
    /// Per core, percent.
    pub cores: Vec<f32>,
    /// Memory in use, bytes.
    pub mem_used: u64,
    /// Memory in all, bytes.
    pub mem_total: u64,
    /// Swap in use, bytes.
    pub swap_used: u64,
    /// Swap in all, bytes.
    pub swap_total: u64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Bytes received per second over the last interval, all interfaces but loopback.
    pub net_rx_per_s: u64,
    /// Bytes sent per second.
    pub net_tx_per_s: u64,
    /// Mounted file systems.
    pub disks: Vec<DiskUse>,
}

/// A mounted file system's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskUse {
    /// Where it is mounted.
    pub mount: String,
    /// Bytes used.
    pub used: u64,
    /// Bytes in all.
    pub total: u64,
}

/// What does not change between samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Operating system, with version.
    pub os: String,
    /// Kernel version.
    pub kernel: String,
    /// CPU cores.
    pub cores: usize,
    /// Seconds since boot (at the time of asking).
    pub uptime_s: u64,
}

/// A process among the busiest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessUse {
    /// Process id.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// CPU, percent of one core.
    pub cpu: f32,
    /// Resident memory, bytes.
    pub mem: u64,
}

struct Sampler {
    system: System,
    disks: Disks,
    networks: Networks,
    last_at: i64,
}

impl Sampler {
    fn new() -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::everything()),
        );
        Self {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            last_at: now_ms(),
        }
    }

    fn sample(&mut self) -> Sample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let now = now_ms();
        let secs = ((now - self.last_at).max(1) as f64) / 1000.0;
        self.last_at = now;
        // Loopback traffic is the host talking to itself (a proxy and its local backends):
        // counted, it is both received and sent, so it would hide the real traffic.
        let (rx, tx) = self
            .networks
            .list()
            .iter()
            .filter(|(name, _)| !name.starts_with("lo"))
            .fold((0, 0), |(r, t), (_, n)| {
                (r + n.received(), t + n.transmitted())
            });
        let load = System::load_average();
        Sample {
            at_ms: now,
            cpu: self.system.global_cpu_usage(),
            cores: self
                .system
                .cpus()
                .iter()
                .map(sysinfo::Cpu::cpu_usage)
                .collect(),
            mem_used: self.system.used_memory(),
            mem_total: self.system.total_memory(),
            swap_used: self.system.used_swap(),
            swap_total: self.system.total_swap(),
            load: [load.one, load.five, load.fifteen],
            net_rx_per_s: (rx as f64 / secs) as u64,
            net_tx_per_s: (tx as f64 / secs) as u64,
            disks: self
                .disks
                .list()
                .iter()
                .map(|d| DiskUse {
                    mount: d.mount_point().display().to_string(),
                    used: d.total_space().saturating_sub(d.available_space()),
                    total: d.total_space(),
                })
                .collect(),
        }
    }
}

/// The sampled history and the sampler.
pub struct Metrics {
    history: Mutex<VecDeque<Sample>>,
    keep: usize,
    sampler: Mutex<Sampler>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A history of `retention / interval` samples.
    pub fn new(interval: Duration, retention: Duration) -> Arc<Self> {
        let keep = (retention.as_millis() / interval.as_millis().max(1)).max(1) as usize;
        Arc::new(Self {
            history: Mutex::new(VecDeque::with_capacity(keep.min(100_000))),
            keep,
            sampler: Mutex::new(Sampler::new()),
        })
    }

    /// Samples every `interval` until `cancel`.
    pub async fn run(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let me = self.clone();
            let Ok(sample) = tokio::task::spawn_blocking(move || me.lock_sampler().sample()).await
            else {
                continue;
            };
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if history.len() == self.keep {
                history.pop_front();
            }
            history.push_back(sample);
        }
    }

    fn lock_sampler(&self) -> std::sync::MutexGuard<'_, Sampler> {
        self.sampler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Samples taken at or after `since_ms`, oldest first.
    pub fn since(&self, since_ms: i64) -> Vec<Sample> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.at_ms >= since_ms)
            .cloned()
            .collect()
    }

    /// The latest sample, taking one if there is none yet.
    pub async fn latest(self: &Arc<Self>) -> Option<Sample> {
        if let Some(s) = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back()
        {
            return Some(s.clone());
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.lock_sampler().sample())
            .await
            .ok()
    }

    /// Host, OS, kernel, cores, uptime.
    pub fn info(&self) -> HostInfo {
        HostInfo {
            hostname: System::host_name().unwrap_or_default(),
            os: System::long_os_version().unwrap_or_default(),
            kernel: System::kernel_version().unwrap_or_default(),
            cores: self.lock_sampler().system.cpus().len(),
            uptime_s: System::uptime(),
        }
    }

    /// The `n` busiest processes by CPU (then memory).
    pub async fn top(self: &Arc<Self>, n: usize) -> Vec<ProcessUse> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut sampler = me.lock_sampler();
            let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
            sampler
                .system
                .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
            let mut list: Vec<ProcessUse> = sampler
                .system
                .processes()
                .values()
                // On Linux sysinfo lists every thread as a task beside its process, each
                // with the whole process's memory: only processes belong in a top list.
                .filter(|p| p.thread_kind().is_none())
                .map(|p| ProcessUse {
                    pid: p.pid().as_u32(),
                    name: p.name().to_string_lossy().into_owned(),
                    cpu: p.cpu_usage(),
                    mem: p.memory(),
                })
                .collect();
            list.sort_by(|a, b| b.cpu.total_cmp(&a.cpu).then(b.mem.cmp(&a.mem)));
            list.truncate(n);
            list
        })
        .await
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn task_ids() -> Vec<u32> {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    #[tokio::test]
    async fn top_lists_processes_not_their_threads() {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop_rx = Arc::new(Mutex::new(stop_rx));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let rx = stop_rx.clone();
                std::thread::spawn(move || {
                    let _ = rx.lock().map(|r| r.recv_timeout(Duration::from_secs(30)));
                })
            })
            .collect();
        let me = std::process::id();
        let tasks = task_ids();
        assert!(tasks.len() > 4, "{tasks:?}");
        let metrics = Metrics::new(Duration::from_secs(1), Duration::from_secs(1));
        let list = metrics.top(usize::MAX).await;
        let threads_listed: Vec<u32> = list
            .iter()
            .map(|p| p.pid)
            .filter(|pid| *pid != me && tasks.contains(pid))
            .collect();
        assert_eq!(threads_listed, Vec::<u32>::new());
        assert_eq!(list.iter().filter(|p| p.pid == me).count(), 1);
        drop(stop_tx);
        for t in threads {
            let _ = t.join();
        }
    }

    #[test]
    fn network_rates_leave_out_loopback() {
        const SENT: usize = 64 << 20;
        let mut sampler = Sampler::new();
        sampler.sample();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = vec![0; 1 << 16];
            let mut got = 0;
            while let Ok(n @ 1..) = s.read(&mut buf) {
                got += n;
            }
            got
        });
        let mut out = std::net::TcpStream::connect(addr).expect("connect");
        let chunk = vec![7u8; 1 << 16];
        for _ in 0..SENT / chunk.len() {
            out.write_all(&chunk).expect("write");
        }
        drop(out);
        assert_eq!(reader.join().expect("reader"), SENT);
        let before = sampler.last_at;
        let s = sampler.sample();
        let secs = ((s.at_ms - before).max(1) as f64) / 1000.0;
        let (rx, tx) = (s.net_rx_per_s as f64 * secs, s.net_tx_per_s as f64 * secs);
        // Other traffic may pass meanwhile, but not the 64 MiB sent over loopback.
        assert!(
            rx < (SENT / 2) as f64 && tx < (SENT / 2) as f64,
            "rx {rx} B, tx {tx} B"
        );
    }
}
