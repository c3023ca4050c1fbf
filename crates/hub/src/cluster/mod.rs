//! Hub nodes linked through the Redis backplane.
//!
//! - **Rooms.** A message is first appended to the room's stream (`hub-room-{room}`), which
//!   numbers it and keeps the room's history for every node; then the node delivers it to
//!   its own members and publishes it on the room's channel (`hub:room:{room}`), where the
//!   nodes with members in the room pick it up. Pub/sub is the fast path, the stream the
//!   truth: a node delivers a room's offsets in order, waits briefly for one that is late
//!   (two nodes publishing at once may be heard in either order) and then reads the gap from
//!   the stream; when its subscription was lost (Redis restarted, the connection dropped) it
//!   reads everything it missed from the stream; and every few seconds it checks the
//!   stream's end, for a message whose publication was lost with its node. Its clients so
//!   receive every message of their rooms, in order, once — or, if the history was trimmed
//!   before the node could read it, are skipped past what is gone.
//! - **Users.** A direct message is published on the user's channel (`hub:user:{user}`),
//!   followed by the nodes where the user has connections. It is not stored: a user
//!   connected nowhere does not get it, and the sender is told how many connections did.
//! - **Presence** ([`presence`]): each node's record under `hub:presence:{node}`, with an
//!   expiry, plus events on the rooms' channels.
//!
//! A node follows only the rooms and users its clients need: a room's channel from its
//! first member here to its last, a user's from its first connection here to its last.

pub mod envelope;
pub mod presence;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backplane::{Backplane, BackplaneError, IdempotencyKey, Stream, StreamOptions, Subscription};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::frames::{self, Body, Present, Stored};
use crate::hub::{Hub, Refused};
use crate::protocol::Room as RoomName;
use crate::room::{MAX_PENDING, Room};
use envelope::{Envelope, PRESENCE_KEYS, Record};
use presence::{Change, Views};

/// How long a room waits for a late message before reading the gap from the stream.
const GAP_WAIT: Duration = Duration::from_millis(200);

/// How often a room checks whether its subscription lost messages (and whether it was
/// dropped); a gap is read at its own deadline.
const ROOM_TICK: Duration = Duration::from_secs(1);

/// How often a room compares the stream's end with what it delivered, for a message whose
/// publication was lost.
const SYNC_EVERY: Duration = Duration::from_secs(5);

/// Entries read from a stream at once when catching up.
const READ_BATCH: usize = 512;

/// How often, in appends, the publishing node trims a room's stream to `history_size`.
const TRIM_EVERY: u64 = 64;

/// How long a publish keeps trying an append whose outcome it does not know.
const APPEND_PATIENCE: Duration = Duration::from_secs(5);

/// Pause between two tries of an append.
const APPEND_RETRY: Duration = Duration::from_millis(100);

/// Streams of rooms are read and trimmed by offset, never by consumer groups; their
/// idempotency keys outlive the tries of an append.
const OPTIONS: StreamOptions = StreamOptions {
    idempotency_window: Duration::from_secs(10),
    legacy_keys: None,
};

/// This node's link to the others.
#[derive(Debug)]
pub struct Cluster {
    backplane: Arc<dyn Backplane>,
    node: Arc<str>,
    views: Mutex<Views>,
    /// This node's presence version: bumped by every join or leave it announces.
    version: AtomicU64,
    /// Appends made, numbering their idempotency keys.
    appends: AtomicU64,
}

impl Cluster {
    /// The link of node `node` over `backplane`.
    pub fn new(backplane: Arc<dyn Backplane>, node: Arc<str>) -> Self {
        Self {
            backplane,
            node,
            views: Mutex::new(Views::default()),
            version: AtomicU64::new(0),
            appends: AtomicU64::new(0),
        }
    }

    fn views(&self) -> MutexGuard<'_, Views> {
        self.views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn stream(&self, room: &RoomName) -> Result<Arc<dyn Stream>, BackplaneError> {
        self.backplane
            .stream(&envelope::room_stream(room), OPTIONS)
            .await
    }

    /// Sets room `name` up on this node: follows its channel, then reads where its stream
    /// ends and its last `history_size` messages (in that order, so that nothing published
    /// in between is missed: it comes on the channel, or is in what was read, or both).
    pub async fn open_room(
        &self,
        hub: &Arc<Hub>,
        name: &RoomName,
    ) -> Result<Arc<Room>, BackplaneError> {
        let sub = self
            .backplane
            .subscribe(&envelope::room_channel(name))
            .await?;
        let stream = self.stream(name).await?;
        let end = stream.end().await?;
        let keep = hub.keep();
        let from = end.saturating_sub(keep.size as u64);
        let epoch: Arc<str> = stream.id().into();
        let recent = read_stored(&*stream, name, &epoch, from, end).await?;
        let room = Arc::new(Room::new(name.clone(), epoch, keep, end, recent));
        let follower = Follower {
            hub: hub.clone(),
            room: room.clone(),
            stream,
            sub,
        };
        hub.tasks.spawn(follower.run());
        Ok(room)
    }

