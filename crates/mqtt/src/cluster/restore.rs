//! A node alone (the embedded backplane) keeps its persistent sessions across restarts,
//! with what a cluster keeps for a node's death, on the node's own disk:
//!
//! - **A journal per run.** Each run of the node journals (`super::journal`) to a stream
//!   of its own, `mqtt-journal-{n}`, registered under `mqtt:journals:{n}` before its
//!   first record (`n` counts the runs, zero-padded so the keys sort oldest first).
//! - **Saved sessions.** Every session with an expiry has its subscriptions and expiry
//!   interval under `mqtt:subs:{client}`, rewritten when they change and deleted when the
//!   session ends (as in a cluster).
//! - **At start**, before the listeners accept anyone, the earlier runs' journals are read
//!   oldest first and every saved session is restored without a connection: its
//!   subscriptions, and the QoS 1 and 2 messages its client had not acknowledged, in order.
//!   Its expiry counts from the restart. Those messages are journaled again in this run's
//!   journal; once that is durable, the earlier journals are deleted and unregistered.
//!
//! What the journal promises a cluster it promises here: a message acknowledged to its
//! publisher is not lost by a crash (SIGKILL, power loss once the disk has it); one
//! acknowledged by its subscriber in the last second before the crash is sent again.

use std::collections::HashMap;
use std::sync::Arc;

use backplane::{Backplane, BackplaneError};
use bytes::Bytes;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Cluster;
use super::adopt::read_journal;
use super::sessions::{Carried, SUBSCRIPTIONS};
use crate::broker::Broker;
use crate::session::Outgoing;

/// The keys registering the journals of a node alone, one per run.
const JOURNALS: &str = "mqtt:journals:";

/// Registers the journal of a new run of a node alone; returns its stream's name.
pub(super) async fn new_journal(backplane: &dyn Backplane) -> Result<String, BackplaneError> {
    let last = backplane
        .scan(JOURNALS)
        .await?
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(JOURNALS)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let run = last + 1;
    let name = format!("mqtt-journal-{run}");
    let key = format!("{JOURNALS}{run:020}");
    backplane.set(&key, Bytes::from(name.clone()), None).await?;
    Ok(name)
}

/// Restores into `broker` the sessions an earlier run of this node left, with their
/// messages; returns how many.
pub(crate) async fn restore(
    broker: &Arc<Broker>,
    cluster: &Cluster,
) -> Result<usize, BackplaneError> {
    let backplane = &**cluster.backplane();
    let earlier: Vec<(String, String)> = backplane
        .scan(JOURNALS)
        .await?
        .into_iter()
        .filter_map(|(key, name)| {
            let name = String::from_utf8(name.to_vec()).ok()?;
            (name != cluster.journal_name()).then_some((key, name))
        })
        .collect();
    let mut messages: HashMap<String, Vec<Outgoing>> = HashMap::new();
    for (_, name) in &earlier {
        for (client, list) in read_journal(backplane, name).await?.messages {
            messages.entry(client).or_default().extend(list);
        }
    }
    let now = Instant::now();
    let mut restored = 0;
    for (key, saved) in backplane.scan(SUBSCRIPTIONS).await? {
        let Some(client) = key.strip_prefix(SUBSCRIPTIONS) else {
            continue;
        };
        let Some(mut carried) = Carried::decode(&saved, now) else {
            warn!(
                client,
                "a saved MQTT session cannot be read; it is not restored"
            );
            continue;
        };
        carried.messages = messages.remove(client).unwrap_or_default();
        broker.restore(client, carried);
        restored += 1;
    }
    let orphans: usize = messages.values().map(Vec::len).sum();
    if orphans > 0 {
        warn!(
            messages = orphans,
            "journaled MQTT messages of sessions that were not saved are dropped"
        );
    }
    if !cluster.journal().flush().await {
        return Ok(restored);
    }
    for (key, name) in earlier {
        backplane.delete_stream(&name).await?;
        backplane.delete(&key).await?;
    }
    if restored > 0 {
        info!(
            sessions = restored,
            "restored the MQTT sessions of the last run"
        );
    }
    Ok(restored)
}
