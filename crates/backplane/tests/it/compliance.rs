//! The compliance suite: every property is written once, as a function of a [`Backend`],
//! and [`compliance!`] runs each against the embedded backend and against Redis.

use std::sync::Arc;
use std::time::Duration;

use backplane::{Appended, BackplaneError, Entry, Feed, IdempotencyKey};
use bytes::Bytes;
use testkit::{PATIENCE, wait_until};

use crate::harness::{Backend, next_message, rec, stream};

/// Runs every named property against both backends, as `compliance::embedded::NAME` and
/// `compliance::redis::NAME`.
macro_rules! compliance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::embedded()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::Backend::redis(stringify!($name));
                    super::$name(&backend).await;
                    backend.wipe().await;
                }
            )*
        }
    };
}

compliance!(
    appends_get_gapless_offsets_in_order,
    a_retried_key_returns_the_first_offsets_and_another_body_is_refused,
    concurrent_appends_with_one_key_store_once,
    keys_survive_a_restart,
    the_stream_id_survives_a_restart_and_changes_when_recreated,
    a_group_redelivers_what_a_dead_consumer_did_not_acknowledge,
    trimming_deletes_only_what_every_group_acknowledged,
    a_lease_has_one_holder_until_released_or_expired,
    published_messages_reach_every_subscriber_of_the_channel,
    nothing_is_delivered_after_unsubscribing,
    keys_expire_compare_and_set_and_scan_by_prefix,
    keys_survive_a_restart_until_they_expire,
    a_deleted_stream_is_gone_and_its_name_starts_afresh,
);

fn offsets(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.offset).collect()
}

fn key(k: &str, body_hash: u64) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        key: k.into(),
        body_hash,
    })
}

fn stored(offsets: std::ops::Range<u64>) -> Appended {
    Appended {
        offsets,
        replayed: false,
    }
}

async fn appends_get_gapless_offsets_in_order(b: &Backend) {
    let bp = b.open().await;
    let s = stream(&bp, "s").await;
    assert_eq!(
        s.append(vec![rec(0), rec(1)], None).await.unwrap(),
        stored(0..2)
    );
    assert_eq!(s.append(vec![rec(2)], None).await.unwrap(), stored(2..3));
    let tasks: Vec<_> = (3..53)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { (s.append(vec![rec(i)], None).await.unwrap(), i) })
        })
        .collect();
    let mut by_offset = vec![0; 53];
    for t in tasks {
        let (appended, i) = t.await.unwrap();
        assert_eq!(appended.offsets.end - appended.offsets.start, 1);
        by_offset[appended.offsets.start as usize] = i;
    }
    assert_eq!(s.end().await.unwrap(), 53);
    let all = s.read(0, 100).await.unwrap();
    assert_eq!(offsets(&all), (0..53).collect::<Vec<_>>());
    for e in &all[3..] {
        assert_eq!(e.payload, rec(by_offset[e.offset as usize]));
    }
    assert_eq!(
        s.read(1, 2).await.unwrap(),
        [
            Entry {
                offset: 1,
                payload: rec(1)
            },
            Entry {
                offset: 2,
                payload: rec(2)
            }
        ]
    );
    assert_eq!(s.read(53, 10).await.unwrap(), []);
}

async fn a_retried_key_returns_the_first_offsets_and_another_body_is_refused(b: &Backend) {
    let bp = b.open().await;
    let s = stream(&bp, "s").await;
    assert_eq!(s.append(vec![rec(0)], None).await.unwrap(), stored(0..1));
    let first = s.append(vec![rec(1), rec(2)], key("k1", 7)).await.unwrap();
    assert_eq!(first, stored(1..3));
    let retry = s.append(vec![rec(1), rec(2)], key("k1", 7)).await.unwrap();
    assert_eq!(
        retry,
        Appended {
            offsets: 1..3,
            replayed: true
        }
    );
    let reused = s.append(vec![rec(9)], key("k1", 8)).await.unwrap_err();
    assert!(matches!(reused, BackplaneError::KeyReused), "{reused:?}");
    assert_eq!(
        reused.to_string(),
        "this idempotency key was already used with a different body; use a new key for a new request"
    );
    assert_eq!(
        s.append(vec![rec(3)], key("k2", 7)).await.unwrap(),
        stored(3..4)
    );
    assert_eq!(s.end().await.unwrap(), 4, "nothing was stored twice");
}

