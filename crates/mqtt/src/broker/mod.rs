//! The node's shared state: sessions by client identifier, the subscription tree, the
//! retained messages and the counters.
//!
//! Sessions and subscriptions live in one [`Index`] under one `RwLock`: routing a message
//! read-locks it (every publisher at once), while CONNECT, SUBSCRIBE, UNSUBSCRIBE and a
//! session's end write-lock it for a few map updates. Keeping both under one lock is what
//! makes a session's end atomic — its map entry and its subscriptions go together, so a
//! client reconnecting at that moment never finds half of an old session. Retained
//! messages have their own lock, taken only by retained publishes and by subscriptions.
//! No lock is held across an `.await`; lock order is index, then a session's state.
//!
//! Sessions end on their own timers: when the connection goes, a session with an expiry
//! interval of 0 ends at once, another gets a task that ends it when the interval has
//! passed unless a connection attached meanwhile (the attachment's generation says so).
//! Wills follow the same pattern (`crate::will`). [`Broker::route`] (in `route.rs`) is the
//! one function that hands a message to the matching sessions of this node, so the cluster
//! layer can call it for messages from other nodes.

mod route;

pub(crate) use route::{Journaling, Reach};

use std::collections::{HashMap, HashSet};
use std::hash::RandomState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Acl, Auth};
use crate::cluster::journal::{FLOORS_EVERY, Journal, message_record};
use crate::cluster::sessions::Carried;
use crate::cluster::{Cluster, Envelope, Forwarded, MessageId};
use crate::codec::{QoS, Version};
use crate::config::MqttConfig;
use crate::message::Message;
use crate::session::{Attachment, ClientId, Outgoing, Session, SessionState, SubOptions, Wake};
use crate::stats::Stats;
use crate::topic::{Retained, SubscriptionTarget, TopicFilter, TopicName, Tree};

/// Sessions and their subscriptions, changed together.
#[derive(Debug, Default)]
struct Index {
    /// Every subscription of this node, by the client identifier of its session.
    subscriptions: Tree<ClientId, SubOptions>,
    /// Every session of this node, connected or not.
    sessions: HashMap<ClientId, Arc<Session>>,
}

/// A connection's hold on a session, from [`Broker::attach`].
#[derive(Debug)]
pub struct Attached {
    /// The session.
    pub session: Arc<Session>,
    /// Whether the session existed (CONNACK's Session Present).
    pub present: bool,
    /// This attachment's generation.
    pub generation: u64,
    /// Woken when messages are queued, and when another connection takes the session over.
    pub wake: Arc<Wake>,
}

/// What [`Broker::publish`] did with a message.
#[derive(Debug, Default)]
pub struct Published {
    /// How many sessions of this node, and other nodes, it went to.
    pub matched: usize,
    /// The appends to other nodes' inboxes a QoS 1 or 2 message's acknowledgement waits
    /// for.
    pub forwarded: Forwarded,
}

/// One connected client, as `GET /api/mqtt/clients` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    /// Its client identifier.
    pub client_id: String,
    /// "3.1.1" or "5.0".
    pub version: &'static str,
    /// Its address.
    pub address: SocketAddr,
    /// Its subscriptions.
    pub subscriptions: usize,
    /// Messages waiting for it.
    pub queued: usize,
    /// Messages sent to it and not yet acknowledged.
    pub inflight: usize,
}

