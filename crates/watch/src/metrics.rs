//! Host metrics: sampled every `metrics_interval` into a history kept in memory for
//! `metrics_retention`, and averaged into a history kept in the store, for the console's
//! graphs and the bot's `/cpu`, `/ram`, `/disk`, `/system` and `/top`.
//!
//! Sampling reads `/proc` through `sysinfo` on a blocking thread (it is file I/O), never on
//! the event loop.
//!
//! # Stored history
//!
//! The raw samples live only in memory: one every few seconds is too many rows to keep for a
//! month. So that the "last hour" and "last day" graphs are not empty after a restart, the
//! samples are downsampled as RRD files and Prometheus recording rules do, into the
//! [`TIERS`]: the mean of each minute, kept for a day, and of each quarter hour, kept for 30
//! days, in the store's `watch_host_samples` table (`resolution_s`, `at_ms`, `samples`,
//! `sample`). A mean is a [`Sample`] at its bucket's start: each field averaged over the
//! samples taken in the bucket, cores and load element-wise, disks by mount (over the
//! samples that saw the mount); percentages and loads are rounded to hundredths (the
//! stored JSON then reads back exactly), byte counts to the byte.
//!
//! A bucket's row is written once it closed, when the first sample of a later bucket is
//! taken; when sampling stops (shutdown) the open buckets are written as they are, so a
//! restart loses only the time the node was down. The row's `samples` counts the raw
//! samples it stands for: a node restarted within the bucket merges its own samples into
//! the stored mean, weighted by that count, and replaces the row. The watch's hourly prune
//! deletes the rows older than their tier's `keep`.
//!
//! At start the stored rows are loaded, and [`Metrics::since`] answers, oldest first, the
//! quarter hours that ended before the first minute it answers, the minutes that ended
//! before the first raw sample, then the raw samples: the finest series there is for each
//! part of the window, one point per instant.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use store::Store;
use sysinfo::{
    CpuRefreshKind, Disks, MemoryRefreshKind, Networks, ProcessRefreshKind, ProcessesToUpdate,
    RefreshKind, System,
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::now_ms;

/// One sample of the host, or the mean of the samples of a stored bucket (see the module's
/// documentation): the console and the bot read both alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A series of the stored history: the samples averaged over each `step`, kept for `keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// The bucket each mean stands for, in whole seconds: the store keys the rows by it
    /// (`resolution_s`), and buckets start at multiples of it since the Unix epoch.
    pub step: Duration,
    /// How long the means are kept, in the store and in memory.
    pub keep: Duration,
}

impl Tier {
    fn step_ms(&self) -> i64 {
        (self.step.as_millis() as i64).max(1)
    }

    fn resolution_s(&self) -> i64 {
        self.step.as_secs() as i64
    }

    /// The start of the bucket holding `at_ms`.
    fn bucket(&self, at_ms: i64) -> i64 {
        at_ms - at_ms.rem_euclid(self.step_ms())
    }
}

/// The stored history, finest first: a day of minutes for the "last hour" and "last day"
/// graphs, 30 days of quarter hours for longer looks back (96 points a day).
pub const TIERS: [Tier; 2] = [
    Tier {
        step: Duration::from_secs(60),
        keep: Duration::from_secs(24 * 3600),
    },
    Tier {
        step: Duration::from_secs(15 * 60),
        keep: Duration::from_secs(30 * 24 * 3600),
    },
];

/// A bucket's mean and how many raw samples it stands for (its weight when merged).
#[derive(Debug, Clone, PartialEq)]
struct Mean {
    sample: Sample,
    samples: u64,
}

/// The running sums of a bucket's samples, for their mean. Byte counts are summed as
/// integers so that a quarter hour of 100 ms samples of a large disk keeps its bytes exact.
#[derive(Debug, Clone, Default)]
struct Sums {
    start_ms: i64,
    samples: u64,
    cpu: f64,
    /// Per core: sum, samples that had the core.
    cores: Vec<(f64, u64)>,
    mem_used: u128,
    mem_total: u128,
    swap_used: u128,
    swap_total: u128,
    load: [f64; 3],
    net_rx_per_s: u128,
    net_tx_per_s: u128,
    /// Per mount, in the order first seen: used, total, samples that had the mount.
    disks: Vec<(String, u128, u128, u64)>,
}

