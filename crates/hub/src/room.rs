//! One room as this node holds it: its members here, its recent messages, and the order
//! they are delivered in.
//!
//! Every message has an offset (on a single node the room counts them; in a cluster the
//! room's Redis stream does), and a room delivers offsets in order, each once: one that
//! arrives early waits in `pending` until the gap before it is filled (by the message that
//! was late, or by the cluster reading the stream), one that arrives again is dropped. The
//! last `history_size` delivered messages stay in `recent`, which answers `history` and
//! recovery. Members are registered and answered under the same lock that delivers, which
//! is what makes the promise of `joined` hold: every message up to the reply's `offset` is
//! in the reply (when recovering) or behind it, every later one comes after it, none twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::frames::{self, Body, Messages, Present, Stored, Text};
use crate::outbox::Outbox;
use crate::protocol::{Recover, Room as RoomName};

/// Messages that may wait for an earlier one before the room stops waiting and asks for
/// the gap to be read from the stream at once.
pub(crate) const MAX_PENDING: usize = 4096;

/// How much history a room keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keep {
    /// Messages.
    pub size: usize,
    /// Age.
    pub ttl: Duration,
}

/// One room on this node.
#[derive(Debug)]
pub(crate) struct Room {
    /// Its name.
    pub name: RoomName,
    /// Its history's identity (docs/hub-protocol.md, "Offsets, epochs and recovery").
    pub epoch: Arc<str>,
    keep: Keep,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The next offset to deliver.
    next: u64,
    /// The last delivered messages, oldest first, contiguous up to `next - 1`.
    recent: VecDeque<Arc<Stored>>,
    /// Messages that came before an earlier one, by offset.
    pending: BTreeMap<u64, Arc<Stored>>,
    /// Connections in the room here, by connection id.
    members: HashMap<u64, Member>,
    /// Users in the room here, with their connection count.
    here: HashMap<Arc<str>, Here>,
    /// Set when the room was dropped from the node's table: a join that raced with it
    /// must find the room again.
    closed: bool,
}

#[derive(Debug)]
struct Member {
    user: Arc<str>,
    outbox: Outbox,
}

#[derive(Debug)]
struct Here {
    name: Arc<str>,
    connections: u32,
}

/// What a connection joining a room is.
pub(crate) struct Joiner<'a> {
    /// Its connection id.
    pub conn: u64,
    /// Its user id and name.
    pub user: &'a Arc<str>,
    /// Its name.
    pub name: &'a Arc<str>,
    /// Where its frames go.
    pub outbox: &'a Outbox,
    /// The request's id, for the `joined` reply.
    pub id: Option<u64>,
    /// Where it stands, when it reconnects.
    pub recover: Option<&'a Recover>,
}

/// What a join did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// The connection is a member now; `first` if its user was not in the room here.
    Member {
        /// The user's first connection in the room on this node.
        first: bool,
    },
    /// It already was a member (the join was answered anyway).
    Already,
    /// The room was dropped meanwhile: find it again.
    Closed,
}

/// What a leave did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Left {
    /// The user's last connection in the room on this node left.
    pub last: bool,
    /// Nobody is in the room here any more.
    pub empty: bool,
}

/// The `joined` reply.
#[derive(Serialize)]
struct JoinedReply<'a> {
    room: &'a RoomName,
    epoch: &'a str,
    offset: u64,
    presence: &'a [Present],
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Messages<'a>>,
}

