//! The two wire protocols, as text frames: what a client writes and what it makes of a
//! frame it reads.
//!
//! - **lintas hub** (docs/hub-protocol.md): WebSocket at `/ws`, one JSON object per frame;
//!   `connect` with a `name` (anonymous), `join`, `publish`; the server answers each with
//!   `connected` / `joined` / `published` and sends `message` frames. WebSocket pings are
//!   answered by tungstenite itself.
//! - **Socket.IO v4** over a raw WebSocket (`/socket.io/?EIO=4&transport=websocket`): the
//!   server opens with an Engine.IO `0{...}` packet and pings with `2`, which the client
//!   answers with `3`; Socket.IO packets ride in Engine.IO `4` packets: `40{auth}` connects
//!   to the main namespace, `42[id]["event",arg]` is an event (with an ack id when an
//!   answer is wanted), `43id[...]` an ack. The bench server (bench/hub/socketio/server.js)
//!   acknowledges `join` and `publish` and emits `message` {room, from, data}.

use std::str::FromStr;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    Lintas,
    SocketIo,
}

impl FromStr for Proto {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lintas" => Ok(Proto::Lintas),
            "socketio" => Ok(Proto::SocketIo),
            _ => bail!("unknown protocol {s:?} (lintas or socketio)"),
        }
    }
}

/// The measured part of every message's `data`: publisher index, its sequence number and
/// when it was sent (ns on the tool's clock). `data` also carries `pad`, ignored here.
#[derive(Deserialize)]
pub struct Payload {
    #[serde(rename = "pub")]
    pub publisher: u32,
    pub seq: u64,
    pub sent: u64,
}

/// What a frame from the server means to a client.
pub enum Incoming<'a> {
    /// Engine.IO's open packet (Socket.IO only; the lintas hub has none).
    Open,
    /// The session is set up: lintas `connected`, Socket.IO `40`.
    Connected,
    /// The answer to a request (lintas `joined` / `published`, a Socket.IO ack).
    Reply,
    /// A room message.
    Message(Payload),
    /// An Engine.IO ping: the client must answer [`PONG`].
    Ping,
    /// The server refused something or ends the session: the frame as sent.
    Refused(&'a str),
    /// Anything else (the hub's presence events).
    Other,
}

/// Engine.IO's answer to a ping.
pub const PONG: &str = "3";

/// A JSON string literal of `s`.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

impl Proto {
    pub fn url(self, addr: &str) -> String {
        match self {
            Proto::Lintas => format!("ws://{addr}/ws"),
            Proto::SocketIo => format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
        }
    }

    /// Whether the server speaks first (Engine.IO's open packet) before the client connects.
    pub fn server_opens(self) -> bool {
        self == Proto::SocketIo
    }

