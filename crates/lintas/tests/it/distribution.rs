//! Which backend each strategy picks, through a real HTTP listener, counted exactly.

use balance::AdminState;
use testkit::{HttpClient, PATIENCE, wait_until};

use crate::harness::{Backends, TestNode, counts, get_backend, get_backends, tally};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rotates_strictly_and_evenly() {
    let b = Backends::start(&["app1", "app2", "app3"]).await;
    let node = TestNode::single(
        "http",
        &format!("strategy = \"round_robin\"\n{}", b.toml()),
        "",
    )
    .await;

    let got = get_backends(&node.url("web", "/").await, 30).await;

    let order = ["app1", "app2", "app3"];
    let first = order.iter().position(|n| *n == got[0]).unwrap();
    let expected: Vec<&str> = (0..30).map(|i| order[(first + i) % 3]).collect();
    assert_eq!(got, expected);
    assert_eq!(
        tally(&got),
        counts(&[("app1", 10), ("app2", 10), ("app3", 10)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_gives_exact_smooth_shares() {
    let b = Backends::start(&["app1", "app2", "app3"]).await;
    let pool = format!(
        "strategy = \"weighted_round_robin\"\n{}",
        b.toml_weighted(&[3, 2, 1])
    );
    let node = TestNode::single("http", &pool, "").await;

    let got = get_backends(&node.url("web", "/").await, 60).await;

    assert_eq!(got[..6], ["app1", "app2", "app1", "app3", "app2", "app1"]);
    assert_eq!(
        tally(&got),
        counts(&[("app1", 30), ("app2", 20), ("app3", 10)])
    );
}

/// The users' scenario: two long jobs occupy two backends, then short jobs arrive one after
/// the other. Returns the backends of the long jobs and of the short ones.
async fn long_then_short_jobs(strategy: &str) -> (Vec<String>, Vec<String>) {
    let b = Backends::start(&["app1", "app2", "app3"]).await;
    let node = TestNode::single(
        "http",
        &format!("strategy = \"{strategy}\"\n{}", b.toml()),
        "",
    )
    .await;
    let long_url = node.url("web", "/work?ms=3000").await;
    let long: Vec<_> = (0..2)
        .map(|_| {
            let url = long_url.clone();
            tokio::spawn(async move { get_backend(&HttpClient::new(), &url).await })
        })
        .collect();
    let pool = node.pool("web");
    wait_until("two backends busy with one long job each", PATIENCE, || {
        let busy: Vec<u64> = pool
            .snapshot()
            .backends
            .iter()
            .map(|b| b.in_flight)
            .collect();
        let two_busy =
            busy.iter().filter(|&&n| n == 1).count() == 2 && busy.iter().sum::<u64>() == 2;
        async move { two_busy }
    })
    .await;

    let short = get_backends(&node.url("web", "/work?ms=20").await, 6).await;

    let mut long_backends = Vec::new();
    for job in long {
        long_backends.push(job.await.unwrap());
    }
    (long_backends, short)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_short_jobs_to_the_idle_backend() {
    let (long, short) = long_then_short_jobs("least_connections").await;

    assert_ne!(long[0], long[1], "the two long jobs went to one backend");
    let idle = ["app1", "app2", "app3"]
        .into_iter()
        .find(|n| !long.iter().any(|l| l == n))
        .unwrap();
    assert_eq!(short, vec![idle; 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_short_jobs_behind_long_ones() {
    let (long, short) = long_then_short_jobs("round_robin").await;

    assert_ne!(long[0], long[1]);
    assert_eq!(
        tally(&short),
        counts(&[("app1", 2), ("app2", 2), ("app3", 2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_pins_a_user_and_moves_it_only_while_its_backend_is_disabled() {
    let b = Backends::start(&["app1", "app2", "app3"]).await;
    let pool = format!(
        "strategy = \"consistent_hash\"\nhash_key = \"header:X-User\"\n{}",
        b.toml()
    );
    let node = TestNode::single("http", &pool, "").await;
    let url = node.url("web", "/").await;
    let client = HttpClient::new();
    let as_user = async |user: &str, n: usize| {
        let mut got = Vec::new();
        for _ in 0..n {
            let r = client
                .send(http::Method::GET, &url, &[("X-User", user)], "")
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            got.push(r.header("x-backend").to_owned());
        }
        got
    };

    let alice = as_user("alice", 20).await;
    let home = alice[0].clone();
    assert_eq!(alice, vec![home.clone(); 20]);

    let mut spread = Vec::new();
    for i in 0..50 {
        spread.extend(as_user(&format!("user-{i}"), 1).await);
    }
    assert!(
        tally(&spread).len() >= 2,
        "50 users all hashed to one backend: {spread:?}"
    );

    node.pool("web")
        .set_admin(&home, AdminState::Disabled)
        .unwrap();
    let moved = as_user("alice", 10).await;
    assert_ne!(moved[0], home);
    assert_eq!(moved, vec![moved[0].clone(); 10]);

    node.pool("web")
        .set_admin(&home, AdminState::Enabled)
        .unwrap();
    assert_eq!(as_user("alice", 10).await, vec![home; 10]);
}
