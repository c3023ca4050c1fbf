//! The receiving side: what other nodes send this node, handed to its own sessions only.
//!
//! Two ways in, matching the two ways out of [`super::link`]: the node's pub/sub channel
//! (`mqtt:to:{node}`, batches of QoS 0 envelopes) and its inbox stream
//! (`mqtt:inbox:{node}`, one QoS 1 or 2 envelope per record) read through a consumer group,
//! acknowledged once the batch is queued in the sessions, so a batch read just before the
//! backplane went away is read again; the inbox is trimmed to what is acknowledged. A
//! received message is routed to this node's subscriptions and never forwarded again:
//! the node that published it already sent it everywhere it is needed, so no message
//! loops.

use std::sync::Arc;
use std::time::Duration;

use backplane::{BackplaneError, Feed, Stream, StreamOptions, Subscription};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Cluster;
use super::envelope::{Envelope, EnvelopeError, framed};
use crate::broker::Broker;

/// The inbox's consumer group.
const GROUP: &str = "broker";

/// Records read from the inbox at once at most.
const BATCH: usize = 512;

/// How long one read of the inbox waits for records.
const WAIT: Duration = Duration::from_secs(1);

/// How often the inbox is trimmed to what was acknowledged.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// How long appends' idempotency keys are kept: longer than any retry takes.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(600);

/// The pub/sub channel of `node`'s QoS 0 messages.
pub fn channel(node: &str) -> String {
    format!("mqtt:to:{node}")
}

/// The stream of `node`'s QoS 1 and 2 messages.
pub fn stream(node: &str) -> String {
    format!("mqtt:inbox:{node}")
}

/// The options every node opens inboxes with.
pub fn options() -> StreamOptions {
    StreamOptions {
        idempotency_window: IDEMPOTENCY_WINDOW,
        legacy_keys: None,
    }
}

/// Starts receiving for `broker`: subscribed to the channel and the inbox opened before it
/// returns, so nothing sent after is missed.
pub async fn serve(broker: &Arc<Broker>, cluster: &Cluster) -> Result<(), BackplaneError> {
    let node = cluster.node();
    let backplane = cluster.backplane();
    let fast = backplane.subscribe(&channel(node)).await?;
    let inbox = backplane.stream(&stream(node), options()).await?;
    let feed = inbox.feed(GROUP, node, 0).await?;
    let stop = broker.shutdown().clone();
    broker
        .tasks()
        .spawn(read_channel(broker.clone(), fast, stop.clone()));
    broker
        .tasks()
        .spawn(read_inbox(broker.clone(), inbox, feed, stop));
    Ok(())
}

/// Routes the QoS 0 batches of the channel.
async fn read_channel(broker: Arc<Broker>, mut fast: Subscription, stop: CancellationToken) {
    loop {
        let batch = tokio::select! {
            () = stop.cancelled() => return,
            batch = fast.recv() => match batch {
                Some(b) => b,
                None => return,
            },
        };
        let now = Instant::now();
        for part in framed(batch) {
            // QoS 0: never journaled.
            let _ = receive(
                &broker,
                part.and_then(|bytes| Envelope::decode(&bytes, now)),
            );
        }
    }
}

/// Routes what the inbox holds, acknowledging each batch once it is queued.
async fn read_inbox(
    broker: Arc<Broker>,
    inbox: Arc<dyn Stream>,
    mut feed: Box<dyn Feed>,
    stop: CancellationToken,
) {
    let mut trimmed = Instant::now();
    let mut acked = None;
    loop {
        let read = tokio::select! {
            () = stop.cancelled() => return,
            read = feed.next(BATCH, WAIT) => read,
        };
        let entries = match read {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, "cannot read this node's MQTT inbox; retrying");
                // A read whose answer was lost (Redis restarted, the connection broke) left
                // its records pending under this node, where reading new records never
                // finds them: the next read sweeps what is pending first.
                feed.rewind(acked.unwrap_or(0));
                if pause(&stop).await {
                    return;
                }
                continue;
            }
        };
        if let Some(last) = entries.last() {
            let now = Instant::now();
            let mut journaled = Vec::new();
            for entry in &entries {
                journaled.extend(receive(&broker, Envelope::decode(&entry.payload, now)));
            }
            // What went to sessions with an expiry is acknowledged here only once it is in
            // the journal: the inbox keeps it until then.
            for wait in journaled {
                if wait.await.is_err() {
                    return;
                }
            }
            let next = last.offset + 1;
            let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
            while let Err(e) = feed.ack(next, &offsets).await {
                warn!(error = %e, "cannot acknowledge this node's MQTT inbox; retrying");
                if pause(&stop).await {
                    return;
                }
            }
            acked = Some(next);
        }
        if let Some(below) = acked.filter(|_| trimmed.elapsed() >= TRIM_EVERY) {
            trimmed = Instant::now();
            if let Err(e) = inbox.trim(&[GROUP.to_owned()], below).await {
                warn!(error = %e, "cannot trim this node's MQTT inbox");
            }
        }
    }
}

/// Routes one received envelope to this node's sessions, returning when its journal
/// record is durable if it has one; counts what cannot be read.
fn receive(
    broker: &Broker,
    envelope: Result<Envelope, EnvelopeError>,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    match envelope {
        Ok(envelope) => broker.receive(&envelope),
        Err(e) => {
            broker.stats().protocol_error();
            warn!(error = %e, "a message from another node cannot be read; dropped");
            None
        }
    }
}

/// Waits a moment before a retry; true if the node shuts down meanwhile.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(Duration::from_millis(200)) => false,
    }
}
