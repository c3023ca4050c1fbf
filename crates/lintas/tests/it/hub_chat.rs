//! The chat page the hub serves, in headless Chromium: two hub nodes, as processes, on a
//! Redis of the test's own, behind a lintas HTTP listener (round-robin), and
//! `tests/browser/hub_chat.py` (Playwright) driving a page on each node — presence, a room
//! message, a direct message, and a page that recovers what it missed after its node was
//! SIGKILLed.
//!
//! The script asks for the kill with `{"event":"kill","node":NAME}` on its stdout and is
//! answered `killed` on its stdin once the process is gone. NAME is what the page shows,
//! the `node` of the hub's `connected` frame; the test learns which process bears which name
//! by connecting to each node directly. Screenshots of every step are left in
//! `<target>/test-artifacts/hub-chat/`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Lintas;
use crate::harness::{TempDir, TestNode, unique, unused_addr};
use crate::mqtt_cluster::{Redis, wait_listening};
use testkit::browser::Script;

/// Longest silence from the script between two lines; its own waits are shorter.
const STEP_PATIENCE: Duration = Duration::from_secs(120);

/// A hub node of the test.
struct HubNode<'a> {
    /// The name its `connected` frames give.
    name: String,
    /// Its backend name in the balancer, for messages.
    backend: String,
    /// `None` once killed.
    process: Option<Lintas<'a>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_pages_on_two_nodes_talk_and_one_recovers_after_its_node_is_killed() {
    let dir = TempDir::new();
    let redis = Redis::start(dir.path().join("redis"));
    let prefix = unique("hub-chat");
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=2 {
        let (backend, listen) = (format!("hub{i}"), unused_addr());
        let config = dir.write(
            &format!("{backend}.toml"),
            &hub_config(&backend, listen, &redis.url(), &prefix),
        );
        let mut process =
            Lintas::spawn_named(&dir, &backend, &["run", "-c", config.to_str().unwrap()]);
        wait_listening(&backend, &mut process, listen).await;
        nodes.push(HubNode {
            name: node_name(listen).await,
            backend,
            process: Some(process),
        });
        addrs.push(listen);
    }
    assert_ne!(nodes[0].name, nodes[1].name, "two nodes, one name");

    let balancer = TestNode::start(&balancer_config(&addrs)).await;
    let url = balancer.url("chat", "").await;
    let artifacts = testkit::browser::artifacts("hub-chat");
    let mut script = start_script(&dir, &url, &artifacts);

    let mut killed = None;
    let mut done = false;
    while let Some(event) = script.next_event(STEP_PATIENCE, || logs(&nodes)).await {
        match event["event"].as_str() {
            Some("kill") => {
                let name = event["node"].as_str().unwrap_or_default();
                let node = nodes
                    .iter_mut()
                    .find(|n| n.name == name)
                    .unwrap_or_else(|| panic!("the script asks to kill {name:?}, no such node"));
                // Dropping the process SIGKILLs it and waits until it is gone.
                node.process = None;
                killed = Some(node.backend.clone());
                script.answer("killed");
            }
            Some("done") => done = true,
            _ => {}
        }
    }
    let (ok, status) = script.succeeded();
    assert!(
        ok && done,
        "hub_chat.py failed ({status}); screenshots in {}; its stderr:\n{}\n{}",
        artifacts.display(),
        script.stderr_text(),
        logs(&nodes)
    );
    assert!(
        killed.is_some(),
        "the script never asked for a node's death"
    );
}

/// A hub node of the cluster on `redis`, anonymous users allowed in every room; a dead
/// node's users leave presence within 2 s, which the script waits to see.
fn hub_config(name: &str, listen: SocketAddr, redis: &str, prefix: &str) -> String {
    format!(
        "data_dir = \"{name}-data\"\n\n\
         [backplane]\nredis = \"{redis}\"\nprefix = \"{prefix}\"\nlease = \"1s\"\n\n\
         [hub]\nlisten = \"{listen}\"\nallow_anonymous = true\nanonymous_rooms = [\"*\"]\n\
         presence_timeout = \"2s\"\n"
    )
}

/// The balancer in this process: round-robin over the nodes, each request or WebSocket to
/// the next, checked every 100 ms so a killed node is out at once; a connect refused by a
/// dead node not yet seen down is retried on the other.
fn balancer_config(nodes: &[SocketAddr]) -> String {
    let backends: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{{ name = \"hub{}\", address = \"{addr}\" }}", i + 1))
        .collect();
    format!(
        "[proxy.pools.hubs]\nstrategy = \"round_robin\"\nbackends = [{}]\n\
         health = {{ kind = \"tcp\", interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 1 }}\n\n\
         [[proxy.listeners]]\nname = \"chat\"\nmode = \"http\"\nlisten = \"127.0.0.1:0\"\npool = \"hubs\"\n\
         connect_timeout = \"500ms\"\nretries = 2\n",
        backends.join(", ")
    )
}

/// The node name a hub at `addr` gives in its `connected` frame.
async fn node_name(addr: SocketAddr) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .unwrap_or_else(|e| panic!("no WebSocket at ws://{addr}/ws: {e}"));
    ws.send(Message::text(r#"{"type":"connect","name":"probe"}"#))
        .await
        .unwrap();
    let frame = loop {
        match tokio::time::timeout(testkit::PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(_))) => {}
            other => panic!("ws://{addr}/ws: no answer to connect: {other:?}"),
        }
    };
    let connected: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(connected["type"], "connected", "{frame}");
    let _ = ws.close(None).await;
    connected["node"]
        .as_str()
        .unwrap_or_else(|| panic!("no node in {frame}"))
        .to_owned()
}

fn start_script(dir: &TempDir, url: &str, artifacts: &Path) -> Script {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/hub_chat.py");
    Script::start(
        &path,
        &[url, artifacts.to_str().unwrap(), testkit::browser::CHROMIUM],
        dir.path().join("hub_chat.stderr"),
    )
}

/// The last lines each node still running wrote to stderr, for a failure message.
fn logs(nodes: &[HubNode<'_>]) -> String {
    let mut out = String::new();
    for node in nodes {
        let Some(process) = &node.process else {
            out.push_str(&format!(
                "--- {} ({}): killed ---\n",
                node.backend, node.name
            ));
            continue;
        };
        let text = process.read("stderr");
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(20);
        out.push_str(&format!(
            "--- {} ({}) ---\n{}\n",
            node.backend,
            node.name,
            lines[from..].join("\n")
        ));
    }
    out
}
