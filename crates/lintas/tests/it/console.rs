//! The admin console in headless Chromium: `tests/browser/console.py` (Playwright) drives
//! every page of a node running a pool of two backend processes, the relay with real
//! PostgreSQL and MariaDB destinations it creates through the console, and watch.
//!
//! The script asks the test for what a browser cannot do — ingest a record with curl, break
//! and mend a table, SIGKILL a backend — with JSON lines on its stdout, and is answered on
//! its stdin. The test checks the databases' rows itself. Screenshots of every page are left
//! in `<target>/test-artifacts/console/`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use testkit::browser::Script;
use testkit::scratch::{Scratch, Server};

use crate::harness::{ProcessBackend, TempDir, TestNode, unused_addr};

/// Longest silence from the script between two lines; its own waits are shorter.
const STEP_PATIENCE: Duration = Duration::from_secs(120);

const PASSWORD: &str = "console test password";

fn config(data: &Path, relay: std::net::SocketAddr, backends: &[&ProcessBackend]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ name = \"{}\", address = \"{}\" }}", b.name, b.addr))
        .collect();
    format!(
        r#"data_dir = "{data}"

[admin]
listen = "127.0.0.1:0"
password_hash = "{hash}"

[proxy.pools.web]
strategy = "least_connections"
backends = [{list}]
health = {{ kind = "http", path = "/health", interval = "200ms", timeout = "500ms", rise = 1, fall = 2 }}

[[proxy.listeners]]
name = "web"
mode = "http"
listen = "127.0.0.1:0"
pool = "web"

[relay]
listen = "{relay}"
retry_min = "50ms"
retry_max = "500ms"

[watch]
metrics_interval = "1s"
"#,
        data = data.display(),
        hash = admin::Auth::hash_password(PASSWORD),
        list = list.join(", "),
    )
}

