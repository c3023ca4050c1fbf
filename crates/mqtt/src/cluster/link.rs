//! The sending side towards one other node: a task that batches what this node's
//! publishers hand it and writes it to the backplane.
//!
//! QoS 0 messages go out as one pub/sub message per batch on the node's channel — at most
//! once, as QoS 0 promises; while the backplane is unreachable they wait, up to
//! [`MAX_FAST_WAITING`], and are dropped beyond. QoS 1 and 2 messages are appended to the
//! node's inbox stream, one record each, one append per batch ([`super::append`]: stored
//! once, retried until the node shuts down). Each publisher is told when its message is
//! durable, and only then acknowledges it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backplane::Backplane;
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::append::{Appended, Appender};
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
                inbox: Appender::new(
                    backplane.clone(),
                    from,
                    inbox::stream(&to),
                    inbox::options(),
                ),
                backplane,
                to,
                fast_waiting: fast_waiting.clone(),
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

/// The task behind a [`Link`].
struct Writer {
    backplane: Arc<dyn Backplane>,
    to: NodeId,
    fast_waiting: Arc<AtomicUsize>,
    /// Appends to the node's inbox.
    inbox: Appender,
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
                match self.inbox.append(records, &stop).await {
                    Appended::Stored(_) => done.into_iter().for_each(|tell| {
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
}
