//! The embedded key/value space: a sorted map with expiry, in memory.
//!
//! Expired keys read as absent at once and are swept out every [`SWEEP_EVERY`] writes, so
//! keys set once and never read again do not pile up.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Writes between two sweeps of expired keys.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Default)]
pub(crate) struct Kv {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<String, Value>,
    writes: u64,
}

#[derive(Debug)]
struct Value {
    bytes: Bytes,
    expires: Option<Instant>,
}

impl Value {
    fn new(bytes: Bytes, ttl: Option<Duration>) -> Self {
        Self {
            bytes,
            expires: ttl.map(|t| Instant::now() + t),
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

impl Inner {
    /// The live value of `key`.
    fn live(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| v.live(Instant::now()))
    }

    /// Counts a write; sweeps every [`SWEEP_EVERY`].
    fn wrote(&mut self) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            let now = Instant::now();
            self.map.retain(|_, v| v.live(now));
        }
    }
}

impl Kv {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.lock().live(key).map(|v| v.bytes.clone())
    }

    pub(crate) fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) {
        let mut inner = self.lock();
        inner.map.insert(key.to_owned(), Value::new(value, ttl));
        inner.wrote();
    }

    pub(crate) fn set_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> bool {
        let mut inner = self.lock();
        if inner.live(key).is_some() {
            return false;
        }
        inner.map.insert(key.to_owned(), Value::new(value, ttl));
        inner.wrote();
        true
    }

    pub(crate) fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> bool {
        let mut inner = self.lock();
        if inner.live(key).is_none_or(|v| v.bytes != expected) {
            return false;
        }
        match new {
            Some(bytes) => {
                inner.map.insert(key.to_owned(), Value::new(bytes, ttl));
            }
            None => {
                inner.map.remove(key);
            }
        }
        inner.wrote();
        true
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let mut inner = self.lock();
        let was = inner.live(key).is_some();
        inner.map.remove(key);
        was
    }

    pub(crate) fn scan(&self, prefix: &str) -> Vec<(String, Bytes)> {
        let now = Instant::now();
        self.lock()
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, v)| v.live(now))
            .map(|(k, v)| (k.clone(), v.bytes.clone()))
            .collect()
    }
}
