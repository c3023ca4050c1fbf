//! Who is connected to the other nodes, as this node knows it.
//!
//! Two sources feed it. Each node's **record** (under `hub:presence:{node}`, rewritten
//! every `presence_timeout / 4` with that expiry) is the truth: when a node dies its record
//! expires and its users leave every room within `presence_timeout` and one tick. Each
//! node's **events** (a user's first join or last leave of a room, on the room's channel)
//! make the change visible at once instead of at the next tick. Both carry the node's
//! presence version, so a record written before an event already applied does not undo it.
//!
//! What members see are changes of the cluster's presence: a user joined a room when it is
//! in it on some node and was on none, left when it is on none any more ([`Change`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::envelope::Record;
use crate::frames::Present;
use crate::protocol::Room;

/// The other nodes' presence.
#[derive(Debug, Default)]
pub struct Views {
    nodes: HashMap<String, Record>,
}

/// A user joined or left a room, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The room.
    pub room: Room,
    /// The user.
    pub user: String,
    /// Its name.
    pub name: String,
    /// Joined, or left.
    pub joined: bool,
}

impl Views {
    /// Whether `user` is in `room` on another node.
    pub fn has(&self, room: &Room, user: &str) -> bool {
        self.nodes.values().any(|r| {
            r.rooms
                .get(room)
                .is_some_and(|users| users.contains_key(user))
        })
    }

    /// The users in `room` on other nodes.
    pub fn present(&self, room: &Room) -> Vec<Present> {
        let mut all: BTreeMap<&str, &str> = BTreeMap::new();
        for record in self.nodes.values() {
            if let Some(users) = record.rooms.get(room) {
                for (user, name) in users {
                    all.insert(user, name);
                }
            }
        }
        all.into_iter()
            .map(|(user, name)| Present {
                user: user.to_owned(),
                name: name.to_owned(),
            })
            .collect()
    }

    /// Connections of `user` on other nodes.
    pub fn connections(&self, user: &str) -> usize {
        self.nodes
            .values()
            .filter_map(|r| r.users.get(user))
            .map(|n| *n as usize)
            .sum()
    }

    /// The nodes known.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.nodes.keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// Applies `node`'s event; the change it makes cluster-wide, if any.
    pub fn apply(
        &mut self,
        node: &str,
        version: u64,
        room: &Room,
        (user, name): (&str, &str),
        joined: bool,
    ) -> Option<Change> {
        let before = self.has(room, user);
        let record = self.nodes.entry(node.to_owned()).or_default();
        if version <= record.version {
            return None;
        }
        record.version = version;
        let users = record.rooms.entry(room.clone()).or_default();
        if joined {
            users.insert(user.to_owned(), name.to_owned());
        } else {
            users.remove(user);
            if users.is_empty() {
                record.rooms.remove(room);
            }
        }
        let after = self.has(room, user);
        (before != after).then(|| Change {
            room: room.clone(),
            user: user.to_owned(),
            name: name.to_owned(),
            joined: after,
        })
    }

    /// Takes `records`, every live node's but this one's (a node absent from it is gone);
    /// the changes cluster-wide.
    pub fn replace(&mut self, records: HashMap<String, Record>) -> Vec<Change> {
        let before = self.pairs();
        self.nodes.retain(|node, _| records.contains_key(node));
        for (node, record) in records {
            match self.nodes.get_mut(&node) {
                Some(known) if record.version < known.version => {}
                Some(known) => *known = record,
                None => {
                    self.nodes.insert(node, record);
                }
            }
        }
        let after = self.pairs();
        let left = before
            .difference(&after)
            .map(|(room, user, name)| (room, user, name, false));
        let joined = after
            .difference(&before)
            .map(|(room, user, name)| (room, user, name, true));
        left.chain(joined)
            .map(|(room, user, name, joined)| Change {
                room: room.clone(),
                user: user.clone(),
                name: name.clone(),
                joined,
            })
            .collect()
    }

