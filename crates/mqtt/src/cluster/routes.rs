//! The cluster's route table: which other nodes have subscriptions a topic matches, so a
//! message goes only to the nodes whose clients need it (a shared route table, not a
//! broadcast of everything).
//!
//! Each node writes its own targets in the backplane's key/value space — one key per
//! target, `mqtt:routes:{node}:{target}`, holding how many of its sessions subscribe to it
//! — and announces each change on the `mqtt:routes` channel. Every node keeps the other
//! nodes' targets in a [`Tree`] keyed by node. The channel is at most once, so the tree is
//! rebuilt from a scan of the keys at start, whenever the subscription reports a gap
//! ([`backplane::Subscription::missed`]: a slow reader, a Redis reconnection) and every
//! [`RESYNC`]; channel messages that arrive during a scan are applied after it, in order,
//! and setting a count or removing a target is idempotent, so the tree converges.
//!
//! A node proves it is alive with `mqtt:node:{node}`, renewed every third of the
//! backplane's lease TTL (and deleted when it shuts down). A scan keeps the targets of a
//! node without one for a grace (`dead_node_grace`) — its sessions' messages go on to its inbox, read by
//! the nodes that resume them — then deletes them (a SIGKILLed node cannot clean up after
//! itself). Every renewal checks that the nodes with routes here are still alive, so a
//! death is noticed within a third of the lease TTL of the key's expiry.
//!
//! A plain target's key changes only when its first local subscription comes or its last
//! goes; a shared group's count changes with every member, because a message for the group
//! goes to one node in proportion to its members ([`RouteTable::pick_node`]), so that a
//! worker on a node with few members gets the same share as one on a node with many.
//!
//! A subscription reaches the other nodes when they read the channel — milliseconds after
//! its SUBACK. A message published on another node in that window does not reach it, as
//! in other clusters that replicate routes asynchronously.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use backplane::{Backplane, BackplaneError, Subscription};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::topic::{MAX_LEVELS_CEILING, Matched, SubscriptionTarget, TopicName, Tree};

/// A node of the cluster, as it names itself on the backplane.
pub type NodeId = Arc<str>;

/// The channel route changes are announced on.
const CHANNEL: &str = "mqtt:routes";

/// How often the whole table is read again even without a gap.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The key prefix of every node's targets.
const ROUTES: &str = "mqtt:routes:";

/// The key prefix of the nodes' liveness keys.
const NODES: &str = "mqtt:node:";

/// Why the route table could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The backplane failed.
    #[error("the MQTT route table on the backplane: {0}")]
    Backplane(#[from] BackplaneError),
    /// A node name the keys and channel messages could not be read back with.
    #[error(
        "node name `{0}`: it must be non-empty, without `:` or tabs (they separate the route table's fields)"
    )]
    NodeName(String),
}

/// This node's view of where subscriptions are.
#[derive(Debug)]
pub struct RouteTable {
    backplane: Arc<dyn Backplane>,
    node: NodeId,
    /// This node's targets and how many of its sessions hold each; written through to the
    /// backplane, so held across its awaits (an async lock: subscribes of one target are
    /// announced in the order they happened).
    local: tokio::sync::Mutex<HashMap<SubscriptionTarget, u32>>,
    /// The other nodes' targets with their counts. Never held across an await.
    remote: RwLock<Tree<NodeId, u32>>,
    /// Per shared group (`$share/{group}/{filter}`), how many messages it was handed, for
    /// the weighted round-robin over nodes.
    turns: Mutex<HashMap<String, u64>>,
    /// The other nodes with routes in `remote`, whose liveness is checked at every renewal.
    known: Mutex<HashSet<NodeId>>,
    /// Nodes whose liveness key went while their routes are kept, and since when.
    dead_since: Mutex<HashMap<NodeId, Instant>>,
    /// Dead nodes past their grace whose sessions this node has not yet tried to adopt
    /// (`super::adopt::adopt_orphans`): their routes are kept until it has.
    orphans: Mutex<HashSet<NodeId>>,
    /// Dead nodes whose sessions this node has tried to adopt: their routes go.
    adopted: Mutex<HashSet<NodeId>>,
    /// How long the routes of a node whose liveness key went are kept (`dead_node_grace`):
    /// messages for its sessions go on to its inbox, which the nodes resuming those
    /// sessions read (`super::adopt`), rather than nowhere while the sessions' clients
    /// reconnect elsewhere (their reconnection backoff, then the lease TTL the takeover
    /// waits for).
    grace: Duration,
    /// A node on the embedded backplane: no other node exists, so nothing is written or
    /// read (see [`RouteTable::alone`]).
    alone: bool,
}

