//! One client connection: setting it up (WebSocket, connect, join), serving it (counting
//! messages, answering pings, writing what its publisher hands it) and publishing.
//!
//! Every connection is one task that owns its WebSocket. A publisher is a member like any
//! other (both servers deliver a publish to the publisher too) whose task also writes the
//! frames a separate pacing task ([`publish`]) sends it over a channel. Members add their
//! deliveries to their room's counter, which is what the pacing task's window waits on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::proto::{Incoming, PONG, Proto, clip};
use crate::tally::{self, PROBE, Seen, Tally};

pub type Ws = WebSocketStream<TcpStream>;

/// Longest a connection's setup (TCP, WebSocket upgrade, connect, join) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections set up at once: enough to open 10,000 in seconds, few enough to stay
/// within a server's listen backlog.
const CONNECT_CONCURRENCY: usize = 128;
/// Read buffer per connection: tungstenite allocates it up front (128 KiB by default,
/// 1.3 GB for 10,000 clients on the machine the servers are measured on) and zeroes the
/// free part before every read, so a small one costs the tool less per message; 4 KiB
/// still holds a few dozen message frames.
const READ_BUFFER: usize = 4 * 1024;

/// Where one client connects, as whom and which room it joins.
pub struct Spec {
    pub addr: String,
    pub name: String,
    pub room: String,
}

/// A room's shared counters.
#[repr(align(128))] // one cache line pair per room: members of different rooms never share
pub struct Room {
    /// Members, the publisher included.
    pub members: u64,
    /// Measured messages received by all members together.
    pub received: AtomicU64,
    /// Members that have seen a probe.
    pub probed: AtomicU64,
    /// The publisher waits until `received` reaches this; `u64::MAX` when it does not wait.
    wake_at: AtomicU64,
    wake: Notify,
}

impl Room {
    pub fn new(members: u64) -> Self {
        Room {
            members,
            received: AtomicU64::new(0),
            probed: AtomicU64::new(0),
            wake_at: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
        }
    }

    fn delivered(&self) {
        // SeqCst here and in `wait_for`: the publisher stores wake_at then loads received,
        // a member adds to received then loads wake_at; one of them sees the other.
        let n = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.wake_at.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Waits until `received` reaches `target`, at most until `until`; whether it did.
    async fn wait_for(&self, target: u64, until: Instant) -> bool {
        loop {
            self.wake_at.store(target, Ordering::SeqCst);
            if self.received.load(Ordering::SeqCst) >= target {
                self.wake_at.store(u64::MAX, Ordering::SeqCst);
                return true;
            }
            if tokio::time::timeout_at(until, self.wake.notified())
                .await
                .is_err()
            {
                self.wake_at.store(u64::MAX, Ordering::SeqCst);
                return self.received.load(Ordering::SeqCst) >= target;
            }
        }
    }
}

/// The next text frame; WebSocket pings are answered by tungstenite itself.
async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws
            .next()
            .await
            .context("the server closed the TCP connection")??
        {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Close(frame) => bail!("the server closed the WebSocket: {frame:?}"),
            Message::Binary(b) => bail!("a binary frame of {} bytes", b.len()),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// Reads until `want` holds for a frame, answering Engine.IO pings and skipping other
/// frames; a refusal ends the setup with the server's frame.
async fn expect(ws: &mut Ws, proto: Proto, what: &str, want: fn(&Incoming) -> bool) -> Result<()> {
    loop {
        let text = next_text(ws)
            .await
            .with_context(|| format!("waiting for {what}"))?;
        let incoming = proto.parse(&text)?;
        if want(&incoming) {
            return Ok(());
        }
        match incoming {
            Incoming::Ping => ws.send(Message::text(PONG)).await?,
            Incoming::Refused(frame) => bail!("refused while waiting for {what}: {}", clip(frame)),
            _ => {}
        }
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER)
}

/// Connects, opens the session as `spec.name` and joins `spec.room`.
pub async fn open(proto: Proto, spec: &Spec) -> Result<Ws> {
    let setup = async {
        let tcp = TcpStream::connect(&spec.addr)
            .await
            .with_context(|| format!("connect to {}", spec.addr))?;
        tcp.set_nodelay(true)?;
        let (mut ws, _) = client_async_with_config(proto.url(&spec.addr), tcp, Some(config()))
            .await
            .context("WebSocket upgrade")?;
        if proto.server_opens() {
            expect(&mut ws, proto, "the open packet", |i| {
                matches!(i, Incoming::Open)
            })
            .await?;
        }
        ws.send(Message::text(proto.connect(&spec.name))).await?;
        expect(&mut ws, proto, "connected", |i| {
            matches!(i, Incoming::Connected)
        })
        .await?;
        ws.send(Message::text(proto.join(&spec.room))).await?;
        expect(&mut ws, proto, "joined", |i| matches!(i, Incoming::Reply)).await?;
        anyhow::Ok(ws)
    };
    timeout(SETUP_TIMEOUT, setup)
        .await
        .with_context(|| format!("setup took longer than {SETUP_TIMEOUT:?}"))?
        .with_context(|| format!("{} at {}", spec.name, spec.addr))
}

/// Opens every client, `CONNECT_CONCURRENCY` at a time; the results are in `specs` order.
pub async fn open_many(proto: Proto, specs: Vec<Spec>) -> Vec<Result<Ws>> {
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let tasks: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            let permits = Arc::clone(&permits);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await?;
                open(proto, &spec).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap_or_else(|e| Err(e.into())));
    }
    out
}