impl Sums {
    fn new(start_ms: i64) -> Self {
        Self {
            start_ms,
            ..Self::default()
        }
    }

    /// Adds `s` as `weight` samples (a stored mean counts for the samples it stands for).
    fn add(&mut self, s: &Sample, weight: u64) {
        let (w, wf) = (u128::from(weight), weight as f64);
        self.samples += weight;
        self.cpu += f64::from(s.cpu) * wf;
        for (i, c) in s.cores.iter().enumerate() {
            if self.cores.len() <= i {
                self.cores.push((0.0, 0));
            }
            self.cores[i].0 += f64::from(*c) * wf;
            self.cores[i].1 += weight;
        }
        self.mem_used += u128::from(s.mem_used) * w;
        self.mem_total += u128::from(s.mem_total) * w;
        self.swap_used += u128::from(s.swap_used) * w;
        self.swap_total += u128::from(s.swap_total) * w;
        for (sum, l) in self.load.iter_mut().zip(s.load) {
            *sum += l * wf;
        }
        self.net_rx_per_s += u128::from(s.net_rx_per_s) * w;
        self.net_tx_per_s += u128::from(s.net_tx_per_s) * w;
        for d in &s.disks {
            let at = match self.disks.iter().position(|(m, ..)| *m == d.mount) {
                Some(at) => at,
                None => {
                    self.disks.push((d.mount.clone(), 0, 0, 0));
                    self.disks.len() - 1
                }
            };
            let sum = &mut self.disks[at];
            sum.1 += u128::from(d.used) * w;
            sum.2 += u128::from(d.total) * w;
            sum.3 += weight;
        }
    }

    /// The mean, at the bucket's start.
    fn mean(&self) -> Mean {
        let n = self.samples.max(1);
        let real = |sum: f64, n: u64| ((sum / n as f64) * 100.0).round() / 100.0;
        let bytes = |sum: u128, n: u64| {
            let n = u128::from(n.max(1));
            u64::try_from((sum + n / 2) / n).unwrap_or(u64::MAX)
        };
        Mean {
            sample: Sample {
                at_ms: self.start_ms,
                cpu: real(self.cpu, n) as f32,
                cores: self
                    .cores
                    .iter()
                    .map(|(c, k)| real(*c, *k) as f32)
                    .collect(),
                mem_used: bytes(self.mem_used, n),
                mem_total: bytes(self.mem_total, n),
                swap_used: bytes(self.swap_used, n),
                swap_total: bytes(self.swap_total, n),
                load: self.load.map(|l| real(l, n)),
                net_rx_per_s: bytes(self.net_rx_per_s, n),
                net_tx_per_s: bytes(self.net_tx_per_s, n),
                disks: self
                    .disks
                    .iter()
                    .map(|(mount, used, total, k)| DiskUse {
                        mount: mount.clone(),
                        used: bytes(*used, *k),
                        total: bytes(*total, *k),
                    })
                    .collect(),
            },
            samples: self.samples,
        }
    }
}

/// One tier in memory: the bucket being filled and the means of the closed ones (loaded
/// from the store at start, then as they close), oldest first.
#[derive(Debug)]
struct Series {
    tier: Tier,
    open: Option<Sums>,
    closed: VecDeque<Mean>,
}

impl Series {
    fn new(tier: Tier) -> Self {
        Self {
            tier,
            open: None,
            closed: VecDeque::new(),
        }
    }

    /// Adds `s` to its bucket; returns the mean of the bucket this closed, to be stored.
    /// A sample from before the open bucket (the clock stepped back) counts in the open
    /// bucket, so the series stays in order.
    fn add(&mut self, s: &Sample) -> Option<Mean> {
        let start = self.tier.bucket(s.at_ms);
        let closed = match &self.open {
            Some(open) if start <= open.start_ms => None,
            _ => self.close(),
        };
        self.open.get_or_insert_with(|| Sums::new(start)).add(s, 1);
        self.trim(s.at_ms);
        closed
    }

