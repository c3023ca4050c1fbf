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

use backplane::{Appended, Entry, LogOptions, RedisStream, SegmentLog};
use bytes::Bytes;
use tokio::sync::watch;

use crate::catalog::now_ms;
use crate::idempotency::{Claim, Idempotency, Stored};
use crate::record::{IdempotencyMark, Record};

/// Most payload bytes one read returns from the embedded log.
const READ_BYTES: usize = 8 * 1024 * 1024;

/// `window` before now, in ms since the Unix epoch.
fn since(window: Duration) -> u64 {
    (now_ms() as u64).saturating_sub(window.as_millis() as u64)
}

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
                        // On a task of its own, which also settles the key: a client
                        // hanging up (this future dropped) can neither leave records stored
                        // without their key remembered nor the key pending forever.
                        let settle = idempotency.clone();
                        let (owner, mine) = (app.to_owned(), key.clone());
                        let log = log.clone();
                        let result = tokio::spawn(async move {
                            let appended = log.append(records).await;
                            match &appended {
                                Ok(ids) => settle.complete(
                                    &owner,
                                    &mine,
                                    Stored {
                                        first: ids.start,
                                        count,
                                        body_hash,
                                        at_ms: now_ms() as u64,
                                    },
                                ),
                                Err(_) => settle.release(&owner, &mine),
                            }
                            appended
                        })
                        .await;
                        match result {
                            Ok(Ok(ids)) => Ok(Accepted {
                                ids,
                                replayed: false,
                            }),
                            Ok(Err(e)) => Err(AppendError::Failed(e.to_string())),
                            Err(e) => {
                                // The task died before settling the key.
                                idempotency.release(app, &key);
                                Err(AppendError::Failed(e.to_string()))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Opens the embedded stream in `dir`, remembering idempotency keys for `window`.
    pub async fn open_local(
        dir: &std::path::Path,
        options: LogOptions,
        window: Duration,
    ) -> Result<Self, String> {
        let log = SegmentLog::open(dir, options).map_err(|e| e.to_string())?;
        let idempotency = Idempotency::new(window);
        let stream = Self::Local {
            log: log.clone(),
            idempotency: idempotency.clone(),
        };
        let from = stream.first_since(since(window)).await?;
        let remembered = idempotency
            .rebuild(&log, from)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(idempotency_keys = remembered, "relay stream opened");
        Ok(stream)
    }

    /// The first offset whose record was received at or after `since_ms`, or the end:
    /// a binary search, records being stored in the order they are received.
    pub async fn first_since(&self, since_ms: u64) -> Result<u64, String> {
        let (mut lo, mut hi) = match self {
            Self::Local { log, .. } => (log.start(), log.end()),
            Self::Redis { .. } => (0, self.end().await?),
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(entry) = self.read(mid, 1).await?.into_iter().next() else {
                hi = mid;
                continue;
            };
            let received = Record::decode(&entry.payload).map_or(0, |r| r.received_ms);
            if received >= since_ms || entry.offset >= hi {
                hi = mid;
            } else {
                lo = entry.offset + 1;
            }
        }
        Ok(lo)
    }

    /// Deletes records every destination has applied (below `applied`, the lowest next
    /// offset of the destinations, on the embedded log; below what every one of `groups`
    /// is past, on Redis) once they are older than `retention`, so a record's detail
    /// lives as long as its delivery log. The embedded log also keeps records for the
    /// idempotency window: its keys are rebuilt from them at start.
    pub async fn trim(
        &self,
        applied: Option<u64>,
        groups: &[String],
        retention: Duration,
    ) -> Result<(), String> {
        match self {
            Self::Local { log, idempotency } => {
                idempotency.prune();
                let Some(applied) = applied else {
                    return Ok(());
                };
                let keep = retention.max(idempotency.window());
                let floor = applied.min(self.first_since(since(keep)).await?);
                log.trim_before(floor).map_err(|e| e.to_string())?;
                Ok(())
            }
            Self::Redis { stream, .. } => {
                let below = self.first_since(since(retention)).await?;
                stream
                    .trim(groups, below)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::{PATIENCE, TempDir};

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn record(received_ms: u64, json: &str) -> Bytes {
        Record {
            application: "shop".into(),
            received_ms,
            idempotency: None,
            json: Bytes::from(json.to_owned()),
        }
        .encode()
    }

    /// Every append its own segment, so trimming can delete any of them.
    fn tiny() -> LogOptions {
        LogOptions { segment_bytes: 1 }
    }

    #[tokio::test]
    async fn a_client_hanging_up_mid_append_does_not_leave_its_key_pending() {
        let dir = TempDir::new();
        let stream = Stream::open_local(dir.path(), tiny(), Duration::from_secs(3600))
            .await
            .unwrap();
        let now = now_ms() as u64;
        let key = || Some(("k1".to_owned(), 42));
        // Polled once (the key claimed, the write under way), then dropped: a client that
        // hung up.
        let mut first = Box::pin(stream.append("shop", vec![record(now, "{}")], key()));
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(first.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "the first append was cut short");
        drop(first);
        let retry = tokio::time::timeout(
            PATIENCE,
            stream.append("shop", vec![record(now, "{}")], key()),
        )
        .await
        .expect("the retry answers instead of waiting forever")
        .unwrap();
        assert_eq!(
            retry,
            Accepted {
                ids: 0..1,
                replayed: true
            }
        );
    }

    #[tokio::test]
    async fn records_and_keys_within_their_windows_survive_trimming_and_a_restart() {
        let dir = TempDir::new();
        let window = Duration::from_secs(24 * 3600);
        let retention = Duration::from_secs(3600);
        let now = now_ms() as u64;
        {
            let stream = Stream::open_local(dir.path(), tiny(), window)
                .await
                .unwrap();
            for i in 0..3 {
                stream
                    .append(
                        "shop",
                        vec![record(now - 2 * DAY_MS, &format!("{{\"old\": {i}}}"))],
                        None,
                    )
                    .await
                    .unwrap();
            }
            let keyed = stream
                .append(
                    "shop",
                    vec![record(now - 3_600_000 * 5, "{\"keyed\": 1}")],
                    Some(("k1".into(), 7)),
                )
                .await
                .unwrap();
            assert_eq!(keyed.ids, 3..4);
            for i in 0..2 {
                stream
                    .append(
                        "shop",
                        vec![record(now, &format!("{{\"new\": {i}}}"))],
                        None,
                    )
                    .await
                    .unwrap();
            }
            // Every destination applied everything.
            stream.trim(Some(6), &[], retention).await.unwrap();
            let kept = stream.read(0, 10).await.unwrap();
            let offsets: Vec<u64> = kept.iter().map(|e| e.offset).collect();
            assert_eq!(
                offsets,
                [3, 4, 5],
                "only what is older than both windows goes"
            );
        }
        let stream = Stream::open_local(dir.path(), tiny(), window)
            .await
            .unwrap();
        let retry = stream
            .append(
                "shop",
                vec![record(now, "{\"keyed\": 1}")],
                Some(("k1".into(), 7)),
            )
            .await
            .unwrap();
        assert_eq!(
            retry,
            Accepted {
                ids: 3..4,
                replayed: true
            }
        );
        assert_eq!(stream.end().await.unwrap(), 6, "nothing was stored again");
    }
}
