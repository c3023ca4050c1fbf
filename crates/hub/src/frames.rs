//! The frames the hub sends (docs/hub-protocol.md, "Frames from the server"), each
//! written once as JSON text: a room message is serialized when this node sequences it and
//! the same bytes go to every member. Frames are [`Text`]: a WebSocket text message's
//! payload, known to be UTF-8 since it was written from a `String`, and cheap to clone.

use serde::Serialize;
pub use tokio_tungstenite::tungstenite::Utf8Bytes as Text;

use crate::protocol::{Data, Room};

/// A message as a room keeps it: what every member receives, and what `history` and
/// recovery hand back.
#[derive(Debug)]
pub struct Stored {
    /// Its place in the room.
    pub offset: u64,
    /// When the hub stored it, in ms since the Unix epoch.
    pub time: u64,
    /// The `message` frame, written once.
    pub frame: Text,
}

/// Who sent a message and what, as the room's history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// The sender's user id (`""`: an application, through the admin API).
    pub from: String,
    /// The sender's name.
    pub name: String,
    /// When the hub stored it, in ms since the Unix epoch.
    pub time: u64,
    /// The payload, as sent.
    pub data: Data,
}

/// The `message` frame of `body`, stored at `offset` of `room` under `epoch`.
pub fn message(room: &Room, epoch: &str, offset: u64, body: &Body) -> Stored {
    #[derive(Serialize)]
    struct Message<'a> {
        r#type: &'static str,
        room: &'a Room,
        from: &'a str,
        name: &'a str,
        data: &'a Data,
        time: u64,
        epoch: &'a str,
        offset: u64,
    }
    let frame = to_text(&Message {
        r#type: "message",
        room,
        from: &body.from,
        name: &body.name,
        data: &body.data,
        time: body.time,
        epoch,
        offset,
    });
    Stored {
        offset,
        time: body.time,
        frame,
    }
}

/// A `direct` frame.
pub fn direct(body: &Body) -> Text {
    #[derive(Serialize)]
    struct Direct<'a> {
        r#type: &'static str,
        from: &'a str,
        name: &'a str,
        data: &'a Data,
        time: u64,
    }
    to_text(&Direct {
        r#type: "direct",
        from: &body.from,
        name: &body.name,
        data: &body.data,
        time: body.time,
    })
}

/// A `user_joined` or `user_left` event.
pub fn presence_event(joined: bool, room: &Room, user: &str, name: &str) -> Text {
    #[derive(Serialize)]
    struct Event<'a> {
        r#type: &'static str,
        room: &'a Room,
        user: &'a str,
        name: &'a str,
    }
    to_text(&Event {
        r#type: if joined { "user_joined" } else { "user_left" },
        room,
        user,
        name,
    })
}

/// One user in a presence list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Present {
    /// The user id.
    pub user: String,
    /// Its name.
    pub name: String,
}

/// A reply to a request, carrying its `id`.
pub fn reply<T: Serialize>(kind: &'static str, id: Option<u64>, fields: &T) -> Text {
    #[derive(Serialize)]
    struct Reply<'a, T> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        #[serde(flatten)]
        fields: &'a T,
    }
    to_text(&Reply {
        r#type: kind,
        id,
        fields,
    })
}

/// An `error` frame: `code` from the protocol's table, `message` for people, `at` the
/// field at fault.
pub fn error(id: Option<u64>, code: &str, message: &str, at: Option<&str>) -> Text {
    #[derive(Serialize)]
    struct Error<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<&'a str>,
    }
    reply("error", id, &Error { code, message, at })
}

/// Messages as a JSON array of their `message` frames (for `joined` and `history`).
pub struct Messages<'a>(pub &'a [std::sync::Arc<Stored>]);

impl Serialize for Messages<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for m in self.0 {
            let raw: &serde_json::value::RawValue =
                serde_json::from_str(m.frame.as_str()).map_err(serde::ser::Error::custom)?;
            seq.serialize_element(raw)?;
        }
        seq.end()
    }
}

/// `value` as JSON; what is serialized here holds no map with non-string keys nor a
/// failing `Serialize`, so this cannot fail.
fn to_text<T: Serialize>(value: &T) -> Text {
    Text::from(serde_json::to_string(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(data: &str) -> Body {
        Body {
            from: "alice".into(),
            name: "Alice".into(),
            time: 1_796_000_000_000,
            data: Data::parse(data).expect("JSON"),
        }
    }

    #[test]
    fn a_message_frame_carries_the_data_as_sent() {
        let room = Room::parse("lobby").expect("room");
        let m = message(
            &room,
            "e1",
            42,
            &body(r#"{"n":123456789012345678901234567890}"#),
        );
        assert_eq!(
            m.frame.as_str(),
            r#"{"type":"message","room":"lobby","from":"alice","name":"Alice","data":{"n":123456789012345678901234567890},"time":1796000000000,"epoch":"e1","offset":42}"#
        );
        let list = serde_json::to_string(&Messages(&[std::sync::Arc::new(m)])).expect("JSON");
        assert!(
            list.starts_with(r#"[{"type":"message","room":"lobby""#),
            "{list}"
        );
    }

    #[test]
    fn replies_and_errors_carry_the_id_when_there_is_one() {
        assert_eq!(
            error(Some(7), "forbidden", "no", Some("room")).as_str(),
            r#"{"type":"error","id":7,"code":"forbidden","message":"no","at":"room"}"#
        );
        assert_eq!(
            error(None, "bad_request", "a frame is a JSON object", None).as_str(),
            r#"{"type":"error","code":"bad_request","message":"a frame is a JSON object"}"#
        );
        assert_eq!(
            direct(&body("1")).as_str(),
            r#"{"type":"direct","from":"alice","name":"Alice","data":1,"time":1796000000000}"#
        );
    }
}
