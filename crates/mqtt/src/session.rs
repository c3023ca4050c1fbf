//! One client's session: what outlives a connection (§4.1) and what the connection
//! currently attached to it needs to be woken.
//!
//! [`SessionState`] is the whole session in one struct, so the cluster layer can later
//! write it to the backplane's key/value space and read it back on another node:
//! subscriptions with their options, the bounded queue of messages waiting for the client,
//! the outbound messages in flight by packet identifier (QoS 1 awaiting PUBACK, QoS 2
//! awaiting PUBREC then PUBCOMP), the inbound QoS 2 identifiers awaiting PUBREL (a
//! PUBLISH re-sent with one of them is acknowledged but not routed again: exactly once),
//! the next packet identifier, the expiry interval and a will waiting for its delay. Only the
//! [`Attachment`] — which connection of this node holds the session now — is node-local.
//!
//! The state sits behind a plain mutex held for a few field updates, never across an
//! `.await`. Routing pushes into [`Session::enqueue`] and wakes the attached connection
//! ([`Wake`]); the connection then moves what the in-flight window allows from the queue
//! into flight and writes it all with one flush, so a burst of messages costs one wake-up.
//! A session without a connection keeps queueing QoS 1 and 2 messages (up to the same
//! bound) and drops QoS 0 ones, as Mosquitto does by default (`queue_qos0_messages false`):
//! a QoS 0 message promises nothing to an absent client.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::codec::{PacketId, QoS, SubscriptionOptions, Version, Will};
use crate::message::Message;
use crate::topic::{Combine, SubscriptionTarget};

/// A client identifier: the key of a session on this node and, later, in the cluster.
pub type ClientId = ByteString;

/// A subscription's options as the broker keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions {
    /// What the SUBSCRIBE asked for (QoS, no local, retain as published, retain handling).
    pub options: SubscriptionOptions,
    /// Its Subscription Identifier (5.0), sent back with every message it matches.
    pub identifier: Option<NonZeroU32>,
}

impl Combine for SubOptions {
    fn no_local(&self) -> bool {
        self.options.no_local
    }
    fn identifier(&self) -> Option<NonZeroU32> {
        self.identifier
    }
    /// One copy for overlapping subscriptions: the highest QoS, and the RETAIN flag kept
    /// if any of them asks for it.
    fn combine(&mut self, other: &Self) {
        self.options.qos = self.options.qos.max(other.options.qos);
        self.options.retain_as_published |= other.options.retain_as_published;
    }
}

/// One copy of a message for this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The message, shared with every other copy.
    pub message: Message,
    /// The QoS it is sent with: the message's, capped by the subscription's.
    pub qos: QoS,
    /// The RETAIN flag it is sent with (Retain As Published, or a retained message sent on
    /// subscribe).
    pub retain: bool,
    /// The Subscription Identifiers of the subscriptions it matched (empty: no allocation).
    pub identifiers: Vec<NonZeroU32>,
    /// Its number in the node's journal (`crate::cluster::journal`); 0 when it is not
    /// journaled (single node, QoS 0, a session without expiry).
    pub journal: u64,
}

/// Where an outbound QoS 1 or 2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// QoS 1, sent, awaiting PUBACK.
    AwaitingPubAck,
    /// QoS 2, sent, awaiting PUBREC.
    AwaitingPubRec,
    /// QoS 2, PUBREC received and PUBREL sent, awaiting PUBCOMP.
    AwaitingPubComp,
}

/// An outbound message with a packet identifier, until the client acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Its packet identifier.
    pub id: PacketId,
    /// The copy sent (re-sent with DUP after a reconnection).
    pub out: Outgoing,
    /// How far its acknowledgement has got.
    pub phase: Phase,
}

/// The connection of this node that holds a session now.
#[derive(Debug)]
pub struct Attachment {
    /// Which attachment of the session this is: a connection that was taken over finds
    /// another number here and leaves the session alone when it closes.
    pub generation: u64,
    /// Wakes the connection when messages are queued, and closes it when another takes
    /// the session over (0x8E).
    pub wake: Arc<Wake>,
    /// The protocol version it speaks.
    pub version: Version,
    /// The client's address.
    pub peer: SocketAddr,
}

/// How a session reaches the connection attached to it: a wake-up when messages are queued,
/// and the news that another connection has taken the session over.
///
/// One allocation for both, as every connection has one: a `CancellationToken` for the
/// takeover cost 112 bytes per connection more, and its 72-byte future in the connection's
/// task another 128 (tokio rounds a task up to 128 bytes).
#[derive(Debug, Default)]
pub struct Wake {
    /// Messages were queued.
    queued: Notify,
    /// Set once another connection has taken the session over; never cleared.
    taken_over: AtomicBool,
    /// The task waiting in [`Wake::taken_over`].
    waiter: AtomicWaker,
}