    /// Every (room, user, name) on other nodes.
    fn pairs(&self) -> BTreeSet<(Room, String, String)> {
        let mut all: BTreeMap<(Room, String), String> = BTreeMap::new();
        for record in self.nodes.values() {
            for (room, users) in &record.rooms {
                for (user, name) in users {
                    all.insert((room.clone(), user.clone()), name.clone());
                }
            }
        }
        all.into_iter()
            .map(|((room, user), name)| (room, user, name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> Room {
        Room::parse(s).expect("room")
    }

    fn record(version: u64, rooms: &[(&str, &[&str])]) -> Record {
        let mut r = Record {
            version,
            ..Record::default()
        };
        for (name, users) in rooms {
            let users: BTreeMap<String, String> = users
                .iter()
                .map(|u| ((*u).to_owned(), u.to_uppercase()))
                .collect();
            for u in users.keys() {
                *r.users.entry(u.clone()).or_default() += 1;
            }
            r.rooms.insert(room(name), users);
        }
        r
    }

    fn change(r: &str, user: &str, joined: bool) -> Change {
        Change {
            room: room(r),
            user: user.into(),
            name: user.to_uppercase(),
            joined,
        }
    }

    #[test]
    fn a_user_joins_and_leaves_once_however_many_nodes_hold_it() {
        let mut v = Views::default();
        let lobby = room("lobby");
        assert_eq!(
            v.apply("n1", 1, &lobby, ("a", "A"), true),
            Some(change("lobby", "a", true))
        );
        assert_eq!(v.apply("n2", 1, &lobby, ("a", "A"), true), None);
        assert_eq!(v.apply("n1", 2, &lobby, ("a", "A"), false), None);
        assert_eq!(
            v.apply("n2", 2, &lobby, ("a", "A"), false),
            Some(change("lobby", "a", false))
        );
        // An event older than what the node's view holds changes nothing.
        assert_eq!(v.apply("n2", 1, &lobby, ("a", "A"), true), None);
        assert!(!v.has(&lobby, "a"));
    }

    #[test]
    fn records_replace_views_and_a_dead_nodes_users_leave() {
        let mut v = Views::default();
        let changes = v.replace(HashMap::from([
            ("n1".to_owned(), record(3, &[("lobby", &["a", "b"])])),
            (
                "n2".to_owned(),
                record(1, &[("lobby", &["b"]), ("ops", &["c"])]),
            ),
        ]));
        assert_eq!(
            changes,
            [
                change("lobby", "a", true),
                change("lobby", "b", true),
                change("ops", "c", true)
            ]
        );
        assert_eq!(v.connections("b"), 2);
        assert_eq!(
            v.present(&room("lobby")),
            [
                Present {
                    user: "a".into(),
                    name: "A".into()
                },
                Present {
                    user: "b".into(),
                    name: "B".into()
                }
            ]
        );
        // n2 died: its record expired. b is still on n1, c is gone.
        let changes = v.replace(HashMap::from([(
            "n1".to_owned(),
            record(3, &[("lobby", &["a", "b"])]),
        )]));
        assert_eq!(changes, [change("ops", "c", false)]);
        assert_eq!(v.nodes(), ["n1"]);
    }

    #[test]
    fn a_record_older_than_an_applied_event_does_not_undo_it() {
        let mut v = Views::default();
        v.replace(HashMap::from([("n1".to_owned(), record(1, &[]))]));
        v.apply("n1", 2, &room("lobby"), ("a", "A"), true);
        let changes = v.replace(HashMap::from([("n1".to_owned(), record(1, &[]))]));
        assert!(changes.is_empty(), "{changes:?}");
        assert!(v.has(&room("lobby"), "a"));
        let changes = v.replace(HashMap::from([("n1".to_owned(), record(2, &[]))]));
        assert_eq!(changes, [change("lobby", "a", false)]);
    }
}
