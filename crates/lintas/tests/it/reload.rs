//! Configuration reloads and runtime strategy changes while clients are busy.

use std::time::Duration;

use balance::StrategyKind;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::{
    Backends, Load, TempDir, TestNode, backends_toml, echo_server, read_n, unused_addr,
};

/// Writes `msg` on an echo session and expects it back.
async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    assert_eq!(read_n(s, msg.len()).await, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_strategy_change_under_load_drop_nothing() {
    let b = Backends::start(&["app1", "app2", "app3", "app4"]).await;
    let echo = echo_server().await;
    let tcp_listen = unused_addr();
    let config = |strategy: &str, names: &[&str]| {
        format!(
            r#"[proxy.pools.web]
strategy = "{strategy}"
{web}

[proxy.pools.echo]
{echo}

[[proxy.listeners]]
name = "web"
mode = "http"
listen = "127.0.0.1:0"
pool = "web"

[[proxy.listeners]]
name = "echo"
mode = "tcp"
listen = "{tcp_listen}"
pool = "echo"
"#,
            web = backends_toml(names.iter().map(|n| (*n, b.addr(n), 1))),
            echo = backends_toml([("echo", echo, 1)]),
        )
    };
    let dir = TempDir::new();
    let path = dir.write(
        "lintas.toml",
        &config("round_robin", &["app1", "app2", "app3"]),
    );
    let node = TestNode::start_file(&path).await;
    let mut session = TcpStream::connect(node.addr("echo").await).await.unwrap();
    echo_roundtrip(&mut session, b"before").await;
    let load = Load::start(4, &node.url("web", "/").await);
    // Each change lands while clients are sending: after the clients' next requests have
    // been answered, not after a guessed time.
    load.wait_for_more(20).await;
    node.pool("web")
        .set_strategy(StrategyKind::LeastConnections, None);
    load.wait_for_more(20).await;
    dir.write(
        "lintas.toml",
        &config("weighted_round_robin", &["app1", "app2", "app3", "app4"]),
    );
    let summary = node.node.reload().await.unwrap();
    load.wait_for_more(50).await;
    let report = load.stop().await;

    assert_eq!(report.failures, Vec::<String>::new(), "clients saw errors");
    assert!(
        report.by_backend.get("app4").copied().unwrap_or(0) > 0,
        "{:?}",
        report.by_backend
    );
    assert_eq!(
        node.pool("web").state().kind,
        StrategyKind::WeightedRoundRobin
    );
    assert_eq!(summary.proxy.listeners_updated, ["web", "echo"]);
    assert!(
        summary.proxy.listeners_added.is_empty() && summary.proxy.listeners_removed.is_empty(),
        "{summary:?}"
    );
    echo_roundtrip(&mut session, b"after").await;
}

/// Regression: shrinking `max_connections` below the connections open forgot only the free
/// permits, so the old, higher limit stayed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrunk_connection_limit_holds_once_the_connections_above_it_end() {
    let echo = echo_server().await;
    let config = |max: usize| {
        format!(
            "[proxy.pools.echo]\n{}\n\n[[proxy.listeners]]\nname = \"echo\"\nmode = \"tcp\"\n\
             listen = \"127.0.0.1:0\"\npool = \"echo\"\nmax_connections = {max}\n",
            backends_toml([("echo", echo, 1)])
        )
    };
    let dir = TempDir::new();
    let path = dir.write("lintas.toml", &config(2));
    let node = TestNode::start_file(&path).await;
    let addr = node.addr("echo").await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        echo_roundtrip(&mut s, b"hi").await;
        open.push(s);
    }

    dir.write("lintas.toml", &config(1));
    node.node.reload().await.unwrap();
    drop(open);

    let mut first = TcpStream::connect(addr).await.unwrap();
    echo_roundtrip(&mut first, b"one").await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(b"two").await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), read_n(&mut second, 3)).await;
    assert!(
        waited.is_err(),
        "a second session was served past max_connections = 1"
    );
    drop(first);
    assert_eq!(read_n(&mut second, 3).await, b"two");
}