impl RouteTable {
    /// The route table of a node that is alone (the embedded backplane): it stays empty,
    /// writes nothing and runs no task.
    pub fn alone(backplane: Arc<dyn Backplane>, node: NodeId) -> Arc<Self> {
        Arc::new(Self::new(backplane, node, Duration::ZERO, true))
    }

    fn new(backplane: Arc<dyn Backplane>, node: NodeId, grace: Duration, alone: bool) -> Self {
        Self {
            backplane,
            node,
            local: tokio::sync::Mutex::default(),
            remote: RwLock::new(Tree::new()),
            turns: Mutex::default(),
            known: Mutex::default(),
            dead_since: Mutex::default(),
            orphans: Mutex::default(),
            adopted: Mutex::default(),
            grace,
            alone,
        }
    }

    /// The route table of `node` on `backplane`, keeping a dead node's routes for `grace`:
    /// marks the node alive, reads the other nodes' targets, and keeps both current on
    /// `tasks` until `shutdown` (see [`RouteTable::maintain`]). Subscriptions may be added
    /// once it returns.
    pub async fn start(
        backplane: Arc<dyn Backplane>,
        (node, grace): (NodeId, Duration),
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RouteError> {
        if node.is_empty() || node.contains([':', '\t']) {
            return Err(RouteError::NodeName(node.to_string()));
        }
        let table = Arc::new(Self::new(backplane, node, grace, false));
        let changes = table.backplane.subscribe(CHANNEL).await?;
        table.alive().await?;
        table.sync().await?;
        tasks.spawn(table.clone().maintain(changes, shutdown));
        Ok(table)
    }

    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// How long a dead node's routes are kept.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Whether this node is alone (the embedded backplane).
    pub fn is_alone(&self) -> bool {
        self.alone
    }

    /// One more local session subscribes to `target`; announced to the other nodes before
    /// it returns when it changes what they see.
    pub async fn add(&self, target: &SubscriptionTarget) -> Result<(), RouteError> {
        if self.alone {
            return Ok(());
        }
        let mut local = self.local.lock().await;
        let count = local.get(target).copied().unwrap_or(0) + 1;
        if count == 1 || matches!(target, SubscriptionTarget::Shared { .. }) {
            self.announce(target, Some(count)).await?;
        }
        local.insert(target.clone(), count);
        Ok(())
    }

    /// One local session fewer subscribes to `target`.
    pub async fn remove(&self, target: &SubscriptionTarget) -> Result<(), RouteError> {
        if self.alone {
            return Ok(());
        }
        let mut local = self.local.lock().await;
        let Some(&count) = local.get(target) else {
            return Ok(());
        };
        let left = count - 1;
        if left == 0 || matches!(target, SubscriptionTarget::Shared { .. }) {
            self.announce(target, (left > 0).then_some(left)).await?;
        }
        if left == 0 {
            local.remove(target);
        } else {
            local.insert(target.clone(), left);
        }
        Ok(())
    }

    /// Writes this node's count for `target` (none: it has no subscription left) and
    /// tells the other nodes.
    async fn announce(
        &self,
        target: &SubscriptionTarget,
        count: Option<u32>,
    ) -> Result<(), RouteError> {
        let key = format!("{ROUTES}{}:{target}", self.node);
        let message = match count {
            Some(n) => {
                self.backplane
                    .set(&key, Bytes::from(n.to_string()), None)
                    .await?;
                format!("+{}\t{n}\t{target}", self.node)
            }
            None => {
                self.backplane.delete(&key).await?;
                format!("-{}\t{target}", self.node)
            }
        };
        self.backplane
            .publish(CHANNEL, Bytes::from(message))
            .await?;
        Ok(())
    }

    /// Every other node with a plain subscription `name` matches, each once; and each
    /// matching shared group, with its members (node, count) for [`RouteTable::pick_node`].
    pub fn matching(
        &self,
        name: TopicName<'_>,
        mut node: impl FnMut(&NodeId),
        mut group: impl FnMut(&str, &[(NodeId, u32)]),
    ) {
        let remote = self.remote.read().unwrap_or_else(|e| e.into_inner());
        let mut seen: Vec<&NodeId> = Vec::new();
        remote.matches(name, |m| match m {
            Matched::Subscriber { key, .. } => {
                if !seen.contains(&key) {
                    seen.push(key);
                    node(key);
                }
            }
            Matched::Group(g) => group(&format!("$share/{}/{}", g.name, g.filter), g.members),
        });
    }

    /// The node a message for shared group `group` goes to, among `members` (the remote
    /// nodes with their member counts) and this node's own members: one after another,
    /// each node as many turns in a row as it has members. `None` when nobody is left.
    pub fn pick_node(&self, group: &str, members: &[(NodeId, u32)], local: u32) -> Option<NodeId> {
        let total: u64 = members.iter().map(|(_, n)| u64::from(*n)).sum::<u64>() + u64::from(local);
        if total == 0 {
            return None;
        }
        let turn = {
            let mut turns = lock(&self.turns);
            let t = turns.entry(group.to_owned()).or_default();
            *t += 1;
            (*t - 1) % total
        };
        let mut ordered: Vec<(&NodeId, u32)> = members.iter().map(|(k, n)| (k, *n)).collect();
        ordered.push((&self.node, local));
        ordered.sort();
        let mut left = turn;
        ordered
            .into_iter()
            .find(|(_, n)| {
                let here = left < u64::from(*n);
                left = left.saturating_sub(u64::from(*n));
                here
            })
            .map(|(node, _)| node.clone())
    }

    /// Keeps the table current until `shutdown`: follows the channel, reads everything
    /// again after a gap and every [`RESYNC`], renews this node's liveness key; at
    /// shutdown deletes this node's keys so the others forget its routes at once.
    async fn maintain(self: Arc<Self>, mut changes: Subscription, shutdown: CancellationToken) {
        let mut seen_missed = changes.missed();
        let mut renew = tokio::time::interval(self.backplane.lease_ttl() / 3);
        renew.reset();
        let mut resync = tokio::time::interval(RESYNC);
        resync.reset();
        loop {
            let sync = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = changes.recv() => match message {
                    Some(m) => {
                        self.apply(&m);
                        changes.missed() != seen_missed
                    }
                    None => break,
                },
                _ = renew.tick() => {
                    if let Err(e) = self.alive().await {
                        warn!(error = %e, "cannot renew this node's MQTT liveness key");
                    }
                    // A gap with nothing announced since is noticed here, and so is a
                    // node that died: its routes go within a third of the lease TTL of
                    // its key's expiry, not at the next resync.
                    changes.missed() != seen_missed || self.grace_over() || self.lost_a_node().await
                }
                _ = resync.tick() => true,
            };
            if sync {
                seen_missed = changes.missed();
                if let Err(e) = self.sync().await {
                    warn!(error = %e, "cannot read the MQTT route table");
                }
            }
        }
        self.forget().await;
    }

