//! The three client roles: connecting (plus subscribing), publishing and subscribing.
//!
//! A publisher writes batches of up to `BATCH` PUBLISH packets per `write_all`; at QoS 1 a
//! separate task reads the PUBACKs and the writer keeps at most `window` unacknowledged
//! messages outstanding. A subscriber reads whatever the socket has, counts every PUBLISH in
//! it and answers the QoS 1 ones with one write of all their PUBACKs. Progress every
//! subscriber makes is summed in [`Progress`], so the coordinator knows when the brokers
//! have delivered everything without waiting on a fixed sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, sleep_until, timeout};

use crate::packet::{self, PUBACK, PUBLISH, Reader, SUBACK};
use crate::tally::{self, Tally};

/// Keep-alive announced in CONNECT: longer than any phase, so no client needs PINGREQs and
/// idle connections stay silent.
const KEEP_ALIVE_S: u16 = 900;
/// Longest a connect + CONNACK (+ SUBACK) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a QoS 1 publisher waits for one PUBACK before it gives up on the broker.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections set up at once: enough to open 10,000 in seconds, few enough to stay
/// within a broker's listen backlog.
const CONNECT_CONCURRENCY: usize = 128;
/// PUBLISH packets per write.
const BATCH: u64 = 32;

/// Counters every subscriber adds to.
#[derive(Default)]
pub struct Progress {
    /// Measured messages received by all subscribers together.
    pub received: AtomicU64,
    /// Subscribers that have seen a probe.
    pub probed: AtomicUsize,
    /// Messages written by all publishers together.
    pub sent: AtomicU64,
    /// Woken whenever `received` grows (publishers wait on it for an end-to-end window).
    pub delivered: Notify,
}

/// The topic of publisher `index` (and of the probe, 0). Prefixed with the process id, so
/// messages a broker still holds from an earlier run never reach this run's subscribers.
pub fn topic(index: u32) -> String {
    format!("lb{}/{index}", std::process::id())
}

/// The filter every subscriber subscribes to: all of this run's publishers.
pub fn filter() -> String {
    format!("lb{}/+", std::process::id())
}

/// Writes a batch; a broker that takes none of it within `ACK_TIMEOUT` has stopped reading.
async fn send(wr: &mut OwnedWriteHalf, buf: &[u8]) -> Result<()> {
    timeout(ACK_TIMEOUT, wr.write_all(buf))
        .await
        .with_context(|| format!("broker read nothing for {ACK_TIMEOUT:?}"))??;
    Ok(())
}

/// Connects, sends CONNECT and waits for a successful CONNACK; with `filter`, also
/// subscribes and waits for a granted SUBACK.
pub async fn open(
    addr: &str,
    client_id: &str,
    filter: Option<(&str, u8)>,
) -> Result<(TcpStream, Reader)> {
    let setup = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut buf = Vec::new();
        packet::connect(&mut buf, client_id, KEEP_ALIVE_S);
        stream.write_all(&buf).await?;
        let mut reader = Reader::new();
        let (first, body) = reader.read_packet(&mut stream).await?;
        if first != packet::CONNACK || body.len() != 2 || body[1] != 0 {
            bail!("{addr} refused CONNECT of {client_id}: packet {first:#04x} {body:?}");
        }
        if let Some((filter, qos)) = filter {
            buf.clear();
            packet::subscribe(&mut buf, 1, filter, qos);
            stream.write_all(&buf).await?;
            let (first, body) = reader.read_packet(&mut stream).await?;
            if first != SUBACK || body.len() != 3 || body[2] > qos {
                bail!(
                    "{addr} refused SUBSCRIBE {filter} of {client_id}: packet {first:#04x} {body:?}"
                );
            }
        }
        Ok((stream, reader))
    };
    timeout(SETUP_TIMEOUT, setup).await.with_context(|| {
        format!("{client_id}: no CONNACK/SUBACK from {addr} within {SETUP_TIMEOUT:?}")
    })?
}

