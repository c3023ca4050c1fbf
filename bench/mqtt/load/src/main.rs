//! `mqtt-load`: the one MQTT client bench/mqtt/run drives every broker with.
//!
//! Modes (`--mode`):
//! - `fanin`: `--publishers` N publish to `lb<pid>/{i}` as fast as the broker takes them
//!   (QoS 1: each keeps `--window` PUBACKs outstanding), one subscriber on `lb<pid>/+`.
//! - `fanout`: one publisher, `--subscribers` M subscribers on `lb<pid>/+`; with
//!   `--inflight K` the publisher never has more than K messages not yet received by every
//!   subscriber (any mode takes `--inflight`; `--rate` paces instead).
//! - `latency`: one publisher at `--rate` messages/s, one subscriber.
//! - `cross`: `latency` with the subscriber on `--sub-addr` (another cluster node).
//! - `idle`: open `--connections` C clients, print when all are CONNACKed, hold them
//!   `--hold` seconds (the caller reads the broker's memory meanwhile and then kills us).
//!
//! Every traffic mode connects and subscribes first, waits until a probe message reaches
//! every subscriber (at most `--probe` seconds, 20 by default), publishes for `--duration` seconds, then waits until every message
//! arrived or nothing arrived for `--drain` seconds. It prints one JSON line: messages
//! sent/received/missing/duplicated, sent/s, delivered/s (messages received ÷ time from the
//! start to the last one received, over all subscribers) and publish-to-deliver latency
//! p50/p99/max in µs. Exit status 1 with a message on stderr when a broker refuses or drops
//! a client.

mod client;
mod packet;
mod tally;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;
use tokio::time::Instant;

use client::{Progress, PublishPlan};

/// Longest the probe may take to reach every subscriber, unless `--probe` says otherwise.
const PROBE_LIMIT: f64 = 20.0;
/// Longest the drain may take in all, even while messages keep trickling in.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: mqtt-load --mode fanin|fanout|latency|cross|idle --addr HOST:PORT \
[--sub-addr HOST:PORT] [--publishers N] [--subscribers M] [--qos 0|1] [--window W] \
[--rate MSG_PER_S] [--inflight K] [--duration S] [--size BYTES] [--drain S] [--probe S] \
[--connections C] [--hold S] [--label TEXT] [--threads T]";

/// Command-line options as `--key value` pairs.
struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> Result<Self> {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(key) = it.next() {
            let Some(name) = key.strip_prefix("--") else {
                bail!("unexpected argument {key:?}; {USAGE}");
            };
            let value = it
                .next()
                .with_context(|| format!("--{name} needs a value; {USAGE}"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Args(map))
    }

    fn take<T: std::str::FromStr>(&mut self, name: &str, default: Option<T>) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match (self.0.remove(name), default) {
            (Some(v), _) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}")),
            (None, Some(d)) => Ok(d),
            (None, None) => bail!("--{name} is required; {USAGE}"),
        }
    }
}

/// A traffic phase's settings.
struct Traffic {
    mode: String,
    label: String,
    addr: String,
    sub_addr: String,
    publishers: usize,
    subscribers: usize,
    qos: u8,
    window: u64,
    rate: f64,
    inflight: u64,
    duration: Duration,
    size: usize,
    drain: Duration,
    /// Longest the probe may take; the cross phase gives a cluster that does not forward
    /// a few seconds rather than the default 20.
    probe: Duration,
}

fn main() {
    if let Err(e) = start() {
        // One line (the whole cause chain), so bench/mqtt/run can quote it in its report.
        eprintln!("mqtt-load: {e:#}");
        std::process::exit(1);
    }
}

