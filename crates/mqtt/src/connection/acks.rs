//! Acknowledgements that wait for what they acknowledge to be durable: the client's QoS 1
//! and 2 messages, and a persistent session's subscriptions.
//!
//! A PUBACK (or PUBREC) tells the client the broker has its message; in a cluster a message
//! for another node is only safe once it is in that node's inbox, and one queued for a
//! session with an expiry once it is in the journal, so its acknowledgement waits for the
//! appends ([`Forwarded`]). The SUBACK and UNSUBACK of a session with an expiry wait until
//! its subscriptions are saved. Acknowledgements leave in the order their packets came
//! (§4.6), so one that has nothing to wait for still waits behind those before it. While
//! more than [`MAX_WAITING`] wait, the client is not read from.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::cluster::Forwarded;
use crate::codec::Packet;

/// Acknowledgements waiting at most before the connection stops reading.
pub const MAX_WAITING: usize = 1024;

/// The waiting acknowledgements of one connection: nothing but a pointer while none wait
/// (every connection's task holds one).
#[derive(Default)]
pub struct Acks(Option<Box<Waiting>>);

/// [`Acks::ready`]: a pointer, not an `async` block's state, because every connection's
/// task holds it in its loop.
pub struct Ready<'a>(&'a mut Acks);

impl Future for Ready<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        match &mut self.get_mut().0.0 {
            Some(waiting) => waiting.head.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Acknowledgements waiting, the first one's appends in `head`.
struct Waiting {
    /// In the order their messages came.
    queue: VecDeque<(Packet, Forwarded)>,
    /// The first one's appends.
    head: Pin<Box<dyn Future<Output = bool> + Send>>,
}

impl Acks {
    /// `ack` for a message whose appends are `forwarded`: returned at once when nothing
    /// waits, else queued.
    pub fn push(&mut self, ack: Packet, forwarded: Forwarded) -> Option<Packet> {
        match &mut self.0 {
            Some(waiting) => {
                waiting.queue.push_back((ack, forwarded));
                None
            }
            None if forwarded.is_empty() => Some(ack),
            None => {
                self.0 = Some(Box::new(Waiting {
                    queue: VecDeque::from([(ack, Forwarded::default())]),
                    head: Box::pin(forwarded.durable()),
                }));
                None
            }
        }
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |w| w.queue.len())
    }

    /// Waits for the first acknowledgement's appends; pending forever when none waits.
    /// Then call [`Acks::release`] with the answer.
    pub fn ready(&mut self) -> Ready<'_> {
        Ready(self)
    }

    /// After [`Acks::ready`]: the acknowledgements that can go now, in order — the first
    /// one and every one after it with nothing to wait for. `durable` false (the node shuts
    /// down) returns the first one as `Err`: it must not be sent.
    pub fn release(&mut self, durable: bool, mut send: impl FnMut(Result<Packet, Packet>)) {
        let Some(mut waiting) = self.0.take() else {
            return;
        };
        if let Some((ack, _)) = waiting.queue.pop_front() {
            send(if durable { Ok(ack) } else { Err(ack) });
        }
        while let Some((_, forwarded)) = waiting.queue.front_mut() {
            if !forwarded.is_empty() {
                waiting.head = Box::pin(std::mem::take(forwarded).durable());
                self.0 = Some(waiting);
                return;
            }
            if let Some((ack, _)) = waiting.queue.pop_front() {
                send(Ok(ack));
            }
        }
    }
}
