//! `hub-load`: the one WebSocket client bench/hub/run drives the lintas hub and Socket.IO
//! with, speaking each one's protocol (`--proto lintas|socketio`, see `proto.rs`) and
//! otherwise doing exactly the same.
//!
//! Modes (`--mode`):
//! - `fanout`: `--clients` N clients over `--rooms` R rooms (client i joins room i mod R)
//!   on the nodes of `--addr` (a comma-separated list; client i goes to node (i div R) mod
//!   nodes, so every room has its members spread evenly and its first member on node 1).
//!   The first member of each of the first `--publishers` rooms publishes into it, at
//!   `--rate` messages/s over all publishers (taking turns, evenly spaced) or, with 0, as
//!   fast as its window allows: with `--inflight K` a publisher never has more than K
//!   messages not yet received by every member of its room. First every publisher sends
//!   probes until every member of its room got one (at most `--probe` s); with
//!   `--cpu-pids` the tool then waits until the servers are quiet (at most `--settle` s),
//!   so the joins' aftermath is not measured; then it publishes for `--duration` s and
//!   waits until every message arrived or none arrived for `--drain` s.
//! - `idle`: opens `--clients` clients the same way (connect + join), prints a line when
//!   all are up and holds them `--hold` s, answering pings (the caller reads the servers'
//!   memory meanwhile and then ends the tool).
//!
//! Prints one JSON line: messages sent, delivered (over all members), missing, duplicated,
//! sent/s, delivered/s (deliveries ÷ time from the start of publishing to the last one
//! received) and publish-to-deliver latency p50/p99/max in µs; with `--cpu-pids` also the
//! CPU seconds those processes (the servers) and the tool itself used from the start of
//! publishing to the end of the drain. Exit status 1 with a message on stderr when a client
//! cannot be set up.

mod client;
mod cpu;
mod proto;
mod tally;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use client::{Member, PublishPlan, Room, Spec};
use proto::Proto;
use tally::Tally;

/// Longest the drain may take in all, even while messages keep trickling in.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// How often a publisher repeats its probe until every member of its room got one.
const PROBE_EVERY: Duration = Duration::from_millis(200);

const USAGE: &str = "usage: hub-load --proto lintas|socketio --mode fanout|idle \
--addr HOST:PORT[,HOST:PORT...] [--clients N] [--rooms R] [--publishers P] [--rate MSG_PER_S] \
[--inflight K] [--duration S] [--pad BYTES] [--drain S] [--probe S] [--stall S] [--settle S] \
[--hold S] [--cpu-pids PID,PID] [--clk-tck N] [--label TEXT] [--threads T]";

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

    fn secs(&mut self, name: &str, default: f64) -> Result<Duration> {
        Ok(Duration::from_secs_f64(self.take(name, Some(default))?))
    }

    fn reject_rest(self) -> Result<()> {
        if let Some(key) = self.0.keys().next() {
            bail!("unknown option --{key}; {USAGE}");
        }
        Ok(())
    }
}

/// Who connects where: the layout both modes share.
struct Layout {
    proto: Proto,
    label: String,
    nodes: Vec<String>,
    clients: usize,
    rooms: usize,
}

impl Layout {
    fn room_name(&self, r: usize) -> String {
        format!("b{}-{r}", std::process::id())
    }

    fn specs(&self) -> Vec<Spec> {
        (0..self.clients)
            .map(|i| Spec {
                addr: self.nodes[(i / self.rooms) % self.nodes.len()].clone(),
                name: format!("c{i}"),
                room: self.room_name(i % self.rooms),
            })
            .collect()
    }

    fn rooms(&self) -> Vec<Arc<Room>> {
        (0..self.rooms)
            .map(|r| {
                let members = (self.clients + self.rooms - 1 - r) / self.rooms;
                Arc::new(Room::new(members as u64))
            })
            .collect()
    }

    /// Opens every client; fails with the first error and how many failed.
    async fn open(&self) -> Result<Vec<client::Ws>> {
        let results = client::open_many(self.proto, self.specs()).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(ws) => out.push(ws),
                Err(e) => bail!(
                    "{failed} of {} clients failed to set up; the first: {e:#}",
                    self.clients
                ),
            }
        }
        Ok(out)
    }
}

struct Fanout {
    publishers: usize,
    rate: f64,
    inflight: u64,
    duration: Duration,
    pad: usize,
    drain: Duration,
    probe: Duration,
    stall: Duration,
    settle: Duration,
    cpu: cpu::Watch,
}