    /// Writes this node's liveness key. If it had expired (the node lost the backplane for
    /// longer than the TTL, and the others dropped its routes), announces every local
    /// target again.
    async fn alive(&self) -> Result<(), RouteError> {
        let key = format!("{NODES}{}", self.node);
        let ttl = Some(self.backplane.lease_ttl());
        if !self
            .backplane
            .set_if_absent(&key, Bytes::new(), ttl)
            .await?
        {
            self.backplane.set(&key, Bytes::new(), ttl).await?;
            return Ok(());
        }
        let local = self.local.lock().await;
        for (target, count) in local.iter() {
            self.announce(target, Some(*count)).await?;
        }
        Ok(())
    }

    /// Whether a dead node's grace is over: its sessions are to be adopted (and its routes
    /// dropped then).
    fn grace_over(&self) -> bool {
        lock(&self.dead_since)
            .values()
            .any(|since| since.elapsed() >= self.grace)
    }

    /// Whether a node with routes here has lost its liveness key.
    async fn lost_a_node(&self) -> bool {
        let Ok(alive) = self.backplane.scan(NODES).await else {
            return false;
        };
        let alive: Vec<&str> = alive
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(NODES))
            .collect();
        let known = lock(&self.known);
        known.iter().any(|n| !alive.contains(&&**n))
    }

    /// Whether `node`'s liveness key is there: it renewed it within the lease TTL.
    pub async fn is_alive(&self, node: &str) -> Result<bool, BackplaneError> {
        Ok(self
            .backplane
            .get(&format!("{NODES}{node}"))
            .await?
            .is_some())
    }

    /// Rebuilds the remote tree from the backplane, dropping (and deleting) the targets of
    /// nodes that are no longer alive.
    pub async fn sync(&self) -> Result<(), RouteError> {
        // Routes first: a node writes its liveness key before any route, so every node
        // whose routes are read here is in the liveness scan that follows.
        let routes = self.backplane.scan(ROUTES).await?;
        let nodes: BTreeMap<String, NodeId> = self
            .backplane
            .scan(NODES)
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(NODES).map(|n| (n.to_owned(), n.into())))
            .collect();
        let mut tree = Tree::new();
        let mut known = HashSet::new();
        let mut dying = HashMap::new();
        let mut orphans = HashSet::new();
        let mut dead = Vec::new();
        for (key, value) in routes {
            let Some((node, target)) = key
                .strip_prefix(ROUTES)
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            if node == &*self.node {
                continue;
            }
            let node = match nodes.get(node) {
                Some(alive) => {
                    known.insert(alive.clone());
                    alive.clone()
                }
                None if self.in_grace(node, &mut dying) => node.into(),
                None if !lock(&self.adopted).contains(node) => {
                    orphans.insert(NodeId::from(node));
                    node.into()
                }
                None => {
                    dead.push(key.clone());
                    continue;
                }
            };
            let count = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u32>().ok());
            if let (Some(count), Ok(target)) =
                (count, SubscriptionTarget::parse(target, MAX_LEVELS_CEILING))
            {
                tree.insert(node, target, count);
            }
        }
        *lock(&self.dead_since) = dying;
        *lock(&self.orphans) = orphans;
        *self.remote.write().unwrap_or_else(|e| e.into_inner()) = tree;
        *lock(&self.known) = known;
        for key in dead {
            self.backplane.delete(&key).await?;
        }
        Ok(())
    }

    /// The dead nodes past their grace whose sessions this node is to adopt.
    pub fn orphans(&self) -> Vec<NodeId> {
        lock(&self.orphans).iter().cloned().collect()
    }

    /// This node has adopted what it could of `node`'s sessions: `node`'s routes go at the
    /// next [`RouteTable::sync`].
    pub fn adopted(&self, node: &NodeId) {
        lock(&self.orphans).remove(node);
        lock(&self.adopted).insert(node.clone());
    }

    /// Whether the routes of `node`, whose liveness key is gone, are kept a while longer
    /// (the grace); notes since when it is dead in `dying`.
    fn in_grace(&self, node: &str, dying: &mut HashMap<NodeId, Instant>) -> bool {
        let since = lock(&self.dead_since)
            .get(node)
            .copied()
            .or_else(|| dying.get(node).copied())
            .unwrap_or_else(Instant::now);
        dying.insert(node.into(), since);
        since.elapsed() < self.grace
    }

    /// Applies one announced change of another node.
    fn apply(&self, message: &[u8]) {
        let Ok(text) = std::str::from_utf8(message) else {
            return;
        };
        let (set, rest) = match text.split_at_checked(1) {
            Some(("+", rest)) => (true, rest),
            Some(("-", rest)) => (false, rest),
            _ => return,
        };
        let Some((node, rest)) = rest.split_once('\t') else {
            return;
        };
        if node == &*self.node {
            return;
        }
        let node: NodeId = node.into();
        let mut remote = self.remote.write().unwrap_or_else(|e| e.into_inner());
        if set {
            let Some((count, target)) = rest.split_once('\t') else {
                return;
            };
            if let (Ok(count), Ok(target)) = (
                count.parse::<u32>(),
                SubscriptionTarget::parse(target, MAX_LEVELS_CEILING),
            ) {
                lock(&self.known).insert(node.clone());
                remote.insert(node, target, count);
            }
        } else if let Ok(target) = SubscriptionTarget::parse(rest, MAX_LEVELS_CEILING) {
            remote.remove(&node, &target);
        }
    }

    /// Deletes this node's liveness key (a clean shutdown): the others treat it as gone at
    /// once, and keep its routes for the grace as for a node that died, so that what
    /// is published for its sessions meanwhile waits in its inbox for the nodes that
    /// resume them.
    async fn forget(&self) {
        let _ = self
            .backplane
            .delete(&format!("{NODES}{}", self.node))
            .await;
    }
}

/// Locks `m`, ignoring poisoning (the sets stay consistent between statements).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
