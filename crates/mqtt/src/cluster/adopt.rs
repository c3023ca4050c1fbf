//! Resuming the sessions of a node that died: what its memory held is read back from what
//! it left on the backplane.
//!
//! - **Its journal** (`super::journal`): every QoS 1 and 2 message it queued for a session
//!   with an expiry, and the sessions' floors. A session resumed here gets its messages
//!   from its last floor on.
//! - **Its inbox**: what other nodes appended for it that it never read — appended after it
//!   died and before their route tables dropped it, or read but not yet journaled. A
//!   record whose message is not in the journal is matched against the resumed session's
//!   subscriptions. Other nodes keep appending there while they keep the dead node's
//!   routes (`dead_node_grace`), so the inbox is followed that long after the
//!   last session resumed here, and what arrives goes to the sessions resumed from that
//!   node.
//!
//! Both are read once per dead node and kept in memory while it is followed. A message
//! acknowledged by the client in the second before the death is sent again (the floors
//! are written every second).
//!
//! A session is resumed here when its client reconnects here ([`Cluster::claim`]), or,
//! once the dead node's grace is over and its client has not come back anywhere, adopted
//! by whichever surviving node claims it first ([`adopt_orphans`]): restored without a
//! connection, so that what is published for it from then on is queued as for any absent
//! client, and moved to the client's node by the usual takeover when it returns. Only
//! then does a node drop the dead node's routes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane::{Backplane, BackplaneError};
use tokio::time::Instant;
use tracing::warn;

use super::envelope::{Envelope, MessageId};
use super::journal::{self, Record};
use super::sessions::{self, Carried};
use super::{Cluster, NodeId, inbox};
use crate::broker::Broker;
use crate::codec::QoS;
use crate::session::{Outgoing, SubOptions};
use crate::topic::{SubscriptionTarget, TopicName};

/// Records read at once.
const READ: usize = 1024;

/// What a dead node left, read back.
#[derive(Debug, Default)]
pub struct Remains {
    /// The journaled messages each session had not had acknowledged, in order.
    messages: HashMap<String, Vec<Outgoing>>,
    /// Every message the journal holds, to tell them from the inbox's unread ones.
    journaled: HashSet<MessageId>,
    /// The inbox's messages the node never journaled, in order.
    unread: Vec<Envelope>,
    /// Its inbox, opened once (opening a deleted stream again would create it anew).
    inbox: Option<Arc<dyn backplane::Stream>>,
    /// Where reading the inbox stopped.
    inbox_next: u64,
    /// The sessions resumed here from it, with their subscriptions.
    adopted: HashMap<String, Vec<(SubscriptionTarget, SubOptions)>>,
    /// Until when its inbox is followed.
    until: Option<Instant>,
}

/// Each dead node's remains, read once.
#[derive(Debug, Default)]
pub struct Adoptions(tokio::sync::Mutex<HashMap<NodeId, Arc<Mutex<Remains>>>>);

impl Cluster {
    /// The messages `client`'s session, held by `dead` when it died and resumed here with
    /// `subscriptions`, still had to receive.
    pub(crate) async fn adopt(
        &self,
        dead: &str,
        client: &str,
        subscriptions: &[(SubscriptionTarget, SubOptions)],
    ) -> Result<Vec<Outgoing>, BackplaneError> {
        let remains = {
            let mut all = self.adoptions.0.lock().await;
            match all.get(dead) {
                Some(r) => r.clone(),
                None => {
                    let r = Arc::new(Mutex::new(read_remains(&*self.backplane, dead).await?));
                    all.insert(dead.into(), r.clone());
                    r
                }
            }
        };
        let mut r = remains.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = r.messages.remove(client).unwrap_or_default();
        for envelope in &r.unread {
            out.extend(copy_for(envelope, subscriptions));
        }
        r.adopted.insert(client.to_owned(), subscriptions.to_vec());
        let lease = self.backplane.lease_ttl();
        r.until = Some(Instant::now() + self.routes.grace() + lease);
        Ok(out)
    }
}

/// Tends what dead nodes left, every half second until the node stops: follows the
/// inboxes of the dead nodes sessions were resumed from (handing new records to those
/// sessions on `broker`), adopts the sessions of the dead nodes whose grace is over (the
/// route table's orphans), and deletes the streams of those adopted a grace and a lease
/// ago.
pub(crate) fn tend(broker: &Arc<Broker>, cluster: &Arc<Cluster>) {
    let tasks = broker.tasks().clone();
    let (broker, cluster) = (broker.clone(), cluster.clone());
    let stop = broker.shutdown().clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // Dead nodes whose sessions were adopted, and when their streams may go.
        let mut leftovers: Vec<(NodeId, Instant)> = Vec::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            follow_all(&broker, &cluster).await;
            adopt_orphans(&broker, &cluster, &mut leftovers).await;
            delete_leftovers(&cluster, &mut leftovers).await;
        }
    });
}