async fn concurrent_appends_with_one_key_store_once(b: &Backend) {
    let bp = b.open().await;
    let s = stream(&bp, "s").await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.append(vec![rec(0), rec(1)], key("same", 1))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(
        answers.iter().filter(|a| !a.replayed).count(),
        1,
        "{answers:?}"
    );
    assert!(answers.iter().all(|a| a.offsets == (0..2)), "{answers:?}");
    assert_eq!(s.end().await.unwrap(), 2);
}

async fn keys_survive_a_restart(b: &Backend) {
    {
        let bp = b.open().await;
        let s = stream(&bp, "s").await;
        s.append(vec![rec(0)], None).await.unwrap();
        assert_eq!(
            s.append(vec![rec(1), rec(2)], key("k", 5)).await.unwrap(),
            stored(1..3)
        );
    }
    let bp = b.open().await;
    let s = stream(&bp, "s").await;
    assert_eq!(
        s.append(vec![rec(1), rec(2)], key("k", 5)).await.unwrap(),
        Appended {
            offsets: 1..3,
            replayed: true
        }
    );
    assert!(matches!(
        s.append(vec![rec(1)], key("k", 6)).await,
        Err(BackplaneError::KeyReused)
    ));
    assert_eq!(s.end().await.unwrap(), 3);
    assert_eq!(s.append(vec![rec(3)], None).await.unwrap(), stored(3..4));
}

async fn the_stream_id_survives_a_restart_and_changes_when_recreated(b: &Backend) {
    let first = {
        let bp = b.open().await;
        let s = stream(&bp, "s").await;
        let other = stream(&bp, "t").await;
        assert_ne!(s.id(), other.id(), "each stream has its own identity");
        assert_eq!(s.id().len(), 32, "{}", s.id());
        s.id().to_owned()
    };
    let again = {
        let bp = b.open().await;
        stream(&bp, "s").await.id().to_owned()
    };
    assert_eq!(again, first);
    b.wipe().await;
    let bp = b.open().await;
    assert_ne!(stream(&bp, "s").await.id(), first);
}

/// Reads `feed` until it has given `n` records (or [`PATIENCE`] passes).
async fn take(feed: &mut Box<dyn Feed>, n: usize) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let read = feed
            .next(n - got.len(), Duration::from_millis(200))
            .await
            .unwrap();
        got.extend(offsets(&read));
    }
    got
}

async fn a_group_redelivers_what_a_dead_consumer_did_not_acknowledge(b: &Backend) {
    let bp = b.open().await;
    let s = stream(&bp, "s").await;
    s.append((0..5).map(rec).collect(), None).await.unwrap();
    let mut a = s.feed("g", "a", 0).await.unwrap();
    assert_eq!(take(&mut a, 5).await, [0, 1, 2, 3, 4]);
    a.ack(2, &[0, 1]).await.unwrap();
    a.rewind(2);
    assert_eq!(
        take(&mut a, 3).await,
        [2, 3, 4],
        "a rewind reads the unacknowledged again"
    );
    drop(a);
    // Another consumer of the group takes over what the dead one left.
    let mut c = s.feed("g", "c", 0).await.unwrap();
    assert_eq!(take(&mut c, 3).await, [2, 3, 4]);
    s.append(vec![rec(5)], None).await.unwrap();
    assert_eq!(take(&mut c, 1).await, [5]);
    c.ack(6, &[2, 3, 4, 5]).await.unwrap();
    assert_eq!(c.next(10, Duration::from_millis(100)).await.unwrap(), []);
    // A new group starts where it is told.
    let mut other = s.feed("h", "a", 3).await.unwrap();
    assert_eq!(take(&mut other, 3).await, [3, 4, 5]);
}

