//! What makes several nodes one broker, on the backplane they share (see docs/mqtt.md,
//! "Cluster"): [`routes`], the table of which nodes subscribe to what; [`envelope`], a
//! message as it travels between nodes; [`link`], the sending side towards one node; and
//! [`inbox`], the receiving side.
//!
//! [`Cluster`] is what the broker holds. On publish it answers which other nodes need the
//! message and for which shared groups ([`Cluster::plan`]), and sends it there
//! ([`Cluster::forward`]): QoS 0 over pub/sub, QoS 1 and 2 appended to the node's inbox
//! stream, the publisher's acknowledgement waiting for the append ([`Forwarded`]). On
//! subscribe and unsubscribe it updates the route table in the order they happened,
//! without making the client's SUBACK wait for the backplane.

pub mod adopt;
mod append;
pub mod envelope;
pub mod inbox;
pub mod journal;
pub mod link;
pub mod restore;
pub mod retained;
pub mod routes;
pub mod sessions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use backplane::Backplane;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

pub use envelope::{Envelope, MessageId};
pub use routes::{NodeId, RouteError, RouteTable};

use crate::message::Message;
use crate::topic::{SubscriptionTarget, TopicName};
use link::Link;

/// A change of this node's subscriptions or sessions, for the backplane.
#[derive(Debug)]
enum Change {
    /// One more local subscription to a target.
    Add(SubscriptionTarget),
    /// One fewer.
    Remove(SubscriptionTarget),
    /// A session's subscriptions, as [`sessions::Carried`] bytes, for a node's death or
    /// restart (told once written); none: the session no longer has an expiry, nothing is
    /// kept.
    Saved(String, Option<(Bytes, oneshot::Sender<()>)>),
    /// A session of this node ended: its keys go, if this node still holds it.
    Ended(String),
}

/// This node's part of the cluster.
#[derive(Debug)]
pub struct Cluster {
    backplane: Arc<dyn Backplane>,
    routes: Arc<RouteTable>,
    /// The sending side towards each node a message has gone to.
    links: Mutex<HashMap<NodeId, Link>>,
    /// Subscription changes on their way to the route table, in order.
    changes: mpsc::UnboundedSender<Change>,
    /// The journal of the messages queued for this node's sessions with an expiry.
    journal: journal::Journal,
    /// Its stream's name.
    journal_name: String,
    /// Retained messages set or cleared here, on their way to the backplane.
    retained: Arc<retained::Writes>,
    /// Numbers the messages published on this node ([`envelope::MessageId`]).
    published: std::sync::atomic::AtomicU64,
    /// What dead nodes left, for the sessions resumed here.
    adoptions: adopt::Adoptions,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Where a message published on this node goes in the rest of the cluster.
#[derive(Debug, Default)]
pub struct Plan {
    /// Other nodes and what each gets: plain subscriptions, and shared groups.
    pub nodes: Vec<(NodeId, Envelope)>,
}

/// A [`Plan`] being made while the message is routed locally.
#[derive(Debug)]
pub struct Planner<'a> {
    cluster: &'a Cluster,
    message: &'a Message,
    /// The message's name in the cluster.
    id: MessageId,
    to: Vec<(NodeId, Envelope)>,
    /// Matching groups with members on other nodes, with those members, not handed yet.
    groups: Vec<(String, Vec<(NodeId, u32)>)>,
}

impl Planner<'_> {
    /// The message's name in the cluster.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// Whether this node delivers the message to shared group `key`, which has `local`
    /// members here: the group's turn goes to one node in proportion to its members.
    pub fn keep_local(&mut self, key: &str, local: u32) -> bool {
        let members = self
            .groups
            .iter()
            .position(|(k, _)| k == key)
            .map(|at| self.groups.swap_remove(at).1)
            .unwrap_or_default();
        members.is_empty() || self.hand(key, &members, local)
    }

    /// Hands the groups without members here to one of their nodes; the plan is complete.
    pub fn finish(mut self) -> Plan {
        for (key, members) in std::mem::take(&mut self.groups) {
            self.hand(&key, &members, 0);
        }
        Plan { nodes: self.to }
    }

    /// Picks the node for group `key`; true if it is this one.
    fn hand(&mut self, key: &str, members: &[(NodeId, u32)], local: u32) -> bool {
        let Some(node) = self.cluster.routes.pick_node(key, members, local) else {
            return false;
        };
        if node == *self.cluster.node() {
            return true;
        }
        match self.to.iter_mut().find(|(n, _)| *n == node) {
            Some((_, e)) => e.groups.push(key.to_owned()),
            None => {
                let mut e = envelope(&self.id, self.message, false);
                e.groups.push(key.to_owned());
                self.to.push((node, e));
            }
        }
        false
    }
}