fn main() {
    if let Err(e) = start() {
        // One line (the whole cause chain), so bench/hub/run can quote it in its report.
        eprintln!("hub-load: {e:#}");
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
    let addrs: String = args.take("addr", None)?;
    let layout = Layout {
        proto: args.take("proto", None)?,
        label: args.take("label", Some(String::new()))?,
        nodes: addrs.split(',').map(str::to_owned).collect(),
        clients: args.take("clients", Some(10_000))?,
        rooms: args.take("rooms", Some(100))?,
    };
    if layout.rooms == 0 || layout.clients < layout.rooms {
        bail!("need --rooms >= 1 and --clients >= --rooms");
    }
    match mode.as_str() {
        "idle" => {
            let hold = args.secs("hold", 600.0)?;
            args.reject_rest()?;
            idle(&layout, hold).await
        }
        "fanout" => {
            let f = Fanout {
                publishers: args.take("publishers", Some(layout.rooms))?,
                rate: args.take("rate", Some(0.0))?,
                inflight: args.take("inflight", Some(8))?,
                duration: args.secs("duration", 10.0)?,
                pad: args.take("pad", Some(64))?,
                drain: args.secs("drain", 3.0)?,
                probe: args.secs("probe", 20.0)?,
                stall: args.secs("stall", 5.0)?,
                settle: args.secs("settle", 15.0)?,
                cpu: cpu::Watch::new(
                    &args.take::<String>("cpu-pids", Some(String::new()))?,
                    args.take("clk-tck", Some(100.0))?,
                ),
            };
            args.reject_rest()?;
            if f.publishers == 0 || f.publishers > layout.rooms {
                bail!("--publishers must be 1..=--rooms (one publisher per room at most)");
            }
            if f.rate == 0.0 && f.inflight == 0 {
                bail!(
                    "--rate 0 needs --inflight >= 1: unpaced and unbounded would flood both servers"
                );
            }
            fanout(&layout, &f).await
        }
        _ => bail!("unknown --mode {mode:?}; {USAGE}"),
    }
}

/// Opens the clients, holds them, says when they are all up.
async fn idle(layout: &Layout, hold: Duration) -> Result<()> {
    let start = Instant::now();
    let sockets = layout.open().await?;
    let took = start.elapsed().as_secs_f64();
    let rooms = layout.rooms();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let count = sockets.len();
    for (i, ws) in sockets.into_iter().enumerate() {
        let room = Arc::clone(&rooms[i % layout.rooms]);
        tokio::spawn(client::serve(
            ws,
            layout.proto,
            Tally::new(None),
            room,
            None,
            stop_rx.clone(),
        ));
    }
    println!(
        "{}",
        json!({"mode": "idle", "label": layout.label, "proto": format!("{:?}", layout.proto),
               "nodes": layout.nodes.len(), "clients": layout.clients, "connected": count,
               "rooms": layout.rooms, "connect_s": round3(took)})
    );
    tokio::time::sleep(hold).await;
    Ok(())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

async fn fanout(layout: &Layout, f: &Fanout) -> Result<()> {
    let rooms = layout.rooms();
    let connect_start = Instant::now();
    let sockets = layout.open().await?;
    let connect_s = connect_start.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut outboxes = Vec::with_capacity(f.publishers);
    let mut members = Vec::with_capacity(sockets.len());
    for (i, ws) in sockets.into_iter().enumerate() {
        let r = i % layout.rooms;
        // Client r (r < publishers) is the first member of room r: its publisher.
        let inbox = if i < f.publishers {
            let (tx, rx) = mpsc::channel(64);
            outboxes.push(tx);
            Some(rx)
        } else {
            None
        };
        let publisher = (r < f.publishers).then_some(r as u32);
        members.push(tokio::spawn(client::serve(
            ws,
            layout.proto,
            Tally::new(publisher),
            Arc::clone(&rooms[r]),
            inbox,
            stop_rx.clone(),
        )));
    }
    let pad: Arc<str> = "x".repeat(f.pad).into();
    probe(layout, &rooms[..f.publishers], &outboxes, &pad, f.probe).await?;
    let settle_start = Instant::now();
    let settled = f.cpu.settle(f.settle).await?;
    let settle_s = settle_start.elapsed().as_secs_f64();

    let cpu_start = f.cpu.mark()?;
    let start = Instant::now();
    let start_ns = tally::now_ns();
    let deadline = start + f.duration;
    let publishers: Vec<_> = outboxes
        .into_iter()
        .enumerate()
        .map(|(r, outbox)| {
            tokio::spawn(client::publish(PublishPlan {
                proto: layout.proto,
                index: r as u32,
                room_name: layout.room_name(r),
                room: Arc::clone(&rooms[r]),
                pad: Arc::clone(&pad),
                rate: f.rate / f.publishers as f64,
                offset: if f.rate > 0.0 {
                    Duration::from_secs_f64(r as f64 / f.rate)
                } else {
                    Duration::ZERO
                },
                inflight: f.inflight,
                stall: f.stall,
                start,
                deadline,
                outbox,
            }))
        })
        .collect();
    let mut sent = Vec::with_capacity(f.publishers);
    let mut stalled = 0;
    for task in publishers {
        let p = task.await?;
        sent.push(p.sent);
        stalled += usize::from(p.stalled);
    }
    let publish_s = start.elapsed().as_secs_f64();

    let expected: u64 = sent
        .iter()
        .zip(&rooms)
        .map(|(s, room)| s * room.members)
        .sum();
    let received_now = || {
        rooms
            .iter()
            .map(|r| r.received.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let drain_start = Instant::now();
    let (mut last, mut quiet_since) = (u64::MAX, drain_start);
    loop {
        let received = received_now();
        if received >= expected || drain_start.elapsed() >= DRAIN_LIMIT {
            break;
        }
        if received != last {
            last = received;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= f.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_end = f.cpu.mark()?;
    let cpu_window_s = start.elapsed().as_secs_f64();
    stop_tx.send_replace(true);
    let used = f.cpu.used(&cpu_start, &cpu_end);

    let mut t = Totals::default();
    for task in members {
        t.add(task.await?, &sent);
    }
    let latency = tally::merged();
    let deliver_s = (t.last_ns.max(start_ns) - start_ns) as f64 / 1e9;
    let delivered = t.received - t.duplicates;
    let total_sent: u64 = sent.iter().sum();
    println!(
        "{}",
        json!({
            "mode": "fanout", "label": layout.label, "proto": format!("{:?}", layout.proto),
            "nodes": layout.nodes.len(), "clients": layout.clients, "rooms": layout.rooms,
            "publishers": f.publishers, "rate": f.rate, "inflight": f.inflight, "pad": f.pad,
            "connect_s": round3(connect_s), "settle_s": round3(settle_s), "settled": settled, "duration_s": round3(publish_s),
            "sent": total_sent, "expected": expected,
            "sent_min": sent.iter().min(), "sent_max": sent.iter().max(), "received": t.received,
            "missing": t.missing, "duplicates": t.duplicates, "replies": t.replies,
            "stalled_publishers": stalled, "refused": t.refused, "first_refusal": t.first_refusal,
            "ended_early": t.ended, "first_end": t.first_end,
            "sent_per_s": round3(total_sent as f64 / publish_s),
            "delivered_per_s": if deliver_s > 0.0 { round3(delivered as f64 / deliver_s) } else { 0.0 },
            "deliver_s": round3(deliver_s),
            "p50_us": latency.value_at_quantile(0.5), "p99_us": latency.value_at_quantile(0.99),
            "max_us": latency.max(),
            "server_cpu_s": used.servers.map(round3), "tool_cpu_s": round3(used.tool),
            "machine_cpu_s": round3(used.machine),
            "cpu_window_s": round3(cpu_window_s),
        })
    );
    Ok(())
}

/// Sends probes into every published room until every member of it got one.
async fn probe(
    layout: &Layout,
    rooms: &[Arc<Room>],
    outboxes: &[mpsc::Sender<String>],
    pad: &str,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let mut waiting = 0;
        for (r, (room, outbox)) in rooms.iter().zip(outboxes).enumerate() {
            if room.probed.load(Ordering::Relaxed) < room.members {
                waiting += 1;
                // A full outbox still holds an earlier probe: no need for another.
                let _ = outbox.try_send(client::probe(layout.proto, &layout.room_name(r), pad));
            }
        }
        if waiting == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let short: u64 = rooms
                .iter()
                .map(|r| r.members - r.probed.load(Ordering::Relaxed).min(r.members))
                .sum();
            bail!("{short} members in {waiting} rooms got no probe within {limit:?}");
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The members' counts added up.
#[derive(Default)]
struct Totals {
    received: u64,
    duplicates: u64,
    missing: u64,
    replies: u64,
    refused: u64,
    first_refusal: Option<String>,
    ended: u64,
    first_end: Option<String>,
    last_ns: u64,
}

impl Totals {
    fn add(&mut self, m: Member, sent: &[u64]) {
        self.received += m.tally.received;
        self.duplicates += m.tally.duplicates;
        self.missing += m.tally.missing(sent);
        self.last_ns = self.last_ns.max(m.tally.last_ns);
        self.replies += m.replies;
        self.refused += m.refused;
        if self.first_refusal.is_none() {
            self.first_refusal = m.first_refusal;
        }
        if let Some(why) = m.ended {
            self.ended += 1;
            self.first_end.get_or_insert(why);
        }
    }
}
