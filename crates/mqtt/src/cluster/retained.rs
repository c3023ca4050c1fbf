//! Retained messages are the cluster's, not a node's: a subscriber gets a topic's retained
//! message whichever node it connects to.
//!
//! Every node keeps the whole retained store in memory (subscribing reads it, so a
//! subscription never waits for the backplane). A retained publish or clear on one node is
//! written to `mqtt:retained:{topic}` (the message as an [`Envelope`], expiring with it)
//! and announced on the `mqtt:retained` channel, which the other nodes apply. The channel
//! is at most once, so a node reads every key again at start, after a gap in the channel
//! and every [`RESYNC`]. `$SYS` topics stay each node's own.
//!
//! Writes wait in [`Writes`], the latest per topic: a client republishing a topic faster
//! than the backplane takes writes (a disk sync each on the embedded backplane) costs one
//! write per round, and what waits is bounded by the number of retained topics
//! (`max_retained`), not by how fast clients publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backplane::{Backplane, BackplaneError, Subscription};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Cluster;
use super::envelope::Envelope;
use crate::broker::Broker;
use crate::message::Message;

/// The channel retained changes are announced on.
const CHANNEL: &str = "mqtt:retained";

/// The key prefix of retained messages.
const PREFIX: &str = "mqtt:retained:";

/// How often the whole store is read again even without a gap.
const RESYNC: Duration = Duration::from_secs(60);

/// What a retained publish on this node writes: the key, the value (none: clear) with its
/// time to live, and the channel message.
#[derive(Debug)]
pub(super) struct Write {
    /// `mqtt:retained:{topic}`.
    pub key: String,
    /// The message as an envelope, and how long until it expires; none clears the topic.
    pub value: Option<(Bytes, Option<Duration>)>,
    /// This node's name and the envelope, for the channel.
    pub announce: Bytes,
}

/// The write of `message`, published on `node` at `now`.
pub(super) fn write(node: &str, message: &Message, now: Instant) -> Write {
    let mut envelope = BytesMut::new();
    Envelope {
        id: super::MessageId::default(),
        message: message.clone(),
        plain: false,
        groups: Vec::new(),
    }
    .encode(now, &mut envelope);
    let envelope = envelope.freeze();
    let mut announce = BytesMut::with_capacity(2 + node.len() + envelope.len());
    announce.put_u16(u16::try_from(node.len()).unwrap_or(u16::MAX));
    announce.put_slice(node.as_bytes());
    announce.put_slice(&envelope);
    let ttl = message
        .expires_at
        .map(|at| at.saturating_duration_since(now));
    Write {
        key: format!("{PREFIX}{}", message.topic),
        value: (!message.payload.is_empty()).then_some((envelope, ttl)),
        announce: announce.freeze(),
    }
}

/// Retained writes of this node waiting for the backplane, the latest per key.
#[derive(Debug, Default)]
pub(super) struct Writes {
    pending: std::sync::Mutex<HashMap<String, Write>>,
    wake: Notify,
}

impl Writes {
    /// Queues `write`, replacing one of the same topic still waiting.
    pub(super) fn push(&self, write: Write) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(write.key.clone(), write);
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> HashMap<String, Write> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes what waits until `shutdown`, retrying each write until it is taken; at
    /// shutdown, what still waits is tried once.
    pub(super) async fn run(
        self: Arc<Self>,
        backplane: Arc<dyn Backplane>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
            }
            for write in self.take().into_values() {
                while let Err(e) = retain(&*backplane, &write).await {
                    warn!(error = %e, "cannot write a retained message to the backplane; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
        let last = async {
            for write in self.take().into_values() {
                let _ = retain(&*backplane, &write).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), last).await;
    }
}

/// Writes a retained message (or its clearing) and tells the other nodes.
async fn retain(backplane: &dyn Backplane, write: &Write) -> Result<(), BackplaneError> {
    match &write.value {
        Some((value, ttl)) => backplane.set(&write.key, value.clone(), *ttl).await?,
        None => {
            backplane.delete(&write.key).await?;
        }
    }
    backplane.publish(CHANNEL, write.announce.clone()).await
}

/// Loads the cluster's retained messages into `broker` and follows the channel.
pub(crate) async fn start(broker: &Arc<Broker>, cluster: &Cluster) -> Result<(), BackplaneError> {
    let changes = cluster.backplane.subscribe(CHANNEL).await?;
    load(broker, &*cluster.backplane).await?;
    broker.tasks().spawn(follow(
        broker.clone(),
        cluster.backplane.clone(),
        changes,
        broker.shutdown().clone(),
    ));
    Ok(())
}

/// Replaces `broker`'s retained messages (but `$SYS`) with the cluster's.
async fn load(broker: &Broker, backplane: &dyn Backplane) -> Result<(), BackplaneError> {
    let now = Instant::now();
    let messages = backplane
        .scan(PREFIX)
        .await?
        .into_iter()
        .filter_map(|(_, bytes)| Envelope::decode(&bytes, now).ok())
        .map(|e| e.message)
        .collect();
    broker.replace_retained(messages);
    Ok(())
}

async fn follow(
    broker: Arc<Broker>,
    backplane: Arc<dyn Backplane>,
    mut changes: Subscription,
    stop: CancellationToken,
) {
    let node = broker.cluster().map(|c| c.node().clone());
    let mut seen_missed = changes.missed();
    let mut resync = tokio::time::interval(RESYNC);
    resync.reset();
    loop {
        let sync = tokio::select! {
            () = stop.cancelled() => return,
            _ = resync.tick() => true,
            m = changes.recv() => match m {
                None => return,
                Some(mut m) => {
                    if m.len() >= 2 {
                        let len = usize::from(m.get_u16());
                        let from = m.get(..len).map(|n| n == node.as_deref().unwrap_or("").as_bytes());
                        if from == Some(false) {
                            m.advance(len);
                            match Envelope::decode(&m, Instant::now()) {
                                Ok(e) => {
                                    broker.store_retained(&e.message);
                                }
                                Err(e) => warn!(error = %e, "a retained message from another node cannot be read"),
                            }
                        }
                    }
                    changes.missed() != seen_missed
                }
            },
        };
        if sync {
            seen_missed = changes.missed();
            if let Err(e) = load(&broker, &*backplane).await {
                warn!(error = %e, "cannot read the cluster's retained messages");
            }
        }
    }
}
