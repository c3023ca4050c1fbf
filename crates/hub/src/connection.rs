//! One WebSocket connection, from its `connect` frame to its close.
//!
//! One task per connection reads the client's frames, answers them, and writes what its
//! queue ([`crate::outbox`]) holds — replies and room messages alike, in the order they
//! were queued, several per flush. It closes the connection itself when:
//!
//! - the first frame is not a good `connect`, or comes later than `connect_timeout` (4001);
//! - a frame is binary (1003), larger than `max_message` (1009), or the client sent
//!   `max_errors` bad frames in a row (1008);
//! - a ping is not answered within `pong_timeout` (4002);
//! - its queue overflowed: it reads slower than its rooms talk (4008);
//! - the node shuts down (1001).
//!
//! A write that the client does not take (it stopped reading and the socket's buffer is
//! full) is abandoned when the queue overflows or after `ping_interval + pong_timeout`,
//! whichever comes first, so a silent client never holds its task.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

use crate::frames::{self, Messages, Present, Text};
use crate::hub::{Hub, Refused, Session};
use crate::outbox::{Inbox, outbox};
use crate::protocol::{self, Credentials, Request, Room};
use crate::stats::Closed;
use crate::token::Identity;

/// Frames written per flush at most, so one busy connection does not starve the others of
/// its worker thread.
const BATCH: usize = 64;

/// How long the close frame may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The close code of a connection whose queue overflowed.
const SLOW_CONSUMER: u16 = 4008;

/// Why the hub closes a connection: the close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The close code (docs/hub-protocol.md, "Close codes").
    pub code: u16,
    /// For people.
    pub reason: String,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Serves the upgraded connection `ws` from `peer` until it ends.
pub async fn serve<S>(hub: Arc<Hub>, mut ws: WebSocketStream<S>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = hub.config();
    let identity = match timeout(cfg.connect_timeout, first_frame(&hub, &mut ws)).await {
        Ok(Ok(identity)) => identity,
        Ok(Err(Some(close))) => return goodbye(&mut ws, close).await,
        Ok(Err(None)) => return,
        Err(_) => {
            hub.stats.closed(Closed::Unauthorized);
            let close = Close::new(4001, "no connect frame within connect_timeout");
            return goodbye(&mut ws, close).await;
        }
    };
    let (outbox, mut inbox) = outbox(cfg.max_queued);
    let session = hub.open(identity, outbox).await;
    #[derive(Serialize)]
    struct Connected<'a> {
        user: &'a str,
        name: &'a str,
        node: &'a str,
        session: String,
    }
    session.outbox.push(frames::reply(
        "connected",
        None,
        &Connected {
            user: &session.user,
            name: &session.name,
            node: &hub.node,
            session: format!("{}-{}", hub.node, session.conn),
        },
    ));
    let mut conn = Connection {
        hub: hub.clone(),
        session,
        rooms: HashSet::new(),
        errors: 0,
        bucket: Bucket::new(cfg.publish_rate),
    };
    let close = conn.run(&mut ws, &mut inbox).await;
    let rooms: Vec<Room> = conn.rooms.drain().collect();
    hub.close(&conn.session, &rooms).await;
    match close {
        Some(close) => {
            debug!(%peer, code = close.code, reason = %close.reason, "hub connection closed");
            if close.code != SLOW_CONSUMER {
                // What was queued before the close (the error frame that explains it).
                let pending = async {
                    while let Some(frame) = inbox.ready() {
                        ws.feed(Message::Text(frame)).await?;
                    }
                    ws.flush().await
                };
                let _ = timeout(CLOSE_GRACE, pending).await;
            }
            goodbye(&mut ws, close).await;
        }
        None => debug!(%peer, "hub connection ended by the client"),
    }
}

/// Reads the `connect` frame: the client's identity, or how to close (`None`: the client
/// went away).
async fn first_frame<S>(hub: &Hub, ws: &mut WebSocketStream<S>) -> Result<Identity, Option<Close>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                hub.stats.closed(Closed::BadInput);
                return Err(Some(binary()));
            }
            Some(Err(WsError::Capacity(_))) => {
                hub.stats.closed(Closed::BadInput);
                return Err(Some(too_big(hub)));
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(None),
        };
        let refused = |id, code: &str, message: &str, at| {
            let frame = frames::error(id, code, message, at);
            (frame, Close::new(4001, message.to_owned()))
        };
        let (frame, close) = match protocol::decode(&text) {
            Ok(protocol::Frame {
                id,
                request: Request::Connect(credentials),
            }) => match hub.identify(&credentials) {
                Ok(identity) => return Ok(identity),
                Err(Refused { code, message }) => {
                    let at = match credentials {
                        Credentials::Token(_) => "token",
                        Credentials::Anonymous(_) => "name",
                    };
                    refused(id, code, &message, Some(at))
                }
            },
            Ok(frame) => refused(
                frame.id,
                "unauthorized",
                "the first frame must be connect",
                None,
            ),
            Err(bad) => refused(bad.id, "bad_request", &bad.message, bad.at),
        };
        hub.stats.closed(Closed::Unauthorized);
        let _ = timeout(CLOSE_GRACE, ws.send(Message::Text(frame))).await;
        return Err(Some(close));
    }
}