/// Opens `count` clients named `{role}-{i}-{pid}`, `CONNECT_CONCURRENCY` at a time; the
/// results are in index order.
pub async fn open_many(
    addr: &str,
    role: &str,
    count: usize,
    filter: Option<(&str, u8)>,
) -> Vec<Result<(TcpStream, Reader)>> {
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let pid = std::process::id();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let permits = Arc::clone(&permits);
            let addr = addr.to_owned();
            let id = format!("{role}-{i}-{pid}");
            let filter = filter.map(|(f, q)| (f.to_owned(), q));
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await?;
                open(&addr, &id, filter.as_ref().map(|(f, q)| (f.as_str(), *q))).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    for task in tasks {
        out.push(task.await.unwrap_or_else(|e| Err(e.into())));
    }
    out
}

/// What one publisher does.
pub struct PublishPlan {
    /// Index written into every payload and used in the topic `lb/{index}`.
    pub index: u32,
    /// 0 or 1.
    pub qos: u8,
    /// Unacknowledged QoS 1 messages allowed in flight.
    pub window: u64,
    /// Payload bytes (at least the tally header).
    pub size: usize,
    /// Messages per second; 0 = as fast as the broker takes them.
    pub rate: f64,
    /// End-to-end window: all publishers together stop while this many messages (per
    /// subscriber) are sent but not yet received; 0 = no window. Keeps a fan-out's queues
    /// bounded, so it measures what the broker sustains rather than how much it buffers.
    pub inflight: u64,
    /// Subscribers each message goes to (for `inflight`).
    pub subscribers: u64,
    /// The subscribers' shared counters.
    pub progress: Arc<Progress>,
    /// When the measurement starts (pacing is relative to it).
    pub start: Instant,
    /// When publishing stops.
    pub deadline: Instant,
}

/// Publishes until the deadline; returns how many messages were sent (and, at QoS 1,
/// acknowledged: it waits for every PUBACK).
pub async fn publish(stream: TcpStream, plan: PublishPlan) -> Result<u64> {
    let topic = topic(plan.index);
    let (mut rd, mut wr) = stream.into_split();
    let acked = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let acks = (plan.qos == 1).then(|| {
        let (acked, notify) = (Arc::clone(&acked), Arc::clone(&notify));
        tokio::spawn(async move {
            let mut reader = Reader::new();
            let ended: Result<()> = async {
                loop {
                    let mut n = 0;
                    while let Some((first, _)) = reader.next()? {
                        if first == PUBACK {
                            n += 1;
                        }
                    }
                    if n > 0 {
                        acked.fetch_add(n, Ordering::Release);
                        notify.notify_one();
                    }
                    if !reader.fill(&mut rd).await? {
                        bail!("broker closed the connection");
                    }
                }
            }
            .await;
            // Wakes a writer waiting for the window, which then finds this task finished.
            notify.notify_one();
            ended
        })
    });
    let mut payload = vec![0u8; plan.size];
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut seq = 0u64;
    let mut packet_id = 0u16;
    loop {
        let now = Instant::now();
        if now >= plan.deadline {
            break;
        }
        let mut n = BATCH;
        if plan.rate > 0.0 {
            let due = ((now - plan.start).as_secs_f64() * plan.rate) as u64 + 1;
            if due <= seq {
                let at = plan.start + Duration::from_secs_f64(seq as f64 / plan.rate);
                sleep_until(at.min(plan.deadline)).await;
                continue;
            }
            n = n.min(due - seq);
        }
        if plan.qos == 1 {
            let in_flight = seq - acked.load(Ordering::Acquire);
            if in_flight >= plan.window {
                if acks.as_ref().is_some_and(|a| a.is_finished()) {
                    break;
                }
                timeout(ACK_TIMEOUT, notify.notified())
                    .await
                    .with_context(|| format!("no PUBACK within {ACK_TIMEOUT:?}"))?;
                continue;
            }
            n = n.min(plan.window - in_flight);
        }
        if plan.inflight > 0 {
            let p = &plan.progress;
            let woken = p.delivered.notified();
            let in_flight = p
                .sent
                .load(Ordering::Acquire)
                .saturating_sub(p.received.load(Ordering::Acquire) / plan.subscribers);
            if in_flight >= plan.inflight {
                timeout(ACK_TIMEOUT, woken)
                    .await
                    .with_context(|| format!("nothing delivered within {ACK_TIMEOUT:?}"))?;
                continue;
            }
            n = n.min(plan.inflight - in_flight);
            p.sent.fetch_add(n, Ordering::AcqRel);
        }
        buf.clear();
        for _ in 0..n {
            tally::stamp(&mut payload, plan.index, seq);
            packet_id = packet_id.checked_add(1).unwrap_or(1);
            packet::publish(&mut buf, &topic, plan.qos, packet_id, &payload);
            seq += 1;
        }
        send(&mut wr, &buf).await?;
    }
    if let Some(acks) = acks {
        while acked.load(Ordering::Acquire) < seq {
            if acks.is_finished() {
                acks.await??;
                bail!("the PUBACK reader ended");
            }
            timeout(ACK_TIMEOUT, notify.notified())
                .await
                .with_context(|| {
                    format!(
                        "{} of {seq} messages unacknowledged after {ACK_TIMEOUT:?}",
                        seq - acked.load(Ordering::Acquire)
                    )
                })?;
        }
        acks.abort();
    }
    Ok(seq)
}

