//! The embedded stream's idempotency keys: which appends stored what, for the window.
//!
//! Keys are written into the log as marks beside their records (see `log`), so they are
//! exactly as durable as the records and come back on open; this map is their in-memory
//! index. Two concurrent appends with one key are serialized: the second waits for the
//! first and then answers as a retry. (The Redis backend does the same in its append
//! script.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::log::Mark;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What an earlier append with the key stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Its first offset.
    pub first: u64,
    /// How many records.
    pub count: u32,
    /// Hash of its body.
    pub body_hash: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

impl From<&Mark> for Stored {
    fn from(m: &Mark) -> Self {
        Self {
            first: m.first,
            count: m.count,
            body_hash: m.body_hash,
            at_ms: m.at_ms,
        }
    }
}

enum Slot {
    Done(Stored),
    Pending(Arc<Notify>),
}

/// The answer to [`Keys::claim`].
pub(crate) enum Claim {
    /// The key is new: store, then [`Keys::complete`] (or [`Keys::release`] on failure).
    Mine,
    /// The key was used within the window.
    Done(Stored),
}

/// Keys seen within the window; clones share them.
#[derive(Clone)]
pub(crate) struct Keys {
    window: Duration,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Keys {
    /// An empty map remembering keys for `window`.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The oldest append time still remembered, now.
    pub(crate) fn cutoff_ms(&self) -> u64 {
        now_ms().saturating_sub(self.window.as_millis() as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Learns a key from the log (at open).
    pub(crate) fn learn(&self, mark: &Mark) {
        if mark.at_ms >= self.cutoff_ms() {
            self.lock()
                .insert(mark.key.clone(), Slot::Done(Stored::from(mark)));
        }
    }

    /// Claims `key`, waiting while another append holds it.
    pub(crate) async fn claim(&self, key: &str) -> Claim {
        loop {
            let wait = {
                let mut slots = self.lock();
                let cutoff = self.cutoff_ms();
                match slots.get(key) {
                    Some(Slot::Done(s)) if s.at_ms >= cutoff => return Claim::Done(*s),
                    // Registered before the lock is released, so the wake-up cannot be missed.
                    Some(Slot::Pending(n)) => n.clone().notified_owned(),
                    _ => {
                        slots.insert(key.to_owned(), Slot::Pending(Arc::new(Notify::new())));
                        return Claim::Mine;
                    }
                }
            };
            wait.await;
        }
    }

    /// Records what the holder of `key` stored and wakes those waiting.
    pub(crate) fn complete(&self, key: &str, stored: Stored) {
        if let Some(Slot::Pending(n)) = self.lock().insert(key.to_owned(), Slot::Done(stored)) {
            n.notify_waiters();
        }
    }

    /// Gives `key` up (storing failed) and wakes those waiting, who then try themselves.
    pub(crate) fn release(&self, key: &str) {
        let mut slots = self.lock();
        if matches!(slots.get(key), Some(Slot::Pending(_)))
            && let Some(Slot::Pending(n)) = slots.remove(key)
        {
            n.notify_waiters();
        }
    }

    /// Forgets keys older than the window.
    pub(crate) fn prune(&self) {
        let cutoff = self.cutoff_ms();
        self.lock()
            .retain(|_, s| !matches!(s, Slot::Done(d) if d.at_ms < cutoff));
    }
}
