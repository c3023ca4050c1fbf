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
}
