//! What only the embedded backend does: keys held through trimming, a caller giving up
//! mid-append, and an in-place upgrade of a data_dir from before the backplane kept keys.

use backplane::{Appended, IdempotencyKey, LogOptions, SegmentLog, StreamOptions};
use bytes::Bytes;
use testkit::{PATIENCE, TempDir};

use crate::harness::{Backend, WINDOW, rec, stream};

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        key: k.into(),
        body_hash: 42,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_giving_up_mid_append_does_not_leave_its_key_pending() {
    let b = Backend::embedded();
    let bp = b.open().await;
    let s = stream(&bp, "s").await;
    // Polled once (the key claimed, the write under way), then dropped: a client that hung up.
    let mut first = s.append(vec![rec(0)], key("k1"));
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(first.as_mut().poll(cx))).await;
    assert!(polled.is_pending(), "the first append was cut short");
    drop(first);
    let retry = tokio::time::timeout(PATIENCE, s.append(vec![rec(0)], key("k1")))
        .await
        .expect("the retry answers instead of waiting forever")
        .unwrap();
    assert_eq!(
        retry,
        Appended {
            offsets: 0..1,
            replayed: true
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_holding_keys_in_their_window_are_not_trimmed() {
    let b = Backend::embedded();
    {
        let bp = b.open().await;
        let s = stream(&bp, "s").await;
        s.append(vec![rec(0)], None).await.unwrap();
        s.append(vec![rec(1)], key("k")).await.unwrap();
        for i in 2..5 {
            s.append(vec![rec(i)], None).await.unwrap();
        }
        let mut g = s.feed("g", "a", 5).await.unwrap();
        g.ack(5, &[]).await.unwrap();
        assert_eq!(s.trim(&["g".to_owned()], 5).await.unwrap(), Some(5));
        let kept: Vec<u64> = s
            .read(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.offset)
            .collect();
        assert_eq!(
            kept,
            [1, 2, 3, 4],
            "the keyed record's segment stays, and all after it"
        );
    }
    let bp = b.open().await;
    let s = stream(&bp, "s").await;
    assert_eq!(
        s.append(vec![rec(1)], key("k")).await.unwrap(),
        Appended {
            offsets: 1..2,
            replayed: true
        }
    );
}

/// How the test's pretend producer kept keys in its records before the backplane did:
/// `key|count|hash|ms|body`.
fn legacy(payload: &Bytes) -> Option<(String, u32, u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('|');
    let key = parts.next().filter(|k| !k.is_empty())?.to_owned();
    Some((
        key,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_relay_stream_is_moved_into_place_with_its_id_and_keys() {
    let dir = TempDir::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old = now_ms - 2 * WINDOW.as_millis() as u64;
    {
        let log = SegmentLog::open(&dir.path().join("stream"), LogOptions::default()).unwrap();
        let records = [
            format!("|0|0|{now_ms}|plain"),
            format!("k-new|2|7|{now_ms}|first of two"),
            format!("|0|0|{now_ms}|second of two"),
            format!("k-old|1|7|{old}|outside the window"),
        ];
        for r in records {
            log.append(vec![Bytes::from(r)]).await.unwrap();
        }
        std::fs::write(
            dir.path().join("stream/ID"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
    }
    let options = StreamOptions {
        idempotency_window: WINDOW,
        legacy_keys: Some(legacy),
    };
    for _ in 0..2 {
        let bp = backplane::open(None, dir.path()).await.unwrap();
        let s = bp.stream("relay", options).await.unwrap();
        assert!(!dir.path().join("stream").exists());
        assert_eq!(s.id(), "0123456789abcdef0123456789abcdef");
        let retry = IdempotencyKey {
            key: "k-new".into(),
            body_hash: 7,
        };
        assert_eq!(
            s.append(vec![rec(9)], Some(retry)).await.unwrap(),
            Appended {
                offsets: 1..3,
                replayed: true
            },
            "the key of the older format is remembered, also once carried over"
        );
        assert_eq!(s.end().await.unwrap(), 4);
    }
    let bp = backplane::open(None, dir.path()).await.unwrap();
    let s = bp.stream("relay", options).await.unwrap();
    let expired = IdempotencyKey {
        key: "k-old".into(),
        body_hash: 7,
    };
    assert_eq!(
        s.append(vec![rec(9)], Some(expired)).await.unwrap().offsets,
        4..5,
        "a key older than the window is not carried over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_value_log_is_compacted_and_reads_back_the_latest_values() {
    let dir = TempDir::new();
    let options = LogOptions {
        segment_bytes: 4096,
    };
    {
        let bp = backplane::open_embedded(dir.path(), options).unwrap();
        for round in 0..500u32 {
            for k in 0..10 {
                bp.set(&format!("k{k}"), Bytes::from(format!("{round}")), None)
                    .await
                    .unwrap();
            }
        }
    }
    let segments = std::fs::read_dir(dir.path().join("kv")).unwrap().count();
    assert!(
        segments < 40,
        "{segments} segments: 5,000 changes of 10 keys were not compacted"
    );
    let bp = backplane::open_embedded(dir.path(), options).unwrap();
    let all = bp.scan("k").await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|(_, v)| v == "499"), "{all:?}");
}