    /// Stores `body` in `room`'s stream, delivers it here, and tells the other nodes.
    pub async fn publish(
        &self,
        hub: &Hub,
        room: &RoomName,
        body: &Body,
    ) -> Result<(Arc<str>, u64), Refused> {
        let stream = self
            .stream(room)
            .await
            .map_err(|e| Refused::unavailable(&e))?;
        let offset = self.append(&*stream, body).await?;
        let epoch: Arc<str> = stream.id().into();
        hub.sequence(room, Arc::new(frames::message(room, &epoch, offset, body)));
        let envelope = Envelope::Message {
            node: self.node.to_string(),
            offset,
            body: body.clone(),
        };
        if let Err(e) = self
            .backplane
            .publish(&envelope::room_channel(room), envelope.encode())
            .await
        {
            // Stored: the other nodes find it in the stream at their next check.
            debug!(%room, offset, error = %e, "hub message stored but not published");
        }
        let size = hub.config().history_size as u64;
        if (offset + 1) % TRIM_EVERY == 0 && offset + 1 > size {
            let below = offset + 1 - size;
            hub.tasks.spawn(async move {
                if let Err(e) = stream.truncate(below).await {
                    debug!(error = %e, "hub history not trimmed");
                }
            });
        }
        Ok((epoch, offset))
    }

    /// Appends `body` to `stream`; its offset. An append whose answer was lost (Redis went
    /// away mid-command) may have been stored: it is tried again under the same idempotency
    /// key for [`APPEND_PATIENCE`], so that it is stored once whatever happened, and the
    /// publisher is answered once that is known. Past it the answer is `unavailable`, and
    /// the message may or may not have been stored.
    async fn append(&self, stream: &dyn Stream, body: &Body) -> Result<u64, Refused> {
        let key = IdempotencyKey {
            key: format!(
                "{}:{}",
                self.node,
                self.appends.fetch_add(1, Ordering::Relaxed)
            ),
            body_hash: 0,
        };
        let record = envelope::encode_body(body);
        let deadline = Instant::now() + APPEND_PATIENCE;
        loop {
            match stream.append(vec![record.clone()], Some(key.clone())).await {
                Ok(appended) => return Ok(appended.offsets.start),
                Err(e) if e.retryable() && Instant::now() < deadline => {
                    debug!(error = %e, "hub append failed; trying again");
                    tokio::time::sleep(APPEND_RETRY).await;
                }
                Err(e) => return Err(Refused::unavailable(&e)),
            }
        }
    }

    /// Publishes a direct message to `to`'s channel; how many of `to`'s connections are on
    /// other nodes.
    pub async fn send(&self, to: &str, body: &Body) -> Result<usize, Refused> {
        let envelope = Envelope::Direct {
            node: self.node.to_string(),
            body: body.clone(),
        };
        self.backplane
            .publish(&envelope::user_channel(to), envelope.encode())
            .await
            .map_err(|e| Refused::unavailable(&e))?;
        Ok(self.views().connections(to))
    }

    /// Follows user `user`'s channel until `stop`, delivering its direct messages to its
    /// connections here.
    pub async fn follow_user(&self, hub: &Arc<Hub>, user: Arc<str>, stop: CancellationToken) {
        let mut sub = match self
            .backplane
            .subscribe(&envelope::user_channel(&user))
            .await
        {
            Ok(sub) => sub,
            Err(e) => {
                warn!(%user, error = %e, "hub: cannot follow a user's direct messages");
                return;
            }
        };
        let (hub, node) = (hub.clone(), self.node.clone());
        hub.tasks.clone().spawn(async move {
            loop {
                let bytes = tokio::select! {
                    () = stop.cancelled() => return,
                    () = hub.shutdown.cancelled() => return,
                    m = sub.recv() => match m {
                        Some(m) => m,
                        None => return,
                    },
                };
                match Envelope::decode(&bytes) {
                    Ok(Envelope::Direct { node: from, body }) if *from != *node => {
                        hub.deliver_direct(&user, &frames::direct(&body));
                    }
                    Ok(_) => {}
                    Err(e) => warn!(%user, error = %e, "hub: a direct message does not read"),
                }
            }
        });
    }

