//! The `lintas` binary as users run it: `check`, `run`, `--version`, SIGTERM.

use std::fs::File;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use testkit::{HttpClient, PATIENCE, wait_until};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{
    LINTAS, ProcessBackend, TempDir, backends_toml, single_config, single_config_on, unused_addr,
};

/// A `lintas` process whose output goes to files in `dir`; SIGKILLed if still running when
/// dropped.
pub(crate) struct Lintas<'a> {
    child: Child,
    dir: &'a TempDir,
    /// Prefix of its output files, so several processes can share `dir`.
    name: String,
}

/// How a `lintas` process ended.
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl<'a> Lintas<'a> {
    pub(crate) fn spawn(dir: &'a TempDir, args: &[&str]) -> Self {
        Self::spawn_named(dir, "", args)
    }

    /// Like [`Lintas::spawn`], with output in `NAME.stdout` and `NAME.stderr`.
    pub(crate) fn spawn_named(dir: &'a TempDir, name: &str, args: &[&str]) -> Self {
        Self::spawn_env(dir, name, args, &[])
    }

    /// Like [`Lintas::spawn_named`], with these environment variables set.
    pub(crate) fn spawn_env(
        dir: &'a TempDir,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let file = |kind: &str| {
            let path = if name.is_empty() {
                dir.path().join(kind)
            } else {
                dir.path().join(format!("{name}.{kind}"))
            };
            File::create(path).unwrap()
        };
        let child = Command::new(LINTAS)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .unwrap();
        Self {
            child,
            dir,
            name: name.to_owned(),
        }
    }

    /// Waits for the process to exit, at most [`PATIENCE`].
    async fn ended(mut self) -> Ended {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "lintas still running after {PATIENCE:?}; stderr:\n{}",
                self.read("stderr")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ended {
            code: status.code(),
            stdout: self.read("stdout"),
            stderr: self.read("stderr"),
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited (a SIGKILLed one has, once reaped).
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn read(&self, kind: &str) -> String {
        let file = if self.name.is_empty() {
            kind.to_owned()
        } else {
            format!("{}.{kind}", self.name)
        };
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }
}

impl Drop for Lintas<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `lintas ARGS` to its end.
async fn lintas(args: &[&str]) -> Ended {
    let dir = TempDir::new();
    Lintas::spawn(&dir, args).ended().await
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `lintas.example.toml` and every file of `examples/mqtt-cluster` (three nodes and the
/// balancer in front of them) and `examples/hub-cluster` (two nodes and their balancer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_the_example_files() {
    let root = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap();
    let mut examples = Vec::new();
    for (dir, files) in [
        (
            "examples/mqtt-cluster",
            &["balancer.toml", "node1.toml", "node2.toml", "node3.toml"][..],
        ),
        (
            "examples/hub-cluster",
            &["balancer.toml", "node1.toml", "node2.toml"][..],
        ),
    ] {
        let mut found: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        found.sort();
        let names: Vec<_> = found.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, files, "{dir}");
        examples.extend(found);
    }
    examples.insert(0, root.join("lintas.example.toml"));

    for example in examples {
        let out = lintas(&["check", "-c", path_str(&example)]).await;

        assert_eq!(
            (out.code, out.stderr.as_str()),
            (Some(0), ""),
            "{}",
            example.display()
        );
        assert_eq!(out.stdout, format!("{}: ok\n", example.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_an_unknown_pool_at_its_line_and_column() {
    let text = single_config("http", &backends_toml([("a", unused_addr(), 1)]), "")
        .replace("pool = \"web\"\n", "pool = \"nope\"\n");
    let dir = TempDir::new();
    let file = dir.write("bad.toml", &text);
    let (line, col) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| {
            l.starts_with("pool = ")
                .then(|| (i + 1, l.find('"').unwrap() + 1))
        })
        .unwrap();

    let out = lintas(&["check", "-c", path_str(&file)]).await;

    assert_eq!((out.code, out.stdout.as_str()), (Some(1), ""));
    assert_eq!(
        out.stderr,
        format!(
            "{}:{line}:{col}: proxy.listeners[0].pool: no pool named `nope`; defined pools: web\n",
            file.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_port_in_use_and_exits_1() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let text = single_config_on(addr, "http", &backends_toml([("a", unused_addr(), 1)]), "");
    let dir = TempDir::new();
    let file = dir.write("busy.toml", &text);

    let out = lintas(&["run", "-c", path_str(&file)]).await;

    assert_eq!(out.code, Some(1), "stderr:\n{}", out.stderr);
    let expected = format!("proxy.listeners[0].listen: listener `web` cannot listen on {addr}");
    assert!(
        out.stderr.contains(&expected),
        "stderr lacks {expected:?}:\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_listen_address_in_use_is_blamed_on_mqtt_listen_at_its_line() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let dir = TempDir::new();
    let file = dir.write(
        "mqtt.toml",
        &format!("[mqtt]\nsys_interval = \"0s\"\nlisten = \"{addr}\"\nallow_anonymous = true\n"),
    );

    let out = lintas(&["run", "-c", path_str(&file)]).await;

    assert_eq!(out.code, Some(1), "stderr:\n{}", out.stderr);
    let expected = format!(
        "{}:3:10: mqtt.listen: cannot listen on {addr}: ",
        file.display()
    );
    assert!(
        out.stderr.contains(&expected),
        "stderr lacks {expected:?}:\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_help_lists_the_demo_backends_routes() {
    let out = lintas(&["backend", "--help"]).await;
    assert_eq!(out.code, Some(0));
    for line in [
        "  GET  /work?ms=N    waits N ms first (a long or short job; at most 600000); with",
        "                     --jobs, at most N at once, the rest waiting their turn",
        "      --jobs <N>         Run at most N `/work` jobs at once, like a worker with N threads; the rest wait their turn in arrival order (answered with `x-waited: yes`)",
        "  POST /kill?for=10s stops listening and drops its connections, back after the duration",
        "  GET  /health       ok",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "{line:?} not in:\n{}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_prints_name_and_version() {
    let out = lintas(&["--version"]).await;

    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "lintas 0.1.0\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_refuses_new_connections_and_exits_0() {
    let backend = ProcessBackend::spawn("app1", "127.0.0.1:0".parse().unwrap());
    let listen = unused_addr();
    let text = single_config_on(
        listen,
        "http",
        &backends_toml([("app1", backend.addr, 1)]),
        "",
    );
    let dir = TempDir::new();
    let file = dir.write("lintas.toml", &text);
    let node = Lintas::spawn(&dir, &["run", "-c", path_str(&file)]);
    let client = HttpClient::new();
    let url = format!("http://{listen}/");
    wait_until("lintas serving", PATIENCE, || async {
        matches!(client.send(http::Method::GET, &url, &[], "").await, Ok(r) if r.status == 200)
    })
    .await;
    let work_url = format!("http://{listen}/work?ms=2000");
    let work = tokio::spawn(async move { HttpClient::new().get(&work_url).await });
    // The request must be in flight at lintas when the signal comes.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = node.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    wait_until("new connections refused", PATIENCE, || async {
        let connected = TcpStream::connect(listen).await;
        matches!(connected, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .await;
    assert!(
        !work.is_finished(),
        "the request in flight ended before the listener closed"
    );
    let reply = work.await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "app1 worked 2000 ms\n")
    );
    let out = node.ended().await;
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
}

/// Sends `signal` (e.g. "-HUP") to a running `lintas`.
fn signal(node: &Lintas<'_>, signal: &str) {
    let pid = node.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_a_broken_file_changes_nothing() {
    let one = ProcessBackend::spawn("app1", "127.0.0.1:0".parse().unwrap());
    let two = ProcessBackend::spawn("app2", "127.0.0.1:0".parse().unwrap());
    let listen = unused_addr();
    let first = single_config_on(listen, "http", &backends_toml([("app1", one.addr, 1)]), "");
    let dir = TempDir::new();
    let file = dir.write("lintas.toml", &first);
    let node = Lintas::spawn(&dir, &["run", "-c", path_str(&file)]);
    let client = HttpClient::new();
    let url = format!("http://{listen}/");
    wait_until("lintas serving app1", PATIENCE, || async {
        matches!(client.send(http::Method::GET, &url, &[], "").await, Ok(r) if r.body == "app1\n")
    })
    .await;

    // A broken file is refused: app1 keeps serving.
    dir.write("lintas.toml", "[proxy\n");
    signal(&node, "-HUP");
    wait_until("the refusal logged", PATIENCE, || async {
        node.read("stderr")
            .contains("reload refused, configuration unchanged")
    })
    .await;
    assert_eq!(client.get(&url).await.body, "app1\n");
    assert!(
        !node.read("stderr").contains('\x1b'),
        "no colour codes in a log that is not a terminal"
    );

    // A good file switches the pool to app2 without a restart.
    let second = single_config_on(listen, "http", &backends_toml([("app2", two.addr, 1)]), "");
    dir.write("lintas.toml", &second);
    signal(&node, "-HUP");
    wait_until("requests reach app2", PATIENCE, || async {
        client.get(&url).await.body == "app2\n"
    })
    .await;
    signal(&node, "-INT");
    let out = node.ended().await;
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
}

/// The message a retained publish to `port` left on `topic`, read by `mosquitto_sub` on
/// `port`, if there is one within a second.
fn retained_on(port: u16, topic: &str) -> Option<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-C", "1", "-W", "1"])
        .output()
        .expect("mosquitto_sub runs (scripts/test installs mosquitto-clients)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// The demo's MQTT cluster (scripts/test runs Redis): a message retained on node 3 is
/// read on node 1 and through the balancer.
fn demo_mqtt_cluster_answers(banner: &str) {
    let port_after = |prefix: &str| -> Vec<u16> {
        banner
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix(prefix))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let subscribers = port_after("mosquitto_sub -h 127.0.0.1 -p ");
    let publishers = port_after("mosquitto_pub -h 127.0.0.1 -p ");
    assert!(
        banner.contains("three broker nodes") && subscribers.len() == 3 && publishers.len() == 2,
        "the demo runs the MQTT cluster when Redis answers:\n{banner}"
    );
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &publishers[0].to_string()])
        .args(["-t", "demo/check", "-m", "kept", "-q", "1", "-r"])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success());
    for port in [subscribers[0], subscribers[2]] {
        let deadline = std::time::Instant::now() + PATIENCE;
        while retained_on(port, "demo/check").as_deref() != Some("kept") {
            assert!(
                std::time::Instant::now() < deadline,
                "port {port} never had the message"
            );
        }
    }
}

/// The demo's hub cluster (scripts/test runs Redis): the chat page through the balancer,
/// and WebSocket clients through it landing on both nodes.
async fn demo_hub_cluster_answers(client: &HttpClient, page: &str, ws: &str) {
    let page = client.get(page).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<title>lintas chat</title>"),
        "{}",
        page.body
    );
    let mut nodes = std::collections::BTreeSet::new();
    for i in 0..4 {
        let (mut c, _) = tokio_tungstenite::connect_async(ws)
            .await
            .expect("the upgrade");
        c.send(Message::text(format!(
            r#"{{"type":"connect","name":"demo{i}"}}"#
        )))
        .await
        .expect("sent");
        let Some(Ok(Message::Text(t))) = c.next().await else {
            panic!("no connected frame");
        };
        let connected: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(connected["user"], format!("~demo{i}"));
        nodes.insert(connected["node"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        nodes.len(),
        2,
        "round-robin over the two hub nodes: {nodes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_its_backends_and_stats_page_with_the_printed_password() {
    let dir = TempDir::new();
    let redis =
        std::env::var("LINTAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let node = Lintas::spawn_env(&dir, "", &["demo"], &[("LINTAS_DEMO_REDIS", &redis)]);
    wait_until(
        "the demo banner, to its last part (Watch)",
        PATIENCE,
        || async {
            let out = node.read("stdout");
            out.contains("Ctrl-C stops it") && out.contains("Watch:")
        },
    )
    .await;
    let banner = node.read("stdout");
    let field = |label: &str| {
        banner
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no `{label}` in the banner:\n{banner}"))
    };
    let http_url = field("HTTP balancer");
    let stats_url = field("stats page");
    let password = banner
        .split("password ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();

    let client = HttpClient::new();
    let mut names: Vec<String> = Vec::new();
    for _ in 0..3 {
        names.push(client.get(&http_url).await.body);
    }
    names.sort();
    assert_eq!(names, ["app1\n", "app2\n", "app3\n"]);

    let api = stats_url.replace("/stats", "/api/stats");
    assert_eq!(client.get(&api).await.status, 401);
    let basic = format!(
        "Basic {}",
        BASE64_STANDARD.encode(format!("admin:{password}"))
    );
    let reply = client
        .send(http::Method::GET, &api, &[("authorization", &basic)], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("\"name\":\"demo\""), "{}", reply.body);
    demo_hub_cluster_answers(&client, &field("chat page"), &field("WebSocket")).await;
    tokio::task::spawn_blocking(move || demo_mqtt_cluster_answers(&banner))
        .await
        .expect("the MQTT check");

    signal(&node, "-INT");
    let out = node.ended().await;
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
}
