//! The relay's stream, embedded or on Redis, behind one interface.
//!
//! - [`Stream::Local`]: the node's own [`SegmentLog`] in `data_dir`, with idempotency keys
//!   remembered in memory and rebuilt from the log at start.
//! - [`Stream::Redis`]: a [`RedisStream`] shared by every node of a cluster; idempotency is
//!   checked in Redis with the append, and each destination is consumed through its own
//!   consumer group by whichever node holds its lease.
//!
//! Either way records have gapless `u64` offsets, which are the ids producers get back.

use std::ops::Range;
use std::time::Duration;

use backplane::{Appended, Entry, RedisStream, SegmentLog};
use bytes::Bytes;
use tokio::sync::watch;

use crate::catalog::now_ms;
use crate::idempotency::{Claim, Idempotency, Stored};
use crate::record::{IdempotencyMark, Record};

/// Most payload bytes one read returns from the embedded log.
const READ_BYTES: usize = 8 * 1024 * 1024;

/// Where records are kept.
pub enum Stream {
    /// This node's log.
    Local {
        /// The log.
        log: SegmentLog,
        /// Keys seen within the window.
        idempotency: Idempotency,
    },
    /// A Redis Stream shared by the cluster.
    Redis {
        /// The stream.
        stream: RedisStream,
        /// How long keys are remembered.
        window: Duration,
    },
}

/// Records accepted by [`Stream::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Their offsets (the ids).
    pub ids: Range<u64>,
    /// True when an earlier request with the same idempotency key stored them.
    pub replayed: bool,
}

/// Why an append did not store.
#[derive(Debug)]
pub enum AppendError {
    /// The idempotency key was used with another body.
    KeyReused,
    /// The stream failed.
    Failed(String),
}

impl Stream {
    /// Stores `records` of `app`; with `key` (Idempotency-Key, body hash), a retry returns
    /// the first request's ids.
    pub async fn append(
        &self,
        app: &str,
        mut records: Vec<Bytes>,
        key: Option<(String, u64)>,
    ) -> Result<Accepted, AppendError> {
        match self {
            Self::Redis { stream, window } => {
                let idem = key.as_ref().map(|(k, h)| (format!("{app}:{k}"), *h));
                let r = stream
                    .append(
                        &records,
                        idem.as_ref().map(|(k, h)| (k.as_str(), *h, *window)),
                    )
                    .await
                    .map_err(|e| AppendError::Failed(e.to_string()))?;
                match r {
                    Appended::Stored(ids) => Ok(Accepted {
                        ids,
                        replayed: false,
                    }),
                    Appended::Replayed { offsets, body_hash } => {
                        if idem.is_some_and(|(_, h)| h != body_hash) {
                            return Err(AppendError::KeyReused);
                        }
                        Ok(Accepted {
                            ids: offsets,
                            replayed: true,
                        })
                    }
                }
            }
            Self::Local { log, idempotency } => {
                let Some((key, body_hash)) = key else {
                    let ids = log
                        .append(records)
                        .await
                        .map_err(|e| AppendError::Failed(e.to_string()))?;
                    return Ok(Accepted {
                        ids,
                        replayed: false,
                    });
                };
                match idempotency.claim(app, &key).await {
                    Claim::Done(stored) if stored.body_hash != body_hash => {
                        Err(AppendError::KeyReused)
                    }
                    Claim::Done(stored) => Ok(Accepted {
                        ids: stored.first..stored.first + u64::from(stored.count),
                        replayed: true,
                    }),
                    Claim::Mine => {
                        let count = records.len() as u32;
                        if let Some(first) = records.first_mut()
                            && let Ok(mut r) = Record::decode(first)
                        {
                            r.idempotency = Some(IdempotencyMark {
                                key: key.clone(),
                                count,
                                body_hash,
                            });
                            *first = r.encode();
                        }
                        // On a task of its own, so a client hanging up cannot leave records
                        // stored without their key remembered.
                        let result = tokio::spawn({
                            let log = log.clone();
                            async move { log.append(records).await }
                        })
                        .await;
                        match result {
                            Ok(Ok(ids)) => {
                                idempotency.complete(
                                    app,
                                    &key,
                                    Stored {
                                        first: ids.start,
                                        count,
                                        body_hash,
                                        at_ms: now_ms() as u64,
                                    },
                                );
                                Ok(Accepted {
                                    ids,
                                    replayed: false,
                                })
                            }
                            Ok(Err(e)) => {
                                idempotency.release(app, &key);
                                Err(AppendError::Failed(e.to_string()))
                            }
                            Err(e) => {
                                idempotency.release(app, &key);
                                Err(AppendError::Failed(e.to_string()))
                            }
                        }
                    }
                }
            }
        }
    }