fn start() -> Result<()> {
    let mut args = Args::parse()?;
    let threads: usize = args.take("threads", Some(0))?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        rt.worker_threads(threads);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(mut args: Args) -> Result<()> {
    let mode: String = args.take("mode", None)?;
    let label: String = args.take("label", Some(String::new()))?;
    let addr: String = args.take("addr", None)?;
    if mode == "idle" {
        let connections = args.take("connections", Some(10_000))?;
        let hold = args.take("hold", Some(600.0))?;
        reject_rest(args)?;
        return idle(&label, &addr, connections, Duration::from_secs_f64(hold)).await;
    }
    let (publishers, subscribers, rate) = match mode.as_str() {
        "fanin" => (4, 1, 0.0),
        "fanout" => (1, 1000, 0.0),
        "latency" | "cross" => (1, 1, 1000.0),
        _ => bail!("unknown --mode {mode:?}; {USAGE}"),
    };
    let sub_addr = args.take("sub-addr", Some(addr.clone()))?;
    if mode == "cross" && sub_addr == addr {
        bail!("--mode cross needs --sub-addr, another node than --addr");
    }
    let t = Traffic {
        label,
        addr,
        sub_addr,
        publishers: args.take("publishers", Some(publishers))?,
        subscribers: args.take("subscribers", Some(subscribers))?,
        qos: args.take("qos", Some(0))?,
        window: args.take("window", Some(64))?,
        rate: args.take("rate", Some(rate))?,
        inflight: args.take("inflight", Some(0))?,
        duration: Duration::from_secs_f64(args.take("duration", Some(10.0))?),
        size: args.take("size", Some(64))?,
        drain: Duration::from_secs_f64(args.take("drain", Some(3.0))?),
        probe: Duration::from_secs_f64(args.take("probe", Some(PROBE_LIMIT))?),
        mode,
    };
    reject_rest(args)?;
    if t.qos > 1
        || t.size < tally::HEADER
        || t.window == 0
        || t.publishers == 0
        || t.subscribers == 0
    {
        bail!(
            "need --qos 0|1, --size >= {}, --window/--publishers/--subscribers >= 1",
            tally::HEADER
        );
    }
    traffic(t).await
}

fn reject_rest(args: Args) -> Result<()> {
    if let Some(key) = args.0.keys().next() {
        bail!("unknown option --{key}; {USAGE}");
    }
    Ok(())
}

/// Opens the clients, holds them, says when they are all up.
async fn idle(label: &str, addr: &str, connections: usize, hold: Duration) -> Result<()> {
    let start = Instant::now();
    let results = client::open_many(addr, "idle", connections, None).await;
    let took = start.elapsed().as_secs_f64();
    let mut held = Vec::with_capacity(connections);
    let mut first_error = None;
    for r in results {
        match r {
            // Only the socket: each reader's 64 KiB buffer times 10,000 clients would be
            // 640 MiB of the tool's own memory on the machine the broker is measured on.
            Ok((stream, _reader)) => held.push(stream),
            Err(e) => {
                first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    println!(
        "{{\"mode\":\"idle\",\"label\":{},\"connections\":{connections},\"connected\":{},\"failed\":{},\"connect_s\":{took:.3},\"first_error\":{}}}",
        json_str(label),
        held.len(),
        connections - held.len(),
        first_error.as_deref().map_or("null".to_owned(), json_str),
    );
    tokio::time::sleep(hold).await;
    drop(held);
    Ok(())
}

async fn traffic(t: Traffic) -> Result<()> {
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut subscribers = Vec::with_capacity(t.subscribers);
    for conn in client::open_many(
        &t.sub_addr,
        "sub",
        t.subscribers,
        Some((&client::filter(), t.qos)),
    )
    .await
    {
        let (stream, reader) = conn.context("subscriber setup")?;
        subscribers.push(tokio::spawn(client::subscribe(
            stream,
            reader,
            t.publishers,
            Arc::clone(&progress),
            stop_rx.clone(),
        )));
    }
    let mut publishers = Vec::with_capacity(t.publishers);
    for conn in client::open_many(&t.addr, "pub", t.publishers, None).await {
        publishers.push(conn.context("publisher setup")?.0);
    }
    client::probe(&t.addr, t.subscribers, &progress, t.probe).await?;

    let start = Instant::now();
    let start_ns = tally::now_ns();
    let deadline = start + t.duration;
    let per_publisher = t.rate / t.publishers as f64;
    let tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            tokio::spawn(client::publish(
                stream,
                PublishPlan {
                    index: i as u32,
                    qos: t.qos,
                    window: t.window,
                    size: t.size,
                    rate: per_publisher,
                    inflight: t.inflight,
                    subscribers: t.subscribers as u64,
                    progress: Arc::clone(&progress),
                    start,
                    deadline,
                },
            ))
        })
        .collect();
    let mut sent = Vec::with_capacity(t.publishers);
    for (i, task) in tasks.into_iter().enumerate() {
        sent.push(task.await?.with_context(|| format!("publisher {i}"))?);
    }
    let publish_s = start.elapsed().as_secs_f64();

    let total_sent: u64 = sent.iter().sum();
    let expected = total_sent * t.subscribers as u64;
    let drain_start = Instant::now();
    let mut last = u64::MAX;
    let mut quiet_since = drain_start;
    loop {
        let received = progress.received.load(Ordering::Relaxed);
        if received >= expected || drain_start.elapsed() >= DRAIN_LIMIT {
            break;
        }
        if received != last {
            last = received;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= t.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send_replace(true);

    let mut latency = tally::histogram();
    let (mut received, mut duplicates, mut missing, mut last_ns) = (0u64, 0u64, 0u64, start_ns);
    for (i, task) in subscribers.into_iter().enumerate() {
        let tally = task.await?.with_context(|| format!("subscriber {i}"))?;
        received += tally.received;
        duplicates += tally.duplicates;
        missing += tally.missing(&sent);
        last_ns = last_ns.max(tally.last_ns);
        latency
            .add(&tally.latency)
            .context("merge latency histograms")?;
    }
    let deliver_s = (last_ns - start_ns) as f64 / 1e9;
    let delivered_per_s = if deliver_s > 0.0 {
        (received - duplicates) as f64 / deliver_s
    } else {
        0.0
    };
    println!(
        "{{\"mode\":{},\"label\":{},\"qos\":{},\"publishers\":{},\"subscribers\":{},\"size\":{},\"window\":{},\"rate\":{},\"inflight\":{},\"duration_s\":{:.3},\"sent\":{total_sent},\"expected\":{expected},\"received\":{received},\"missing\":{missing},\"duplicates\":{duplicates},\"sent_per_s\":{:.1},\"delivered_per_s\":{delivered_per_s:.1},\"deliver_s\":{deliver_s:.3},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        json_str(&t.mode),
        json_str(&t.label),
        t.qos,
        t.publishers,
        t.subscribers,
        t.size,
        t.window,
        t.rate,
        t.inflight,
        publish_s,
        total_sent as f64 / publish_s,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.max(),
    );
    Ok(())
}

/// A JSON string literal (labels and error messages only; both are short ASCII).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