/// The acknowledgements of a QoS 1 or 2 message's appends to other nodes' inboxes and to
/// this node's journal; the publisher's PUBACK or PUBREC waits for them.
#[derive(Debug, Default)]
pub struct Forwarded(Vec<oneshot::Receiver<()>>);

impl Forwarded {
    /// Waits for `append` too.
    pub fn push(&mut self, append: oneshot::Receiver<()>) {
        self.0.push(append);
    }

    /// Whether there is nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits until every append is durable; false if one was abandoned (the node shuts
    /// down): the publisher must not be told the message was taken.
    pub async fn durable(self) -> bool {
        for done in self.0 {
            if done.await.is_err() {
                return false;
            }
        }
        true
    }
}

impl Cluster {
    /// Joins the cluster as `node`, keeping a dead node's routes for `grace`: starts the
    /// route table; the inbox is read once the broker exists ([`inbox::serve`]).
    pub async fn start(
        backplane: Arc<dyn Backplane>,
        node: (NodeId, std::time::Duration),
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RouteError> {
        let routes = RouteTable::start(backplane.clone(), node, tasks, shutdown.clone()).await?;
        let journal = journal::stream(routes.node());
        Ok(Self::assemble(backplane, routes, journal, tasks, shutdown))
    }

    /// A node alone on the embedded backplane: a cluster of one, without route table,
    /// links or inbox, whose journal, saved subscriptions and retained messages are kept on
    /// the node's disk, so that its persistent sessions and retained messages survive a
    /// restart ([`restore`]).
    pub async fn alone(
        backplane: Arc<dyn Backplane>,
        node: NodeId,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, backplane::BackplaneError> {
        let journal = restore::new_journal(&*backplane).await?;
        let routes = RouteTable::alone(backplane.clone(), node);
        Ok(Self::assemble(backplane, routes, journal, tasks, shutdown))
    }

    /// The cluster of `routes`, journaling to stream `journal`.
    fn assemble(
        backplane: Arc<dyn Backplane>,
        routes: Arc<RouteTable>,
        journal: String,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (changes, pending) = mpsc::unbounded_channel();
        tasks.spawn(apply_changes(
            routes.clone(),
            backplane.clone(),
            pending,
            shutdown.clone(),
        ));
        let retained = Arc::new(retained::Writes::default());
        tasks.spawn(retained.clone().run(backplane.clone(), shutdown.clone()));
        let journal_name = journal;
        let journal = journal::Journal::start(
            backplane.clone(),
            (routes.node(), journal_name.clone()),
            tasks,
            shutdown.clone(),
        );
        Arc::new(Self {
            journal,
            published: std::sync::atomic::AtomicU64::new(0),
            adoptions: adopt::Adoptions::default(),
            backplane,
            routes,
            links: Mutex::default(),
            changes,
            journal_name,
            retained,
            tasks: tasks.clone(),
            shutdown,
        })
    }

    /// This node's name.
    pub fn node(&self) -> &NodeId {
        self.routes.node()
    }

    /// The journal.
    pub fn journal(&self) -> &journal::Journal {
        &self.journal
    }

    /// The name of the journal's stream.
    pub fn journal_name(&self) -> &str {
        &self.journal_name
    }

    /// Whether this node is alone (the embedded backplane): sessions stay on it, across
    /// its restarts.
    pub fn is_alone(&self) -> bool {
        self.routes.is_alone()
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The backplane the cluster runs on.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
    }

    /// A local session subscribed to `target` (a new subscription, not a replacement).
    pub fn subscribed(&self, target: &SubscriptionTarget) {
        let _ = self.changes.send(Change::Add(target.clone()));
    }

    /// A local session's subscription to `target` is gone.
    pub fn unsubscribed(&self, target: &SubscriptionTarget) {
        let _ = self.changes.send(Change::Remove(target.clone()));
    }

    /// `client`'s session, which has an expiry, has `subscriptions` now (encoded
    /// [`sessions::Carried`]): kept so another node can resume them if this one dies, or
    /// this one after a restart; the receiver is told once they are written.
    pub fn save_subscriptions(&self, client: &str, subscriptions: Bytes) -> oneshot::Receiver<()> {
        let (done, wait) = oneshot::channel();
        let _ = self.changes.send(Change::Saved(
            client.to_owned(),
            Some((subscriptions, done)),
        ));
        wait
    }

    /// `client`'s session has no expiry (now): what was saved for an earlier one goes.
    pub fn forget_subscriptions(&self, client: &str) {
        let _ = self.changes.send(Change::Saved(client.to_owned(), None));
    }

    /// `message` was retained (or its topic cleared) on this node: the other nodes keep it
    /// too.
    pub fn retained(&self, message: &Message) {
        let write = retained::write(self.node(), message, tokio::time::Instant::now());
        self.retained.push(write);
    }

    /// `client`'s session ended on this node.
    pub fn session_ended(&self, client: &str) {
        let _ = self.changes.send(Change::Ended(client.to_owned()));
    }

    /// Starts planning where `message`, on topic `name`, goes in the rest of the cluster:
    /// the nodes with plain subscriptions it matches, and the shared groups it matches on
    /// other nodes. Routing it locally then asks [`Planner::keep_local`] about each group
    /// with members here; [`Planner::finish`] hands the remaining groups out.
    pub fn planner<'a>(&'a self, message: &'a Message, name: TopicName<'_>) -> Planner<'a> {
        let id = MessageId {
            origin: self.node().clone(),
            seq: self
                .published
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
        };
        let mut to: Vec<(NodeId, Envelope)> = Vec::new();
        let mut groups: Vec<(String, Vec<(NodeId, u32)>)> = Vec::new();
        self.routes.matching(
            name,
            |node| to.push((node.clone(), envelope(&id, message, true))),
            |key, members| groups.push((key.to_owned(), members.to_vec())),
        );
        Planner {
            cluster: self,
            message,
            id,
            to,
            groups,
        }
    }