    /// Tells the other nodes that `user`'s first connection here joined `room`, or its last
    /// one left.
    pub async fn announce(&self, room: &RoomName, user: &str, name: &str, joined: bool) {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let envelope = Envelope::Presence {
            node: self.node.to_string(),
            version,
            user: user.to_owned(),
            name: name.to_owned(),
            joined,
        };
        if let Err(e) = self
            .backplane
            .publish(&envelope::room_channel(room), envelope.encode())
            .await
        {
            debug!(%room, error = %e, "hub presence event not published; the next record carries it");
        }
    }

    /// The users in `room` on other nodes.
    pub fn present_elsewhere(&self, room: &RoomName) -> Vec<Present> {
        self.views().present(room)
    }

    /// Whether `user` is in `room` on another node.
    pub fn is_elsewhere(&self, room: &RoomName, user: &str) -> bool {
        self.views().has(room, user)
    }

    /// The other nodes this one knows of.
    pub fn nodes(&self) -> Vec<String> {
        self.views().nodes()
    }

    /// Applies another node's presence event to room `room` here.
    fn presence_event(&self, hub: &Hub, room: &RoomName, event: (&str, u64, &str, &str, bool)) {
        let (node, version, user, name, joined) = event;
        let change = self
            .views()
            .apply(node, version, room, (user, name), joined);
        if let Some(change) = change {
            tell(hub, &[change]);
        }
    }

    /// Writes this node's presence record and reads the others', every `presence_tick`,
    /// until shutdown; then deletes its record so the others drop its users at once.
    pub async fn keep_presence(self: Arc<Self>, hub: Arc<Hub>) {
        let (tick, ttl) = (hub.config().presence_tick(), hub.config().presence_timeout);
        let key = format!("{PRESENCE_KEYS}{}", self.node);
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = hub.shutdown.cancelled() => break,
            }
            let record = self.record(&hub);
            let written = serde_json::to_vec(&record).unwrap_or_default();
            if let Err(e) = self.backplane.set(&key, written.into(), Some(ttl)).await {
                debug!(error = %e, "hub presence record not written");
                continue;
            }
            match self.backplane.scan(PRESENCE_KEYS).await {
                Ok(found) => {
                    let records = self.read_records(found);
                    let changes = self.views().replace(records);
                    tell(&hub, &changes);
                }
                Err(e) => debug!(error = %e, "hub presence records not read"),
            }
        }
        let _ = self.backplane.delete(&key).await;
    }

    /// This node's presence record, at least as new as its version.
    fn record(&self, hub: &Hub) -> Record {
        let version = self.version.load(Ordering::Relaxed);
        let mut record = Record {
            version,
            ..Record::default()
        };
        for room in hub.room_handles() {
            let users = room.here();
            if !users.is_empty() {
                record.rooms.insert(
                    room.name.clone(),
                    users.into_iter().map(|p| (p.user, p.name)).collect(),
                );
            }
        }
        for (user, n) in hub.users_here() {
            record
                .users
                .insert(user.to_string(), u32::try_from(n).unwrap_or(u32::MAX));
        }
        record
    }

    /// The other nodes' records among `found`; one that does not read is skipped (its node
    /// is then taken as gone until it writes one that does).
    fn read_records(&self, found: Vec<(String, bytes::Bytes)>) -> HashMap<String, Record> {
        found
            .into_iter()
            .filter_map(|(key, value)| {
                let node = key.strip_prefix(PRESENCE_KEYS)?;
                if *node == *self.node {
                    return None;
                }
                match serde_json::from_slice::<Record>(&value) {
                    Ok(record) => Some((node.to_owned(), record)),
                    Err(e) => {
                        warn!(%node, error = %e, "hub: another node's presence record does not read");
                        None
                    }
                }
            })
            .collect()
    }
}

/// Tells the members here of cluster-wide presence changes.
fn tell(hub: &Hub, changes: &[Change]) {
    for c in changes {
        if let Some(room) = hub.room_here(&c.room) {
            room.remote_presence(c.joined, &c.user, &c.name);
        }
    }
}

/// Reads `stream` from `from` to `to` (exclusive) as stored messages of `room`.
async fn read_stored(
    stream: &dyn Stream,
    room: &RoomName,
    epoch: &str,
    from: u64,
    to: u64,
) -> Result<Vec<Arc<Stored>>, BackplaneError> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let entries = stream.read(at, READ_BATCH).await?;
        let Some(last) = entries.last().map(|e| e.offset) else {
            break;
        };
        for e in entries.into_iter().filter(|e| e.offset < to) {
            match envelope::decode_body(&e.payload) {
                Ok(body) => out.push(Arc::new(frames::message(room, epoch, e.offset, &body))),
                Err(err) => {
                    warn!(%room, offset = e.offset, error = %err, "hub: a stored message does not read")
                }
            }
        }
        at = last + 1;
    }
    Ok(out)
}