async fn trimming_deletes_only_what_every_group_acknowledged(b: &Backend) {
    let bp = b.open().await;
    let s = stream(&bp, "s").await;
    for i in 0..10 {
        s.append(vec![rec(i)], None).await.unwrap();
    }
    let mut g = s.feed("g", "a", 0).await.unwrap();
    assert_eq!(take(&mut g, 10).await, (0..10).collect::<Vec<_>>());
    g.ack(6, &[0, 1, 2, 3, 4, 5]).await.unwrap();
    let groups = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    assert_eq!(s.trim(&groups(&["g", "missing"]), 8).await.unwrap(), None);
    assert_eq!(
        offsets(&s.read(0, 1).await.unwrap()),
        [0],
        "a group that does not exist yet holds everything"
    );
    assert_eq!(s.trim(&groups(&["g"]), 8).await.unwrap(), Some(6));
    assert_eq!(offsets(&s.read(0, 100).await.unwrap()), [6, 7, 8, 9]);
    assert_eq!(s.end().await.unwrap(), 10);
    assert_eq!(s.append(vec![rec(10)], None).await.unwrap(), stored(10..11));
}

async fn a_lease_has_one_holder_until_released_or_expired(b: &Backend) {
    let bp = b.open().await;
    let long = Duration::from_secs(30);
    assert!(bp.acquire("dest", "a", long).await.unwrap());
    assert!(
        bp.acquire("dest", "a", long).await.unwrap(),
        "the holder takes it again"
    );
    assert!(!bp.acquire("dest", "b", long).await.unwrap());
    assert!(
        !bp.renew("dest", "b", long).await.unwrap(),
        "only the holder renews"
    );
    assert!(
        !bp.release("dest", "b",).await.unwrap(),
        "only the holder releases"
    );
    assert!(bp.renew("dest", "a", long).await.unwrap());
    assert!(bp.release("dest", "a").await.unwrap());
    assert!(
        bp.acquire("dest", "b", long).await.unwrap(),
        "released: another takes it at once"
    );
    assert!(!bp.renew("dest", "a", long).await.unwrap());

    assert!(
        bp.acquire("short", "a", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(!bp.acquire("short", "b", long).await.unwrap());
    wait_until("the lease to expire", PATIENCE, || {
        let bp = bp.clone();
        async move { bp.acquire("short", "b", long).await.unwrap() }
    })
    .await;
    assert!(
        !bp.renew("short", "a", long).await.unwrap(),
        "an expired holder cannot renew"
    );
}

async fn published_messages_reach_every_subscriber_of_the_channel(b: &Backend) {
    let bp = b.open().await;
    let mut one = bp.subscribe("room").await.unwrap();
    let mut two = bp.subscribe("room").await.unwrap();
    let mut elsewhere = bp.subscribe("hall").await.unwrap();
    bp.publish("room", Bytes::from_static(b"m1")).await.unwrap();
    bp.publish("room", Bytes::from_static(b"m2")).await.unwrap();
    bp.publish("hall", Bytes::from_static(b"h1")).await.unwrap();
    for sub in [&mut one, &mut two] {
        assert_eq!(next_message(sub, "m1").await, "m1");
        assert_eq!(next_message(sub, "m2").await, "m2");
    }
    assert_eq!(
        next_message(&mut elsewhere, "h1").await,
        "h1",
        "another channel's messages stay there"
    );
    assert_eq!((one.missed(), two.missed()), (0, 0));
}

async fn nothing_is_delivered_after_unsubscribing(b: &Backend) {
    let bp: Arc<dyn backplane::Backplane> = b.open().await;
    let gone = bp.subscribe("room").await.unwrap();
    let mut stays = bp.subscribe("room").await.unwrap();
    drop(gone);
    bp.publish("room", Bytes::from_static(b"m1")).await.unwrap();
    assert_eq!(next_message(&mut stays, "m1").await, "m1");
    drop(stays);
    bp.publish("room", Bytes::from_static(b"unheard"))
        .await
        .unwrap();
    let mut later = bp.subscribe("room").await.unwrap();
    bp.publish("room", Bytes::from_static(b"m2")).await.unwrap();
    assert_eq!(
        next_message(&mut later, "m2").await,
        "m2",
        "a new subscriber gets nothing published before it came"
    );
}

async fn keys_expire_compare_and_set_and_scan_by_prefix(b: &Backend) {
    let bp = b.open().await;
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    assert_eq!(bp.get("a/1").await.unwrap(), None);
    bp.set("a/1", v("one"), None).await.unwrap();
    assert_eq!(bp.get("a/1").await.unwrap(), Some(v("one")));
    assert!(!bp.set_if_absent("a/1", v("other"), None).await.unwrap());
    assert!(bp.set_if_absent("a/2", v("two"), None).await.unwrap());
    assert!(
        !bp.compare_and_set("a/1", b"wrong", Some(v("x")), None)
            .await
            .unwrap()
    );
    assert!(
        !bp.compare_and_set("absent", b"one", Some(v("x")), None)
            .await
            .unwrap()
    );
    assert!(
        bp.compare_and_set("a/1", b"one", Some(v("uno")), None)
            .await
            .unwrap()
    );
    assert_eq!(bp.get("a/1").await.unwrap(), Some(v("uno")));
    bp.set("b/1", v("b"), None).await.unwrap();
    bp.set("a*/1", v("star"), None).await.unwrap();
    bp.set("a/3", v("brief"), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let scanned = bp.scan("a/").await.unwrap();
    assert_eq!(
        scanned,
        [
            ("a/1".to_owned(), v("uno")),
            ("a/2".to_owned(), v("two")),
            ("a/3".to_owned(), v("brief"))
        ]
    );
    assert_eq!(
        bp.scan("a*").await.unwrap(),
        [("a*/1".to_owned(), v("star"))],
        "no pattern matching in prefixes"
    );
    wait_until("a/3 to expire", PATIENCE, || {
        let bp = bp.clone();
        async move { bp.get("a/3").await.unwrap().is_none() }
    })
    .await;
    assert_eq!(bp.scan("a/").await.unwrap().len(), 2);
    assert!(bp.compare_and_set("a/2", b"two", None, None).await.unwrap());
    assert_eq!(bp.get("a/2").await.unwrap(), None);
    assert!(bp.delete("a/1").await.unwrap());
    assert!(!bp.delete("a/1").await.unwrap());
    assert_eq!(bp.get("a/1").await.unwrap(), None);
    assert_eq!(all_keys(&bp).await, ["a*/1".to_owned(), "b/1".to_owned()]);
}

async fn keys_survive_a_restart_until_they_expire(b: &Backend) {
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    {
        let bp = b.open().await;
        bp.set("kept", v("1"), None).await.unwrap();
        bp.set("hour", v("2"), Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        bp.set("brief", v("3"), Some(Duration::from_millis(500)))
            .await
            .unwrap();
        bp.set("gone", v("4"), None).await.unwrap();
        assert!(bp.delete("gone").await.unwrap());
        assert!(
            bp.compare_and_set("kept", b"1", Some(v("one")), None)
                .await
                .unwrap()
        );
    }
    let bp = b.open().await;
    assert_eq!(bp.get("kept").await.unwrap(), Some(v("one")));
    assert_eq!(bp.get("hour").await.unwrap(), Some(v("2")));
    assert_eq!(bp.get("gone").await.unwrap(), None);
    wait_until("brief to expire after the restart", PATIENCE, || {
        let bp = bp.clone();
        async move { bp.get("brief").await.unwrap().is_none() }
    })
    .await;
    assert_eq!(all_keys(&bp).await, ["hour", "kept"]);
}

/// Every live key, sorted.
async fn all_keys(bp: &Arc<dyn backplane::Backplane>) -> Vec<String> {
    bp.scan("")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

async fn a_deleted_stream_is_gone_and_its_name_starts_afresh(b: &Backend) {
    let id = {
        let bp = b.open().await;
        let gone = stream(&bp, "gone").await;
        gone.append(vec![rec(0), rec(1)], None).await.unwrap();
        let kept = stream(&bp, "kept").await;
        kept.append(vec![rec(2)], None).await.unwrap();
        let id = gone.id().to_owned();
        assert!(bp.delete_stream("gone").await.unwrap());
        assert!(!bp.delete_stream("gone").await.unwrap(), "already gone");
        let again = stream(&bp, "gone").await;
        assert_ne!(again.id(), id, "a new stream");
        assert_eq!(again.end().await.unwrap(), 0);
        assert!(again.read(0, 10).await.unwrap().is_empty());
        assert_eq!(
            offsets(&kept.read(0, 10).await.unwrap()),
            [0],
            "the other stays"
        );
        assert!(bp.delete_stream("gone").await.unwrap());
        id
    };
    // Gone for a node started after, too.
    let bp = b.open().await;
    let after = stream(&bp, "gone").await;
    assert_ne!(after.id(), id);
    assert_eq!(after.end().await.unwrap(), 0);
}