impl Wake {
    /// Wakes the connection: messages were queued (kept for its next wait if it is busy).
    pub fn notify_one(&self) {
        self.queued.notify_one();
    }

    /// Waits until [`notify_one`](Self::notify_one) is called (or was, since the last wait).
    pub fn notified(&self) -> Notified<'_> {
        self.queued.notified()
    }

    /// Tells the connection that another connection has taken the session over.
    pub fn take_over(&self) {
        self.taken_over.store(true, Ordering::Release);
        self.waiter.wake();
    }

    /// Ready once [`take_over`](Self::take_over) has been called.
    pub fn taken_over(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            if self.taken_over.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waiter.register(cx.waker());
            // Set between the load and the registration: that wake-up went nowhere.
            if self.taken_over.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// A will and when it is due, kept from the CONNECT that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillSpec {
    /// The will as CONNECT carried it; it becomes a message when it is published. Boxed:
    /// most clients set none, and an unboxed `Will` (its 5.0 properties inline) would make
    /// every session and connection task some 450 bytes larger.
    pub will: Box<Will>,
    /// Will Delay Interval in seconds (5.0; 0 for 3.1.1).
    pub delay: u32,
}

/// Everything a session holds; see the module documentation.
#[derive(Debug, Default)]
pub struct SessionState {
    /// Subscriptions with their options (the tree holds the same, indexed by filter).
    pub subscriptions: HashMap<SubscriptionTarget, SubOptions>,
    /// Messages waiting for the in-flight window (or the client), oldest first.
    pub queue: VecDeque<Outgoing>,
    /// Outbound QoS 1 and 2 messages not yet acknowledged, in the order they were sent.
    pub inflight: VecDeque<InFlight>,
    /// Inbound QoS 2 packet identifiers whose PUBREL has not come yet.
    pub inbound_qos2: HashSet<PacketId>,
    /// The last packet identifier handed out.
    last_id: u16,
    /// Session Expiry Interval in seconds: how long the session outlives its connection.
    pub expiry_interval: u32,
    /// A will waiting out its Will Delay Interval after its connection ended; a connection
    /// attaching clears it (`crate::will`).
    pub will: Option<WillSpec>,
    /// The connection attached now, if any.
    pub attached: Option<Attachment>,
    /// How many times a connection has attached: the generation of the latest.
    pub generation: u64,
}

/// What [`Session::enqueue`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued for the client.
    Queued,
    /// The queue was full: dropped.
    QueueFull,
    /// QoS 0 to a session without a connection: dropped.
    Offline,
}

impl SessionState {
    /// A packet identifier no outbound message in flight uses; `None` when all 65,535 are
    /// (the window is at most 65,535, so a caller within it always gets one).
    pub fn next_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            let id = NonZeroU16::new(self.last_id)?;
            if !self.inflight.iter().any(|f| f.id == id) {
                return Some(id);
            }
        }
        None
    }

    /// Takes the in-flight message `id` out if it is in `phase`.
    pub fn complete(&mut self, id: PacketId, phase: Phase) -> Option<InFlight> {
        let at = self
            .inflight
            .iter()
            .position(|f| f.id == id && f.phase == phase)?;
        self.inflight.remove(at)
    }

    /// Moves the QoS 2 message `id` from awaiting PUBREC to awaiting PUBCOMP; false if no
    /// such message is in flight in either state (a repeated PUBREC is answered again).
    pub fn received(&mut self, id: PacketId) -> bool {
        match self.inflight.iter_mut().find(|f| f.id == id) {
            Some(f) if f.phase != Phase::AwaitingPubAck => {
                f.phase = Phase::AwaitingPubComp;
                true
            }
            _ => false,
        }
    }
}

