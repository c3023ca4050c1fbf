//! Local delivery of published messages: the subscribers of each channel on this node.
//!
//! The embedded backplane publishes straight into it; the Redis one feeds it from its one
//! subscribing connection. Each subscriber has a bounded queue ([`QUEUE`]): a publisher never
//! waits for a slow subscriber, which misses what does not fit and can see how much it
//! missed ([`Subscription::missed`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Messages waiting for one subscriber; beyond this they are dropped for it.
pub(crate) const QUEUE: usize = 1024;

/// Called with a channel's name when its last local subscriber goes (Redis unsubscribes).
type OnEmpty = Box<dyn Fn(&str) + Send + Sync>;

/// The local subscribers of every channel.
pub(crate) struct Fanout {
    channels: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
    on_empty: Option<OnEmpty>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").finish_non_exhaustive()
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    missed: Arc<AtomicU64>,
    /// Receiving: false until the backend knows no message published before the
    /// subscriber came can still be on its way (see [`Fanout::arm`]).
    armed: bool,
}

/// Messages of one channel, from when it was made until it is dropped (dropping it
/// unsubscribes).
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Bytes>,
    missed: Arc<AtomicU64>,
    _registered: Registered,
}

impl Subscription {
    /// The next message; `None` once the backplane is gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// How many messages this subscriber may have missed: one for each dropped because it
    /// did not keep up, and one for each time the node's Redis subscribing connection was
    /// lost and made again (however many were published meanwhile). A subscriber that
    /// keeps state from a channel (a route table) reads it again when this grows.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// Removes its subscriber from the fan-out when the subscription is dropped.
#[derive(Debug)]
struct Registered {
    fanout: Arc<Fanout>,
    channel: String,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.fanout.remove(&self.channel, self.id);
    }
}

impl Fanout {
    /// A fan-out calling `on_empty` when a channel loses its last subscriber.
    pub(crate) fn new(on_empty: Option<OnEmpty>) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            on_empty,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscriber of `channel`, receiving at once if `armed` (else from
    /// [`Fanout::arm`]), and whether it is the channel's first.
    pub(crate) fn add(self: &Arc<Self>, channel: &str, armed: bool) -> (Subscription, bool) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let missed = Arc::new(AtomicU64::new(0));
        let mut channels = self.lock();
        let subscribers = channels.entry(channel.to_owned()).or_default();
        let first = subscribers.is_empty();
        subscribers.push(Subscriber {
            id,
            tx,
            missed: missed.clone(),
            armed,
        });
        let sub = Subscription {
            rx,
            missed,
            _registered: Registered {
                fanout: self.clone(),
                channel: channel.to_owned(),
                id,
            },
        };
        (sub, first)
    }

    /// Hands `message` to every subscriber of `channel` that has room.
    pub(crate) fn deliver(&self, channel: &str, message: &Bytes) {
        if let Some(subscribers) = self.lock().get(channel) {
            for s in subscribers.iter().filter(|s| s.armed) {
                if s.tx.try_send(message.clone()).is_err() {
                    s.missed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Lets the subscribers of `channel` that were waiting receive from now on: the backend
    /// has delivered everything that reached it before their subscription was confirmed.
    pub(crate) fn arm(&self, channel: &str) {
        if let Some(subscribers) = self.lock().get_mut(channel) {
            for s in subscribers {
                s.armed = true;
            }
        }
    }

    /// Tells every subscriber that messages may have been lost (the connection they came
    /// over was down for a while).
    pub(crate) fn gap(&self) {
        for subscribers in self.lock().values() {
            for s in subscribers {
                s.missed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The channels with subscribers.
    pub(crate) fn channels(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn remove(&self, channel: &str, id: u64) {
        let emptied = {
            let mut channels = self.lock();
            let Some(subscribers) = channels.get_mut(channel) else {
                return;
            };
            subscribers.retain(|s| s.id != id);
            let emptied = subscribers.is_empty();
            if emptied {
                channels.remove(channel);
            }
            emptied
        };
        if emptied && let Some(f) = &self.on_empty {
            f(channel);
        }
    }
}