fn binary() -> Close {
    Close::new(
        1003,
        "binary frames are not part of the protocol; send JSON text frames",
    )
}

fn too_big(hub: &Hub) -> Close {
    Close::new(
        1009,
        format!("a frame is larger than {} bytes", hub.config().max_message),
    )
}

/// Sends the close frame, within [`CLOSE_GRACE`].
async fn goodbye<S>(ws: &mut WebSocketStream<S>, close: Close)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(close.code),
        reason: close.reason.into(),
    };
    let _ = timeout(CLOSE_GRACE, ws.close(Some(frame))).await;
}

/// Publishes allowed per second, with a burst of as many: a token bucket.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A connection past `connect`.
struct Connection {
    hub: Arc<Hub>,
    session: Session,
    rooms: HashSet<Room>,
    /// Bad frames in a row.
    errors: u32,
    bucket: Bucket,
}

impl Connection {
    /// Serves frames both ways until the connection ends; how to close it (`None`: the
    /// client closed it or went away).
    async fn run<S>(&mut self, ws: &mut WebSocketStream<S>, inbox: &mut Inbox) -> Option<Close>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let cfg = self.hub.config();
        let (every, wait) = (cfg.ping_interval, cfg.pong_timeout);
        let mut ping = tokio::time::interval_at(Instant::now() + every, every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pong = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(pong);
        let mut awaiting_pong = false;
        let stop = self.hub.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Some(Close::new(1001, "the node shuts down")),
                frame = inbox.next() => {
                    let Some(frame) = frame else { return Some(self.slow()) };
                    if let Err(close) = self.write(ws, inbox, frame).await {
                        return close;
                    }
                }
                m = ws.next() => match m {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(close) = self.handle(&text).await {
                            return Some(close);
                        }
                    }
                    Some(Ok(Message::Pong(_))) => {
                        awaiting_pong = false;
                        pong.as_mut().reset(Instant::now() + Duration::MAX / 4);
                    }
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Binary(_))) => {
                        self.hub.stats.closed(Closed::BadInput);
                        return Some(binary());
                    }
                    Some(Err(WsError::Capacity(_))) => {
                        self.hub.stats.closed(Closed::BadInput);
                        return Some(too_big(&self.hub));
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                },
                _ = ping.tick(), if !awaiting_pong => {
                    awaiting_pong = true;
                    pong.as_mut().reset(Instant::now() + wait);
                    if ws.send(Message::Ping(Default::default())).await.is_err() {
                        return None;
                    }
                }
                () = &mut pong, if awaiting_pong => {
                    self.hub.stats.closed(Closed::NoPong);
                    return Some(Close::new(4002, format!("no pong within {wait:?}")));
                }
            }
        }
    }

    fn slow(&self) -> Close {
        self.hub.stats.closed(Closed::SlowConsumer);
        Close::new(
            SLOW_CONSUMER,
            format!(
                "slow consumer: {} frames were waiting to be read",
                self.hub.config().max_queued
            ),
        )
    }

    /// Writes `first` and what else is queued, up to [`BATCH`], in one flush; abandons the
    /// write when the queue overflows meanwhile or the client takes nothing for
    /// `ping_interval + pong_timeout`.
    async fn write<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        inbox: &mut Inbox,
        first: Text,
    ) -> Result<(), Option<Close>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let cfg = self.hub.config();
        let deadline = cfg.ping_interval + cfg.pong_timeout;
        let mut frames = vec![first];
        while frames.len() < BATCH
            && let Some(f) = inbox.ready()
        {
            frames.push(f);
        }
        let send = async {
            for f in frames {
                ws.feed(Message::Text(f)).await?;
            }
            ws.flush().await
        };
        let overflowed = inbox.overflowed();
        tokio::select! {
            r = timeout(deadline, send) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(None),
                Err(_) => Err(Some(self.slow())),
            },
            () = overflowed => Err(Some(self.slow())),
        }
    }

    /// Answers one text frame; how to close the connection, if it must be.
    async fn handle(&mut self, text: &str) -> Option<Close> {
        let frame = match protocol::decode(text) {
            Ok(frame) => frame,
            Err(bad) => {
                self.errors += 1;
                self.refuse(bad.id, "bad_request", &bad.message, bad.at);
                if self.errors >= self.hub.config().max_errors {
                    self.hub.stats.closed(Closed::BadInput);
                    return Some(Close::new(
                        1008,
                        format!("{} bad frames in a row", self.errors),
                    ));
                }
                return None;
            }
        };
        self.errors = 0;
        let id = frame.id;
        if let Err((refused, at)) = self.answer(frame).await {
            self.refuse(id, refused.code, &refused.message, at);
        }
        None
    }

    fn refuse(&self, id: Option<u64>, code: &str, message: &str, at: Option<&str>) {
        self.hub.stats.refused();
        self.session
            .outbox
            .push(frames::error(id, code, message, at));
    }

    fn reply<T: Serialize>(&self, kind: &'static str, id: Option<u64>, fields: &T) {
        self.session.outbox.push(frames::reply(kind, id, fields));
    }

    /// The room `room` if this connection is in it.
    fn member(&self, room: &Room) -> Result<(), (Refused, Option<&'static str>)> {
        if self.rooms.contains(room) {
            Ok(())
        } else {
            Err((
                Refused::new("not_joined", format!("join room {:?} first", room.as_str())),
                Some("room"),
            ))
        }
    }

    fn rate(&mut self) -> Result<(), (Refused, Option<&'static str>)> {
        if self.bucket.take() {
            Ok(())
        } else {
            Err((
                Refused::new(
                    "rate_limited",
                    format!(
                        "more than {} messages per second; this one was not sent",
                        self.hub.config().publish_rate
                    ),
                ),
                None,
            ))
        }
    }

    /// Carries out one request and queues its reply.
    async fn answer(
        &mut self,
        frame: protocol::Frame,
    ) -> Result<(), (Refused, Option<&'static str>)> {
        let id = frame.id;
        let hub = self.hub.clone();
        match frame.request {
            Request::Connect(_) => Err((
                Refused::new("bad_request", "this connection is connected already"),
                None,
            )),
            Request::Join { room, recover } => {
                if !hub.may_join(&self.session, &room) {
                    let why = format!("you may not join room {:?}", room.as_str());
                    return Err((Refused::new("forbidden", why), Some("room")));
                }
                let max = hub.config().max_rooms;
                if !self.rooms.contains(&room) && self.rooms.len() >= max {
                    let why = format!("a connection may be in {max} rooms at most");
                    return Err((Refused::new("too_many_rooms", why), Some("room")));
                }
                hub.join(&self.session, &room, recover.as_ref(), id)
                    .await
                    .map_err(|r| (r, None))?;
                self.rooms.insert(room);
                Ok(())
            }
            Request::Leave { room } => {
                self.member(&room)?;
                self.rooms.remove(&room);
                hub.leave(&self.session, &room).await;
                #[derive(Serialize)]
                struct Left<'a> {
                    room: &'a Room,
                }
                self.reply("left", id, &Left { room: &room });
                Ok(())
            }
            Request::Publish { room, data } => {
                self.member(&room)?;
                self.rate()?;
                let from = (&*self.session.user, &*self.session.name);
                let (epoch, offset) = hub
                    .publish(&room, from, data)
                    .await
                    .map_err(|r| (r, None))?;
                #[derive(Serialize)]
                struct Published<'a> {
                    room: &'a Room,
                    epoch: &'a str,
                    offset: u64,
                }
                let reply = Published {
                    room: &room,
                    epoch: &epoch,
                    offset,
                };
                self.reply("published", id, &reply);
                Ok(())
            }
            Request::Send { to, data } => {
                self.rate()?;
                let connections = hub
                    .send(&self.session, &to, data)
                    .await
                    .map_err(|r| (r, None))?;
                #[derive(Serialize)]
                struct Sent<'a> {
                    to: &'a str,
                    connections: usize,
                }
                self.reply(
                    "sent",
                    id,
                    &Sent {
                        to: &to,
                        connections,
                    },
                );
                Ok(())
            }
            Request::Presence { room } => {
                self.member(&room)?;
                #[derive(Serialize)]
                struct Presence<'a> {
                    room: &'a Room,
                    users: &'a [Present],
                }
                let users = hub.presence(&room);
                self.reply(
                    "presence",
                    id,
                    &Presence {
                        room: &room,
                        users: &users,
                    },
                );
                Ok(())
            }
            Request::History { room, limit } => {
                self.member(&room)?;
                let size = hub.config().history_size;
                let limit = limit.map_or(size, |l| (l as usize).min(size));
                let (epoch, messages) = hub.history(&room, limit).unwrap_or_default();
                #[derive(Serialize)]
                struct History<'a> {
                    room: &'a Room,
                    epoch: &'a str,
                    messages: Messages<'a>,
                }
                let reply = History {
                    room: &room,
                    epoch: &epoch,
                    messages: Messages(&messages),
                };
                self.reply("history", id, &reply);
                Ok(())
            }
        }
    }
}