    /// Closes the open bucket, as it is; returns its mean, to be stored. A mean stored for
    /// the same bucket by an earlier run (stopped within it) is merged in.
    fn close(&mut self) -> Option<Mean> {
        let mut sums = self.open.take()?;
        if self
            .closed
            .back()
            .is_some_and(|m| m.sample.at_ms == sums.start_ms)
            && let Some(earlier) = self.closed.pop_back()
        {
            sums.add(&earlier.sample, earlier.samples);
        }
        let mean = sums.mean();
        self.closed.push_back(mean.clone());
        Some(mean)
    }

    /// Forgets the means older than the tier keeps, as of `now_ms`.
    fn trim(&mut self, now_ms: i64) {
        let cutoff = now_ms - self.tier.keep.as_millis() as i64;
        while self.closed.front().is_some_and(|m| m.sample.at_ms < cutoff) {
            self.closed.pop_front();
        }
    }
}

/// The raw samples and the tiers' means.
#[derive(Debug)]
struct History {
    raw: VecDeque<Sample>,
    /// At most this many raw samples.
    keep: usize,
    /// Finest first.
    series: Vec<Series>,
}

impl History {
    fn new(keep: usize, tiers: &[Tier]) -> Self {
        Self {
            raw: VecDeque::with_capacity(keep.min(100_000)),
            keep,
            series: tiers.iter().copied().map(Series::new).collect(),
        }
    }

    /// Adds a raw sample; returns the means of the buckets it closed, to be stored.
    fn push(&mut self, s: Sample) -> Vec<(Tier, Mean)> {
        let closed = self
            .series
            .iter_mut()
            .filter_map(|series| Some((series.tier, series.add(&s)?)))
            .collect();
        if self.raw.len() == self.keep {
            self.raw.pop_front();
        }
        self.raw.push_back(s);
        closed
    }

    /// Closes every open bucket (sampling stops); returns their means, to be stored.
    fn close(&mut self) -> Vec<(Tier, Mean)> {
        self.series
            .iter_mut()
            .filter_map(|series| Some((series.tier, series.close()?)))
            .collect()
    }

    /// The samples at or after `since_ms`, oldest first: each tier's means for the buckets
    /// that ended before the finer series begins (the coarsest first), then the raw ones.
    fn since(&self, since_ms: i64) -> Vec<Sample> {
        let mut until = self.raw.front().map_or(i64::MAX, |s| s.at_ms);
        let mut parts: Vec<Vec<Sample>> = Vec::with_capacity(self.series.len() + 1);
        parts.push(
            self.raw
                .iter()
                .filter(|s| s.at_ms >= since_ms)
                .cloned()
                .collect(),
        );
        for series in &self.series {
            let step = series.tier.step_ms();
            let part: Vec<Sample> = series
                .closed
                .iter()
                .map(|m| &m.sample)
                .filter(|s| s.at_ms >= since_ms && s.at_ms.saturating_add(step) <= until)
                .cloned()
                .collect();
            if let Some(first) = part.first() {
                until = first.at_ms;
            }
            parts.push(part);
        }
        parts.into_iter().rev().flatten().collect()
    }
}