    pub fn connect(self, name: &str) -> String {
        match self {
            Proto::Lintas => format!(r#"{{"type":"connect","name":{}}}"#, quoted(name)),
            Proto::SocketIo => format!(r#"40{{"name":{}}}"#, quoted(name)),
        }
    }

    pub fn join(self, room: &str) -> String {
        match self {
            Proto::Lintas => format!(r#"{{"type":"join","id":0,"room":{}}}"#, quoted(room)),
            Proto::SocketIo => format!(r#"420["join",{}]"#, quoted(room)),
        }
    }

    /// A publish request with id `id` (echoed in the answer) of `data`, a JSON text.
    pub fn publish(self, id: u64, room: &str, data: &str) -> String {
        match self {
            Proto::Lintas => format!(
                r#"{{"type":"publish","id":{id},"room":{},"data":{data}}}"#,
                quoted(room)
            ),
            Proto::SocketIo => {
                format!(
                    r#"42{id}["publish",{{"room":{},"data":{data}}}]"#,
                    quoted(room)
                )
            }
        }
    }

    pub fn parse(self, text: &str) -> Result<Incoming<'_>> {
        match self {
            Proto::Lintas => parse_lintas(text),
            Proto::SocketIo => parse_socketio(text),
        }
        .with_context(|| format!("unexpected frame {:?}", clip(text)))
    }
}

/// The first 200 bytes of a frame, for error messages.
pub fn clip(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[derive(Deserialize)]
struct HubFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    data: Option<Payload>,
}

fn parse_lintas(text: &str) -> Result<Incoming<'_>> {
    let frame: HubFrame = serde_json::from_str(text)?;
    Ok(match frame.kind {
        "message" => Incoming::Message(frame.data.context("a message without data")?),
        "connected" => Incoming::Connected,
        "joined" | "published" => Incoming::Reply,
        "error" => Incoming::Refused(text),
        _ => Incoming::Other,
    })
}

#[derive(Deserialize)]
struct SocketIoMessage {
    data: Payload,
}

fn parse_socketio(text: &str) -> Result<Incoming<'_>> {
    let bytes = text.as_bytes();
    Ok(match (bytes.first(), bytes.get(1)) {
        (Some(b'0'), _) => Incoming::Open,
        (Some(b'2'), _) => Incoming::Ping,
        (Some(b'4'), Some(b'0')) => Incoming::Connected,
        (Some(b'4'), Some(b'2')) => {
            let (event, body): (&str, SocketIoMessage) = serde_json::from_str(&text[2..])?;
            if event != "message" {
                bail!("an event {event:?}, not \"message\"");
            }
            Incoming::Message(body.data)
        }
        (Some(b'4'), Some(b'3')) => Incoming::Reply,
        // 1: Engine.IO close; 41: disconnected from the namespace; 44: connect refused.
        (Some(b'1'), _) | (Some(b'4'), Some(b'1')) | (Some(b'4'), Some(b'4')) => {
            Incoming::Refused(text)
        }
        _ => Incoming::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lintas_frames() {
        let p = Proto::Lintas;
        assert_eq!(p.connect("c1"), r#"{"type":"connect","name":"c1"}"#);
        assert_eq!(p.join("r-1"), r#"{"type":"join","id":0,"room":"r-1"}"#);
        assert_eq!(
            p.publish(7, "r-1", r#"{"a":1}"#),
            r#"{"type":"publish","id":7,"room":"r-1","data":{"a":1}}"#
        );
        let msg = r#"{"type":"message","room":"r-1","from":"~c1","name":"c1","data":{"pub":3,"seq":9,"sent":12,"pad":"xx"},"time":1,"epoch":"e","offset":9}"#;
        match p.parse(msg).expect("a message") {
            Incoming::Message(d) => assert_eq!((d.publisher, d.seq, d.sent), (3, 9, 12)),
            _ => panic!("not a message"),
        }
        assert!(matches!(
            p.parse(r#"{"type":"connected","user":"~c1","name":"c1","node":"n","session":"s"}"#),
            Ok(Incoming::Connected)
        ));
        assert!(matches!(
            p.parse(r#"{"type":"user_joined","room":"r","user":"~a","name":"a"}"#),
            Ok(Incoming::Other)
        ));
        assert!(matches!(
            p.parse(r#"{"type":"error","code":"rate_limited","message":"m"}"#),
            Ok(Incoming::Refused(_))
        ));
        assert!(p.parse("[]").is_err());
    }

    #[test]
    fn socketio_packets() {
        let p = Proto::SocketIo;
        assert_eq!(p.connect("c1"), r#"40{"name":"c1"}"#);
        assert_eq!(p.join("r-1"), r#"420["join","r-1"]"#);
        assert_eq!(
            p.publish(7, "r-1", r#"{"a":1}"#),
            r#"427["publish",{"room":"r-1","data":{"a":1}}]"#
        );
        let msg = r#"42["message",{"room":"r-1","from":"c1","data":{"pub":3,"seq":9,"sent":12,"pad":"xx"}}]"#;
        match p.parse(msg).expect("a message") {
            Incoming::Message(d) => assert_eq!((d.publisher, d.seq, d.sent), (3, 9, 12)),
            _ => panic!("not a message"),
        }
        assert!(matches!(p.parse(r#"0{"sid":"x"}"#), Ok(Incoming::Open)));
        assert!(matches!(p.parse("2"), Ok(Incoming::Ping)));
        assert!(matches!(
            p.parse(r#"40{"sid":"y"}"#),
            Ok(Incoming::Connected)
        ));
        assert!(matches!(
            p.parse(r#"4312[{"room":"r"}]"#),
            Ok(Incoming::Reply)
        ));
        assert!(matches!(
            p.parse(r#"44{"message":"no"}"#),
            Ok(Incoming::Refused(_))
        ));
        assert!(p.parse(r#"42["other",1]"#).is_err());
    }
}