/// Reads what arrived in the inboxes of the dead nodes sessions were resumed from; a node
/// whose time is over is no longer followed.
async fn follow_all(broker: &Broker, cluster: &Cluster) {
    let dead: Vec<(NodeId, Arc<Mutex<Remains>>)> = {
        let all = cluster.adoptions.0.lock().await;
        all.iter().map(|(n, r)| (n.clone(), r.clone())).collect()
    };
    for (node, remains) in dead {
        match follow_one(broker, &remains).await {
            Ok(true) => {}
            Ok(false) => {
                cluster.adoptions.0.lock().await.remove(&node);
            }
            Err(e) => {
                warn!(node = %node, error = %e, "cannot follow a dead node's MQTT inbox");
            }
        }
    }
}

/// Adopts into `broker` the sessions of the dead nodes whose grace is over, then lets the
/// route table drop their routes; notes in `leftovers` when their streams may go.
async fn adopt_orphans(
    broker: &Arc<Broker>,
    cluster: &Cluster,
    leftovers: &mut Vec<(NodeId, Instant)>,
) {
    for dead in cluster.routes.orphans() {
        match adopt_sessions(broker, cluster, &dead).await {
            Ok(adopted) => {
                if adopted > 0 {
                    tracing::info!(node = %dead, sessions = adopted, "adopted the MQTT sessions of a dead node");
                }
                cluster.routes.adopted(&dead);
                if let Err(e) = cluster.routes.sync().await {
                    warn!(error = %e, "cannot read the MQTT route table");
                }
                leftovers.push((dead, Instant::now() + streams_wait(cluster)));
            }
            Err(e) => warn!(node = %dead, error = %e, "cannot adopt a dead node's MQTT sessions"),
        }
    }
}

/// How long after its adoption pass a dead node's streams are kept: every node has
/// dropped its routes by then.
fn streams_wait(cluster: &Cluster) -> Duration {
    cluster.routes.grace() + cluster.backplane.lease_ttl()
}

/// Deletes the streams of the `leftovers` that are due; those a session still names wait
/// another round.
async fn delete_leftovers(cluster: &Cluster, leftovers: &mut Vec<(NodeId, Instant)>) {
    let mut kept = Vec::new();
    for (dead, due) in leftovers.drain(..) {
        if Instant::now() < due {
            kept.push((dead, due));
            continue;
        }
        match delete_streams(&*cluster.backplane, &dead).await {
            Ok(true) => {}
            Ok(false) => kept.push((dead, Instant::now() + streams_wait(cluster))),
            Err(e) => {
                warn!(node = %dead, error = %e, "cannot delete a dead node's MQTT streams");
                kept.push((dead, due));
            }
        }
    }
    *leftovers = kept;
}

/// Deletes `dead`'s inbox and journal once no session names it any more (every node has
/// dropped its routes by then: they do after their adoption pass, and this runs a grace
/// and a lease later); false if one still does.
async fn delete_streams(backplane: &dyn Backplane, dead: &str) -> Result<bool, BackplaneError> {
    let held = backplane
        .scan(sessions::HOLDERS)
        .await?
        .iter()
        .any(|(_, holder)| holder == dead.as_bytes());
    if held {
        return Ok(false);
    }
    backplane.delete_stream(&inbox::stream(dead)).await?;
    backplane.delete_stream(&journal::stream(dead)).await?;
    Ok(true)
}

/// Claims for this node every session `dead` still holds and restores those with an
/// expiry into `broker`; the keys of the others go. Returns how many were restored.
async fn adopt_sessions(
    broker: &Arc<Broker>,
    cluster: &Cluster,
    dead: &str,
) -> Result<usize, BackplaneError> {
    let backplane = &*cluster.backplane;
    let me = bytes::Bytes::copy_from_slice(cluster.node().as_bytes());
    let mut restored = 0;
    for (key, holder) in backplane.scan(sessions::HOLDERS).await? {
        let Some(client) = key.strip_prefix(sessions::HOLDERS) else {
            continue;
        };
        if holder != dead.as_bytes() {
            continue;
        }
        let saved = backplane.get(&sessions::subscriptions_key(client)).await?;
        let Some(mut carried) = saved.and_then(|b| Carried::decode(&b, Instant::now())) else {
            // A session without an expiry: it ended with its node.
            backplane
                .compare_and_set(&key, dead.as_bytes(), None, None)
                .await?;
            continue;
        };
        let messages = cluster.adopt(dead, client, &carried.subscriptions).await?;
        if !backplane
            .compare_and_set(&key, dead.as_bytes(), Some(me.clone()), None)
            .await?
        {
            continue;
        }
        carried.messages = messages;
        carried.adopted = true;
        broker.restore(client, carried);
        restored += 1;
    }
    Ok(restored)
}

