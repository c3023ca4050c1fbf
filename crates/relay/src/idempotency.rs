//! `Idempotency-Key`: a retried request returns the first one's record ids instead of
//! storing its records again.
//!
//! The key is written into the stream with the request's first record, so it is exactly as
//! durable as the records: after a restart the map is rebuilt from the stream
//! ([`Idempotency::rebuild`]), which is why the stream keeps records for at least the
//! window (see `Stream::trim`). Two concurrent requests with one key are serialized: the
//! second waits for the first and then answers as a retry. The first settles its key from
//! the task that writes, so a client hanging up cannot leave the key pending.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane::SegmentLog;
use tokio::sync::Notify;

use crate::catalog::now_ms;
use crate::record::Record;

/// What an earlier request with the same key stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its first record id.
    pub first: u64,
    /// How many records.
    pub count: u32,
    /// Hash of its body.
    pub body_hash: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

enum Slot {
    Done(Stored),
    Pending(Arc<Notify>),
}

/// The answer to [`Idempotency::claim`].
pub enum Claim {
    /// The key is new: store the records, then call [`Idempotency::complete`] (or
    /// [`Idempotency::release`] if storing failed).
    Mine,
    /// The key was used.
    Done(Stored),
}

/// Keys seen within the window, per application; clones share the keys.
#[derive(Clone)]
pub struct Idempotency {
    window: Duration,
    slots: Arc<Mutex<HashMap<(String, String), Slot>>>,
}

impl Idempotency {
    /// An empty map remembering keys for `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// How long keys are remembered.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `key` for `app`, waiting while another request holds it.
    pub async fn claim(&self, app: &str, key: &str) -> Claim {
        loop {
            let wait = {
                let mut slots = self.lock();
                let now = now_ms();
                match slots.get(&(app.to_owned(), key.to_owned())) {
                    Some(Slot::Done(s))
                        if now.saturating_sub(s.at_ms as i64) < self.window.as_millis() as i64 =>
                    {
                        return Claim::Done(*s);
                    }
                    Some(Slot::Pending(n)) => {
                        // Registered before the lock is released, so the wake-up cannot be missed.
                        Some(n.clone().notified_owned())
                    }
                    _ => {
                        slots.insert(
                            (app.to_owned(), key.to_owned()),
                            Slot::Pending(Arc::new(Notify::new())),
                        );
                        None
                    }
                }
            };
            match wait {
                Some(w) => w.await,
                None => return Claim::Mine,
            }
        }
    }

    /// Records what the holder of `key` stored and wakes those waiting.
    pub fn complete(&self, app: &str, key: &str, stored: Stored) {
        if let Some(Slot::Pending(n)) = self
            .lock()
            .insert((app.to_owned(), key.to_owned()), Slot::Done(stored))
        {
            n.notify_waiters();
        }
    }

    /// Gives up `key` (storing failed) and wakes those waiting, who then try themselves.
    pub fn release(&self, app: &str, key: &str) {
        let mut slots = self.lock();
        if let Some(Slot::Pending(_)) = slots.get(&(app.to_owned(), key.to_owned()))
            && let Some(Slot::Pending(n)) = slots.remove(&(app.to_owned(), key.to_owned()))
        {
            n.notify_waiters();
        }
    }

    /// Forgets keys older than the window.
    pub fn prune(&self) {
        let cutoff = now_ms() - self.window.as_millis() as i64;
        self.lock()
            .retain(|_, s| !matches!(s, Slot::Done(d) if (d.at_ms as i64) < cutoff));
    }

    /// Reads every key still in the window back from the stream, from offset `from` (the
    /// first record received within the window) on.
    pub async fn rebuild(&self, log: &SegmentLog, from: u64) -> Result<usize, backplane::LogError> {
        let cutoff = now_ms() - self.window.as_millis() as i64;
        let mut at = from.max(log.start());
        let end = log.end();
        let mut found = 0;
        while at < end {
            let entries = log.read(at, 10_000, 16 * 1024 * 1024).await?;
            let Some(last) = entries.last() else { break };
            at = last.offset + 1;
            for e in &entries {
                let Ok(r) = Record::decode(&e.payload) else {
                    continue;
                };
                if let Some(mark) = r.idempotency
                    && r.received_ms as i64 >= cutoff
                {
                    found += 1;
                    self.lock().insert(
                        (r.application, mark.key),
                        Slot::Done(Stored {
                            first: e.offset,
                            count: mark.count,
                            body_hash: mark.body_hash,
                            at_ms: r.received_ms,
                        }),
                    );
                }
            }
        }
        Ok(found)
    }
}