/// Counts every message until `stop` turns true; acknowledges QoS 1 deliveries.
pub async fn subscribe(
    mut stream: TcpStream,
    mut reader: Reader,
    publishers: usize,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Result<Tally> {
    let mut tally = Tally::new(publishers);
    let mut acks = Vec::new();
    loop {
        let mut counted = 0;
        let was_probed = tally.probed;
        while let Some((first, body)) = reader.next()? {
            if first & 0xf0 != PUBLISH {
                continue;
            }
            let p = packet::parse_publish(first, body)?;
            if tally.record(p.payload)? {
                counted += 1;
            }
            if p.qos == 1 {
                packet::puback(&mut acks, p.packet_id);
            }
        }
        if !was_probed && tally.probed {
            progress.probed.fetch_add(1, Ordering::Relaxed);
        }
        if counted > 0 {
            progress.received.fetch_add(counted, Ordering::AcqRel);
            progress.delivered.notify_waiters();
        }
        if !acks.is_empty() {
            stream.write_all(&acks).await?;
            acks.clear();
        }
        tokio::select! {
            more = reader.fill(&mut stream) => {
                if !more? {
                    bail!("broker closed a subscriber's connection");
                }
            }
            _ = stop.changed() => return Ok(tally),
        }
    }
}

/// Publishes probes to publisher 0's topic every 20 ms from a client of its own until `subscribers`
/// subscribers have seen one: from then on a subscription is live end to end (across
/// nodes too), so the measurement loses nothing to propagation.
pub async fn probe(
    addr: &str,
    subscribers: usize,
    progress: &Progress,
    limit: Duration,
) -> Result<()> {
    let (mut stream, _) = open(addr, &format!("probe-{}", std::process::id()), None).await?;
    let mut payload = vec![0u8; tally::HEADER];
    let mut buf = Vec::new();
    let deadline = Instant::now() + limit;
    let mut seq = 0;
    while progress.probed.load(Ordering::Relaxed) < subscribers {
        if Instant::now() >= deadline {
            bail!(
                "only {} of {subscribers} subscribers received a probe within {limit:?}",
                progress.probed.load(Ordering::Relaxed)
            );
        }
        tally::stamp(&mut payload, tally::PROBE, seq);
        seq += 1;
        buf.clear();
        packet::publish(&mut buf, &topic(0), 0, 0, &payload);
        stream.write_all(&buf).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
