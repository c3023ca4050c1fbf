//! The hub of one node: its rooms, its connected users, and what a connection may ask of
//! them. Connections ([`crate::connection`]) and the publish API call it; the cluster
//! ([`crate::cluster`]) links it to the other nodes when the backplane is Redis.
//!
//! A room exists on a node while somebody there is in it. On a single node a room is also
//! kept while its history is (its messages live only here); in a cluster its history lives
//! in the room's Redis stream, so the node lets it go with its last member and stops
//! listening to it — a node follows only the rooms and users its own clients need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::HubConfig;
use crate::frames::{self, Body, Present, Stored, Text};
use crate::outbox::Outbox;
use crate::protocol::{Credentials, Data, Recover, Room as RoomName};
use crate::room::{Joined, Joiner, Keep, Room};
use crate::stats::Stats;
use crate::token::{Identity, Tokens};

/// Why a request was refused: the `error` frame's `code` and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// From the protocol's table of codes.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl Refused {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The backplane cannot be reached.
    pub(crate) fn unavailable(e: &backplane::BackplaneError) -> Self {
        Self::new(
            "unavailable",
            format!("the hub's backplane cannot be reached ({e}); nothing was sent, retry"),
        )
    }
}

/// A connection that passed `connect`.
#[derive(Debug)]
pub struct Session {
    /// Unique on this node.
    pub conn: u64,
    /// Who it is.
    pub user: Arc<str>,
    /// Its name.
    pub name: Arc<str>,
    /// The rooms its token allows; `None`: `[hub] anonymous_rooms`.
    rooms: Option<Vec<crate::token::RoomPattern>>,
    /// Where its frames go.
    pub outbox: Outbox,
}

/// A room's slot in the node's table: set up once (in a cluster that reads the stream),
/// however many connections join at the same moment.
type Slot = Arc<OnceCell<Arc<Room>>>;

/// The hub of this node.
pub struct Hub {
    cfg: HubConfig,
    /// This node's name among the nodes.
    pub(crate) node: Arc<str>,
    /// Where it listens.
    pub(crate) listen: std::net::SocketAddr,
    tokens: Option<Tokens>,
    /// A single node's history identity: made at start, since its history is in memory.
    epoch: Arc<str>,
    cluster: Option<Arc<Cluster>>,
    rooms: Mutex<HashMap<RoomName, Slot>>,
    users: Mutex<HashMap<Arc<str>, UserHere>>,
    next_conn: AtomicU64,
    /// Bytes of history the rooms hold together.
    held: Arc<AtomicUsize>,
    /// Woken when they hold more than `history_memory`.
    over_budget: Notify,
    /// Counters for the admin API and `/metrics`.
    pub stats: Stats,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// A user's connections on this node.
#[derive(Debug, Default)]
struct UserHere {
    connections: Vec<(u64, Outbox)>,
    /// Stops the cluster's follower of the user's channel when the last one goes.
    following: Option<CancellationToken>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Now, in ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Hub {
    /// A hub for `cfg`; `cluster` links it to other nodes.
    pub(crate) fn new(
        cfg: HubConfig,
        (node, listen): (Arc<str>, std::net::SocketAddr),
        tokens: Option<Tokens>,
        cluster: Option<Arc<Cluster>>,
        (tasks, shutdown): (TaskTracker, CancellationToken),
    ) -> Self {
        Self {
            cfg,
            epoch: format!("{}-{:x}", node, now_ms()).into(),
            node,
            listen,
            tokens,
            cluster,
            rooms: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            held: Arc::default(),
            over_budget: Notify::new(),
            stats: Stats::default(),
            tasks,
            shutdown,
        }
    }

    /// Where the hub listens (the port chosen when the file said 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listen
    }

    /// The running configuration.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// The link to the other nodes, when there are any.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomName, Slot>> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn users(&self) -> MutexGuard<'_, HashMap<Arc<str>, UserHere>> {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn keep(&self) -> Keep {
        Keep {
            size: self.cfg.history_size,
            ttl: self.cfg.history_ttl,
            held: self.held.clone(),
        }
    }