/// The MQTT broker of one node.
#[derive(Debug)]
pub struct Broker {
    /// The `[mqtt]` settings it was started with.
    cfg: MqttConfig,
    /// Every listener's key in `[mqtt]` and where it accepts connections, `listen` first.
    endpoints: Vec<(&'static str, SocketAddr)>,
    index: RwLock<Index>,
    retained: RwLock<Retained<Message>>,
    stats: Stats,
    /// Round-robin cursor of each shared group, by a hash of its name and filter.
    cursors: Mutex<HashMap<u64, usize>>,
    /// Hashes shared groups into `cursors` without allocating their key per message.
    group_hasher: RandomState,
    /// Numbers the client identifiers the broker assigns.
    assigned: AtomicU64,
    /// When the broker started (`$SYS/broker/uptime`).
    started: Instant,
    /// Where session-expiry and will timers run.
    tasks: TaskTracker,
    /// The node's shutdown: connections say goodbye and timers stop.
    shutdown: CancellationToken,
    /// This node's part of the cluster; none when it runs alone.
    cluster: Option<Arc<Cluster>>,
    /// Woken whenever a connection closes (see [`Broker::settle`]).
    released: Notify,
    /// For each session resumed from a dead node whose inbox is still read, the messages
    /// queued for it since (`Broker::first_delivery`).
    delivered: Mutex<HashMap<ClientId, HashSet<MessageId>>>,
    /// Who may connect.
    auth: Auth,
    /// What each client may publish and subscribe to.
    acl: Acl,
}

/// Writes the journal floors of `broker`'s sessions every [`FLOORS_EVERY`] when one moved,
/// and once more when the node stops (then closes the journal), so that what clients
/// acknowledged before a clean stop is not sent again.
async fn write_floors(broker: Arc<Broker>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(FLOORS_EVERY);
    let mut last = HashMap::new();
    let stop = broker.shutdown.clone();
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let (floors, upcoming) = broker.journal_floors(cluster.journal());
        if stopping || floors != last {
            let oldest = floors.values().min().copied().unwrap_or(upcoming);
            cluster.journal().floors(floors.clone(), oldest);
            last = floors;
        }
        if stopping {
            cluster.journal().close();
            return;
        }
    }
}

/// A message's journaling, when its QoS can make it journaled.
fn journaling<'c>(cluster: &'c Cluster, message: &Message) -> Option<Journaling<'c>> {
    (message.qos != QoS::AtMostOnce).then(|| Journaling {
        journal: cluster.journal(),
        jseq: 0,
        copies: Vec::new(),
    })
}

/// Writes `message`'s journal record when it was queued for sessions with an expiry.
fn journal(
    cluster: &Cluster,
    journaling: Option<Journaling<'_>>,
    id: MessageId,
    message: &Message,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let j = journaling.filter(|j| !j.copies.is_empty())?;
    let envelope = Envelope {
        id,
        message: message.clone(),
        plain: true,
        groups: Vec::new(),
    };
    let record = message_record(j.jseq, &j.copies, &envelope, Instant::now());
    Some(cluster.journal().write(record))
}

