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

/// A scripted HTTP health route: hands the test every request head and answers 200 with
/// whatever `body` holds at the time.
async fn health_route(
    body: std::sync::Arc<std::sync::Mutex<&'static str>>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = crate::harness::tcp_server(move |mut s| {
        let (tx, body) = (tx.clone(), body.clone());
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let text = *body.lock().unwrap();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    (addr, rx)
}

/// HTTP checks send the configured method and Host, and judge the body when asked to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_send_method_and_host_and_judge_the_body() {
    let body = std::sync::Arc::new(std::sync::Mutex::new("starting"));
    let (addr, mut heads) = health_route(body.clone()).await;
    let node = TestNode::start(&format!(
        r#"
[proxy.pools.head]
backends = [{{ name = "h", address = "{addr}" }}]
health = {{ kind = "http", method = "HEAD", path = "/ready", host = "app.internal", interval = "50ms" }}

[proxy.pools.web]
backends = [{{ name = "w", address = "{addr}" }}]
health = {{ kind = "http", path = "/status", expect_body = "ready", interval = "50ms", rise = 1, fall = 1 }}

[[proxy.listeners]]
name = "web"
mode = "http"
listen = "127.0.0.1:0"
pool = "web"
"#
    ))
    .await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let head = tokio::time::timeout(PATIENCE, heads.recv())
            .await
            .unwrap()
            .unwrap();
        seen.insert(head);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            format!("GET /status HTTP/1.1\r\nhost: {addr}\r\nuser-agent: lintas-health-check\r\nconnection: close\r\n\r\n"),
            "HEAD /ready HTTP/1.1\r\nhost: app.internal\r\nuser-agent: lintas-health-check\r\nconnection: close\r\n\r\n".to_owned(),
        ]
    );
    node.wait_all("web", Health::Down).await;
    let check = node.backend("web", "w").last_check.unwrap();
    assert_eq!(
        (check.ok, check.detail.as_str()),
        (false, "HTTP 200, but the body lacks \"ready\"")
    );
    assert_eq!(node.backend("head", "h").health, Health::Up);

    *body.lock().unwrap() = "ready: yes";
    node.wait_all("web", Health::Up).await;
    let check = node.backend("web", "w").last_check.unwrap();
    assert_eq!(
        (check.ok, check.detail.as_str()),
        (true, "HTTP 200, body has \"ready\"")
    );
}

/// A backup takes traffic only while every primary is down, and gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_stands_in_only_while_every_primary_is_down() {
    let b = Backends::start(&["app1", "app2", "spare"]).await;
    let pool = format!(
        "backends = [{{ name = \"app1\", address = \"{}\" }}, {{ name = \"app2\", address = \"{}\" }}, \
         {{ name = \"spare\", address = \"{}\", backup = true }}]\n\
         health = {{ kind = \"http\", path = \"/health\", interval = \"50ms\", rise = 1, fall = 1 }}",
        b.addr("app1"),
        b.addr("app2"),
        b.addr("spare"),
    );
    let node = TestNode::single("http", &pool, "").await;
    let url = node.url("web", "/").await;
    assert_eq!(
        tally(&get_backends(&url, 10).await),
        counts(&[("app1", 5), ("app2", 5)])
    );
    let mut events = node.pool("web").subscribe();
    let client = HttpClient::new();
    for name in ["app1", "app2"] {
        let kill = format!("http://{}/kill?for=60s", b.addr(name));
        client
            .send(http::Method::POST, &kill, &[], "")
            .await
            .unwrap();
        next_event(&mut events, name, Health::Down).await;
    }
    assert_eq!(get_backends(&url, 4).await, ["spare"; 4]);
    assert!(node.backend("web", "spare").backup);
}

/// With `retry_on_timeout`, an idempotent request whose backend is silent goes to the next
/// one; without it, or for a POST, the client gets the 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_timeout_moves_idempotent_requests_off_a_silent_backend() {
    let live = Backends::start(&["live"]).await;
    // Reads requests and never answers.
    let silent = crate::harness::tcp_server(|mut s| async move {
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
    })
    .await;
    let pool = format!(
        "backends = [{{ name = \"silent\", address = \"{silent}\" }}, {{ name = \"live\", address = \"{}\" }}]\n\
         passive = {{ failures = 0 }}",
        live.addr("live")
    );
    let config = |retry: bool| {
        single_config(
            "http",
            &pool,
            &format!("request_timeout = \"300ms\"\nretry_on_timeout = {retry}"),
        )
    };
    let client = HttpClient::new();

    let node = TestNode::start(&config(true)).await;
    let url = node.url("web", "/").await;
    for _ in 0..4 {
        let r = client.get(&url).await;
        assert_eq!((r.status, r.header("x-backend")), (200, "live"), "{r:?}");
    }
    assert_eq!(node.backend("web", "silent").requests, 2);
    assert_eq!(node.listener("web").timeouts, 2);
    let echo = node.url("web", "/echo").await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let post = client.send(http::Method::POST, &echo, &[], "x").await;
        statuses.push(post.unwrap().status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 504]);
    drop(node);

    let node = TestNode::start(&config(false)).await;
    let url = node.url("web", "/").await;
    let mut statuses: Vec<u16> = Vec::new();
    for _ in 0..2 {
        statuses.push(client.get(&url).await.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 504]);
}

/// A backend back from down takes a share of new requests that grows with `slow_start`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_back_from_down_starts_slowly() {
    let b = Backends::start(&["app1", "app2"]).await;
    let pool = format!(
        "{}\nslow_start = \"1h\"\n\
         health = {{ kind = \"http\", path = \"/health\", interval = \"50ms\", rise = 1, fall = 1 }}",
        b.toml()
    );
    let node = TestNode::single("http", &pool, "").await;
    let url = node.url("web", "/").await;
    assert_eq!(
        tally(&get_backends(&url, 10).await),
        counts(&[("app1", 5), ("app2", 5)])
    );
    let mut events = node.pool("web").subscribe();
    let kill = format!("http://{}/kill?for=300ms", b.addr("app2"));
    HttpClient::new()
        .send(http::Method::POST, &kill, &[], "")
        .await
        .unwrap();
    next_event(&mut events, "app2", Health::Down).await;
    next_event(&mut events, "app2", Health::Up).await;
    // Seconds into an hour-long ramp, app2's share rounds down to nothing.
    assert_eq!(get_backends(&url, 10).await, ["app1"; 10]);
    node.pool("web")
        .set_admin("app1", balance::AdminState::Drain)
        .unwrap();
    // Alone, it takes everything.
    assert_eq!(get_backends(&url, 3).await, ["app2"; 3]);
}