    /// Who `credentials` say the client is, or why not.
    pub fn identify(&self, credentials: &Credentials) -> Result<Identity, Refused> {
        match credentials {
            Credentials::Token(token) => {
                let tokens = self.tokens.as_ref().ok_or_else(|| {
                    Refused::new(
                        "unauthorized",
                        "this hub accepts no tokens; connect with a name",
                    )
                })?;
                tokens
                    .verify(token)
                    .map_err(|why| Refused::new("unauthorized", why))
            }
            Credentials::Anonymous(name) if self.cfg.allow_anonymous => {
                Ok(Identity::anonymous(name))
            }
            Credentials::Anonymous(_) => Err(Refused::new(
                "unauthorized",
                "this hub does not allow anonymous clients; connect with a token",
            )),
        }
    }

    /// Registers a connection of `identity` writing to `outbox`.
    pub async fn open(self: &Arc<Self>, identity: Identity, outbox: Outbox) -> Session {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let user: Arc<str> = identity.user.into();
        let first = {
            let mut users = self.users();
            let here = users.entry(user.clone()).or_default();
            here.connections.push((conn, outbox.clone()));
            here.connections.len() == 1
        };
        if first && let Some(cluster) = &self.cluster {
            let stop = CancellationToken::new();
            let following = {
                let mut users = self.users();
                match users.get_mut(&user) {
                    Some(here) if here.following.is_none() => {
                        here.following = Some(stop.clone());
                        true
                    }
                    _ => false,
                }
            };
            if following {
                cluster.follow_user(self, user.clone(), stop).await;
            }
        }
        self.stats.connected();
        Session {
            conn,
            user,
            name: identity.name.into(),
            rooms: identity.rooms,
            outbox,
        }
    }

    /// Takes `session` out of every room it is in and out of the node's users.
    pub async fn close(self: &Arc<Self>, session: &Session, rooms: &[RoomName]) {
        for room in rooms {
            self.leave(session, room).await;
        }
        let mut users = self.users();
        if let Some(here) = users.get_mut(&session.user) {
            here.connections.retain(|(c, _)| *c != session.conn);
            if here.connections.is_empty() {
                if let Some(stop) = here.following.take() {
                    stop.cancel();
                }
                users.remove(&session.user);
            }
        }
        drop(users);
        self.stats.disconnected();
    }

    /// Whether `session` may join `room`.
    pub fn may_join(&self, session: &Session, room: &RoomName) -> bool {
        match &session.rooms {
            Some(patterns) => patterns.iter().any(|p| p.matches(room)),
            None => self.cfg.anonymous_may_join(room),
        }
    }