/// How one connection ended and what it counted.
pub struct Member {
    pub tally: Tally,
    /// Answers to its publishes (publishers only).
    pub replies: u64,
    /// Refusals the server sent (`error` frames, Socket.IO disconnects).
    pub refused: u64,
    pub first_refusal: Option<String>,
    /// Why it ended before the tool stopped it: the server closed it, or a frame made no
    /// sense.
    pub ended: Option<String>,
}

/// Serves one connection until `stop` turns true or the connection ends.
pub async fn serve(
    mut ws: Ws,
    proto: Proto,
    tally: Tally,
    room: Arc<Room>,
    mut outbox: Option<mpsc::Receiver<String>>,
    mut stop: watch::Receiver<bool>,
) -> Member {
    let mut m = Member {
        tally,
        replies: 0,
        refused: 0,
        first_refusal: None,
        ended: None,
    };
    let ended = loop {
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => break Some(format!("closed by the server: {f:?}")),
                    Some(Ok(Message::Binary(b))) => break Some(format!("a binary frame of {} bytes", b.len())),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break Some(format!("read: {e}")),
                    None => break Some("the server closed the TCP connection".to_owned()),
                };
                if let Err(e) = take(&mut ws, proto, &text, &mut m, &room).await {
                    break Some(format!("{e:#}"));
                }
            }
            out = next_out(&mut outbox) => match out {
                Some(text) => if let Err(e) = write_batch(&mut ws, text, outbox.as_mut()).await {
                    break Some(format!("write: {e}"));
                },
                None => outbox = None,
            },
            _ = stop.changed() => break None,
        }
    };
    m.ended = ended;
    m
}

async fn take(ws: &mut Ws, proto: Proto, text: &str, m: &mut Member, room: &Room) -> Result<()> {
    match proto.parse(text)? {
        Incoming::Message(p) => match m.tally.record(&p)? {
            Seen::Measured => room.delivered(),
            Seen::Probe(true) => {
                room.probed.fetch_add(1, Ordering::Relaxed);
            }
            Seen::Probe(false) => {}
        },
        Incoming::Reply => m.replies += 1,
        Incoming::Ping => ws.send(Message::text(PONG)).await?,
        Incoming::Refused(frame) => {
            m.refused += 1;
            m.first_refusal
                .get_or_insert_with(|| clip(frame).to_owned());
        }
        Incoming::Open | Incoming::Connected | Incoming::Other => {}
    }
    Ok(())
}

async fn next_out(outbox: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match outbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and whatever else is already queued in one flush.
async fn write_batch(
    ws: &mut Ws,
    first: String,
    outbox: Option<&mut mpsc::Receiver<String>>,
) -> Result<()> {
    ws.feed(Message::text(first)).await?;
    if let Some(rx) = outbox {
        while let Ok(more) = rx.try_recv() {
            ws.feed(Message::text(more)).await?;
        }
    }
    ws.flush().await?;
    Ok(())
}

/// What one publisher does.
pub struct PublishPlan {
    pub proto: Proto,
    /// Index written into every message's data.
    pub index: u32,
    pub room_name: String,
    pub room: Arc<Room>,
    pub pad: Arc<str>,
    /// Messages per second; 0 = as fast as the window allows.
    pub rate: f64,
    /// When its first message is due after `start` (paced runs): the publishers take
    /// turns instead of all publishing at the same instants.
    pub offset: Duration,
    /// At most this many messages not yet received by every member of the room; 0 = none.
    pub inflight: u64,
    /// Longest the window may stay shut before the publisher gives up (messages lost).
    pub stall: Duration,
    pub start: Instant,
    pub deadline: Instant,
    pub outbox: mpsc::Sender<String>,
}

/// How a publisher's run ended.
pub struct Published {
    pub sent: u64,
    /// The window stayed shut for `stall`: the room stopped receiving.
    pub stalled: bool,
}

/// Publishes until the deadline; the count sent.
pub async fn publish(p: PublishPlan) -> Published {
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if now >= p.deadline {
            break;
        }
        if p.rate > 0.0 {
            let due = p.start + p.offset + Duration::from_secs_f64(seq as f64 / p.rate);
            if due >= p.deadline {
                break;
            }
            sleep_until(due).await;
        }
        if p.inflight > 0 && seq >= p.inflight {
            // Message `seq` may go once message `seq - inflight` reached every member.
            let target = (seq + 1 - p.inflight) * p.room.members;
            let until = p.deadline.min(Instant::now() + p.stall);
            if !p.room.wait_for(target, until).await {
                if Instant::now() >= p.deadline {
                    break;
                }
                return Published {
                    sent: seq,
                    stalled: true,
                };
            }
        }
        let data = tally::data(p.index, seq, &p.pad);
        if p.outbox
            .send(p.proto.publish(seq + 1, &p.room_name, &data))
            .await
            .is_err()
        {
            break; // the connection ended; its member says why
        }
        seq += 1;
    }
    Published {
        sent: seq,
        stalled: false,
    }
}

/// The frame of a readiness probe into `room`.
pub fn probe(proto: Proto, room: &str, pad: &str) -> String {
    proto.publish(0, room, &tally::data(PROBE, 0, pad))
}
