//! The relay's stream on the node's backplane, and how long its records are kept.
//!
//! Records have gapless `u64` offsets, which are the ids producers get back; the backplane
//! keeps them durable, remembers `Idempotency-Key`s (see [`crate::record::idempotency_key`])
//! and gives each destination a consumer group. What stays relay's is retention: a record
//! goes once every destination applied it *and* it is older than `retention`, so its detail
//! lives as long as its delivery log.

use std::sync::Arc;
use std::time::Duration;

use backplane::{Backplane, BackplaneError, Stream, StreamOptions};

use crate::catalog::now_ms;
use crate::record::Record;

/// The stream's name on the backplane.
pub const NAME: &str = "relay";

/// Opens the relay's stream, remembering idempotency keys for `window` (and carrying over
/// those a stream written by an older lintas kept in its records).
pub async fn open(bp: &dyn Backplane, window: Duration) -> Result<Arc<dyn Stream>, BackplaneError> {
    bp.stream(
        NAME,
        StreamOptions {
            idempotency_window: window,
            legacy_keys: Some(crate::record::legacy_key),
        },
    )
    .await
}

/// The first offset whose record was received at or after `since_ms`, or the end:
/// a binary search, records being stored in the order they are received.
pub async fn first_since(stream: &dyn Stream, since_ms: u64) -> Result<u64, BackplaneError> {
    let (mut lo, mut hi) = (0, stream.end().await?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let Some(entry) = stream.read(mid, 1).await?.into_iter().next() else {
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

/// Deletes records every one of `groups` (the destinations) has applied once they are
/// older than `retention`.
pub async fn trim(
    stream: &dyn Stream,
    groups: &[String],
    retention: Duration,
) -> Result<Option<u64>, BackplaneError> {
    let since = (now_ms() as u64).saturating_sub(retention.as_millis() as u64);
    let below = first_since(stream, since).await?;
    stream.trim(groups, below).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use testkit::TempDir;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn record(received_ms: u64) -> Bytes {
        Record {
            application: "shop".into(),
            received_ms,
            idempotency: None,
            json: Bytes::from_static(b"{}"),
        }
        .encode()
    }

    #[tokio::test]
    async fn records_go_once_applied_and_older_than_the_retention() {
        let dir = TempDir::new();
        let bp = backplane::open_embedded(dir.path(), backplane::LogOptions { segment_bytes: 1 })
            .unwrap();
        let stream = open(bp.as_ref(), Duration::from_secs(3600)).await.unwrap();
        let now = now_ms() as u64;
        for received in [
            now - 2 * DAY_MS,
            now - 2 * DAY_MS,
            now - 2 * DAY_MS,
            now,
            now,
        ] {
            stream.append(vec![record(received)], None).await.unwrap();
        }
        assert_eq!(first_since(stream.as_ref(), now - DAY_MS).await.unwrap(), 3);
        let mut feed = stream.feed("pg", "node", 0).await.unwrap();
        feed.ack(2, &[]).await.unwrap();
        let groups = ["pg".to_owned()];
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(
            trim(stream.as_ref(), &groups, day).await.unwrap(),
            Some(2),
            "only what pg applied"
        );
        feed.ack(5, &[]).await.unwrap();
        assert_eq!(
            trim(stream.as_ref(), &groups, day).await.unwrap(),
            Some(3),
            "only what is older than a day"
        );
        let kept: Vec<u64> = stream
            .read(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.offset)
            .collect();
        assert_eq!(kept, [3, 4]);
    }
}