/// One client's session, shared by the broker's index and the connection attached to it.
#[derive(Debug)]
pub struct Session {
    /// Its client identifier.
    pub client_id: ClientId,
    /// Whether a connection is attached, readable without the lock (shared subscriptions
    /// skip offline members on every message).
    online: AtomicBool,
    /// Whether it was resumed from a node that died, whose inbox still brings it
    /// messages: each message is then queued once, by whichever way comes first
    /// (`crate::cluster::adopt`).
    adopted: AtomicBool,
    state: Mutex<SessionState>,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: ClientId) -> Self {
        Self {
            client_id,
            online: AtomicBool::new(false),
            adopted: AtomicBool::new(false),
            state: Mutex::new(SessionState::default()),
        }
    }

    /// The state, locked. Never hold the guard across an `.await`. A panic while it was
    /// held leaves a state that is still consistent field by field, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a connection is attached.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Whether it was resumed from a node that died and that node's inbox is still read.
    pub fn is_adopted(&self) -> bool {
        self.adopted.load(Ordering::Relaxed)
    }

    /// Records whether it was resumed from a node that died.
    pub(crate) fn set_adopted(&self, adopted: bool) {
        self.adopted.store(adopted, Ordering::Relaxed);
    }

    /// Records whether a connection is attached; called with the state locked.
    pub(crate) fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// Queues `out` unless the queue holds `max_queued` already or the session is offline
    /// and `out` is QoS 0; wakes the attached connection.
    pub fn enqueue(&self, out: Outgoing, max_queued: usize) -> Enqueued {
        let mut state = self.lock();
        let Some(attached) = &state.attached else {
            if out.qos == QoS::AtMostOnce {
                return Enqueued::Offline;
            }
            if state.queue.len() >= max_queued {
                return Enqueued::QueueFull;
            }
            state.queue.push_back(out);
            return Enqueued::Queued;
        };
        let wake = attached.wake.clone();
        if state.queue.len() >= max_queued {
            return Enqueued::QueueFull;
        }
        state.queue.push_back(out);
        drop(state);
        wake.notify_one();
        Enqueued::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn out(qos: QoS) -> Outgoing {
        Outgoing {
            message: Message::new("t".into(), Bytes::new(), qos, false),
            qos,
            retain: false,
            identifiers: Vec::new(),
            journal: 0,
        }
    }

    fn attach(session: &Session) -> Arc<Wake> {
        let wake = Arc::new(Wake::default());
        session.lock().attached = Some(Attachment {
            generation: 1,
            wake: wake.clone(),
            version: Version::V5,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        });
        wake
    }

    #[test]
    fn an_offline_session_queues_qos_1_and_drops_qos_0() {
        let s = Session::new("c".into());
        assert_eq!(s.enqueue(out(QoS::AtMostOnce), 10), Enqueued::Offline);
        assert_eq!(s.enqueue(out(QoS::AtLeastOnce), 10), Enqueued::Queued);
        assert_eq!(s.lock().queue.len(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_an_attached_connection_is_woken() {
        let s = Session::new("c".into());
        let wake = attach(&s);
        assert_eq!(s.enqueue(out(QoS::AtMostOnce), 2), Enqueued::Queued);
        assert_eq!(s.enqueue(out(QoS::ExactlyOnce), 2), Enqueued::Queued);
        assert_eq!(s.enqueue(out(QoS::AtLeastOnce), 2), Enqueued::QueueFull);
        assert_eq!(s.lock().queue.len(), 2);
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified())
            .await
            .expect("the enqueue left a wake-up");
    }

    #[tokio::test]
    async fn a_takeover_ends_the_wait_of_the_connection_it_replaces() {
        let wake = Wake::default();
        let mut waiting = std::pin::pin!(wake.taken_over());
        let first = poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "not taken over yet");
        wake.notify_one();
        let second = poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(second.is_pending(), "queued messages are not a takeover");
        wake.take_over();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the takeover woke the waiting connection");
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.taken_over())
            .await
            .expect("and stays visible to a new wait");
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap_past_zero() {
        let mut state = SessionState {
            last_id: u16::MAX - 1,
            ..SessionState::default()
        };
        let one = NonZeroU16::new(1).expect("non-zero");
        state.inflight.push_back(InFlight {
            id: one,
            out: out(QoS::AtLeastOnce),
            phase: Phase::AwaitingPubAck,
        });
        let ids: Vec<u16> = (0..3)
            .map(|_| state.next_packet_id().expect("free ids").get())
            .collect();
        assert_eq!(ids, [u16::MAX, 2, 3]);
    }

    #[test]
    fn qos_2_acknowledgements_move_through_their_phases() {
        let mut state = SessionState::default();
        let id = state.next_packet_id().expect("free id");
        state.inflight.push_back(InFlight {
            id,
            out: out(QoS::ExactlyOnce),
            phase: Phase::AwaitingPubRec,
        });
        assert!(state.complete(id, Phase::AwaitingPubComp).is_none());
        assert!(state.received(id));
        assert!(state.received(id), "a repeated PUBREC is answered again");
        assert!(state.complete(id, Phase::AwaitingPubComp).is_some());
        assert!(state.inflight.is_empty());
        assert!(!state.received(id));
    }
}