/// The sampled history, its stored means and the sampler.
pub struct Metrics {
    history: Mutex<History>,
    sampler: Mutex<Sampler>,
    store: Store,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("keep", &self.lock_history().keep)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A history of `retention / interval` raw samples, averaged into `tiers` (finest
    /// first) stored in `store`, whose watch tables must be migrated. Nothing is read yet:
    /// [`Metrics::load`] does.
    pub fn new(interval: Duration, retention: Duration, tiers: &[Tier], store: Store) -> Arc<Self> {
        let keep = (retention.as_millis() / interval.as_millis().max(1)).max(1) as usize;
        Arc::new(Self {
            history: Mutex::new(History::new(keep, tiers)),
            sampler: Mutex::new(Sampler::new()),
            store,
        })
    }

    /// Reads the means stored by earlier runs that their tiers still keep, so the graphs
    /// start with them; returns how many. Called at start, before [`Metrics::run`]; an
    /// unreadable row is skipped with a warning.
    pub async fn load(&self) -> Result<usize, sqlx::Error> {
        let now = now_ms();
        let tiers: Vec<Tier> = self.lock_history().series.iter().map(|s| s.tier).collect();
        let mut loaded = Vec::with_capacity(tiers.len());
        for tier in &tiers {
            let rows: Vec<(i64, i64, String)> = sqlx::query_as(
                "SELECT at_ms, samples, sample FROM watch_host_samples
                 WHERE resolution_s = ? AND at_ms >= ? ORDER BY at_ms",
            )
            .bind(tier.resolution_s())
            .bind(now - tier.keep.as_millis() as i64)
            .fetch_all(self.store.pool())
            .await?;
            let means: VecDeque<Mean> = rows
                .into_iter()
                .filter_map(|(at_ms, samples, sample)| {
                    match serde_json::from_str::<Sample>(&sample) {
                        Ok(sample) => Some(Mean {
                            sample,
                            samples: samples.max(1) as u64,
                        }),
                        Err(e) => {
                            warn!(at_ms, error = %e, "a stored host sample is unreadable; skipped");
                            None
                        }
                    }
                })
                .collect();
            loaded.push(means);
        }
        let mut history = self.lock_history();
        let mut n = 0;
        for (series, means) in history.series.iter_mut().zip(loaded) {
            n += means.len();
            series.closed = means;
        }
        Ok(n)
    }

    /// Samples every `interval` until `cancel`, storing each tier's mean as its bucket
    /// closes; on `cancel`, stores the open buckets' means too.
    pub async fn run(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let me = self.clone();
            let Ok(sample) = tokio::task::spawn_blocking(move || me.lock_sampler().sample()).await
            else {
                continue;
            };
            let closed = self.lock_history().push(sample);
            self.write(closed).await;
        }
        let open = self.lock_history().close();
        self.write(open).await;
    }

    /// Stores means, replacing the rows of their buckets (a mean merged with a stored one).
    async fn write(&self, means: Vec<(Tier, Mean)>) {
        for (tier, mean) in means {
            let r = sqlx::query(
                "INSERT OR REPLACE INTO watch_host_samples (resolution_s, at_ms, samples, sample)
                 VALUES (?, ?, ?, ?)",
            )
            .bind(tier.resolution_s())
            .bind(mean.sample.at_ms)
            .bind(mean.samples as i64)
            .bind(serde_json::to_string(&mean.sample).unwrap_or_default())
            .execute(self.store.pool())
            .await;
            if let Err(e) = r {
                warn!(error = %e, "cannot store the host metrics' history");
            }
        }
    }

    fn lock_history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sampler(&self) -> std::sync::MutexGuard<'_, Sampler> {
        self.sampler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Samples at or after `since_ms`, oldest first: the stored means for the part of the
    /// window before the raw samples in memory begin (quarter hours before minutes), then
    /// the raw samples.
    pub fn since(&self, since_ms: i64) -> Vec<Sample> {
        self.lock_history().since(since_ms)
    }

