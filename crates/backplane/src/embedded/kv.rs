//! The embedded key/value space: a sorted map in memory, every change written to a
//! [`SegmentLog`] in `data_dir/kv/` before it is applied, so it survives a restart (MQTT
//! retained messages and sessions need that).
//!
//! - **Opening** is lazy: the first key/value call reads the log back (a node that never
//!   uses key/value never touches the directory).
//! - **Writes** are serialized: each is checked against the map, appended and synced, then
//!   applied, under one async lock, so compare-and-set is atomic and the log's order is the
//!   map's. That costs one sync per write (a few thousand writes/s), which suits sessions,
//!   retained messages and leases.
//! - **Expiry** is wall-clock time (ms since the Unix epoch), kept in the log, so a key
//!   expires on time across a restart. Expired keys read as absent at once and are swept
//!   out of memory every [`SWEEP_EVERY`] writes.
//! - **Compaction.** Once the log holds more than [`COMPACT_MIN`] changes and twice as many
//!   as there are live keys, the live keys are written again as one batch and the segments
//!   before it are deleted. A crash half way leaves the old changes and part of the copy,
//!   which read back to the same map.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::OnceCell;

use crate::BackplaneError;
use crate::idempotency::now_ms;
use crate::log::{LogOptions, SegmentLog};

/// Writes between two sweeps of expired keys.
const SWEEP_EVERY: u64 = 1024;

/// Changes in the log before compaction is considered.
const COMPACT_MIN: u64 = 4096;

/// Bytes before a change's key: op (1), expiry (8), key length (4).
const CHANGE_HEADER: usize = 13;

#[derive(Debug)]
pub(crate) struct Kv {
    dir: PathBuf,
    options: LogOptions,
    inner: Mutex<Inner>,
    /// The log, once read back; its lock serializes writes.
    log: OnceCell<tokio::sync::Mutex<SegmentLog>>,
}

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<String, Value>,
    writes: u64,
}

#[derive(Debug)]
struct Value {
    bytes: Bytes,
    /// ms since the Unix epoch; 0 for never.
    expires_ms: u64,
}

impl Value {
    fn live(&self, now: u64) -> bool {
        self.expires_ms == 0 || self.expires_ms > now
    }
}

impl Inner {
    fn live(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| v.live(now_ms()))
    }

    /// Applies a change read back or just written.
    fn apply(&mut self, key: String, change: Option<Value>) {
        match change {
            Some(v) => self.map.insert(key, v),
            None => self.map.remove(&key),
        };
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            let now = now_ms();
            self.map.retain(|_, v| v.live(now));
        }
    }
}

/// `[op][expires_ms u64][key_len u32][key][value]`, op 1 for set and 0 for delete.
fn encode(key: &str, change: Option<(&[u8], u64)>) -> Bytes {
    let (value, expires_ms) = change.unwrap_or_default();
    let mut out = BytesMut::with_capacity(CHANGE_HEADER + key.len() + value.len());
    out.extend_from_slice(&[u8::from(change.is_some())]);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    out.freeze()
}

fn decode(payload: &Bytes) -> Option<(String, Option<Value>)> {
    let header = payload.get(..CHANGE_HEADER)?;
    let mut expires = [0u8; 8];
    expires.copy_from_slice(&header[1..9]);
    let key_len = u32::from_le_bytes([header[9], header[10], header[11], header[12]]) as usize;
    let key = payload.get(CHANGE_HEADER..CHANGE_HEADER + key_len)?;
    let key = String::from_utf8(key.to_vec()).ok()?;
    let value = (header[0] == 1).then(|| Value {
        bytes: payload.slice(CHANGE_HEADER + key_len..),
        expires_ms: u64::from_le_bytes(expires),
    });
    Some((key, value))
}

fn expiry(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| now_ms().saturating_add(t.as_millis() as u64).max(1))
}