    /// The room `name` on this node, set up if it was not (in a cluster: its stream read
    /// and its channel followed).
    async fn room(self: &Arc<Self>, name: &RoomName) -> Result<Arc<Room>, Refused> {
        let slot = self.rooms().entry(name.clone()).or_default().clone();
        let room = slot
            .get_or_try_init(|| async {
                match &self.cluster {
                    Some(cluster) => cluster.open_room(self, name).await,
                    None => Ok(Arc::new(Room::new(
                        name.clone(),
                        self.epoch.clone(),
                        self.keep(),
                        0,
                        Vec::new(),
                    ))),
                }
            })
            .await;
        match room {
            Ok(room) => Ok(room.clone()),
            Err(e) => {
                // A slot whose set-up failed (Redis away) is not left behind: the next join
                // makes its own.
                let mut rooms = self.rooms();
                if rooms
                    .get(name)
                    .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.get().is_none())
                {
                    rooms.remove(name);
                }
                Err(Refused::unavailable(&e))
            }
        }
    }

    /// The room `name` if this node has it.
    fn existing(&self, name: &RoomName) -> Option<Arc<Room>> {
        self.rooms().get(name).and_then(|slot| slot.get().cloned())
    }

    /// Puts `session` in `room` and queues the `joined` reply; `Ok(true)` if it was not in
    /// it before.
    pub async fn join(
        self: &Arc<Self>,
        session: &Session,
        room: &RoomName,
        recover: Option<&Recover>,
        id: Option<u64>,
    ) -> Result<bool, Refused> {
        loop {
            let r = self.room(room).await?;
            let others = self
                .cluster
                .as_ref()
                .map(|c| c.present_elsewhere(room))
                .unwrap_or_default();
            let joiner = Joiner {
                conn: session.conn,
                user: &session.user,
                name: &session.name,
                outbox: &session.outbox,
                id,
                recover,
            };
            match r.join(&joiner, &others, now_ms()) {
                Joined::Closed => continue,
                Joined::Already => return Ok(false),
                Joined::Member { first } => {
                    if first && let Some(cluster) = &self.cluster {
                        cluster
                            .announce(room, &session.user, &session.name, true)
                            .await;
                    }
                    return Ok(true);
                }
            }
        }
    }

    /// Takes `session` out of `room`; false if it was not in it.
    pub async fn leave(self: &Arc<Self>, session: &Session, room: &RoomName) -> bool {
        let left = {
            let mut rooms = self.rooms();
            let Some(r) = rooms.get(room).and_then(|s| s.get()).cloned() else {
                return false;
            };
            let cluster = self.cluster.clone();
            let elsewhere =
                |user: &str| cluster.as_ref().is_some_and(|c| c.is_elsewhere(room, user));
            let Some(left) = r.leave(session.conn, elsewhere) else {
                return false;
            };
            if left.empty && r.close_if_unused(self.cluster.is_none(), now_ms()) {
                rooms.remove(room);
            }
            left
        };
        if left.last
            && let Some(cluster) = &self.cluster
        {
            cluster
                .announce(room, &session.user, &session.name, false)
                .await;
        }
        true
    }

    /// Whether `session` is in `room`.
    pub fn is_member(&self, session: &Session, room: &RoomName) -> bool {
        self.existing(room).is_some_and(|r| r.has(session.conn))
    }

    /// Stores `data` in `room` from `from` and delivers it everywhere; its epoch and
    /// offset.
    pub async fn publish(
        self: &Arc<Self>,
        room: &RoomName,
        (from, name): (&str, &str),
        data: Data,
    ) -> Result<(Arc<str>, u64), Refused> {
        let body = Body {
            from: from.to_owned(),
            name: name.to_owned(),
            time: now_ms(),
            data,
        };
        self.stats.published();
        let published = match &self.cluster {
            Some(cluster) => cluster.publish(self, room, &body).await,
            None => {
                let r = self.room(room).await?;
                Ok((r.epoch.clone(), r.append(&body)))
            }
        };
        if self.history_bytes() > self.cfg.history_memory {
            self.over_budget.notify_one();
        }
        published
    }

    /// Hands `stored`, numbered by the cluster, to the room here if there is one.
    pub(crate) fn sequence(&self, room: &RoomName, stored: Arc<Stored>) -> Option<Arc<Room>> {
        let r = self.existing(room)?;
        r.sequence(stored);
        Some(r)
    }

    /// Sends `data` from `sender` to every connection of user `to`; how many connections
    /// of that user there are, on every node.
    pub async fn send(
        self: &Arc<Self>,
        sender: &Session,
        to: &str,
        data: Data,
    ) -> Result<usize, Refused> {
        let body = Body {
            from: sender.user.to_string(),
            name: sender.name.to_string(),
            time: now_ms(),
            data,
        };
        let here = self.deliver_direct(to, &frames::direct(&body));
        let elsewhere = match &self.cluster {
            Some(cluster) => cluster.send(to, &body).await?,
            None => 0,
        };
        self.stats.direct();
        Ok(here + elsewhere)
    }

    /// Queues a `direct` frame to every connection of `user` here; how many.
    pub(crate) fn deliver_direct(&self, user: &str, frame: &Text) -> usize {
        let users = self.users();
        let Some(here) = users.get(user) else {
            return 0;
        };
        for (_, outbox) in &here.connections {
            outbox.push(frame.clone());
        }
        here.connections.len()
    }

    /// Who is in `room`, on every node.
    pub fn presence(&self, room: &RoomName) -> Vec<Present> {
        let mut all = self.existing(room).map(|r| r.here()).unwrap_or_default();
        if let Some(cluster) = &self.cluster {
            all.extend(cluster.present_elsewhere(room));
        }
        all.sort();
        all.dedup_by(|a, b| a.user == b.user);
        all
    }

    /// The epoch and last `limit` messages of `room`, as this node holds them.
    pub fn history(&self, room: &RoomName, limit: usize) -> Option<(Arc<str>, Vec<Arc<Stored>>)> {
        let r = self.existing(room)?;
        Some((r.epoch.clone(), r.history(limit, now_ms())))
    }

    /// The rooms this node holds, with their members here.
    pub fn rooms_here(&self) -> Vec<(RoomName, usize)> {
        let rooms: Vec<(RoomName, Arc<Room>)> = self
            .rooms()
            .iter()
            .filter_map(|(name, slot)| slot.get().map(|r| (name.clone(), r.clone())))
            .collect();
        let mut out: Vec<(RoomName, usize)> =
            rooms.into_iter().map(|(n, r)| (n, r.members())).collect();
        out.sort();
        out
    }

    /// Every room here, for the cluster's presence records.
    pub(crate) fn room_handles(&self) -> Vec<Arc<Room>> {
        self.rooms()
            .values()
            .filter_map(|slot| slot.get().cloned())
            .collect()
    }

    /// Users connected here, with their connection counts.
    pub(crate) fn users_here(&self) -> Vec<(Arc<str>, usize)> {
        self.users()
            .iter()
            .map(|(u, h)| (u.clone(), h.connections.len()))
            .collect()
    }

    /// Bytes of history the rooms hold together.
    pub fn history_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Keeps the history within `history_memory` until shutdown: woken by a publish that
    /// went over it, and every [`Self::SWEEP`] (when a single node also drops the rooms
    /// nobody is in whose history expired).
    pub(crate) async fn keep_history(self: Arc<Self>) {
        let mut every = tokio::time::interval(Self::SWEEP);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if self.cluster.is_none() {
                        self.sweep();
                    }
                }
                () = self.over_budget.notified() => {}
                () = self.shutdown.cancelled() => return,
            }
            self.shed_history();
        }
    }

    /// Drops the oldest messages of every room, a time cutoff at a time, until the rooms
    /// hold at most `history_memory`: the oldest history goes first, wherever it is.
    fn shed_history(&self) {
        let budget = self.cfg.history_memory;
        while self.history_bytes() > budget {
            let rooms = self.room_handles();
            let (Some(oldest), now) = (rooms.iter().filter_map(|r| r.oldest()).min(), now_ms())
            else {
                return;
            };
            // Halve the age of what is kept (at the least by a millisecond).
            let cutoff = oldest + (now.saturating_sub(oldest) / 2).max(1);
            let shed: usize = rooms.iter().map(|r| r.shed_before(cutoff)).sum();
            self.stats.shed(shed);
        }
    }

    /// Drops the rooms of a single node that nobody is in and whose history expired.
    pub(crate) fn sweep(&self) {
        let now = now_ms();
        self.rooms()
            .retain(|_, slot| slot.get().is_none_or(|r| !r.close_if_unused(true, now)));
    }

    /// The room `name` when this node has it (the cluster's followers deliver to it).
    pub(crate) fn room_here(&self, name: &RoomName) -> Option<Arc<Room>> {
        self.existing(name)
    }

    /// How often the single node sweeps its rooms.
    pub(crate) const SWEEP: Duration = Duration::from_secs(30);
}