    /// One past the last offset stored.
    pub async fn end(&self) -> Result<u64, String> {
        match self {
            Self::Local { log, .. } => Ok(log.end()),
            Self::Redis { stream, .. } => stream.end().await.map_err(|e| e.to_string()),
        }
    }

    /// Up to `max` records from `from` on.
    pub async fn read(&self, from: u64, max: usize) -> Result<Vec<Entry>, String> {
        match self {
            Self::Local { log, .. } => log
                .read(from, max, READ_BYTES)
                .await
                .map_err(|e| e.to_string()),
            Self::Redis { stream, .. } => stream.read(from, max).await.map_err(|e| e.to_string()),
        }
    }

    /// The feed a destination's worker reads, starting at `next`.
    pub async fn feed(&self, group: &str, consumer: &str, next: u64) -> Result<Feed, String> {
        Ok(match self {
            Self::Local { log, .. } => Feed::Log {
                log: log.clone(),
                next,
                durable: log.subscribe(),
            },
            Self::Redis { stream, .. } => {
                stream
                    .create_group(group, next)
                    .await
                    .map_err(|e| e.to_string())?;
                Feed::Redis {
                    stream: stream.clone(),
                    group: group.to_owned(),
                    consumer: consumer.to_owned(),
                    cursor: Some("0-0".into()),
                }
            }
        })
    }
}

/// What one destination's worker reads.
pub enum Feed {
    /// The embedded log, read from `next`.
    Log {
        /// The log.
        log: SegmentLog,
        /// The next offset to read.
        next: u64,
        /// Wakes when appends become durable.
        durable: watch::Receiver<u64>,
    },
    /// A consumer group: first what is pending (claimed from any consumer, dead nodes'
    /// included), then new entries.
    Redis {
        /// The stream.
        stream: RedisStream,
        /// The destination's group.
        group: String,
        /// This node.
        consumer: String,
        /// Where the sweep of pending entries stands; `None` once done.
        cursor: Option<String>,
    },
}

impl Feed {
    /// The next entries, waiting up to `wait` for some; empty if none came.
    pub async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Entry>, String> {
        match self {
            Self::Log { log, next, durable } => {
                let read = log
                    .read(*next, max, READ_BYTES)
                    .await
                    .map_err(|e| e.to_string())?;
                if !read.is_empty() {
                    return Ok(read);
                }
                durable.borrow_and_update();
                if log.end() > *next {
                    return Ok(Vec::new());
                }
                let _ = tokio::time::timeout(wait, durable.changed()).await;
                Ok(Vec::new())
            }
            Self::Redis {
                stream,
                group,
                consumer,
                cursor,
            } => {
                if let Some(at) = cursor.clone() {
                    let (next, found) = stream
                        .claim(group, consumer, &at, max)
                        .await
                        .map_err(|e| e.to_string())?;
                    *cursor = next;
                    if !found.is_empty() {
                        return Ok(found);
                    }
                }
                stream
                    .read_group(group, consumer, max, wait)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Everything below `next` is applied; `offsets` were read and are done with.
    pub async fn done(&mut self, next: u64, offsets: &[u64]) -> Result<(), String> {
        match self {
            Self::Log { next: at, .. } => {
                *at = next;
                Ok(())
            }
            Self::Redis { stream, group, .. } => {
                stream.ack(group, offsets).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Starts over from `next`: after another writer moved the destination, or after a
    /// read was abandoned (what it took is still pending and is claimed again).
    pub fn rewind(&mut self, next: u64) {
        match self {
            Self::Log { next: at, .. } => *at = next,
            Self::Redis { cursor, .. } => *cursor = Some("0-0".into()),
        }
    }
}
