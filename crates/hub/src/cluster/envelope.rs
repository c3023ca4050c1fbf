//! What hub nodes tell each other through the backplane, as JSON: on a room's channel its
//! messages (once stored in its stream) and its presence changes; on a user's channel the
//! direct messages to that user; under a key per node, the node's presence record.
//!
//! Envelopes are externally tagged (`{"m": {...}}`): serde reads those without buffering,
//! which keeps a message's data as the exact text its sender wrote.
//!
//! Every envelope names the node that sent it, so a node skips its own (it delivered them
//! to its members already). Whatever another node sent is decoded strictly and a record
//! that does not read is dropped and logged: a node never trusts its peers to be its own
//! version.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::frames::Body;
use crate::protocol::Room;

/// The channel of room `room`.
pub fn room_channel(room: &Room) -> String {
    format!("hub:room:{room}")
}

/// The channel of user `user`'s direct messages.
pub fn user_channel(user: &str) -> String {
    format!("hub:user:{user}")
}

/// The stream holding room `room`'s history.
pub fn room_stream(room: &Room) -> String {
    format!("hub-room-{room}")
}

/// The key prefix of the nodes' presence records.
pub const PRESENCE_KEYS: &str = "hub:presence:";

/// What travels on a room's or a user's channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Envelope {
    /// A message stored at `offset` of the room's stream.
    #[serde(rename = "m")]
    Message {
        /// The node that stored it.
        node: String,
        /// Its offset.
        offset: u64,
        /// What it holds.
        body: Body,
    },
    /// A user's first connection on `node` joined the room, or its last one left.
    #[serde(rename = "p")]
    Presence {
        /// The node.
        node: String,
        /// The node's presence version after the change.
        version: u64,
        /// The user id.
        user: String,
        /// The user's name.
        name: String,
        /// Joined, or left.
        joined: bool,
    },
    /// A direct message to the channel's user.
    #[serde(rename = "d")]
    Direct {
        /// The node it was sent from.
        node: String,
        /// What it holds.
        body: Body,
    },
}

impl Envelope {
    /// The envelope as sent.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// An envelope read back, or why it does not read.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A message body as the room's stream stores it.
pub fn encode_body(body: &Body) -> Bytes {
    Bytes::from(serde_json::to_vec(body).unwrap_or_default())
}

/// A stored message body read back.
pub fn decode_body(bytes: &[u8]) -> Result<Body, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// A node's presence record: who is connected to it and in which rooms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Bumped on every change of the node's presence; orders the record against the
    /// node's [`Envelope::Presence`] events.
    pub version: u64,
    /// Per room, its users on the node: id → name.
    pub rooms: BTreeMap<Room, BTreeMap<String, String>>,
    /// Per user, its connections on the node.
    pub users: BTreeMap<String, u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Data;