impl Room {
    /// A room whose next offset is `next` and whose last messages were `recent`.
    pub fn new(
        name: RoomName,
        epoch: Arc<str>,
        keep: Keep,
        next: u64,
        recent: Vec<Arc<Stored>>,
    ) -> Self {
        let recent: VecDeque<_> = recent
            .into_iter()
            .skip_while(|m| m.offset + (keep.size as u64) < next)
            .collect();
        Self {
            name,
            epoch,
            keep,
            inner: Mutex::new(Inner {
                next,
                recent,
                pending: BTreeMap::new(),
                members: HashMap::new(),
                here: HashMap::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `body` at the room's next offset and delivers it (a single node: the room
    /// numbers its messages itself); returns the offset.
    pub fn append(&self, body: &Body) -> u64 {
        let mut inner = self.lock();
        let offset = inner.next;
        let stored = Arc::new(frames::message(&self.name, &self.epoch, offset, body));
        self.deliver(&mut inner, stored);
        offset
    }

    /// Takes `stored`, numbered elsewhere (a cluster: the stream): delivers it and what it
    /// unblocks if it is the next one, keeps it if it came early, drops it if delivered
    /// already. Returns the first missing offset while messages wait for it.
    pub fn sequence(&self, stored: Arc<Stored>) -> Option<u64> {
        let mut inner = self.lock();
        if stored.offset >= inner.next {
            inner.pending.insert(stored.offset, stored);
        }
        self.drain(&mut inner);
        (!inner.pending.is_empty()).then_some(inner.next)
    }

    /// Delivers the waiting messages that are next in line, drops those behind.
    fn drain(&self, inner: &mut Inner) {
        while let Some(entry) = inner.pending.first_entry() {
            if *entry.key() > inner.next {
                break;
            }
            let m = entry.remove();
            if m.offset == inner.next {
                self.deliver(inner, m);
            }
        }
    }

    /// Whether the room was dropped from the node's table.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Skips the offsets below `to`, which can no longer be had (the stream was trimmed
    /// past them before this node read them), and delivers what waited for them.
    pub fn skip_to(&self, to: u64) {
        let mut inner = self.lock();
        if to > inner.next {
            inner.next = to;
            inner.recent.clear();
            self.drain(&mut inner);
        }
    }

    /// Gives up on the first gap: delivers from the first message waiting after it.
    pub fn skip_gap(&self) {
        let first = self.lock().pending.keys().next().copied();
        if let Some(first) = first {
            self.skip_to(first);
        }
    }

    /// The first missing offset, when messages wait for it.
    pub fn first_missing(&self) -> Option<u64> {
        let inner = self.lock();
        (!inner.pending.is_empty()).then_some(inner.next)
    }

    /// The next offset to deliver, and how many messages wait for a gap to be filled.
    pub fn position(&self) -> (u64, usize) {
        let inner = self.lock();
        (inner.next, inner.pending.len())
    }

    /// Hands `m`, the next offset, to every member and to `recent`.
    fn deliver(&self, inner: &mut Inner, m: Arc<Stored>) {
        debug_assert_eq!(m.offset, inner.next);
        inner.next = m.offset + 1;
        for member in inner.members.values() {
            member.outbox.push(m.frame.clone());
        }
        inner.recent.push_back(m);
        while inner.recent.len() > self.keep.size {
            inner.recent.pop_front();
        }
    }

    /// The index in `recent` of the first message still within `history_ttl`.
    fn first_live(&self, inner: &Inner, now: u64) -> usize {
        let ttl = u64::try_from(self.keep.ttl.as_millis()).unwrap_or(u64::MAX);
        inner
            .recent
            .iter()
            .position(|m| m.time.saturating_add(ttl) > now)
            .unwrap_or(inner.recent.len())
    }

    /// Registers `joiner` and queues its `joined` reply (with the recovered messages), in
    /// one step with delivery; `others` are the users in the room on other nodes.
    pub fn join(&self, joiner: &Joiner<'_>, others: &[Present], now: u64) -> Joined {
        let mut inner = self.lock();
        if inner.closed {
            return Joined::Closed;
        }
        let already = inner.members.contains_key(&joiner.conn);
        let first = !already && !inner.here.contains_key(joiner.user);
        if first {
            // The joiner learns of itself from the reply's presence, the others now.
            let event = frames::presence_event(true, &self.name, joiner.user, joiner.name);
            if !others.iter().any(|p| *p.user == **joiner.user) {
                Self::broadcast(&inner, &event);
            }
        }
        if !already {
            inner.members.insert(
                joiner.conn,
                Member {
                    user: joiner.user.clone(),
                    outbox: joiner.outbox.clone(),
                },
            );
            inner
                .here
                .entry(joiner.user.clone())
                .or_insert_with(|| Here {
                    name: joiner.name.clone(),
                    connections: 0,
                })
                .connections += 1;
        }
        let presence = Self::presence_of(&inner, others);
        let first_live = self.first_live(&inner, now);
        let (recovered, messages) = match joiner.recover {
            None => (None, None),
            Some(r) => {
                let kept = inner
                    .recent
                    .get(first_live)
                    .map_or(inner.next, |m| m.offset);
                if *r.epoch == *self.epoch && r.offset <= inner.next && r.offset >= kept {
                    let from = first_live + (r.offset - kept) as usize;
                    let missed: Vec<Arc<Stored>> = inner.recent.range(from..).cloned().collect();
                    (Some(true), Some(missed))
                } else {
                    (Some(false), None)
                }
            }
        };
        let reply = frames::reply(
            "joined",
            joiner.id,
            &JoinedReply {
                room: &self.name,
                epoch: &self.epoch,
                offset: inner.next,
                presence: &presence,
                recovered,
                messages: messages.as_deref().map(Messages),
            },
        );
        joiner.outbox.push(reply);
        if already {
            Joined::Already
        } else {
            Joined::Member { first }
        }
    }

    /// Removes connection `conn`; tells the others when its user's last connection here
    /// left and the user is on no other node (`elsewhere`).
    pub fn leave(&self, conn: u64, elsewhere: impl FnOnce(&str) -> bool) -> Option<Left> {
        let mut inner = self.lock();
        let member = inner.members.remove(&conn)?;
        let mut last = false;
        if let Some(here) = inner.here.get_mut(&member.user) {
            here.connections -= 1;
            if here.connections == 0 {
                last = true;
                let name = here.name.clone();
                inner.here.remove(&member.user);
                if !elsewhere(&member.user) {
                    let event = frames::presence_event(false, &self.name, &member.user, &name);
                    Self::broadcast(&inner, &event);
                }
            }
        }
        Some(Left {
            last,
            empty: inner.members.is_empty(),
        })
    }

    /// Marks the room dropped if nobody is in it and, unless `keep_history`, whatever its
    /// history holds; true if it was.
    pub fn close_if_unused(&self, keep_history: bool, now: u64) -> bool {
        let mut inner = self.lock();
        let unused = inner.members.is_empty()
            && (!keep_history || self.first_live(&inner, now) == inner.recent.len());
        if unused {
            inner.closed = true;
        }
        unused
    }

    /// Whether connection `conn` is in the room.
    pub fn has(&self, conn: u64) -> bool {
        self.lock().members.contains_key(&conn)
    }

    fn broadcast(inner: &Inner, frame: &Text) {
        for member in inner.members.values() {
            member.outbox.push(frame.clone());
        }
    }

    /// A presence event from another node's user, sent here unless the user is also here
    /// (then nothing changed for the members).
    pub fn remote_presence(&self, joined: bool, user: &str, name: &str) {
        let inner = self.lock();
        if !inner.here.contains_key(user) {
            Self::broadcast(
                &inner,
                &frames::presence_event(joined, &self.name, user, name),
            );
        }
    }

    /// The users here.
    pub fn here(&self) -> Vec<Present> {
        Self::presence_of(&self.lock(), &[])
    }

    /// The users here and `others`, sorted, each once.
    fn presence_of(inner: &Inner, others: &[Present]) -> Vec<Present> {
        let mut all: Vec<Present> = inner
            .here
            .iter()
            .map(|(user, h)| Present {
                user: user.to_string(),
                name: h.name.to_string(),
            })
            .chain(others.iter().cloned())
            .collect();
        all.sort();
        all.dedup_by(|a, b| a.user == b.user);
        all
    }

    /// The last `limit` messages still kept, oldest first.
    pub fn history(&self, limit: usize, now: u64) -> Vec<Arc<Stored>> {
        let inner = self.lock();
        let first = self.first_live(&inner, now);
        let from = inner.recent.len().saturating_sub(limit).max(first);
        inner.recent.range(from..).cloned().collect()
    }

    /// Members here.
    pub fn members(&self) -> usize {
        self.lock().members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Inbox, outbox};
    use crate::protocol::Data;

    const KEEP: Keep = Keep {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    fn room() -> Room {
        Room::new(
            RoomName::parse("r").expect("room"),
            "e".into(),
            KEEP,
            0,
            Vec::new(),
        )
    }

    fn body(n: u64, time: u64) -> Body {
        Body {
            from: "a".into(),
            name: "A".into(),
            time,
            data: Data::parse(&n.to_string()).expect("JSON"),
        }
    }

    fn stored(offset: u64) -> Arc<Stored> {
        Arc::new(frames::message(
            &RoomName::parse("r").expect("room"),
            "e",
            offset,
            &body(offset, 1000),
        ))
    }

    fn drain(inbox: &mut Inbox) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| inbox.ready())
            .map(|f| serde_json::from_str(f.as_str()).expect("JSON"))
            .collect()
    }

    fn join(room: &Room, conn: u64, user: &str, out: &Outbox, recover: Option<Recover>) -> Joined {
        let (user, name): (Arc<str>, Arc<str>) = (user.into(), user.to_uppercase().into());
        let joiner = Joiner {
            conn,
            user: &user,
            name: &name,
            outbox: out,
            id: Some(1),
            recover: recover.as_ref(),
        };
        room.join(&joiner, &[], 2000)
    }

    #[test]
    fn offsets_are_delivered_in_order_once_whatever_order_they_come_in() {
        let r = room();
        let (out, mut inbox) = outbox(64);
        assert_eq!(join(&r, 1, "u", &out, None), Joined::Member { first: true });
        drain(&mut inbox);
        assert_eq!(r.sequence(stored(1)), Some(0));
        assert_eq!(r.sequence(stored(3)), Some(0));
        assert_eq!(r.sequence(stored(0)), Some(2));
        assert_eq!(r.sequence(stored(1)), Some(2));
        assert_eq!(r.sequence(stored(2)), None);
        assert_eq!(r.sequence(stored(3)), None);
        let offsets: Vec<u64> = drain(&mut inbox)
            .iter()
            .map(|f| f["offset"].as_u64().expect("offset"))
            .collect();
        assert_eq!(offsets, [0, 1, 2, 3]);
        assert_eq!(r.position(), (4, 0));
    }

    #[test]
    fn recovery_hands_back_exactly_what_was_missed_or_says_it_cannot() {
        let r = room();
        for n in 0..5 {
            assert_eq!(r.append(&body(n, 1000)), n);
        }
        // Kept: offsets 2, 3, 4 (history_size 3); next is 5.
        let cases = [
            (("e", 3), Some((true, vec![3, 4]))),
            (("e", 2), Some((true, vec![2, 3, 4]))),
            (("e", 5), Some((true, vec![]))),
            (("e", 1), Some((false, vec![]))),
            (("e", 6), Some((false, vec![]))),
            (("other", 4), Some((false, vec![]))),
        ];
        for (conn, ((epoch, offset), want)) in cases.into_iter().enumerate() {
            let (out, mut inbox) = outbox(8);
            let recover = Recover {
                epoch: epoch.into(),
                offset,
            };
            join(&r, conn as u64, "u", &out, Some(recover));
            let reply = drain(&mut inbox).remove(0);
            assert_eq!(reply["type"], "joined");
            assert_eq!(reply["offset"], 5);
            let (recovered, offsets) = want.expect("a case");
            assert_eq!(reply["recovered"], recovered, "{epoch} {offset}");
            let got: Vec<u64> = reply["messages"]
                .as_array()
                .map(|m| m.iter().map(|f| f["offset"].as_u64().expect("o")).collect())
                .unwrap_or_default();
            assert_eq!(got, offsets, "{epoch} {offset}");
        }
    }

    #[test]
    fn expired_messages_are_neither_history_nor_recoverable() {
        let r = room();
        r.append(&body(0, 1000));
        r.append(&body(1, 50_000));
        // At 61,500 ms the first is older than the 60 s ttl.
        assert_eq!(
            r.history(10, 61_500)
                .iter()
                .map(|m| m.offset)
                .collect::<Vec<_>>(),
            [1]
        );
        let (out, mut inbox) = outbox(8);
        let (user, name): (Arc<str>, Arc<str>) = ("u".into(), "U".into());
        let recover = Recover {
            epoch: "e".into(),
            offset: 0,
        };
        let joiner = Joiner {
            conn: 1,
            user: &user,
            name: &name,
            outbox: &out,
            id: None,
            recover: Some(&recover),
        };
        r.join(&joiner, &[], 61_500);
        assert_eq!(drain(&mut inbox)[0]["recovered"], false);
        assert!(!r.close_if_unused(true, 200_000), "a member is in it");
    }

    #[test]
    fn presence_events_go_to_the_others_on_a_users_first_join_and_last_leave() {
        let r = room();
        let (a, mut a_in) = outbox(8);
        let (b1, mut b1_in) = outbox(8);
        let (b2, mut b2_in) = outbox(8);
        join(&r, 1, "a", &a, None);
        assert_eq!(join(&r, 2, "b", &b1, None), Joined::Member { first: true });
        assert_eq!(join(&r, 3, "b", &b2, None), Joined::Member { first: false });
        assert_eq!(join(&r, 3, "b", &b2, None), Joined::Already);
        let a_got = drain(&mut a_in);
        assert_eq!(a_got[0]["type"], "joined");
        assert_eq!(
            a_got[1],
            serde_json::json!({"type": "user_joined", "room": "r", "user": "b", "name": "B"})
        );
        assert_eq!(
            a_got.len(),
            2,
            "one event for b's two connections: {a_got:?}"
        );
        let b1_got = drain(&mut b1_in);
        assert_eq!(
            b1_got[0]["presence"],
            serde_json::json!([{"user": "a", "name": "A"}, {"user": "b", "name": "B"}])
        );
        drain(&mut b2_in);
        assert_eq!(
            r.leave(2, |_| false),
            Some(Left {
                last: false,
                empty: false
            })
        );
        assert!(drain(&mut a_in).is_empty());
        assert_eq!(
            r.leave(3, |_| false),
            Some(Left {
                last: true,
                empty: false
            })
        );
        assert_eq!(drain(&mut a_in)[0]["type"], "user_left");
        assert_eq!(r.leave(3, |_| false), None);
        assert_eq!(
            r.leave(1, |_| false),
            Some(Left {
                last: true,
                empty: true
            })
        );
        assert!(r.close_if_unused(false, 0));
        assert_eq!(join(&r, 4, "c", &a, None), Joined::Closed);
    }
}