/// How long a new connection waits for the one holding its session to let go.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Read-locks `lock`, ignoring poisoning: every writer leaves the maps consistent between
/// statements, and a broker that stops routing after one panicked task helps nobody.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `lock`; see [`read`] on poisoning.
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    /// A broker for `cfg` whose clients connect to `endpoints` (each listener's key and
    /// bound address, `listen` first) and are let in and checked by `access` (built from
    /// `cfg` by [`MqttConfig::auth`]), running its timers on `tasks` until `shutdown`; a
    /// node of a cluster when `cluster` is given (its inbox is read once
    /// [`Broker::join`] is called).
    pub fn new(
        cfg: MqttConfig,
        (auth, acl): (Auth, Acl),
        endpoints: Vec<(&'static str, SocketAddr)>,
        cluster: Option<Arc<Cluster>>,
        (tasks, shutdown): (TaskTracker, CancellationToken),
    ) -> Self {
        Self {
            endpoints,
            cluster,
            released: Notify::new(),
            delivered: Mutex::default(),
            auth,
            acl,
            cfg,
            index: RwLock::default(),
            retained: RwLock::new(Retained::new()),
            stats: Stats::default(),
            cursors: Mutex::default(),
            group_hasher: RandomState::new(),
            assigned: AtomicU64::new(0),
            started: Instant::now(),
            tasks,
            shutdown,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &MqttConfig {
        &self.cfg
    }

    /// Where the listener `key` of `[mqtt]` (`listen`, `tls_listen`, `ws_listen`,
    /// `wss_listen`) accepts connections, if it is configured.
    pub fn endpoint(&self, key: &str) -> Option<SocketAddr> {
        self.endpoints
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, a)| *a)
    }

    /// Who may connect.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// What each client may publish and subscribe to.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// Where clients connect (`listen`).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoints[0].1
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The node's shutdown signal.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Where the broker's timers and connections are tracked.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// How long the broker has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The number of subscriptions and of retained messages.
    pub fn index_sizes(&self) -> (usize, usize) {
        (
            read(&self.index).subscriptions.len(),
            read(&self.retained).len(),
        )
    }

    /// A client identifier for a 5.0 client that sent none (§3.1.3.1): unique on this node
    /// and, through the node's name in a cluster, across its nodes.
    pub fn assign_client_id(&self) -> ClientId {
        let n = self.assigned.fetch_add(1, Ordering::Relaxed);
        match &self.cluster {
            Some(c) => format!("lintas-{}-{n}", c.node()).into(),
            None => format!("lintas-{}-{n}", self.local_addr().port()).into(),
        }
    }

    /// Attaches a new connection to the session of `client_id`: a session that exists is
    /// resumed, unless `clean_start` asks for a new one; a connection holding it now is
    /// told to go ([`Wake::take_over`]) and leaves the session alone when it closes.
    pub fn attach(
        &self,
        client_id: &ClientId,
        clean_start: bool,
        version: Version,
        peer: SocketAddr,
    ) -> Attached {
        let mut index = write(&self.index);
        let mut ended_will = None;
        let (session, present) = match index.sessions.get(client_id) {
            Some(session) if !clean_start => (session.clone(), true),
            found => {
                if found.is_some() {
                    index.subscriptions.remove_key(client_id);
                }
                let session = Arc::new(Session::new(client_id.clone()));
                let old = index.sessions.insert(client_id.clone(), session.clone());
                if let Some(old) = old {
                    // The old session ends here: a will waiting for its delay is due now,
                    // and its connection, if any, finds another generation when it closes.
                    let mut state = old.lock();
                    self.withdraw(&state);
                    if let Some(a) = state.attached.take() {
                        a.wake.take_over();
                    }
                    ended_will = state.will.take();
                    state.generation += 1;
                    old.set_online(false);
                }
                (session, false)
            }
        };
        let mut state = session.lock();
        if let Some(old) = state.attached.take() {
            old.wake.take_over();
        }
        state.will = None;
        state.generation += 1;
        let attached = Attached {
            session: session.clone(),
            present,
            generation: state.generation,
            wake: Arc::default(),
        };
        state.attached = Some(Attachment {
            generation: attached.generation,
            wake: attached.wake.clone(),
            version,
            peer,
        });
        session.set_online(true);
        drop(state);
        drop(index);
        if let Some(will) = ended_will {
            crate::will::publish(self, will);
        }
        attached
    }

    /// Before a connection of `client` attaches: the connection holding the session now,
    /// if any, is told to go, reads what it has received already — a DISCONNECT among it
    /// ends the session as that client asked, rather than the new connection resuming it
    /// — and lets go; this waits for that (at most [`SETTLE`]).
    pub async fn settle(&self, client: &ClientId) {
        let held = {
            let index = read(&self.index);
            index.sessions.get(client).cloned().and_then(|s| {
                let state = s.lock();
                let a = state.attached.as_ref()?;
                a.wake.take_over();
                Some((s.clone(), state.generation))
            })
        };
        let Some((session, generation)) = held else {
            return;
        };
        let deadline = Instant::now() + SETTLE;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let holding = {
                let state = session.lock();
                state.generation == generation && state.attached.is_some()
            };
            if !holding || tokio::time::timeout_at(deadline, released).await.is_err() {
                return;
            }
        }
    }

    /// The connection of `generation` was taken over: it lets go of the session, which
    /// lives on for the connection taking it.
    pub fn release(&self, session: &Session, generation: u64) {
        let mut state = session.lock();
        if state.generation == generation {
            state.attached = None;
            session.set_online(false);
        }
    }

    /// A connection closed: whoever waits in [`Broker::settle`] looks again.
    pub fn closed(&self) {
        self.released.notify_waiters();
    }

    /// The connection of `generation` has closed: the session is detached and ends now if
    /// its expiry interval is 0, or when it has passed otherwise. Nothing happens if another
    /// connection has taken the session since.
    pub fn detach(self: &Arc<Self>, session: &Arc<Session>, generation: u64) {
        let expiry = {
            let mut state = session.lock();
            if state.generation != generation {
                return;
            }
            state.attached = None;
            session.set_online(false);
            state.expiry_interval
        };
        if expiry == 0 {
            self.end_session(session, generation);
            return;
        }
        let (broker, session) = (self.clone(), session.clone());
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(u64::from(expiry))) => {
                    broker.end_session(&session, generation);
                }
                () = stop.cancelled() => {}
            }
        });
    }

    /// Ends `session` if no connection has attached to it since `generation`: its
    /// subscriptions and its entry go in one step.
    fn end_session(&self, session: &Arc<Session>, generation: u64) {
        let mut index = write(&self.index);
        let current = index
            .sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session));
        let will = {
            let mut state = session.lock();
            if !current || state.generation != generation {
                return;
            }
            self.withdraw(&state);
            state.will.take()
        };
        index.sessions.remove(&session.client_id);
        index.subscriptions.remove_key(&session.client_id);
        drop(index);
        if let Some(cluster) = &self.cluster {
            cluster.session_ended(&session.client_id);
        }
        if let Some(will) = will {
            crate::will::publish(self, will);
        }
    }

    /// Subscribes `session` to `target`; returns whether it already had that subscription
    /// (its options are replaced, §3.8.4). The caller saves the session's subscriptions
    /// once for the whole SUBSCRIBE ([`Broker::keep`]).
    pub fn subscribe(
        &self,
        session: &Session,
        target: SubscriptionTarget,
        options: SubOptions,
    ) -> bool {
        let mut index = write(&self.index);
        index
            .subscriptions
            .insert(session.client_id.clone(), target.clone(), options);
        let mut state = session.lock();
        let replaced = state
            .subscriptions
            .insert(target.clone(), options)
            .is_some();
        if let (false, Some(cluster)) = (replaced, &self.cluster) {
            cluster.subscribed(&target);
        }
        replaced
    }

    /// Keeps on the backplane what a restart of this node (or its death, in a cluster)
    /// needs of `session`, after its subscriptions or expiry interval changed: its
    /// subscriptions and expiry when it has one — the returned wait ends once they are
    /// saved, and a persistent session's SUBACK waits for it; when it has none, whatever was
    /// kept for an earlier session of the same client goes (one it replaced or resumed, on
    /// this node or, in a cluster, another).
    pub fn keep(&self, session: &Session) -> Forwarded {
        let mut saved = Forwarded::default();
        let Some(cluster) = &self.cluster else {
            return saved;
        };
        let state = session.lock();
        if state.expiry_interval > 0 {
            let bytes = Carried::of(&state, false).encode(Instant::now());
            saved.push(cluster.save_subscriptions(&session.client_id, bytes));
        } else {
            cluster.forget_subscriptions(&session.client_id);
        }
        saved
    }

    /// Removes `session`'s subscription to `target`; returns whether it had one.
    pub fn unsubscribe(&self, session: &Session, target: &SubscriptionTarget) -> bool {
        let mut index = write(&self.index);
        index.subscriptions.remove(&session.client_id, target);
        let mut state = session.lock();
        let had = state.subscriptions.remove(target).is_some();
        if let (true, Some(cluster)) = (had, &self.cluster) {
            cluster.unsubscribed(target);
        }
        had
    }

    /// Tells the cluster that the subscriptions of `state`, a session that ends, are gone.
    fn withdraw(&self, state: &SessionState) {
        if let Some(cluster) = &self.cluster {
            state
                .subscriptions
                .keys()
                .for_each(|t| cluster.unsubscribed(t));
        }
    }

    /// Publishes `message` from `from` (none: the broker itself): stores or clears it as
    /// retained if its RETAIN flag is set, routes it to this node's sessions and forwards it
    /// to the other nodes that need it (`$SYS` topics stay on this node).
    pub fn publish(&self, message: &Message, from: Option<&ClientId>) -> Published {
        if message.retain {
            self.retain(message);
        }
        let Ok(name) = TopicName::parse(&message.topic, self.cfg.max_topic_levels) else {
            return Published::default();
        };
        let cluster = self
            .cluster
            .as_ref()
            .filter(|_| !message.topic.starts_with("$SYS/"));
        let Some(cluster) = cluster else {
            return Published {
                matched: self.route_to(message, name, from, Reach::All, None),
                forwarded: Forwarded::default(),
            };
        };
        let mut planner = cluster.planner(message, name);
        let mut journaling = journaling(cluster, message);
        let matched = self.route_to(
            message,
            name,
            from,
            Reach::Planned(&mut planner),
            journaling.as_mut(),
        );
        let id = planner.id().clone();
        let plan = planner.finish();
        let mut published = Published {
            matched: matched + plan.nodes.len(),
            forwarded: cluster.forward(plan),
        };
        if let Some(wait) = journal(cluster, journaling, id, message) {
            published.forwarded.push(wait);
        }
        published
    }

    /// Routes a message another node sent this one to the subscriptions it is for here;
    /// returns, when it went to sessions with an expiry, when it is in the journal.
    pub fn receive(&self, envelope: &Envelope) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let cluster = self.cluster.as_ref()?;
        let name = TopicName::parse(&envelope.message.topic, self.cfg.max_topic_levels).ok()?;
        let mut journaling = journaling(cluster, &envelope.message);
        let reach = Reach::Received(envelope);
        self.route_to(&envelope.message, name, None, reach, journaling.as_mut());
        journal(cluster, journaling, envelope.id.clone(), &envelope.message)
    }

    /// Starts reading what other nodes send this one and the sessions they take over, when
    /// it is in a cluster.
    pub async fn join(self: &Arc<Self>) -> Result<(), backplane::BackplaneError> {
        match &self.cluster {
            Some(cluster) if cluster.is_alone() => {
                crate::cluster::restore::restore(self, cluster).await?;
                self.tasks
                    .spawn(write_floors(self.clone(), cluster.clone()));
                crate::cluster::retained::start(self, cluster).await
            }
            Some(cluster) => {
                crate::cluster::inbox::serve(self, cluster).await?;
                crate::cluster::sessions::start(self, cluster).await?;
                crate::cluster::adopt::tend(self, cluster);
                self.tasks
                    .spawn(write_floors(self.clone(), cluster.clone()));
                crate::cluster::retained::start(self, cluster).await
            }
            None => Ok(()),
        }
    }

    /// In a cluster, claims `client`'s session for this node before a connection attaches
    /// to it (see [`crate::cluster::sessions`]); with `resume`, returns its state from the
    /// node that held it. Without the backplane, the client connects with what this node
    /// has.
    pub async fn claim(&self, client: &ClientId, resume: bool) -> Option<Carried> {
        let cluster = self.cluster.as_ref().filter(|c| !c.is_alone())?;
        let wait = crate::cluster::sessions::HANDOFF_WAIT
            + cluster.backplane().lease_ttl()
            + crate::cluster::sessions::LIVENESS_SLACK * 5;
        match tokio::time::timeout(wait, cluster.claim(client, resume)).await {
            Ok(Ok(carried)) => carried,
            Ok(Err(e)) => {
                tracing::warn!(%client, error = %e, "cannot claim the session in the cluster");
                None
            }
            Err(_) => {
                tracing::warn!(%client, "claiming the session in the cluster timed out");
                None
            }
        }
    }

    /// Gives `session`, just attached, the state `carried` from another node: its
    /// subscriptions, then its messages after whatever it holds (up to `max_queued`),
    /// journaled here. The caller saves the session ([`Broker::keep`]).
    pub fn install(&self, session: &Session, carried: Carried) {
        if carried.adopted {
            self.delivered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(session.client_id.clone(), HashSet::new());
            session.set_adopted(true);
        }
        for (target, options) in carried.subscriptions {
            self.subscribe(session, target, options);
        }
        for out in carried.messages {
            self.queue_journaled(session, out);
        }
    }

    /// Restores `client`'s session as an earlier run of this node left it
    /// ([`crate::cluster::restore`]), or as a dead node left it
    /// ([`crate::cluster::adopt`]): without a connection, its expiry counting from now.
    pub(crate) fn restore(self: &Arc<Self>, client: &str, carried: Carried) {
        let session = Arc::new(Session::new(client.into()));
        {
            let mut index = write(&self.index);
            if index.sessions.contains_key(client) {
                return;
            }
            index
                .sessions
                .insert(session.client_id.clone(), session.clone());
        }
        let generation = {
            let mut state = session.lock();
            state.expiry_interval = carried.expiry_interval;
            state.generation
        };
        self.install(&session, carried);
        self.detach(&session, generation);
    }

    /// Queues `out`, message `id`, for the session of `client`, if this node has it (a
    /// message from a dead node's inbox for a session resumed here) and did not queue that
    /// message for it already.
    pub(crate) fn queue_for(&self, client: &str, out: Outgoing, id: &MessageId) {
        let session = read(&self.index).sessions.get(client).cloned();
        if let Some(session) = session
            && self.first_delivery(&session, Some(id))
        {
            self.queue_journaled(&session, out);
        }
    }

    /// Whether message `id` is new for `session`: always, unless the session was resumed
    /// from a dead node whose inbox is still read — the same message may then come both
    /// ways, and only the first is queued.
    pub(crate) fn first_delivery(&self, session: &Session, id: Option<&MessageId>) -> bool {
        let (true, Some(id)) = (session.is_adopted(), id) else {
            return true;
        };
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        delivered
            .get_mut(&session.client_id)
            .is_none_or(|ids| ids.insert(id.clone()))
    }

    /// The dead node's inbox is no longer read for `client`'s session.
    pub(crate) fn adoption_ended(&self, client: &str) {
        self.delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(client);
        if let Some(session) = read(&self.index).sessions.get(client) {
            session.set_adopted(false);
        }
    }

    /// Queues `out` for `session`, journaled first when it is QoS 1 or 2 and the session
    /// has an expiry (nobody waits for the journal: the message was already acknowledged
    /// to its publisher, on another node).
    fn queue_journaled(&self, session: &Session, mut out: Outgoing) {
        // Numbered and queued under the index's read lock, as routing does (see
        // `Journaling`).
        let _index = read(&self.index);
        if let Some(cluster) = &self.cluster
            && out.qos != QoS::AtMostOnce
            && session.lock().expiry_interval > 0
        {
            out.journal = cluster.journal().next();
            let envelope = Envelope {
                id: MessageId::default(),
                message: out.message.clone(),
                plain: true,
                groups: Vec::new(),
            };
            let copy = crate::cluster::journal::copy_of(&session.client_id, &out);
            let record = message_record(out.journal, &[copy], &envelope, Instant::now());
            drop(cluster.journal().write(record));
        }
        self.enqueue(session, out);
    }

    /// Every session with an expiry and the number below which its journaled messages are
    /// all acknowledged (the journal's next number when it waits for none). Under the
    /// index's write lock: every number handed out has its copies queued by then.
    pub(crate) fn journal_floors(&self, journal: &Journal) -> (HashMap<String, u64>, u64) {
        let index = write(&self.index);
        let upcoming = journal.upcoming();
        let floors = index
            .sessions
            .values()
            .filter_map(|s| {
                let state = s.lock();
                (state.expiry_interval > 0).then(|| {
                    let inflight = state.inflight.iter().map(|f| f.out.journal);
                    let floor = inflight
                        .chain(state.queue.iter().map(|o| o.journal))
                        .filter(|&j| j != 0)
                        .min()
                        .unwrap_or(upcoming);
                    (s.client_id.to_string(), floor)
                })
            })
            .collect();
        (floors, upcoming)
    }

    /// Another node took `client`'s session over: its connection here is closed (0x8E)
    /// and the session ends here; with `resume`, its state is returned for that node.
    pub fn give_away(&self, client: &str, resume: bool) -> Option<Carried> {
        let mut index = write(&self.index);
        let session = index.sessions.remove(client)?;
        index.subscriptions.remove_key(&session.client_id);
        let mut state = session.lock();
        self.withdraw(&state);
        if let Some(a) = state.attached.take() {
            a.wake.take_over();
        }
        state.generation += 1;
        state.will = None;
        session.set_online(false);
        resume.then(|| Carried::of(&state, true))
    }

    /// This node's part of the cluster, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Stores `message` as the retained message of its topic, or clears the topic when the
    /// payload is empty (§3.3.1.3), here and, in a cluster, on every node (`$SYS` topics
    /// stay here).
    fn retain(&self, message: &Message) {
        if self.store_retained(message)
            && let Some(cluster) = &self.cluster
            && !message.topic.starts_with("$SYS/")
        {
            cluster.retained(message);
        }
    }

    /// [`Broker::retain`] on this node only: a new topic beyond `max_retained` is not
    /// stored (nor written to the backplane); false then.
    pub(crate) fn store_retained(&self, message: &Message) -> bool {
        let Ok(name) = TopicName::parse(&message.topic, self.cfg.max_topic_levels) else {
            return false;
        };
        let mut retained = write(&self.retained);
        if message.payload.is_empty() {
            retained.remove(name);
        } else if retained.len() < self.cfg.max_retained || retained.get(name).is_some() {
            retained.set(name, message.clone());
        } else {
            drop(retained);
            self.stats.retained_refused();
            return false;
        }
        true
    }

    /// Replaces the retained messages, but `$SYS` ones, with `messages` (the cluster's,
    /// read again after this node may have missed changes).
    pub(crate) fn replace_retained(&self, messages: Vec<Message>) {
        let mut fresh = Retained::new();
        let sys = TopicFilter::parse("$SYS/#", self.cfg.max_topic_levels);
        let mut retained = write(&self.retained);
        if let Ok(sys) = sys {
            retained.matching(&sys, |m| {
                if let Ok(name) = TopicName::parse(&m.topic, self.cfg.max_topic_levels) {
                    fresh.set(name, m.clone());
                }
            });
        }
        *retained = fresh;
        drop(retained);
        for message in &messages {
            self.store_retained(message);
        }
    }

    /// Queues for `session` the retained messages `filter` matches (those not expired), as
    /// a new subscription with `options` receives them: RETAIN set, QoS capped.
    pub fn send_retained(&self, session: &Session, filter: &TopicFilter, options: &SubOptions) {
        let now = Instant::now();
        let mut found = Vec::new();
        read(&self.retained).matching(filter, |m| {
            if !m.expired(now) {
                found.push(m.clone());
            }
        });
        for message in found {
            let qos = message.qos.min(options.options.qos);
            let out = Outgoing {
                message,
                qos,
                retain: true,
                identifiers: options.identifier.into_iter().collect(),
                journal: 0,
            };
            self.enqueue(session, out);
        }
    }

    /// Queues `out` for `session`, counting a drop.
    fn enqueue(&self, session: &Session, out: Outgoing) -> bool {
        match session.enqueue(out, self.cfg.max_queued) {
            crate::session::Enqueued::Queued => true,
            crate::session::Enqueued::QueueFull => {
                self.stats.dropped(crate::stats::Drop::QueueFull);
                false
            }
            crate::session::Enqueued::Offline => false,
        }
    }

    /// The connected clients.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let index = read(&self.index);
        let mut out: Vec<ClientInfo> = index
            .sessions
            .values()
            .filter_map(|s| {
                let state = s.lock();
                let a = state.attached.as_ref()?;
                Some(ClientInfo {
                    client_id: s.client_id.to_string(),
                    version: match a.version {
                        Version::V311 => "3.1.1",
                        Version::V5 => "5.0",
                    },
                    address: a.peer,
                    subscriptions: state.subscriptions.len(),
                    queued: state.queue.len(),
                    inflight: state.inflight.len(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// The most a subscription may be granted.
    pub fn maximum_qos(&self) -> QoS {
        QoS::ExactlyOnce
    }
}

/// What the unit tests of the broker, routing and wills build brokers and sessions with.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::codec::SubscriptionOptions;
    use crate::topic::DEFAULT_MAX_LEVELS;

    /// A broker with `cfg` and timers on a tracker nobody waits for.
    pub(crate) fn broker(cfg: MqttConfig) -> Arc<Broker> {
        Arc::new(Broker::new(
            cfg,
            crate::auth::tests::open(),
            vec![("listen", "127.0.0.1:1883".parse().expect("address"))],
            None,
            (TaskTracker::new(), CancellationToken::new()),
        ))
    }

    /// A 5.0 connection of `client`, resuming its session if it has one.
    pub(crate) fn attach(b: &Broker, client: &str) -> Attached {
        b.attach(
            &client.into(),
            false,
            Version::V5,
            "127.0.0.1:1".parse().expect("address"),
        )
    }

    /// Subscribes `session` to `filter` at `qos`.
    pub(crate) fn subscribe(b: &Broker, session: &Session, filter: &str, qos: QoS) {
        let target = SubscriptionTarget::parse(filter, DEFAULT_MAX_LEVELS).expect("filter");
        let options = SubOptions {
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
            identifier: None,
        };
        b.subscribe(session, target, options);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{attach, broker, subscribe};
    use super::*;

    /// Connects `client`, subscribes it to `t` and disconnects it with `expiry` seconds.
    fn leave(b: &Arc<Broker>, client: &str, expiry: u32) -> Arc<Session> {
        let a = attach(b, client);
        subscribe(b, &a.session, "t", QoS::AtMostOnce);
        a.session.lock().expiry_interval = expiry;
        b.detach(&a.session, a.generation);
        a.session
    }
    #[tokio::test(start_paused = true)]
    async fn a_detached_session_ends_when_its_expiry_has_passed() {
        let b = broker(MqttConfig::default());
        leave(&b, "c", 60);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(b.index_sizes().0, 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(b.index_sizes().0, 0);
        let again = b.attach(
            &"c".into(),
            false,
            Version::V5,
            "127.0.0.1:1".parse().expect("address"),
        );
        assert!(!again.present);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnection_keeps_the_session_past_its_first_expiry() {
        let b = broker(MqttConfig::default());
        leave(&b, "c", 60);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let again = b.attach(
            &"c".into(),
            false,
            Version::V5,
            "127.0.0.1:1".parse().expect("address"),
        );
        assert!(again.present);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(b.index_sizes().0, 1);
    }

    #[test]
    fn a_session_with_expiry_0_ends_with_its_connection() {
        let b = broker(MqttConfig::default());
        leave(&b, "c", 0);
        assert_eq!(b.index_sizes().0, 0);
        assert!(b.clients().is_empty());
    }
}
