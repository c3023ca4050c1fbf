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

use std::collections::HashMap;
use std::hash::RandomState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Acl, Auth};
use crate::codec::{QoS, Version};
use crate::config::MqttConfig;
use crate::message::Message;
use crate::session::{Attachment, ClientId, Outgoing, Session, SubOptions, Wake};
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
    /// Who may connect.
    auth: Auth,
    /// What each client may publish and subscribe to.
    acl: Acl,
}

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
    /// `cfg` by [`MqttConfig::auth`]), running its timers on `tasks` until `shutdown`.
    pub fn new(
        cfg: MqttConfig,
        (auth, acl): (Auth, Acl),
        endpoints: Vec<(&'static str, SocketAddr)>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            endpoints,
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
    /// and, through the listening address, across nodes of a cluster.
    pub fn assign_client_id(&self) -> ClientId {
        let n = self.assigned.fetch_add(1, Ordering::Relaxed);
        format!("lintas-{}-{n}", self.local_addr().port()).into()
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
            state.will.take()
        };
        index.sessions.remove(&session.client_id);
        index.subscriptions.remove_key(&session.client_id);
        drop(index);
        if let Some(will) = will {
            crate::will::publish(self, will);
        }
    }

    /// Subscribes `session` to `target`; returns whether it already had that subscription
    /// (its options are replaced, §3.8.4).
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
        session
            .lock()
            .subscriptions
            .insert(target, options)
            .is_some()
    }

    /// Removes `session`'s subscription to `target`; returns whether it had one.
    pub fn unsubscribe(&self, session: &Session, target: &SubscriptionTarget) -> bool {
        let mut index = write(&self.index);
        index.subscriptions.remove(&session.client_id, target);
        session.lock().subscriptions.remove(target).is_some()
    }

    /// Publishes `message` from `from` (none: the broker itself): stores or clears it as
    /// retained if its RETAIN flag is set, then routes it. Returns how many sessions of this
    /// node it went to.
    pub fn publish(&self, message: &Message, from: Option<&ClientId>) -> usize {
        if message.retain {
            self.retain(message);
        }
        self.route(message, from)
    }

    /// Stores `message` as the retained message of its topic, or clears the topic when the
    /// payload is empty (§3.3.1.3). A new topic beyond `max_retained` is not stored.
    fn retain(&self, message: &Message) {
        let Ok(name) = TopicName::parse(&message.topic, self.cfg.max_topic_levels) else {
            return;
        };
        let mut retained = write(&self.retained);
        if message.payload.is_empty() {
            retained.remove(name);
        } else if retained.len() < self.cfg.max_retained || retained.get(name).is_some() {
            retained.set(name, message.clone());
        } else {
            drop(retained);
            self.stats.retained_refused();
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
            TaskTracker::new(),
            CancellationToken::new(),
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
