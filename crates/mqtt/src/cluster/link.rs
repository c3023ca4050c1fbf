//! The sending side towards one other node: a task that batches what this node's
//! publishers hand it and writes it to the backplane.
//!
//! QoS 0 messages go out as one pub/sub message per batch on the node's channel — at most
//! once, as QoS 0 promises; while the backplane is unreachable they wait, up to
//! [`MAX_FAST_WAITING`], and are dropped beyond. QoS 1 and 2 messages are appended to the
//! node's inbox stream, one record each, one append per batch, with an idempotency key
//! made of this node's name and the batch's number: an append retried after a lost reply
//! (Redis restarted, the connection broke) stores once. Each publisher is told when its
//! message is durable, and only then acknowledges it; an append is retried until it
//! succeeds or the node shuts down.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backplane::{Backplane, IdempotencyKey, Stream};
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::envelope::{Envelope, push_framed};
use super::inbox;
use super::routes::NodeId;
use crate::codec::QoS;

/// QoS 0 messages waiting for one node at most; beyond, new ones are dropped.
pub const MAX_FAST_WAITING: usize = 100_000;

/// Messages written to the backplane in one batch at most.
const BATCH: usize = 512;

/// One message on its way.
#[derive(Debug)]
enum Outbound {
    /// QoS 0: pub/sub.
    Fast(Bytes),
    /// QoS 1 or 2: the inbox stream, then the publisher is told.
    Durable(Bytes, oneshot::Sender<()>),
}

/// The sending side towards one node.
#[derive(Debug)]
pub struct Link {
    queue: mpsc::UnboundedSender<Outbound>,
    /// QoS 0 messages in `queue`.
    fast_waiting: Arc<AtomicUsize>,
}

impl Link {
    /// Starts the task sending from node `from` to node `to` on `backplane`.
    pub fn start(
        backplane: Arc<dyn Backplane>,
        from: NodeId,
        to: NodeId,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        let fast_waiting = Arc::new(AtomicUsize::new(0));
        tasks.spawn(
            Writer {
                backplane,
                from,
                to,
                fast_waiting: fast_waiting.clone(),
                stream: None,
                batches: 0,
            }
            .run(pending, shutdown),
        );
        Self {
            queue,
            fast_waiting,
        }
    }

    /// Sends `envelope`; for QoS 1 and 2, returns what tells when it is durable. False
    /// from [`super::Forwarded::durable`] when it was not sent (shutdown). A QoS 0 message
    /// beyond [`MAX_FAST_WAITING`] is dropped.
    pub fn send(&self, envelope: &Envelope) -> Option<oneshot::Receiver<()>> {
        let fast = envelope.message.qos == QoS::AtMostOnce;
        if fast && self.fast_waiting.load(Ordering::Relaxed) >= MAX_FAST_WAITING {
            return None;
        }
        let mut bytes = BytesMut::new();
        envelope.encode(Instant::now(), &mut bytes);
        let bytes = bytes.freeze();
        if fast {
            self.fast_waiting.fetch_add(1, Ordering::Relaxed);
            let _ = self.queue.send(Outbound::Fast(bytes));
            return None;
        }
        let (done, wait) = oneshot::channel();
        let _ = self.queue.send(Outbound::Durable(bytes, done));
        Some(wait)
    }
}

/// What became of a batch of QoS 1 and 2 messages.
enum Appended {
    /// In the inbox.
    Stored,
    /// Not storable (too large, a key clash): dropped.
    Refused,
    /// The node shuts down.
    Stopped,
}

/// The task behind a [`Link`].
struct Writer {
    backplane: Arc<dyn Backplane>,
    from: NodeId,
    to: NodeId,
    fast_waiting: Arc<AtomicUsize>,
    /// The node's inbox, once opened.
    stream: Option<Arc<dyn Stream>>,
    /// Durable batches appended so far: the idempotency key's number.
    batches: u64,
}

impl Writer {
    async fn run(
        mut self,
        mut pending: mpsc::UnboundedReceiver<Outbound>,
        stop: CancellationToken,
    ) {
        let channel = inbox::channel(&self.to);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                n = pending.recv_many(&mut batch, BATCH) => if n == 0 { return },
            }
            let mut fast = BytesMut::new();
            let mut fast_count = 0;
            let mut records = Vec::new();
            let mut done = Vec::new();
            for out in batch.drain(..) {
                match out {
                    Outbound::Fast(bytes) => {
                        push_framed(&mut fast, &bytes);
                        fast_count += 1;
                    }
                    Outbound::Durable(bytes, tell) => {
                        records.push(bytes);
                        done.push(tell);
                    }
                }
            }
            if fast_count > 0 {
                if let Err(e) = self.backplane.publish(&channel, fast.freeze()).await {
                    warn!(node = %self.to, error = %e, dropped = fast_count, "cannot forward QoS 0 messages");
                }
                self.fast_waiting.fetch_sub(fast_count, Ordering::Relaxed);
            }
            if !records.is_empty() {
                match self.append(records, &stop).await {
                    Appended::Stored => done.into_iter().for_each(|tell| {
                        let _ = tell.send(());
                    }),
                    // The publishers see their message refused and close without an
                    // acknowledgement; their clients send it again.
                    Appended::Refused => drop(done),
                    Appended::Stopped => return,
                }
            }
        }
    }

    /// Appends `records` to the node's inbox, retrying while the backplane is unavailable.
    async fn append(&mut self, records: Vec<Bytes>, stop: &CancellationToken) -> Appended {
        let mut hasher = DefaultHasher::new();
        records.hash(&mut hasher);
        let key = IdempotencyKey {
            key: format!("{}:{}", self.from, self.batches),
            body_hash: hasher.finish(),
        };
        self.batches += 1;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.try_append(&records, &key).await {
                Ok(()) => return Appended::Stored,
                Err(e) if e.retryable() => {
                    warn!(node = %self.to, error = %e, "cannot forward QoS 1/2 messages yet; retrying");
                }
                Err(e) => {
                    tracing::error!(node = %self.to, error = %e, dropped = records.len(), "QoS 1/2 messages refused by the backplane");
                    return Appended::Refused;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Appended::Stopped,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn try_append(
        &mut self,
        records: &[Bytes],
        key: &IdempotencyKey,
    ) -> Result<(), backplane::BackplaneError> {
        let stream = match &self.stream {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .backplane
                    .stream(&inbox::stream(&self.to), inbox::options())
                    .await?;
                self.stream = Some(s.clone());
                s
            }
        };
        stream.append(records.to_vec(), Some(key.clone())).await?;
        Ok(())
    }
}
