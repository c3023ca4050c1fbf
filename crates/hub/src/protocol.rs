//! The hub's wire protocol (docs/hub-protocol.md): the frames clients send, read strictly
//! — an unknown field, a wrong type or a bad name is an error that says what was wrong and
//! where, not something skipped — and written back ([`Frame::to_json`]) for clients built
//! in Rust (tests, the benchmark's load tool).
//!
//! Frames are JSON objects read by `serde_json` (the reference reader) field by field: the
//! error then names the field (`at`), which serde's derived enums cannot. A key given twice
//! is refused (a reader keeping the first and one keeping the last would see two different
//! frames). `data` is kept as the JSON text the client sent ([`Data`]) and relayed as
//! such: a number beyond what a float holds exactly reaches the other clients unchanged.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Longest room name, in bytes.
pub const MAX_ROOM: usize = 128;

/// Longest user id or anonymous name, in bytes.
pub const MAX_USER: usize = 64;

/// A room's name: 1 to [`MAX_ROOM`] characters from `A–Z a–z 0–9 - _ . :` — names that
/// need no escaping in a backplane key, a metric label or a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Room(String);

impl Room {
    /// `name` as a room name, or why it is not one.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > MAX_ROOM {
            return Err(format!("a room name has 1 to {MAX_ROOM} characters"));
        }
        match name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
        {
            Some(c) => Err(format!(
                "{c:?} is not allowed in a room name (A-Z a-z 0-9 - _ . :)"
            )),
            None => Ok(Self(name.to_owned())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Room {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Room {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse(&name).map_err(de::Error::custom)
    }
}

/// Where a reconnecting client stands in a room: the history's epoch and the next offset it
/// expects (its last message's offset + 1, or `joined`'s offset if it saw none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recover {
    /// The history's identity when the client was last in the room.
    pub epoch: String,
    /// The first offset the client has not seen.
    pub offset: u64,
}

/// A message's payload: any JSON value, kept as the text the client sent.
#[derive(Debug, Clone)]
pub struct Data(Box<RawValue>);

impl Data {
    /// `json` as a payload, if it is one JSON value.
    pub fn parse(json: &str) -> Option<Self> {
        RawValue::from_string(json.trim().to_owned()).ok().map(Self)
    }

    /// The JSON text, as sent.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

/// Written back as the very text that was read.
impl serde::Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Read from what nodes store and pass on, keeping the text.
impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self)
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Opens the session: with a token, or anonymously under a name.
    Connect(Credentials),
    /// Joins a room, recovering what was missed since `recover` if given.
    Join {
        /// The room.
        room: Room,
        /// The last message the client saw, when it reconnects.
        recover: Option<Recover>,
    },
    /// Leaves a room.
    Leave {
        /// The room.
        room: Room,
    },
    /// Publishes `data` to a room.
    Publish {
        /// The room.
        room: Room,
        /// Any JSON value.
        data: Data,
    },
    /// Sends `data` to every connection of a user.
    Send {
        /// The user id.
        to: String,
        /// Any JSON value.
        data: Data,
    },
    /// Who is in a room.
    Presence {
        /// The room.
        room: Room,
    },
    /// A room's last messages.
    History {
        /// The room.
        room: Room,
        /// How many at most.
        limit: Option<u32>,
    },
}

/// How a client identifies itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A signed token (docs/hub-protocol.md, "Tokens").
    Token(String),
    /// A name, where anonymous clients are allowed.
    Anonymous(String),
}

/// A frame from a client: a request and the `id` its reply carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Chosen by the client, echoed in the reply.
    pub id: Option<u64>,
    /// What it asks.
    pub request: Request,
}

/// Why a frame was refused: the `bad_request` error frame's message and the field it
/// names, and the frame's `id` when it could be read (the error frame carries it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    /// The frame's `id`, if it had a readable one.
    pub id: Option<u64>,
    /// What was wrong.
    pub message: String,
    /// The field, if one was.
    pub at: Option<&'static str>,
}

/// The fields each request type may have, `type` and `id` aside.
fn fields_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "connect" => &["token", "name"],
        "join" => &["room", "recover"],
        "leave" | "presence" => &["room"],
        "publish" => &["room", "data"],
        "send" => &["to", "data"],
        "history" => &["room", "limit"],
        _ => return None,
    })
}

/// A frame's fields in order, each as the JSON text it was sent as; a key given twice is
/// an error.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("{key:?} is given twice")));
                    }
                    fields.push((key, map.next_value()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Object)
    }
}

