//! Acknowledgements of the client's QoS 1 and 2 messages that wait for those messages to be
//! durable on other nodes.
//!
//! A PUBACK (or PUBREC) tells the client the broker has its message; in a cluster a message
//! for another node is only safe once it is in that node's inbox, so its acknowledgement
//! waits for the append ([`Forwarded`]). Acknowledgements leave in the order the messages
//! came (§4.6), so one that has nothing to wait for still waits behind those before it.
//! While more than [`MAX_WAITING`] wait, the client is not read from.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use crate::cluster::Forwarded;
use crate::codec::Packet;

/// Acknowledgements waiting at most before the connection stops reading.
pub const MAX_WAITING: usize = 1024;

/// The waiting acknowledgements of one connection.
#[derive(Default)]
pub struct Acks {
    /// In the order their messages came; the first one's wait is in `head`.
    queue: VecDeque<(Packet, Forwarded)>,
    /// The first waiting acknowledgement's appends; some exactly when `queue` is not empty.
    head: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl Acks {
    /// `ack` for a message whose appends are `forwarded`: returned at once when nothing
    /// waits, else queued.
    pub fn push(&mut self, ack: Packet, forwarded: Forwarded) -> Option<Packet> {
        if !self.queue.is_empty() {
            self.queue.push_back((ack, forwarded));
            return None;
        }
        if forwarded.is_empty() {
            return Some(ack);
        }
        self.head = Some(Box::pin(forwarded.durable()));
        self.queue.push_back((ack, Forwarded::default()));
        None
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Waits for the first acknowledgement's appends; pending forever when none waits.
    /// Then call [`Acks::release`] with the answer.
    pub async fn ready(&mut self) -> bool {
        match &mut self.head {
            Some(head) => head.await,
            None => std::future::pending().await,
        }
    }

    /// After [`Acks::ready`]: the acknowledgements that can go now, in order — the first
    /// one and every one after it with nothing to wait for. `durable` false (the node shuts
    /// down) returns the first one as `Err`: it must not be sent.
    pub fn release(&mut self, durable: bool, mut send: impl FnMut(Result<Packet, Packet>)) {
        self.head = None;
        if let Some((ack, _)) = self.queue.pop_front() {
            send(if durable { Ok(ack) } else { Err(ack) });
        }
        while let Some((_, forwarded)) = self.queue.front_mut() {
            if !forwarded.is_empty() {
                self.head = Some(Box::pin(std::mem::take(forwarded).durable()));
                return;
            }
            if let Some((ack, _)) = self.queue.pop_front() {
                send(Ok(ack));
            }
        }
    }
}