/// The task that keeps a room here in step with the cluster, until the room is dropped.
struct Follower {
    hub: Arc<Hub>,
    room: Arc<Room>,
    stream: Arc<dyn Stream>,
    sub: Subscription,
}

impl Follower {
    async fn run(mut self) {
        let cluster = match self.hub.cluster() {
            Some(c) => c.clone(),
            None => return,
        };
        let mut missed = self.sub.missed();
        // When to read a gap from the stream, while one is waited for.
        let mut repair_at: Option<Instant> = None;
        let mut armed: Option<Instant> = None;
        let wake = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(wake);
        let mut synced = Instant::now();
        let mut tick = tokio::time::interval(ROOM_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if repair_at != armed {
                if let Some(at) = repair_at {
                    wake.as_mut().reset(at);
                }
                armed = repair_at;
            }
            let read = tokio::select! {
                m = self.sub.recv() => {
                    let Some(bytes) = m else { return };
                    self.take(&cluster, &bytes, &mut repair_at);
                    false
                }
                () = &mut wake, if repair_at.is_some() => true,
                _ = tick.tick() => {
                    if self.room.is_closed() || self.hub.shutdown.is_cancelled() {
                        return;
                    }
                    self.sub.missed() != missed || synced.elapsed() >= SYNC_EVERY
                }
            };
            if read {
                missed = self.sub.missed();
                synced = Instant::now();
                match self.catch_up().await {
                    Ok(()) => {
                        repair_at = self.room.first_missing().map(|_| Instant::now() + GAP_WAIT);
                    }
                    Err(e) => {
                        debug!(room = %self.room.name, error = %e, "hub room not caught up; retrying");
                        repair_at = Some(Instant::now() + GAP_WAIT);
                    }
                }
            }
        }
    }

    /// One envelope from the room's channel.
    fn take(&self, cluster: &Cluster, bytes: &[u8], repair_at: &mut Option<Instant>) {
        let room = &self.room.name;
        match Envelope::decode(bytes) {
            Ok(Envelope::Message { node, offset, body }) => {
                if *node == *self.hub.node {
                    return;
                }
                let stored = frames::message(room, &self.room.epoch, offset, &body);
                match self.room.sequence(Arc::new(stored)) {
                    Some(_) if self.room.position().1 > MAX_PENDING => {
                        // Too much waits on one gap: read it now.
                        *repair_at = Some(Instant::now());
                    }
                    Some(_) => {
                        repair_at.get_or_insert_with(|| Instant::now() + GAP_WAIT);
                    }
                    None => *repair_at = None,
                }
            }
            Ok(Envelope::Presence {
                node,
                version,
                user,
                name,
                joined,
            }) => {
                if *node != *self.hub.node {
                    cluster.presence_event(&self.hub, room, (&node, version, &user, &name, joined));
                }
            }
            Ok(Envelope::Direct { .. }) => {}
            Err(e) => warn!(%room, error = %e, "hub: an envelope from another node does not read"),
        }
    }

    /// Reads from the stream what the room has not delivered yet, up to the stream's end.
    async fn catch_up(&self) -> Result<(), BackplaneError> {
        // Where the room stands first: whatever waits then is below the end read after.
        let (next, waiting) = self.room.position();
        let end = self.stream.end().await?;
        if end <= next {
            if waiting > 0 {
                // What waits is beyond the stream's end: the stream lost entries (a Redis
                // that restarted without persistence). Deliver what there is.
                self.room.skip_gap();
            }
            return Ok(());
        }
        let mut at = next;
        while at < end {
            let entries = self.stream.read(at, READ_BATCH).await?;
            let Some(first) = entries.first().map(|e| e.offset) else {
                break;
            };
            if first > at {
                warn!(room = %self.room.name, from = at, to = first, "hub: messages trimmed before this node read them; skipped");
                self.room.skip_to(first);
            }
            for e in &entries {
                match envelope::decode_body(&e.payload) {
                    Ok(body) => {
                        let stored =
                            frames::message(&self.room.name, &self.room.epoch, e.offset, &body);
                        self.room.sequence(Arc::new(stored));
                    }
                    Err(err) => {
                        warn!(room = %self.room.name, offset = e.offset, error = %err, "hub: a stored message does not read; skipped");
                        self.room.skip_to(e.offset + 1);
                    }
                }
            }
            at = entries.last().map_or(end, |e| e.offset + 1);
        }
        Ok(())
    }
}