/// `curl` posting one record as the application with `key`; the relay's answer.
fn curl(relay: std::net::SocketAddr, key: &str, record: &serde_json::Value) -> String {
    let out = Command::new("curl")
        .args(["-s", "-w", " %{http_code}", "-X", "POST"])
        .arg(format!("http://{relay}/v1/records"))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["-H", "content-type: application/json"])
        .args(["-d", &record.to_string()])
        .output()
        .expect("curl (scripts/test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_in_a_browser_against_real_databases() {
    let dir = TempDir::new();
    let pg = Scratch::create(Server::Postgres).await.unwrap();
    let my = Scratch::create(Server::Mysql).await.unwrap();
    pg.exec(
        "CREATE TABLE orders (id integer PRIMARY KEY, email text NOT NULL, total numeric(10,2))",
    )
    .await
    .unwrap();
    my.exec("CREATE TABLE orders (id int PRIMARY KEY, email varchar(200) NOT NULL, total decimal(10,2))")
        .await
        .unwrap();
    let b1 = ProcessBackend::spawn("b1", unused_addr());
    let mut b2 = ProcessBackend::spawn("b2", unused_addr());
    let relay = unused_addr();
    let node = TestNode::start(&config(&dir.path().join("data"), relay, &[&b1, &b2])).await;
    let admin = node.node.admin_addr.expect("the admin listener");

    let artifacts = testkit::browser::artifacts("console");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.py");
    let mut script = Script::start(
        &path,
        &[
            &format!("http://{admin}"),
            PASSWORD,
            artifacts.to_str().unwrap(),
            testkit::browser::CHROMIUM,
            &pg.url,
            &my.url,
        ],
        dir.path().join("console.stderr"),
    );

    let mut key = String::new();
    let mut seen = Vec::new();
    while let Some(event) = script.next_event(STEP_PATIENCE, String::new).await {
        let Some(name) = event["event"].as_str() else {
            continue;
        };
        seen.push(name.to_owned());
        match name {
            "ingest" => {
                key = event["key"].as_str().unwrap().to_owned();
                let record = json!({"id": 1, "email": "ann@example.com", "total": 12.5, "note": "not routed"});
                assert_eq!(curl(relay, &key, &record), r#"{"ids":[0]} 202"#);
                script.answer("ingested");
            }
            "delivered" => {
                assert_eq!(
                    pg.rows("SELECT id::text, email, total::text FROM orders")
                        .await
                        .unwrap(),
                    [[
                        Some("1".into()),
                        Some("ann@example.com".into()),
                        Some("12.50".into())
                    ]]
                );
                assert_eq!(
                    my.rows("SELECT CAST(id AS CHAR), email, CAST(total AS CHAR) FROM orders")
                        .await
                        .unwrap(),
                    [[
                        Some("1".into()),
                        Some("ann@example.com".into()),
                        Some("12.50".into())
                    ]]
                );
            }
            "dead" => {
                // No email: both tables refuse it (NOT NULL), so it is a dead letter on each.
                assert_eq!(
                    curl(relay, &key, &json!({"id": 2, "total": 3})),
                    r#"{"ids":[1]} 202"#
                );
                script.answer("dead");
            }
            "fix" => {
                pg.exec("ALTER TABLE orders ALTER COLUMN email DROP NOT NULL")
                    .await
                    .unwrap();
                script.answer("fixed");
            }
            "replayed" => {
                assert_eq!(
                    pg.rows("SELECT id::text, email, total::text FROM orders ORDER BY id")
                        .await
                        .unwrap(),
                    [
                        [
                            Some("1".into()),
                            Some("ann@example.com".into()),
                            Some("12.50".into())
                        ],
                        [Some("2".into()), None, Some("3.00".into())]
                    ]
                );
            }
            "edited" => {
                let client =
                    testkit::AdminClient::new(format!("http://{admin}"), "admin", PASSWORD);
                let (_, relay) = client.json(http::Method::GET, "/api/relay", "").await;
                assert_eq!(relay["destinations"][0]["name"], "pg");
                assert_eq!(relay["destinations"][0]["max_connections"], 3);
            }
            "strategy" => {
                let pool = serde_json::to_value(node.pool("web").snapshot()).unwrap();
                assert_eq!(pool["strategy"], "round_robin");
            }
            "kill" => {
                assert_eq!(event["backend"], "b2");
                b2.kill();
                script.answer("killed");
            }
            _ => {}
        }
    }
    let (ok, status) = script.succeeded();
    assert!(
        ok,
        "console.py failed ({status}); screenshots in {}; its stderr:\n{}",
        artifacts.display(),
        script.stderr_text()
    );
    assert_eq!(
        seen,
        [
            "logged-in",
            "application",
            "destination",
            "destination",
            "edited",
            "route",
            "route",
            "ingest",
            "delivered",
            "dead",
            "fix",
            "replayed",
            "strategy",
            "kill",
            "down",
            "graph",
            "logged-out",
            "done"
        ]
    );
}

/// Every operation in `/api/openapi.json` is served by a node running the proxy, the relay
/// and watch: a call with made-up names reaches the route (any answer but the shell's
/// "no route" 404 and 405), and every operation documents its errors in the `Error` shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let dir = TempDir::new();
    let b1 = ProcessBackend::spawn("b1", unused_addr());
    let node = TestNode::start(&config(&dir.path().join("data"), unused_addr(), &[&b1])).await;
    let admin = node.node.admin_addr.expect("the admin listener");
    let client = testkit::AdminClient::new(format!("http://{admin}"), "admin", PASSWORD);
    let (status, doc) = client
        .json(http::Method::GET, "/api/openapi.json", "")
        .await;
    assert_eq!(status, 200);
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let concrete = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "no-such-name"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method: http::Method = method.to_uppercase().parse().unwrap();
            let r = client.call(method.clone(), &concrete, "{}").await;
            assert_ne!(r.status, 405, "{method} {path}: {}", r.body);
            assert!(
                !(r.status == 404 && r.body.starts_with(r#"{"error":"no route "#)),
                "{method} {path} is documented but not served: {}",
                r.body
            );
            let errors: Vec<&str> = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(code, _)| code.starts_with('4') || code.starts_with('5'))
                .map(|(_, r)| {
                    r["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .unwrap()
                })
                .collect();
            assert!(!errors.is_empty(), "{method} {path} documents no error");
            assert!(
                errors.iter().all(|e| *e == "#/components/schemas/Error"),
                "{method} {path}: {errors:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 41, "operations in the document");
}
