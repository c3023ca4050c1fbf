//! Dead, refusing and unreachable backends: health events, retries and the answers clients
//! get when nothing is left.

use std::time::{Duration, Instant};

use balance::{Health, HealthEvent};
use testkit::{HttpClient, PATIENCE};
use tokio::sync::broadcast;

use crate::harness::{
    Backends, Load, ProcessBackend, TestNode, backends_toml, counts, get_backends, listener_toml,
    single_config, tally, unused_addr,
};

/// Waits for `backend`'s next transition to `to`, skipping other events.
async fn next_event(
    events: &mut broadcast::Receiver<HealthEvent>,
    backend: &str,
    to: Health,
) -> HealthEvent {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) if &*e.backend == backend && e.to == to => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("pool events closed"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("no {to:?} event for {backend} within {PATIENCE:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_backend_goes_down_without_client_errors_and_comes_back() {
    let any_port = "127.0.0.1:0".parse().unwrap();
    let mut backends: Vec<ProcessBackend> = ["app1", "app2", "app3"]
        .iter()
        .map(|n| ProcessBackend::spawn(n, any_port))
        .collect();
    let interval = Duration::from_millis(200);
    let fall = 3;
    let pool = format!(
        "strategy = \"round_robin\"\n{}\n\
         health = {{ kind = \"http\", path = \"/health\", interval = \"{}ms\", timeout = \"500ms\", \
         rise = 2, fall = {fall} }}\n\
         passive = {{ failures = 0 }}",
        backends_toml(backends.iter().map(|b| (b.name.as_str(), b.addr, 1))),
        interval.as_millis(),
    );
    let node = TestNode::single("http", &pool, "").await;
    let url = node.url("web", "/").await;
    let mut events = node.pool("web").subscribe();
    let load = Load::start(4, &url);
    load.wait_for_more(100).await;

    let victim_addr = backends[1].addr;
    let killed_at = Instant::now();
    backends[1].kill();
    next_event(&mut events, "app2", Health::Down).await;
    let detection = killed_at.elapsed();
    load.wait_for_more(100).await;

    backends[1] = ProcessBackend::spawn("app2", victim_addr);
    next_event(&mut events, "app2", Health::Up).await;
    let served_before = node.backend("web", "app2").requests;
    load.wait_for_more(100).await;
    let report = load.stop().await;

    assert_eq!(report.failures, Vec::<String>::new(), "clients saw errors");
    let slack = Duration::from_secs(2);
    assert!(
        detection <= interval * fall + slack,
        "Down came {detection:?} after the kill; expected at most {:?}",
        interval * fall + slack
    );
    assert!(
        node.backend("web", "app2").requests > served_before,
        "app2 took no traffic after coming back"
    );
    let after = get_backends(&url, 6).await;
    assert_eq!(
        tally(&after),
        counts(&[("app1", 2), ("app2", 2), ("app3", 2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_answers_503_or_the_configured_502() {
    let pool = format!(
        "{}\nhealth = {{ kind = \"tcp\", interval = \"100ms\", timeout = \"500ms\", fall = 1 }}",
        backends_toml([("a", unused_addr(), 1), ("b", unused_addr(), 1)])
    );
    let text = single_config("http", &pool, "")
        + &listener_toml("web502", "http", "no_backend_status = 502");
    let node = TestNode::start(&text).await;
    node.wait_all("web", Health::Down).await;
    let client = HttpClient::new();

    let default = client.get(&node.url("web", "/").await).await;
    let configured = client.get(&node.url("web502", "/").await).await;

    assert_eq!(
        (default.status, default.body.as_str()),
        (503, "no server is available to handle this request\n")
    );
    assert_eq!(
        (configured.status, configured.body.as_str()),
        (502, "no server is available to handle this request\n")
    );
    assert_eq!(node.listener("web").no_backend, 1);
    assert_eq!(node.listener("web502").no_backend, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_backends_answer_502_after_every_retry() {
    let pool = format!(
        "{}\npassive = {{ failures = 0 }}",
        backends_toml([
            ("a", unused_addr(), 1),
            ("b", unused_addr(), 1),
            ("c", unused_addr(), 1)
        ])
    );
    let node = TestNode::single("http", &pool, "retries = 2").await;

    let reply = HttpClient::new().get(&node.url("web", "/").await).await;

    assert_eq!(
        (reply.status, reply.body.as_str()),
        (502, "bad gateway: no server could be reached\n")
    );
    let l = node.listener("web");
    assert_eq!((l.connect_failures, l.retries), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_live_backends_evenly() {
    let b = Backends::start(&["app1", "app2"]).await;
    let pool = format!(
        "strategy = \"round_robin\"\n{}\npassive = {{ failures = 0 }}",
        backends_toml([
            ("dead", unused_addr(), 1),
            ("app1", b.addr("app1"), 1),
            ("app2", b.addr("app2"), 1)
        ])
    );
    let node = TestNode::single("http", &pool, "").await;

    let got = get_backends(&node.url("web", "/").await, 30).await;

    // Every third first pick is the dead backend; its retry must not shift the rotation.
    let l = node.listener("web");
    assert_eq!(
        (tally(&got), l.retries, l.connect_failures),
        (counts(&[("app1", 15), ("app2", 15)]), 10, 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_backend_is_ejected_by_live_traffic_and_returns_after_cooldown() {
    let live = Backends::start(&["app1"]).await;
    let dead = unused_addr();
    let pool = format!(
        "strategy = \"round_robin\"\n{}\npassive = {{ failures = 2, cooldown = \"2s\" }}",
        backends_toml([("app1", live.addr("app1"), 1), ("dead", dead, 1)]),
    );
    let node = TestNode::single("tcp", &pool, "").await;
    let mut events = node.pool("web").subscribe();
    let addr = node.addr("web").await;

    // Every session lands on app1, the refused connects retried there; the second refusal
    // ejects `dead`.
    for _ in 0..6 {
        let got = crate::harness::raw_exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await;
        assert!(String::from_utf8_lossy(&got).ends_with("\r\n\r\napp1\n"));
    }
    let ejected = next_event(&mut events, "dead", Health::Ejected).await;
    assert_eq!(ejected.reason, "2 consecutive failures of live traffic");
    assert_eq!(node.listener("web").connect_failures, 2);

    // Once out, it is not tried: no more refused connects.
    for _ in 0..4 {
        crate::harness::raw_exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    }
    assert_eq!(node.listener("web").connect_failures, 2);

    // After the cooldown it is back in rotation (and, still dead, ejected again by traffic).
    let back = next_event(&mut events, "dead", Health::Up).await;
    assert_eq!(back.reason, "ejection cooldown over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answering_5xx_is_ejected_and_traffic_goes_to_the_healthy_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let healthy = Backends::start(&["app1"]).await;
    let failing = crate::harness::tcp_server(|mut s| async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
            let answer = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\nboom\n";
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let pool = format!(
        "strategy = \"round_robin\"\n{}\npassive = {{ failures = 3, cooldown = \"60s\" }}",
        backends_toml([("app1", healthy.addr("app1"), 1), ("broken", failing, 1)]),
    );
    let node = TestNode::single("http", &pool, "").await;
    let mut events = node.pool("web").subscribe();
    let client = HttpClient::new();
    let url = node.url("web", "/").await;

    // Round-robin alternates: three 500s from `broken` eject it (a 5xx is passed on, not
    // retried: the request did reach a backend).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(client.get(&url).await.status);
    }
    assert_eq!(statuses, [200, 500, 200, 500, 200, 500]);
    let ejected = next_event(&mut events, "broken", Health::Ejected).await;
    assert_eq!(ejected.reason, "3 consecutive failures of live traffic");

    // From now on only app1 answers.
    for _ in 0..6 {
        let r = client.get(&url).await;
        assert_eq!((r.status, r.body.as_str()), (200, "app1\n"));
    }
    assert_eq!(node.backend("web", "broken").health, Health::Ejected);
}