/// Reads what arrived in `dead`'s inbox since the last look and queues it for the sessions
/// resumed from it; false once its time is over (the sessions are told).
async fn follow_one(broker: &Broker, remains: &Mutex<Remains>) -> Result<bool, BackplaneError> {
    let (stream, from) = {
        let r = remains.lock().unwrap_or_else(|e| e.into_inner());
        if r.until.is_none_or(|u| Instant::now() >= u) {
            r.adopted.keys().for_each(|c| broker.adoption_ended(c));
            return Ok(false);
        }
        let Some(stream) = r.inbox.clone() else {
            return Ok(true);
        };
        (stream, r.inbox_next)
    };
    let entries = stream.read(from, READ).await?;
    let Some(last) = entries.last() else {
        return Ok(true);
    };
    let now = Instant::now();
    let mut r = remains.lock().unwrap_or_else(|e| e.into_inner());
    r.inbox_next = last.offset + 1;
    for entry in &entries {
        let Ok(envelope) = Envelope::decode(&entry.payload, now) else {
            continue;
        };
        if r.journaled.contains(&envelope.id) {
            continue;
        }
        for (client, subscriptions) in &r.adopted {
            if let Some(out) = copy_for(&envelope, subscriptions) {
                broker.queue_for(client, out, &envelope.id);
            }
        }
        r.unread.push(envelope);
    }
    Ok(true)
}

/// Reads `dead`'s journal and inbox.
async fn read_remains(backplane: &dyn Backplane, dead: &str) -> Result<Remains, BackplaneError> {
    let now = Instant::now();
    let mut remains = Remains::default();
    let journal = read_journal(backplane, &journal::stream(dead)).await?;
    (remains.messages, remains.journaled) = (journal.messages, journal.ids);
    let inbox = backplane
        .stream(&inbox::stream(dead), inbox::options())
        .await?;
    loop {
        let entries = inbox.read(remains.inbox_next, READ).await?;
        let Some(last) = entries.last() else { break };
        remains.inbox_next = last.offset + 1;
        for entry in &entries {
            if let Ok(e) = Envelope::decode(&entry.payload, now)
                && !remains.journaled.contains(&e.id)
            {
                remains.unread.push(e);
            }
        }
    }
    remains.inbox = Some(inbox);
    Ok(remains)
}

/// What a journal holds for the sessions it was written for.
#[derive(Debug, Default)]
pub(super) struct Journaled {
    /// Each session's messages from its last floor on, in order.
    pub(super) messages: HashMap<String, Vec<Outgoing>>,
    /// Every message in it.
    pub(super) ids: HashSet<MessageId>,
}

/// Reads the journal stream `name` from its start.
pub(super) async fn read_journal(
    backplane: &dyn Backplane,
    name: &str,
) -> Result<Journaled, BackplaneError> {
    let now = Instant::now();
    let journal = backplane.stream(name, journal::options()).await?;
    let mut read = Journaled::default();
    let mut copies: HashMap<String, Vec<(u64, Outgoing)>> = HashMap::new();
    let mut floors: HashMap<String, u64> = HashMap::new();
    let mut from = 0;
    loop {
        let entries = journal.read(from, READ).await?;
        let Some(last) = entries.last() else { break };
        from = last.offset + 1;
        for entry in &entries {
            match journal::read(&entry.payload, now) {
                Ok(Record::Message {
                    jseq,
                    copies: to,
                    envelope,
                }) => {
                    read.ids.insert(envelope.id.clone());
                    for c in to {
                        let out = Outgoing {
                            message: envelope.message.clone(),
                            qos: c.qos,
                            retain: c.retain,
                            identifiers: c.identifiers,
                            journal: 0,
                        };
                        copies.entry(c.client).or_default().push((jseq, out));
                    }
                }
                Ok(Record::Floors(f)) => floors = f.into_iter().collect(),
                Err(e) => warn!(journal = name, error = %e, "a journal record cannot be read"),
            }
        }
    }
    for (client, list) in copies {
        let floor = floors.get(&client).copied().unwrap_or(0);
        let mut list: Vec<_> = list.into_iter().filter(|(j, _)| *j >= floor).collect();
        list.sort_by_key(|(j, _)| *j);
        read.messages
            .insert(client, list.into_iter().map(|(_, o)| o).collect());
    }
    Ok(read)
}

/// The copy of `envelope` a session with `subscriptions` gets, as the dead node would have
/// queued it: one copy at the highest QoS of the matching subscriptions (plain ones when
/// the envelope is for them, shared ones whose group it was handed for). QoS 0 copies are
/// not kept for a session without a connection, so none is made.
fn copy_for(
    envelope: &Envelope,
    subscriptions: &[(SubscriptionTarget, SubOptions)],
) -> Option<Outgoing> {
    let m = &envelope.message;
    let name = TopicName::parse(&m.topic, crate::topic::MAX_LEVELS_CEILING).ok()?;
    let mut best: Option<SubOptions> = None;
    for (target, options) in subscriptions {
        let wanted = match target {
            SubscriptionTarget::Plain(filter) => envelope.plain && filter.matches(name),
            SubscriptionTarget::Shared { filter, .. } => {
                envelope.groups.iter().any(|g| *g == target.to_string()) && filter.matches(name)
            }
        };
        if wanted && best.is_none_or(|b| b.options.qos < options.options.qos) {
            best = Some(*options);
        }
    }
    let options = best?;
    let qos = m.qos.min(options.options.qos);
    (qos != QoS::AtMostOnce).then(|| Outgoing {
        message: m.clone(),
        qos,
        retain: m.retain && options.options.retain_as_published,
        identifiers: options.identifier.into_iter().collect(),
        journal: 0,
    })
}
