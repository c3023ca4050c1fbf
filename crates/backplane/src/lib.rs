//! What lintas nodes share: durable streams, pub/sub and a key/value space, behind one
//! trait, [`Backplane`], that every service holds as `Arc<dyn Backplane>` (the node opens
//! it once with [`open`]).
//!
//! # Layout
//!
//! - [`Backplane`]: streams by name ([`Backplane::stream`] → [`Stream`]), pub/sub
//!   ([`Backplane::publish`], [`Backplane::subscribe`] → [`Subscription`]), key/value
//!   ([`Backplane::get`], [`Backplane::set`], …) and leases built on it
//!   ([`Backplane::acquire`], [`Backplane::renew`], [`Backplane::release`]).
//! - [`Stream`]: gapless `u64` offsets, idempotent appends ([`IdempotencyKey`]), reads,
//!   consumer groups ([`Stream::feed`] → [`Feed`]), trimming, and an identity
//!   ([`Stream::id`]) that changes when the stream is recreated.
//! - `embedded`: one node, no other service — streams are [`SegmentLog`]s under
//!   `data_dir/streams/`, pub/sub is an in-process fan-out, key/value a map in memory
//!   whose changes are logged in `data_dir/kv/`.
//! - `redis`: several nodes sharing a Redis — Redis Streams with consumer groups and
//!   `XAUTOCLAIM`, an idempotent-append Lua script, `PUBLISH`/`SUBSCRIBE` on a dedicated
//!   connection that resubscribes after it is lost, and plain keys.
//! - [`BackplaneError`]: typed, with [`BackplaneError::retryable`].
//!
//! Both backends pass one compliance suite (`tests/it/compliance.rs`): the same test
//! functions run against each.

pub mod config;
mod embedded;
mod error;
mod fanout;
mod idempotency;
mod log;
mod named;
mod redis;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use config::BackplaneConfig;
pub use error::BackplaneError;
pub use fanout::Subscription;
pub use log::{Entry, LogError, LogOptions, MAX_RECORD, Mark, SegmentLog};

/// Which backend a backplane is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This node alone: streams on its disk, pub/sub and key/value in its memory.
    Embedded,
    /// Every node naming the same Redis and prefix.
    Redis,
}

/// An append's idempotency key: a retry with the same key and body within the window gets
/// the first append's offsets instead of storing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key, unique per producer (the relay uses `application:Idempotency-Key`).
    pub key: String,
    /// A hash of what the producer sent, to tell a retry from another request that reuses
    /// the key ([`BackplaneError::KeyReused`]).
    pub body_hash: u64,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The records' offsets.
    pub offsets: Range<u64>,
    /// True when an earlier append with the same key stored them (nothing was stored now).
    pub replayed: bool,
}

/// Reads the idempotency key a record written before the backplane kept keys itself
/// carried inside its payload: `(key, records of that append, body hash, ms since the Unix
/// epoch)`. Only the embedded backend uses it, once, to carry such keys over.
pub type LegacyKeys = fn(&Bytes) -> Option<(String, u32, u64, u64)>;

/// How a stream is opened.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
    /// For a stream that existed before keys were kept apart from records: how to read
    /// them from the records (see [`LegacyKeys`]).
    pub legacy_keys: Option<LegacyKeys>,
}

/// The whole of what nodes share. Object safe: services hold `Arc<dyn Backplane>`.
#[async_trait]
pub trait Backplane: Send + Sync + std::fmt::Debug {
    /// Which backend this is: on [`Kind::Embedded`] this node is alone, so a service may
    /// skip leases.
    fn kind(&self) -> Kind;

    /// How long a lease lasts without renewal (`backplane.lease`).
    fn lease_ttl(&self) -> Duration;

    /// The stream `name`, created when absent. Opening a name twice gives the same stream.
    async fn stream(
        &self,
        name: &str,
        options: StreamOptions,
    ) -> Result<Arc<dyn Stream>, BackplaneError>;

    /// Deletes the stream `name` with its records, groups and identity (a stream opened
    /// by that name afterwards is a new one); false if there was none. For streams nobody
    /// reads any more — a dead MQTT node's inbox and journal — which would otherwise stay
    /// for good. A handle still open on it must not be used again.
    async fn delete_stream(&self, name: &str) -> Result<bool, BackplaneError>;

    /// Sends `message` to every current subscriber of `channel`, on every node. At most
    /// once: a subscriber that is not keeping up, or whose connection is down at that
    /// moment, misses it.
    async fn publish(&self, channel: &str, message: Bytes) -> Result<(), BackplaneError>;

    /// Receives what is published on `channel` from now on, until dropped.
    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackplaneError>;

    /// The value of `key`, if set and not expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackplaneError>;

    /// Sets `key`, expiring after `ttl` when given.
    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackplaneError>;

    /// Sets `key` only if it is absent; true if it was set.
    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackplaneError>;

    /// If `key` holds `expected`, replaces it with `new` (with `ttl`), or deletes it when
    /// `new` is `None`; true if it did.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<bool, BackplaneError>;

