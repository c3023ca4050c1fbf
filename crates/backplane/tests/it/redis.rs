//! What only the Redis backend does: resubscribing after its connection is killed,
//! unsubscribing from Redis when the last local subscriber goes, TLS, and reporting an
//! unusable Redis quickly.

use std::time::Duration;

use bytes::Bytes;
use testkit::{PATIENCE, TempDir, wait_until};

use crate::harness::{Backend, next_message, redis_url};

/// The database the resubscribe test selects, so that it can find its own subscribing
/// connection in `CLIENT LIST` (channels are global to the server, databases are not
/// shown otherwise); no other test uses it.
const KILL_DB: u8 = 9;

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Ids of the subscribing connections on database [`KILL_DB`].
async fn subscribers_on_kill_db(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == format!("db={KILL_DB}")))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscribing_connection_is_remade_and_subscribed_again() {
    let url = format!("{}/{KILL_DB}", redis_url().trim_end_matches('/'));
    let backend = Backend::redis_at(&url, "resubscribe");
    let bp = backend.open().await;
    let mut sub = bp.subscribe("room").await.unwrap();
    bp.publish("room", Bytes::from_static(b"before"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut sub, "before the kill").await, "before");
    let mut conn = admin().await;
    let ids = subscribers_on_kill_db(&mut conn).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&ids[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // Published until one arrives: what is published while it reconnects is missed.
    let mut n = 0u32;
    let got = loop {
        n += 1;
        bp.publish("room", Bytes::from(format!("after-{n}")))
            .await
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            break m;
        }
        assert!(n < 100, "nothing delivered within 20 s of the kill");
    };
    assert!(got.starts_with(b"after-"), "{got:?}");
    assert_eq!(
        sub.missed(),
        1,
        "the reconnection is a gap the subscriber is told of"
    );
    let now = subscribers_on_kill_db(&mut conn).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, ids, "a new connection");
    backend.wipe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_forgets_a_channel_when_its_last_local_subscriber_goes() {
    let backend = Backend::redis("numsub");
    let Some(cfg) = backend.config() else {
        unreachable!()
    };
    let bp = backend.open().await;
    let channel = format!("{}:ps:room", cfg.prefix);
    let numsub = || {
        let channel = channel.clone();
        async move {
            let mut conn = admin().await;
            let v: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            v.1
        }
    };
    let one = bp.subscribe("room").await.unwrap();
    let two = bp.subscribe("room").await.unwrap();
    assert_eq!(
        numsub().await,
        1,
        "one connection per node, whatever the subscribers"
    );
    drop(one);
    assert_eq!(numsub().await, 1);
    drop(two);
    wait_until("Redis to drop the channel", PATIENCE, || {
        let n = numsub();
        async move { n.await == 0 }
    })
    .await;
}

#[tokio::test]
async fn rediss_speaks_tls_and_checks_the_certificate() {
    let dir = TempDir::new();
    let redis: std::net::SocketAddr = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let link = testkit::tls::TlsLink::start(redis, dir.path())
        .await
        .unwrap();
    let backend = Backend::redis("rediss");
    let Some(plain) = backend.config() else {
        unreachable!()
    };
    let cfg = backplane::BackplaneConfig {
        redis: format!("rediss://{}/", link.addr()),
        tls_ca_file: Some(link.ca().to_owned()),
        ..plain
    };
    let bp = backplane::open(Some(&cfg), dir.path()).await.unwrap();
    let s = crate::harness::stream(&bp, "s").await;
    assert_eq!(
        s.append(vec![Bytes::from_static(b"r")], None)
            .await
            .unwrap()
            .offsets,
        0..1
    );
    backend.wipe().await;

    // Trusting only the system's roots, the test's certificate is refused.
    let system_roots = backplane::BackplaneConfig {
        tls_ca_file: None,
        ..cfg
    };
    let err = tokio::time::timeout(
        REFUSAL_PATIENCE,
        backplane::open(Some(&system_roots), dir.path()),
    )
    .await
    .expect("a refused certificate is reported, not retried for minutes")
    .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

/// How soon a Redis that cannot be used must be reported at start (a few quick retries).
const REFUSAL_PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_unreachable_redis_is_reported_within_seconds_naming_the_setting() {
    let cfg = backplane::BackplaneConfig {
        redis: "redis://127.0.0.1:1/".into(),
        password_env: None,
        tls_ca_file: None,
        prefix: "lintas-test-unreachable".into(),
        lease: Duration::from_secs(10),
    };
    let err = tokio::time::timeout(
        REFUSAL_PATIENCE,
        backplane::open(Some(&cfg), std::path::Path::new("/nonexistent")),
    )
    .await
    .expect("connecting to a closed port gave up only after minutes")
    .unwrap_err();
    let text = err.to_string();
    assert!(err.retryable());
    assert!(text.contains("refused"), "{text}");
    assert!(
        text.ends_with("check that it runs and that backplane.redis points at it"),
        "{text}"
    );
}
