//! Throughput of the embedded durable stream: `cargo run --release -p backplane --example
//! log_bench -- DIR [SECONDS]`. Reports durable appends/s and append latency for concurrent
//! single-record producers, and records/s for batches of 100. Used by `bench/stream/run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backplane::{LogOptions, SegmentLog};
use bytes::Bytes;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: log_bench DIR [SECONDS]")?);
    let seconds: u64 = args.next().map_or(Ok(5), |s| s.parse())?;
    let record = Bytes::from(vec![b'x'; 200]);
    println!("| producers | records per append | appends/s | records/s | p50 ms | p99 ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (producers, per_append) in [(1, 1), (64, 1), (256, 1), (16, 100)] {
        let _ = std::fs::remove_dir_all(&dir);
        let log = SegmentLog::open(&dir, LogOptions::default())?;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..producers)
            .map(|_| {
                let (log, stop, record) = (log.clone(), stop.clone(), record.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        log.append(vec![record.clone(); per_append])
                            .await
                            .expect("append");
                        latencies.push(started.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        all.sort();
        let appends = all.len() as f64 / seconds as f64;
        let pct =
            |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "| {producers} | {per_append} | {appends:.0} | {:.0} | {:.2} | {:.2} |",
            appends * per_append as f64,
            pct(0.50),
            pct(0.99)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