    #[test]
    fn envelopes_read_back_as_written_and_strangers_are_refused() {
        let m = Envelope::Message {
            node: "n1".into(),
            offset: 7,
            body: Body {
                from: "a".into(),
                name: "A".into(),
                time: 5,
                data: Data::parse(r#"{"x":[1,2]}"#).expect("JSON"),
            },
        };
        let bytes = m.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).expect("UTF-8"),
            r#"{"m":{"node":"n1","offset":7,"body":{"from":"a","name":"A","time":5,"data":{"x":[1,2]}}}}"#
        );
        assert_eq!(Envelope::decode(&bytes).expect("reads"), m);
        for bad in [
            &br#"{"x":{"node":"n"}}"#[..],
            br#"{"p":{"node":"n","version":1,"user":"u","name":"U","joined":true,"extra":1}}"#,
            br#"{"d":{"node":"n"}}"#,
            b"not json",
        ] {
            assert!(
                Envelope::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Fuzz target for what nodes read back from each other: random envelopes and records
    /// read back as written; truncated and mutated ones never panic the readers, and what
    /// they accept writes back to itself. Runs for `LINTAS_FUZZ_SECONDS` from
    /// `LINTAS_FUZZ_SEED` ([`testkit::fuzz`]).
    #[test]
    fn envelopes_and_records_fuzzed() {
        use rand::Rng;
        use rand::rngs::StdRng;
        use testkit::fuzz::Fuzz;
        use testkit::fuzz::http1::pick;

        fn text(rng: &mut StdRng) -> String {
            let parts = ["a", "Z", "9", "-", ":", "é", "\"", "\\", "\u{7}", "🍵"];
            (0..rng.random_range(0..6))
                .map(|_| *pick(rng, &parts))
                .collect()
        }
        fn body(rng: &mut StdRng) -> Body {
            let data = match rng.random_range(0..3) {
                0 => serde_json::json!(text(rng)).to_string(),
                1 => format!("{}", rng.random::<i64>()),
                _ => format!("{{\"k\":[{}, null]}}", rng.random::<u32>()),
            };
            Body {
                from: text(rng),
                name: text(rng),
                time: rng.random(),
                data: Data::parse(&data).expect("JSON"),
            }
        }
        fn room(rng: &mut StdRng) -> Room {
            Room::parse(&format!("r{}", rng.random::<u16>())).expect("room")
        }
        fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
            if bytes.is_empty() {
                return;
            }
            match rng.random_range(0..3) {
                0 => bytes.truncate(rng.random_range(0..bytes.len())),
                1 => {
                    let at = rng.random_range(0..bytes.len());
                    let extra = *pick(rng, &[&b",\"x\":1"[..], b"}", b"\"", b"-1", b"1e999"]);
                    bytes.splice(at..at, extra.iter().copied());
                }
                _ => {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = *pick(rng, b"\"{}:,0a ");
                }
            }
        }

        let mut fuzz = Fuzz::from_env("hub envelopes");
        let mut rng = fuzz.rng();
        while fuzz.next_case() {
            let envelope = match rng.random_range(0..3) {
                0 => Envelope::Message {
                    node: text(&mut rng),
                    offset: rng.random(),
                    body: body(&mut rng),
                },
                1 => Envelope::Presence {
                    node: text(&mut rng),
                    version: rng.random(),
                    user: text(&mut rng),
                    name: text(&mut rng),
                    joined: rng.random(),
                },
                _ => Envelope::Direct {
                    node: text(&mut rng),
                    body: body(&mut rng),
                },
            };
            let mut bytes = envelope.encode().to_vec();
            assert_eq!(
                Envelope::decode(&bytes).ok(),
                Some(envelope),
                "{}",
                fuzz.at()
            );
            mutate(&mut rng, &mut bytes);
            if let Ok(read) = Envelope::decode(&bytes) {
                assert_eq!(
                    Envelope::decode(&read.encode()).ok(),
                    Some(read),
                    "{}",
                    fuzz.at()
                );
            }

            let mut record = Record {
                version: rng.random(),
                ..Record::default()
            };
            for _ in 0..rng.random_range(0..3) {
                let users = (0..rng.random_range(0..3))
                    .map(|_| (text(&mut rng), text(&mut rng)))
                    .collect();
                record.rooms.insert(room(&mut rng), users);
                record.users.insert(text(&mut rng), rng.random());
            }
            let mut bytes = serde_json::to_vec(&record).expect("JSON");
            let read: Record = serde_json::from_slice(&bytes).expect("reads back");
            assert_eq!(read, record, "{}", fuzz.at());
            mutate(&mut rng, &mut bytes);
            if let Ok(read) = serde_json::from_slice::<Record>(&bytes) {
                let again: Record =
                    serde_json::from_slice(&serde_json::to_vec(&read).expect("JSON"))
                        .expect("reads back");
                assert_eq!(again, read, "{}", fuzz.at());
            }

            let stored = body(&mut rng);
            let mut bytes = encode_body(&stored).to_vec();
            assert_eq!(decode_body(&bytes).ok(), Some(stored), "{}", fuzz.at());
            mutate(&mut rng, &mut bytes);
            if let Ok(read) = decode_body(&bytes) {
                assert_eq!(
                    decode_body(&encode_body(&read)).ok(),
                    Some(read),
                    "{}",
                    fuzz.at()
                );
            }
        }
    }
}