impl Kv {
    /// The space kept in `dir`, read back on first use.
    pub(crate) fn new(dir: PathBuf, options: LogOptions) -> Self {
        Self {
            dir,
            options,
            inner: Mutex::new(Inner::default()),
            log: OnceCell::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log, read back into the map the first time.
    async fn log(&self) -> Result<&tokio::sync::Mutex<SegmentLog>, BackplaneError> {
        self.log
            .get_or_try_init(|| async {
                let (dir, options) = (self.dir.clone(), self.options);
                let log = tokio::task::spawn_blocking(move || SegmentLog::open(&dir, options))
                    .await
                    .map_err(|e| BackplaneError::Stopped(e.to_string()))??;
                let (mut at, end) = (log.start(), log.end());
                while at < end {
                    let entries = log.read(at, 10_000, 8 * 1024 * 1024).await?;
                    let Some(last) = entries.last() else { break };
                    at = last.offset + 1;
                    let mut inner = self.lock();
                    for e in &entries {
                        let (key, change) =
                            decode(&e.payload).ok_or_else(|| BackplaneError::Corrupt {
                                what: self.dir.display().to_string(),
                                why: format!("key/value change {} is unreadable", e.offset),
                            })?;
                        inner.apply(key, change);
                    }
                }
                Ok::<_, BackplaneError>(tokio::sync::Mutex::new(log))
            })
            .await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, BackplaneError> {
        self.log().await?;
        Ok(self.lock().live(key).map(|v| v.bytes.clone()))
    }

    /// Writes `change` of `key` if `allowed` holds for its current live value; true if it
    /// did.
    async fn write(
        &self,
        key: &str,
        change: Option<(Bytes, u64)>,
        allowed: impl FnOnce(Option<&Value>) -> bool,
    ) -> Result<bool, BackplaneError> {
        let log = self.log().await?.lock().await;
        if !allowed(self.lock().live(key)) {
            return Ok(false);
        }
        let record = encode(key, change.as_ref().map(|(b, e)| (b.as_ref(), *e)));
        log.append(vec![record]).await?;
        let value = change.map(|(bytes, expires_ms)| Value { bytes, expires_ms });
        let live = {
            let mut inner = self.lock();
            inner.apply(key.to_owned(), value);
            inner.map.len() as u64
        };
        let changes = log.end() - log.start();
        if changes > COMPACT_MIN && changes > 2 * live {
            self.compact(&log).await?;
        }
        Ok(true)
    }

    /// Writes the live keys again and deletes the segments before them.
    async fn compact(&self, log: &SegmentLog) -> Result<(), BackplaneError> {
        let now = now_ms();
        let copy: Vec<Bytes> = self
            .lock()
            .map
            .iter()
            .filter(|(_, v)| v.live(now))
            .map(|(k, v)| encode(k, Some((v.bytes.as_ref(), v.expires_ms))))
            .collect();
        let from = log.append(copy).await?.start;
        let log = log.clone();
        tokio::task::spawn_blocking(move || log.trim_before(from, u64::MAX))
            .await
            .map_err(|e| BackplaneError::Stopped(e.to_string()))??;
        Ok(())
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackplaneError> {
        self.write(key, Some((value, expiry(ttl))), |_| true)
            .await
            .map(|_| ())
    }

    pub(crate) async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackplaneError> {
        self.write(key, Some((value, expiry(ttl))), |v| v.is_none())
            .await
    }

    pub(crate) async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<bool, BackplaneError> {
        let change = new.map(|b| (b, expiry(ttl)));
        self.write(key, change, |v| v.is_some_and(|v| v.bytes == expected))
            .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, BackplaneError> {
        self.write(key, None, |v| v.is_some()).await
    }

    pub(crate) async fn scan(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, BackplaneError> {
        self.log().await?;
        let now = now_ms();
        Ok(self
            .lock()
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, v)| v.live(now))
            .map(|(k, v)| (k.clone(), v.bytes.clone()))
            .collect())
    }
}
