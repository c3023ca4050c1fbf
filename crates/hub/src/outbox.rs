//! A connection's queue of frames to write: bounded, and never waited on.
//!
//! Rooms and other connections hand frames over with [`Outbox::push`], which never blocks:
//! a room delivering a message to a hundred members must not wait for the slowest. When
//! the queue is full the connection is a slow consumer — it has stopped reading, or reads
//! slower than its rooms talk — and it is *kicked*: its task closes it with 4008 and the
//! node counts it. What it had queued is dropped with it, so its memory is bounded by
//! `[hub] max_queued` frames and its neighbours keep their latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc};

use crate::frames::Text;

/// The sending side: cloned into every room the connection joined and into the node's
/// table of users.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Text>,
    kick: Arc<Kick>,
}

/// The receiving side, held by the connection's task.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Text>,
    kick: Arc<Kick>,
}

/// Set once, when the queue overflowed.
#[derive(Debug, Default)]
struct Kick {
    kicked: AtomicBool,
    notify: Notify,
}

/// A queue of `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let kick = Arc::new(Kick::default());
    (
        Outbox {
            tx,
            kick: kick.clone(),
        },
        Inbox { rx, kick },
    )
}

impl Outbox {
    /// Queues `frame`; false if the connection is gone or was kicked now or before (a
    /// full queue kicks it).
    pub fn push(&self, frame: Text) -> bool {
        if self.kick.kicked.load(Ordering::Relaxed) {
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kick.kicked.store(true, Ordering::Relaxed);
                self.kick.notify.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether both are the same connection's.
    pub fn same(&self, other: &Outbox) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

impl Inbox {
    /// The next frame; `None` when the connection was kicked (its queue overflowed).
    pub async fn next(&mut self) -> Option<Text> {
        if self.kick.kicked.load(Ordering::Relaxed) {
            return None;
        }
        tokio::select! {
            biased;
            () = self.kick.notify.notified() => None,
            frame = self.rx.recv() => frame,
        }
    }

    /// A frame already queued, without waiting (to write several at once).
    pub fn ready(&mut self) -> Option<Text> {
        if self.kick.kicked.load(Ordering::Relaxed) {
            return None;
        }
        self.rx.try_recv().ok()
    }

    /// Whether the queue overflowed.
    pub fn kicked(&self) -> bool {
        self.kick.kicked.load(Ordering::Relaxed)
    }

    /// Waits until the queue overflows (to stop a write that the client does not read).
    pub async fn overflowed(&self) {
        if !self.kicked() {
            self.kick.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_kicks_its_connection_once_and_for_all() {
        let (out, mut inbox) = outbox(2);
        assert!(out.push(Text::from_static("1")));
        assert!(out.push(Text::from_static("2")));
        assert!(!inbox.kicked());
        assert!(!out.push(Text::from_static("3")));
        assert!(inbox.kicked());
        assert_eq!(inbox.next().await, None);
        assert_eq!(inbox.ready(), None);
        // Room was made, but a kicked connection takes nothing more.
        assert!(!out.push(Text::from_static("4")));
        inbox.overflowed().await;
    }

    #[tokio::test]
    async fn frames_come_out_in_order() {
        let (out, mut inbox) = outbox(4);
        for f in ["a", "b", "c"] {
            assert!(out.push(Text::from(f)));
        }
        assert_eq!(inbox.next().await.as_ref().map(Text::as_str), Some("a"));
        assert_eq!(inbox.ready().as_ref().map(Text::as_str), Some("b"));
        assert_eq!(inbox.ready().as_ref().map(Text::as_str), Some("c"));
        assert_eq!(inbox.ready(), None);
        assert!(out.same(&out.clone()));
    }
}