    /// Sends what `plan` says to the other nodes.
    pub fn forward(&self, plan: Plan) -> Forwarded {
        let mut waits = Vec::new();
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for (node, envelope) in plan.nodes {
            let link = links.entry(node.clone()).or_insert_with(|| {
                Link::start(
                    self.backplane.clone(),
                    self.node().clone(),
                    node,
                    &self.tasks,
                    self.shutdown.clone(),
                )
            });
            if let Some(wait) = link.send(&envelope) {
                waits.push(wait);
            }
        }
        Forwarded(waits)
    }
}

/// An envelope of `message` for a node's plain subscriptions (`plain`) and no group yet.
fn envelope(id: &MessageId, message: &Message, plain: bool) -> Envelope {
    Envelope {
        id: id.clone(),
        message: message.clone(),
        plain,
        groups: Vec::new(),
    }
}

/// Deletes the keys of `client`'s session if `routes`'s node still holds it (a node
/// alone always does).
async fn end_session(
    backplane: &dyn Backplane,
    routes: &RouteTable,
    client: &str,
) -> Result<(), backplane::BackplaneError> {
    let holder = sessions::holder_key(client);
    if routes.is_alone()
        || backplane
            .compare_and_set(&holder, routes.node().as_bytes(), None, None)
            .await?
    {
        backplane
            .delete(&sessions::subscriptions_key(client))
            .await?;
    }
    Ok(())
}

/// Applies subscription and session changes to the backplane in the order they happened,
/// retrying each until it is written; at shutdown, what is still queued is tried once
/// (within [`DRAIN`]), so a node stopped cleanly keeps what its sessions changed last.
async fn apply_changes(
    routes: Arc<RouteTable>,
    backplane: Arc<dyn Backplane>,
    mut pending: mpsc::UnboundedReceiver<Change>,
    shutdown: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => break,
            change = pending.recv() => match change {
                Some(c) => c,
                None => return,
            },
        };
        let written = loop {
            match apply(&routes, &*backplane, &change).await {
                Ok(()) => break true,
                Err(e) => {
                    warn!(error = %e, "cannot update the MQTT route table; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break false,
                        () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                    }
                }
            }
        };
        if !written {
            break;
        }
        done(change);
    }
    pending.close();
    let drain = async {
        while let Some(change) = pending.recv().await {
            if apply(&routes, &*backplane, &change).await.is_ok() {
                done(change);
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN, drain).await;
}

/// How long a node shutting down tries to write the changes still queued.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Writes one change.
async fn apply(
    routes: &RouteTable,
    backplane: &dyn Backplane,
    change: &Change,
) -> Result<(), RouteError> {
    match change {
        Change::Add(t) => routes.add(t).await,
        Change::Remove(t) => routes.remove(t).await,
        Change::Saved(client, Some((subs, _))) => backplane
            .set(&sessions::subscriptions_key(client), subs.clone(), None)
            .await
            .map_err(RouteError::from),
        Change::Saved(client, None) => backplane
            .delete(&sessions::subscriptions_key(client))
            .await
            .map(drop)
            .map_err(RouteError::from),
        Change::Ended(client) => end_session(backplane, routes, client)
            .await
            .map_err(RouteError::from),
    }
}

/// Tells whoever waits for `change`, which was written.
fn done(change: Change) {
    if let Change::Saved(_, Some((_, written))) = change {
        let _ = written.send(());
    }
}