    /// Deletes `key`; true if it was there.
    async fn delete(&self, key: &str) -> Result<bool, BackplaneError>;

    /// Every live key starting with `prefix`, with its value, sorted by key.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, BackplaneError>;

    /// Takes lease `name` for `holder` for `ttl` if nobody else holds it (renewing it if
    /// `holder` does); true if `holder` holds it now.
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BackplaneError> {
        let key = lease_key(name);
        let value = Bytes::copy_from_slice(holder.as_bytes());
        if self.set_if_absent(&key, value, Some(ttl)).await? {
            return Ok(true);
        }
        self.renew(name, holder, ttl).await
    }

    /// Extends lease `name` by `ttl` if `holder` holds it; false if it does not (any more).
    async fn renew(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, BackplaneError> {
        let value = Bytes::copy_from_slice(holder.as_bytes());
        self.compare_and_set(&lease_key(name), holder.as_bytes(), Some(value), Some(ttl))
            .await
    }

    /// Gives lease `name` up if `holder` holds it, so another holder takes it at once.
    async fn release(&self, name: &str, holder: &str) -> Result<bool, BackplaneError> {
        self.compare_and_set(&lease_key(name), holder.as_bytes(), None, None)
            .await
    }
}

/// The key/value key of lease `name`.
fn lease_key(name: &str) -> String {
    format!("lease:{name}")
}

/// A durable stream of records with gapless offsets from 0.
#[async_trait]
pub trait Stream: Send + Sync + std::fmt::Debug {
    /// The stream's identity: random, made when the stream was created, so offsets kept
    /// elsewhere (a destination's applied offset) are never mistaken for another stream's
    /// after the stream is recreated (a fresh data_dir, a flushed Redis).
    fn id(&self) -> &str;

    /// Appends `records` as consecutive records; returns their offsets once durable. With
    /// `key`, a retry within the window returns the first append's offsets and stores
    /// nothing; the same key with another body hash is [`BackplaneError::KeyReused`];
    /// concurrent appends with one key store once.
    async fn append(
        &self,
        records: Vec<Bytes>,
        key: Option<IdempotencyKey>,
    ) -> Result<Appended, BackplaneError>;

    /// One past the last offset stored.
    async fn end(&self) -> Result<u64, BackplaneError>;

    /// Up to `max` records from offset `from` on (from the oldest kept, if `from` was
    /// trimmed).
    async fn read(&self, from: u64, max: usize) -> Result<Vec<Entry>, BackplaneError>;

    /// A feed of consumer group `group` for `consumer`. The group is created at `from`
    /// when it does not exist; otherwise the feed continues where the group is: first
    /// what was read but not acknowledged (a dead consumer's included), then new records.
    async fn feed(
        &self,
        group: &str,
        consumer: &str,
        from: u64,
    ) -> Result<Box<dyn Feed>, BackplaneError>;

    /// Deletes records below `below` that every one of `groups` has acknowledged; nothing
    /// while any of them does not exist yet. Returns the offset trimmed below, if it
    /// trimmed. The embedded backend deletes whole segments, and keeps those holding
    /// idempotency keys still in their window.
    async fn trim(&self, groups: &[String], below: u64) -> Result<Option<u64>, BackplaneError>;

    /// Deletes records below `below`, whoever read them: for a stream its writer reads
    /// back itself, without consumer groups (the MQTT journal). The embedded backend
    /// deletes whole segments below it.
    async fn truncate(&self, below: u64) -> Result<(), BackplaneError>;
}

/// One consumer's view of a consumer group.
#[async_trait]
pub trait Feed: Send {
    /// The next records, waiting up to `wait` for some; empty if none came.
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Entry>, BackplaneError>;

    /// Everything below `next` is done with, and `offsets` (read from this feed) are.
    async fn ack(&mut self, next: u64, offsets: &[u64]) -> Result<(), BackplaneError>;

    /// Reads again from `next`: after a consumer learnt it is elsewhere than the feed
    /// thinks, or abandoned a read (what it read is still unacknowledged and comes again).
    fn rewind(&mut self, next: u64);
}

/// Opens the backplane the configuration asks for: Redis with `[backplane]`, else the
/// embedded one under `data_dir`. The node calls it once and hands the result out.
pub async fn open(
    cfg: Option<&BackplaneConfig>,
    data_dir: &Path,
) -> Result<Arc<dyn Backplane>, BackplaneError> {
    match cfg {
        Some(cfg) => Ok(Arc::new(redis::RedisBackplane::connect(cfg).await?)),
        None => open_embedded(data_dir, LogOptions::default()),
    }
}

/// The embedded backplane under `data_dir` with streams tuned by `options` (tests use
/// tiny segments to see trimming).
pub fn open_embedded(
    data_dir: &Path,
    options: LogOptions,
) -> Result<Arc<dyn Backplane>, BackplaneError> {
    Ok(Arc::new(embedded::Embedded::new(data_dir, options)))
}