/// A reload of a file that does not validate is refused as the caller's error, naming the
/// file, line and key, and the running configuration keeps serving as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_with_its_location_and_changes_nothing() {
    let echo = echo_server().await;
    let config = |weight: &str| {
        format!(
            "[proxy.pools.echo]\nbackends = [{{ name = \"echo\", address = \"{echo}\", \
             weight = {weight} }}]\n\n[[proxy.listeners]]\nname = \"echo\"\nmode = \"tcp\"\n\
             listen = \"127.0.0.1:0\"\npool = \"echo\"\n"
        )
    };
    let dir = TempDir::new();
    let path = dir.write("lintas.toml", &config("1"));
    let node = TestNode::start_file(&path).await;
    let addr = node.addr("echo").await;

    dir.write("lintas.toml", &config("\"heavy\""));
    let err = node.node.reload().await.unwrap_err();
    let admin::ReloadError::Invalid(message) = err else {
        panic!("an invalid file was not told apart: {err:?}");
    };
    let location = format!("{}:2:", path.display());
    assert!(
        message.starts_with(&location) && message.contains("proxy.pools.echo.backends"),
        "{message}"
    );
    assert_eq!(node.backend("echo", "echo").weight, 1);
    let mut s = TcpStream::connect(addr).await.unwrap();
    echo_roundtrip(&mut s, b"still").await;
}

/// Like HAProxy's server-state-file: changes made at run time survive a reload of a file
/// that did not change the same thing; what the file changed wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_changes_survive_a_reload_unless_the_file_changes_them() {
    let b = Backends::start(&["app1", "app2", "app3", "app4"]).await;
    let config = |strategy: &str, weights: [u32; 3]| {
        crate::harness::single_config(
            "http",
            &format!(
                "strategy = \"{strategy}\"\n{}",
                backends_toml(
                    ["app1", "app2", "app3"]
                        .into_iter()
                        .zip(weights)
                        .map(|(n, w)| (n, b.addr(n), w))
                )
            ),
            "",
        )
    };
    let dir = TempDir::new();
    let path = dir.write("lintas.toml", &config("round_robin", [1, 1, 1]));
    let node = TestNode::start_file(&path).await;
    let pool = node.pool("web");
    pool.set_weight("app2", 5).unwrap();
    pool.set_strategy(StrategyKind::LeastConnections, None);
    pool.set_admin("app1", balance::AdminState::Drain).unwrap();
    pool.remove_backend("app3").unwrap();
    pool.add_backend(&balance::BackendSpec {
        name: "app4".into(),
        addr: b.addr("app4"),
        weight: 1,
        max_connections: 0,
        backup: false,
    })
    .unwrap();
    let shape = |node: &TestNode| {
        let p = node.pool("web").snapshot();
        let backends: Vec<(String, u32, balance::AdminState)> = p
            .backends
            .into_iter()
            .map(|b| (b.name, b.weight, b.admin))
            .collect();
        (p.strategy, backends)
    };
    use balance::AdminState::{Drain, Enabled};

    let summary = node.node.reload().await.unwrap();
    assert_eq!(
        summary.proxy.runtime_kept,
        [
            "pool web: strategy least_connections (set at run time)",
            "pool web: backend app2 keeps weight 5 (set at run time; the file says 1)",
            "pool web: backend app3 stays removed (removed at run time)",
            "pool web: backend app4 stays (added at run time)",
        ]
    );
    assert_eq!(
        shape(&node),
        (
            StrategyKind::LeastConnections,
            vec![
                ("app1".into(), 1, Drain),
                ("app2".into(), 5, Enabled),
                ("app4".into(), 1, Enabled),
            ]
        )
    );

    // The file changes the strategy, app2's weight and app3's entry: those take effect.
    dir.write("lintas.toml", &config("weighted_round_robin", [1, 2, 3]));
    let summary = node.node.reload().await.unwrap();
    assert_eq!(
        summary.proxy.runtime_kept,
        ["pool web: backend app4 stays (added at run time)"]
    );
    assert_eq!(
        shape(&node),
        (
            StrategyKind::WeightedRoundRobin,
            vec![
                ("app1".into(), 1, Drain),
                ("app2".into(), 2, Enabled),
                ("app3".into(), 3, Enabled),
                ("app4".into(), 1, Enabled),
            ]
        )
    );
}