    /// The latest raw sample, taking one if there is none yet.
    pub async fn latest(self: &Arc<Self>) -> Option<Sample> {
        if let Some(s) = self.lock_history().raw.back() {
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

/// Deletes the stored means older than their tier keeps, as of `now_ms`.
pub(crate) async fn prune(store: &Store, tiers: &[Tier], now_ms: i64) {
    for tier in tiers {
        let r = sqlx::query("DELETE FROM watch_host_samples WHERE resolution_s = ? AND at_ms < ?")
            .bind(tier.resolution_s())
            .bind(now_ms - tier.keep.as_millis() as i64)
            .execute(store.pool())
            .await;
        if let Err(e) = r {
            warn!(error = %e, "cannot prune the host metrics' history");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const MINUTE: Tier = TIERS[0];
    const QUARTER: Tier = TIERS[1];

    fn disk(mount: &str, used: u64, total: u64) -> DiskUse {
        DiskUse {
            mount: mount.into(),
            used,
            total,
        }
    }

    /// A sample at `at_ms` whose every percentage is `cpu` (cores `cpu` and `cpu + 1`),
    /// memory `mem` bytes (of 1000), and the root disk `mem` bytes used.
    fn sample(at_ms: i64, cpu: f32, mem: u64) -> Sample {
        Sample {
            at_ms,
            cpu,
            cores: vec![cpu, cpu + 1.0],
            mem_used: mem,
            mem_total: 1000,
            swap_used: 0,
            swap_total: 0,
            load: [f64::from(cpu), 1.0, 0.5],
            net_rx_per_s: mem * 2,
            net_tx_per_s: 7,
            disks: vec![disk("/", mem, 1000)],
        }
    }

    fn at_ms(samples: &[Sample]) -> Vec<i64> {
        samples.iter().map(|s| s.at_ms).collect()
    }

    #[test]
    fn buckets_start_on_multiples_of_the_step() {
        assert_eq!(MINUTE.bucket(0), 0);
        assert_eq!(MINUTE.bucket(59_999), 0);
        assert_eq!(MINUTE.bucket(60_000), 60_000);
        assert_eq!(MINUTE.bucket(1_700_000_999_999), 1_700_000_940_000);
        assert_eq!(QUARTER.bucket(1_700_000_999_999), 1_700_000_100_000);
        assert_eq!(QUARTER.bucket(1_700_001_000_000), 1_700_001_000_000);
        assert_eq!(MINUTE.resolution_s(), 60);
        assert_eq!(QUARTER.resolution_s(), 900);
    }

    /// Nothing is stored while the minute is open (59.999 s is still in it); the first
    /// sample of the next minute closes it with each field's exact mean.
    #[test]
    fn a_minute_is_stored_when_the_next_begins_with_every_fields_mean() {
        let mut series = Series::new(MINUTE);
        let mut third = sample(59_999, 33.0, 4);
        third.cores.push(50.0);
        third.disks.push(disk("/boot", 10, 100));
        third.load = [3.0, 2.0, 1.25];
        for s in [sample(0, 10.0, 1), sample(20_000, 20.0, 2), third] {
            assert_eq!(series.add(&s), None, "at {}", s.at_ms);
        }
        let closed = series
            .add(&sample(60_000, 90.0, 9))
            .expect("the first minute");
        assert_eq!(
            closed,
            Mean {
                sample: Sample {
                    at_ms: 0,
                    cpu: 21.0,
                    cores: vec![21.0, 22.0, 50.0],
                    // 7 / 3 bytes, to the byte.
                    mem_used: 2,
                    mem_total: 1000,
                    swap_used: 0,
                    swap_total: 0,
                    // (10 + 20 + 3) / 3, (1 + 1 + 2) / 3 and (0.5 + 0.5 + 1.25) / 3, to
                    // hundredths.
                    load: [11.0, 1.33, 0.75],
                    net_rx_per_s: 5,
                    net_tx_per_s: 7,
                    disks: vec![disk("/", 2, 1000), disk("/boot", 10, 100)],
                },
                samples: 3,
            }
        );
        assert_eq!(series.closed, [closed]);
        assert_eq!(series.close().map(|m| m.samples), Some(1));
    }

    /// A quarter hour takes every sample of its 15 minutes, whatever minute they fall in.
    #[test]
    fn a_quarter_hour_averages_all_its_samples() {
        let mut series = Series::new(QUARTER);
        for (i, at) in [0, 60_000, 899_999].into_iter().enumerate() {
            assert_eq!(series.add(&sample(at, i as f32, 3 * i as u64)), None);
        }
        let closed = series.add(&sample(900_000, 0.0, 0)).expect("a quarter");
        assert_eq!(
            (
                closed.sample.at_ms,
                closed.sample.cpu,
                closed.sample.mem_used
            ),
            (0, 1.0, 3)
        );
        assert_eq!(closed.samples, 3);
    }

    /// At shutdown the open minute is stored as it is; a run restarted within the same
    /// minute loads it and merges its own samples in, weighted by how many each stands for.
    #[test]
    fn a_partial_minute_is_kept_at_shutdown_and_merged_after_a_restart() {
        let mut before = Series::new(MINUTE);
        before.add(&sample(60_000, 10.0, 10));
        before.add(&sample(70_000, 20.0, 20));
        let stored = before.close().expect("the open minute");
        assert_eq!(
            (stored.sample.at_ms, stored.sample.cpu, stored.samples),
            (60_000, 15.0, 2)
        );
        assert_eq!(before.close(), None);

        let mut after = Series::new(MINUTE);
        after.closed.push_back(stored);
        assert_eq!(after.add(&sample(110_000, 45.0, 45)), None);
        let merged = after.add(&sample(120_000, 0.0, 0)).expect("the minute");
        assert_eq!(
            (
                merged.sample.at_ms,
                merged.sample.cpu,
                merged.sample.mem_used
            ),
            (60_000, 25.0, 25)
        );
        assert_eq!(merged.samples, 3);
        assert_eq!(after.closed, [merged]);
    }

    /// A sample stamped before the open bucket (the clock stepped back) counts in it.
    #[test]
    fn a_clock_stepped_back_does_not_reopen_a_closed_minute() {
        let mut series = Series::new(MINUTE);
        series.add(&sample(120_000, 10.0, 0));
        assert_eq!(series.add(&sample(30_000, 30.0, 0)), None);
        let closed = series.add(&sample(180_000, 0.0, 0)).expect("a minute");
        assert_eq!((closed.sample.at_ms, closed.sample.cpu), (120_000, 20.0));
    }

    #[test]
    fn means_older_than_their_tier_keeps_are_forgotten() {
        let mut series = Series::new(MINUTE);
        let day = MINUTE.keep.as_millis() as i64;
        series.add(&sample(0, 1.0, 0));
        series.add(&sample(60_000, 1.0, 0));
        series.add(&sample(day, 1.0, 0));
        assert_eq!(series.closed.front().map(|m| m.sample.at_ms), Some(0));
        series.add(&sample(day + 60_000, 1.0, 0));
        assert_eq!(
            series
                .closed
                .iter()
                .map(|m| m.sample.at_ms)
                .collect::<Vec<_>>(),
            [60_000, day]
        );
    }

    /// The raw samples keep `retention / interval` of them, and feed every tier.
    #[test]
    fn raw_samples_are_kept_as_many_as_retention_allows() {
        let mut history = History::new(2, &TIERS);
        for at in [0, 30_000, 60_000] {
            let closed = history.push(sample(at, 1.0, 1));
            let resolutions: Vec<_> = closed.iter().map(|(t, _)| t.resolution_s()).collect();
            assert_eq!(resolutions, if at == 60_000 { vec![60] } else { vec![] });
        }
        assert_eq!(at_ms(&history.since(0)), [30_000, 60_000]);
        let open: Vec<_> = history
            .close()
            .into_iter()
            .map(|(t, m)| (t.resolution_s(), m.sample.at_ms, m.samples))
            .collect();
        assert_eq!(open, [(60, 60_000, 1), (900, 0, 3)]);
    }

    /// Before the raw samples: the minutes that ended before the first of them, and before
    /// those, the quarter hours that ended before the first minute; nothing before
    /// `since_ms`.
    #[test]
    fn since_answers_quarter_hours_then_minutes_then_raw_samples() {
        const H: i64 = 3_600_000;
        let mut history = History::new(100, &TIERS);
        let mean = |at_ms| Mean {
            sample: sample(at_ms, 1.0, 1),
            samples: 1,
        };
        history.series[1].closed = [0, H / 4, H / 2, 3 * H / 4, H].map(mean).into();
        // Minutes from 0:40 to 1:01 (the last overlaps the first raw sample).
        history.series[0].closed = (40..=61).map(|m| mean(m * 60_000)).collect();
        for at in [H + 90_000, H + 95_000] {
            history.push(sample(at, 1.0, 1));
        }
        let minutes: Vec<i64> = (40..=60).map(|m| m * 60_000).collect();
        let want: Vec<i64> = [0, H / 4]
            .into_iter()
            .chain(minutes.iter().copied())
            .chain([H + 90_000, H + 95_000])
            .collect();
        assert_eq!(at_ms(&history.since(0)), want);
        assert_eq!(at_ms(&history.since(1)), want[1..]);
        assert_eq!(at_ms(&history.since(H)), want[want.len() - 3..]);
        assert_eq!(at_ms(&history.since(H + 91_000)), [H + 95_000]);

        let mut fresh = History::new(100, &TIERS);
        fresh.series[0].closed = [mean(0), mean(60_000)].into();
        assert_eq!(
            at_ms(&fresh.since(0)),
            [0, 60_000],
            "with no raw sample yet, every stored mean"
        );
    }

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
        let dir = testkit::TempDir::new();
        let store = Store::open(dir.path()).await.expect("store");
        let metrics = Metrics::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            &TIERS,
            store,
        );
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