/// Reads one text frame.
pub fn decode(text: &str) -> Result<Frame, BadRequest> {
    let refused = |message: String| BadRequest {
        id: None,
        message,
        at: None,
    };
    if !text.trim_start().starts_with('{') {
        return Err(refused("a frame is a JSON object".into()));
    }
    let Fields(fields) = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => refused(e.to_string()),
        _ => refused(format!("not JSON: {e}")),
    })?;
    let mut r = Reader { fields, id: None };
    r.id = r.optional("id", Value::as_u64, "an unsigned integer")?;
    let kind: String = r.required("type", str_of, "a string")?;
    let Some(allowed) = fields_of(&kind) else {
        return Err(r.bad(Some("type"), format!("unknown type {kind:?}")));
    };
    if let Some((extra, _)) = r
        .fields
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "type" | "id") && !allowed.contains(&k.as_str()))
    {
        let message = format!("{kind:?} has no field {extra:?}");
        return Err(r.bad(None, message));
    }
    let request = match kind.as_str() {
        "connect" => {
            let token = r.optional("token", str_of, "a string")?;
            let name = r.optional("name", str_of, "a string")?;
            match (token, name) {
                (Some(t), None) => Request::Connect(Credentials::Token(t)),
                (None, Some(n)) => Request::Connect(Credentials::Anonymous(r.user("name", n)?)),
                _ => return Err(r.bad(None, "connect takes either token or name".into())),
            }
        }
        "join" => Request::Join {
            room: r.room()?,
            recover: r.recover()?,
        },
        "leave" => Request::Leave { room: r.room()? },
        "presence" => Request::Presence { room: r.room()? },
        "publish" => Request::Publish {
            room: r.room()?,
            data: r.data()?,
        },
        "send" => {
            let to = r.required("to", str_of, "a string")?;
            Request::Send {
                to: r.user("to", to)?,
                data: r.data()?,
            }
        }
        _ => Request::History {
            room: r.room()?,
            limit: r.optional("limit", as_u32, "an unsigned integer below 2^32")?,
        },
    };
    Ok(Frame { id: r.id, request })
}

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// The object being read, and its `id` once read (every error carries it).
struct Reader {
    fields: Vec<(String, Box<RawValue>)>,
    id: Option<u64>,
}

impl Reader {
    fn bad(&self, at: Option<&'static str>, message: String) -> BadRequest {
        BadRequest {
            id: self.id,
            message,
            at,
        }
    }

    /// The text of `field`, if the frame has it.
    fn raw(&self, field: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| &**v)
    }

    fn optional<T>(
        &self,
        field: &'static str,
        read: impl Fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<Option<T>, BadRequest> {
        let Some(raw) = self.raw(field) else {
            return Ok(None);
        };
        serde_json::from_str::<Value>(raw.get())
            .ok()
            .as_ref()
            .and_then(read)
            .map(Some)
            .ok_or_else(|| self.bad(Some(field), format!("{field} must be {what}")))
    }

    fn required<T>(
        &self,
        field: &'static str,
        read: impl Fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<T, BadRequest> {
        self.optional(field, read, what)?
            .ok_or_else(|| self.bad(Some(field), format!("{field} is missing")))
    }

    fn room(&self) -> Result<Room, BadRequest> {
        let name: String = self.required("room", str_of, "a string")?;
        Room::parse(&name).map_err(|why| self.bad(Some("room"), why))
    }

    fn user(&self, field: &'static str, name: String) -> Result<String, BadRequest> {
        if name.is_empty() || name.len() > MAX_USER || name.chars().any(char::is_control) {
            let message = format!("{field} has 1 to {MAX_USER} bytes and no control characters");
            return Err(self.bad(Some(field), message));
        }
        Ok(name)
    }

    fn data(&self) -> Result<Data, BadRequest> {
        self.raw("data")
            .map(|raw| Data(raw.to_owned()))
            .ok_or_else(|| self.bad(Some("data"), "data is missing".into()))
    }

    fn recover(&self) -> Result<Option<Recover>, BadRequest> {
        let Some(raw) = self.raw("recover") else {
            return Ok(None);
        };
        let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        let wrong = || {
            self.bad(
                Some("recover"),
                "recover is {\"epoch\": string, \"offset\": unsigned integer}".into(),
            )
        };
        let Value::Object(o) = &v else {
            return Err(wrong());
        };
        if o.len() != 2 {
            return Err(wrong());
        }
        match (
            o.get("epoch").and_then(Value::as_str),
            o.get("offset").and_then(Value::as_u64),
        ) {
            (Some(epoch), Some(offset)) => Ok(Some(Recover {
                epoch: epoch.to_owned(),
                offset,
            })),
            _ => Err(wrong()),
        }
    }
}

impl Frame {
    /// The frame as a client sends it: [`decode`] reads it back to `self`.
    pub fn to_json(&self) -> String {
        let mut fields: Vec<(&str, String)> = Vec::new();
        let text = |v: Value| v.to_string();
        if let Some(id) = self.id {
            fields.push(("id", id.to_string()));
        }
        let (kind, room) = match &self.request {
            Request::Connect(Credentials::Token(t)) => {
                fields.push(("token", text(t.as_str().into())));
                ("connect", None)
            }
            Request::Connect(Credentials::Anonymous(n)) => {
                fields.push(("name", text(n.as_str().into())));
                ("connect", None)
            }
            Request::Join { room, recover } => {
                if let Some(r) = recover {
                    let mut at = Map::new();
                    at.insert("epoch".into(), r.epoch.as_str().into());
                    at.insert("offset".into(), r.offset.into());
                    fields.push(("recover", text(Value::Object(at))));
                }
                ("join", Some(room))
            }
            Request::Leave { room } => ("leave", Some(room)),
            Request::Presence { room } => ("presence", Some(room)),
            Request::Publish { room, data } => {
                fields.push(("data", data.as_str().to_owned()));
                ("publish", Some(room))
            }
            Request::Send { to, data } => {
                fields.push(("to", text(to.as_str().into())));
                fields.push(("data", data.as_str().to_owned()));
                ("send", None)
            }
            Request::History { room, limit } => {
                if let Some(l) = limit {
                    fields.push(("limit", l.to_string()));
                }
                ("history", Some(room))
            }
        };
        fields.push(("type", text(kind.into())));
        if let Some(room) = room {
            fields.push(("room", text(room.as_str().into())));
        }
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", text(k.into())))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}
