//! The balancer's access log and error pages: exact lines in the `combined` and JSON
//! formats for HTTP/1, h2 and TCP, what a client cannot forge into them, reopening after
//! logrotate's move-then-reload, and the pages that replace lintas's own answers.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use testkit::{HttpClient, PATIENCE, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Backends, TempDir, TestNode, raw_exchange, unused_addr};

/// The lines of `path` once there are `n` of them (the writer batches, so they come late).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    wait_until(
        &format!("{n} lines in {}", path.display()),
        PATIENCE,
        || {
            let enough = read().len() >= n;
            async move { enough }
        },
    )
    .await;
    let got = read();
    assert_eq!(got.len(), n, "{got:#?}");
    got
}

/// `[01/Dec/2026:04:52:23 +0000]`-shaped, in UTC.
fn is_clf_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 28
        && b[0] == b'['
        && t.ends_with(" +0000]")
        && b[3] == b'/'
        && b[7] == b'/'
        && b[12] == b':'
        && t[1..3].bytes().all(|c| c.is_ascii_digit())
        && t[4..7].bytes().all(|c| c.is_ascii_alphabetic())
}

/// `2026-12-01T04:52:23.456Z`-shaped.
fn is_rfc3339_ms(t: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    t.len() == shape.len()
        && t.bytes().zip(shape.bytes()).all(|(c, s)| {
            if s == b'd' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        })
}

/// A `combined` line split at its time: what comes before and after `[...]`.
fn split_time(line: &str) -> (&str, &str, &str) {
    let open = line.find('[').unwrap();
    let close = line.find(']').unwrap();
    (&line[..open], &line[open..=close], &line[close + 1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_are_nginx_s_and_escape_what_the_client_sent() {
    let b = Backends::start(&["app1"]).await;
    let dir = TempDir::new();
    let log = dir.path().join("web.log");
    let node = TestNode::single(
        "http",
        &b.toml(),
        &format!(
            "access_log = {{ format = \"combined\", path = \"{}\" }}",
            log.display()
        ),
    )
    .await;
    let addr = node.addr("web").await;

    let ok = HttpClient::new()
        .send(
            http::Method::GET,
            &node.url("web", "/?q=1").await,
            &[
                ("Referer", "http://example.com/"),
                ("User-Agent", "curl/8.5"),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!((ok.status, ok.body.as_str()), (200, "app1\n"));
    // A forged agent: a quote to close the field, a fake escape, a tab, and bytes >= 0x80.
    let forged = b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
                   User-Agent: a\" 200 1 \"-\" \"b\\n\tc\xc3\xa9\r\n\r\n";
    let answer = raw_exchange(addr, forged).await;
    assert!(answer.starts_with(b"HTTP/1.1 404 "), "{answer:?}");

    let got = lines(&log, 2).await;
    let (before, time, after) = split_time(&got[0]);
    assert!(is_clf_time(time), "{time}");
    assert_eq!(before, "127.0.0.1 - - ");
    assert_eq!(
        after,
        " \"GET /?q=1 HTTP/1.1\" 200 5 \"http://example.com/\" \"curl/8.5\""
    );
    let (before, _, after) = split_time(&got[1]);
    assert_eq!(before, "127.0.0.1 - - ");
    assert_eq!(
        after,
        " \"GET /x HTTP/1.1\" 404 10 \"-\" \"a\\x22 200 1 \\x22-\\x22 \\x22b\\x5Cn\\x09c\\xC3\\xA9\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_have_every_field_for_h1_h2_and_lintas_s_own_answers() {
    let b = Backends::start(&["app1"]).await;
    let dir = TempDir::new();
    let log = dir.path().join("web.json");
    let config = format!(
        r#"[proxy.pools.web]
{backends}

[proxy.pools.none]
backends = [{{ name = "off", address = "{off}", weight = 0 }}]

[[proxy.listeners]]
name = "front"
mode = "http"
listen = "127.0.0.1:0"
pool = "web"
access_log = {{ format = "json", path = "{log}" }}

[[proxy.listeners.routes]]
name = "echo"
path_prefix = "/echo"
pool = "web"
request_id = true

[[proxy.listeners.routes]]
name = "closed"
path_prefix = "/closed"
pool = "none"
"#,
        backends = b.toml(),
        off = unused_addr(),
        log = log.display(),
    );
    let node = TestNode::start(&config).await;
    let app1 = b.addr("app1").to_string();
    let client = HttpClient::new();

    let echo = client
        .send(
            http::Method::POST,
            &node.url("front", "/echo?x=1").await,
            &[("User-Agent", "t/1")],
            "hello",
        )
        .await
        .unwrap();
    assert_eq!((echo.status, echo.body.as_str()), (200, "hello"));
    let id = echo.header("x-request-id").to_owned();
    assert!(!id.is_empty());
    let closed = client.get(&node.url("front", "/closed").await).await;
    assert_eq!(
        (closed.status, closed.body.as_str()),
        (503, "no server is available to handle this request\n")
    );
    let (status, _, body) = h2_get(&node.url("front", "/").await).await;
    assert_eq!((status, body.as_str()), (200, "app1\n"));

    let got = lines(&log, 3).await;
    let mut parsed: Vec<Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for v in &mut parsed {
        let o = v.as_object_mut().unwrap();
        let time = o.remove("time").unwrap();
        assert!(is_rfc3339_ms(time.as_str().unwrap()), "{time}");
        let client = o.remove("client").unwrap();
        assert!(
            client.as_str().unwrap().starts_with("127.0.0.1:"),
            "{client}"
        );
        // Times are measured: present and ordered where a backend answered, null where not.
        let ms = |k: &str| o[k].as_f64();
        let total = ms("total_ms").unwrap();
        if let (Some(c), Some(r)) = (ms("connect_ms"), ms("response_ms")) {
            assert!(0.0 <= c && c <= r && r <= total, "{o:?}");
        }
        for k in ["connect_ms", "response_ms", "total_ms"] {
            o.remove(k);
        }
    }
    // Lines of different connections reach the log in the order their exchanges end.
    parsed.sort_by_key(|v| v["target"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        parsed,
        [
            json!({
                "listener": "front", "method": "GET", "target": "/",
                "protocol": "HTTP/2.0", "status": 200, "bytes_sent": 5, "bytes_received": 0,
                "referer": null, "user_agent": null, "pool": "web", "route": null,
                "backend": "app1", "upstream": app1, "request_id": null, "retries": 0,
                "error": null,
            }),
            json!({
                "listener": "front", "method": "GET", "target": "/closed",
                "protocol": "HTTP/1.1", "status": 503, "bytes_sent": 46, "bytes_received": 0,
                "referer": null, "user_agent": null, "pool": "none", "route": "closed",
                "backend": null, "upstream": null, "request_id": null, "retries": 0,
                "error": "no_backend",
            }),
            json!({
                "listener": "front", "method": "POST", "target": "/echo?x=1",
                "protocol": "HTTP/1.1", "status": 200, "bytes_sent": 5, "bytes_received": 5,
                "referer": null, "user_agent": "t/1", "pool": "web", "route": "echo",
                "backend": "app1", "upstream": app1, "request_id": id, "retries": 0,
                "error": null,
            }),
        ]
    );
    let closed_line: Value = got
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["target"] == "/closed")
        .unwrap();
    assert_eq!(
        (&closed_line["connect_ms"], &closed_line["response_ms"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(node.listener("front").access_log_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_sessions_are_logged_at_their_end_with_bytes_both_ways() {
    let b = Backends::start(&["app1"]).await;
    let dir = TempDir::new();
    let (json_log, common_log) = (dir.path().join("tcp.json"), dir.path().join("tcp.log"));
    let config = format!(
        "[proxy.pools.web]\n{}\n\n[proxy.pools.none]\nbackends = [{{ name = \"off\", address = \"{}\" }}]\n\
         [[proxy.listeners]]\nname = \"tcp\"\nmode = \"tcp\"\nlisten = \"127.0.0.1:0\"\npool = \"web\"\n\
         access_log = {{ format = \"json\", path = \"{}\" }}\n\
         [[proxy.listeners]]\nname = \"down\"\nmode = \"tcp\"\nlisten = \"127.0.0.1:0\"\npool = \"none\"\n\
         retries = 0\naccess_log = {{ format = \"common\", path = \"{}\" }}\n",
        b.toml(),
        unused_addr(),
        json_log.display(),
        common_log.display(),
    );
    let node = TestNode::start(&config).await;
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let mut s = TcpStream::connect(node.addr("tcp").await).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).await.unwrap();
    assert!(response.ends_with(b"app1\n"));
    drop(s);
    let mut refused = TcpStream::connect(node.addr("down").await).await.unwrap();
    let mut nothing = Vec::new();
    let _ = refused.read_to_end(&mut nothing).await;

    let mut v: Value = serde_json::from_str(&lines(&json_log, 1).await[0]).unwrap();
    let o = v.as_object_mut().unwrap();
    assert!(is_rfc3339_ms(o.remove("time").unwrap().as_str().unwrap()));
    assert!(
        o.remove("client")
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let (connect, total) = (
        o["connect_ms"].as_f64().unwrap(),
        o["total_ms"].as_f64().unwrap(),
    );
    assert!(connect <= total, "{o:?}");
    o.remove("connect_ms");
    o.remove("total_ms");
    assert_eq!(
        v,
        json!({
            "listener": "tcp", "protocol": "tcp", "status": 200,
            "bytes_sent": response.len(), "bytes_received": request.len(),
            "pool": "web", "route": null, "backend": "app1",
            "upstream": b.addr("app1").to_string(), "retries": 0, "error": null,
        })
    );
    let refused_line = &lines(&common_log, 1).await[0];
    let (before, time, after) = split_time(refused_line);
    assert!(is_clf_time(time), "{time}");
    assert_eq!((before, after), ("127.0.0.1 - - ", " \"-\" 502 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reopens_the_log_so_logrotate_can_move_it() {
    let b = Backends::start(&["app1"]).await;
    let dir = TempDir::new();
    let log = dir.path().join("web.log");
    let config = |path: &Path| {
        format!(
            "[proxy.pools.web]\n{}\n\n[[proxy.listeners]]\nname = \"web\"\nmode = \"http\"\n\
             listen = \"127.0.0.1:0\"\npool = \"web\"\n\
             access_log = {{ format = \"common\", path = \"{}\" }}\n",
            b.toml(),
            path.display()
        )
    };
    let file = dir.write("lintas.toml", &config(&log));
    let node = TestNode::start_file(&file).await;
    let client = HttpClient::new();
    let get = async |path: &str| {
        let r = client.get(&node.url("web", path).await).await;
        assert_eq!(r.status, 200);
    };

    get("/").await;
    lines(&log, 1).await;
    let moved = dir.path().join("web.log.1");
    std::fs::rename(&log, &moved).unwrap();
    node.node.reload().await.unwrap();
    get("/?after").await;

    let now = lines(&log, 1).await;
    assert!(
        now[0].ends_with("\"GET /?after HTTP/1.1\" 200 5"),
        "{now:?}"
    );
    let old = lines(&moved, 1).await;
    assert!(old[0].ends_with("\"GET / HTTP/1.1\" 200 5"), "{old:?}");

    // A path that cannot be opened refuses the reload at its key; the old log goes on.
    dir.write("lintas.toml", &config(&dir.path().join("missing/web.log")));
    let err = node.node.reload().await.unwrap_err();
    let admin::ReloadError::Refused(message) = err else {
        panic!("not refused: {err:?}");
    };
    assert!(
        message.starts_with(&format!("{}:9:42:", file.display()))
            && message.contains("proxy.listeners[0].access_log.path")
            && message.contains("the access log"),
        "{message}"
    );
    get("/?still").await;
    assert!(lines(&log, 2).await[1].contains("/?still"));
}

/// Three pools, each failing its own way, behind a listener with a page for each status
/// (`pages`) and one without.
async fn failing_node(dir: &TempDir, pages: bool) -> (Backends, TestNode) {
    let b = Backends::start(&["app1"]).await;
    let mut lines = String::new();
    if pages {
        let mut entries = Vec::new();
        for status in [502, 503, 504] {
            let path = dir.write(
                &format!("{status}.html"),
                &format!("<h1>{status} page</h1>\n"),
            );
            entries.push(format!("{status} = \"{}\"", path.display()));
        }
        lines = format!("error_pages = {{ {} }}\n", entries.join(", "));
    }
    let config = format!(
        r#"[proxy.pools.web]
{backends}

[proxy.pools.dead]
backends = [{{ name = "dead1", address = "{dead}" }}]

[proxy.pools.none]
backends = [{{ name = "off", address = "{dead}", weight = 0 }}]

[[proxy.listeners]]
name = "front"
mode = "http"
listen = "127.0.0.1:0"
pool = "web"
request_timeout = "300ms"
retries = 0
{lines}
[[proxy.listeners.routes]]
path_prefix = "/dead"
pool = "dead"

[[proxy.listeners.routes]]
path_prefix = "/none"
pool = "none"
"#,
        backends = b.toml(),
        dead = unused_addr(),
    );
    let node = TestNode::start(&config).await;
    (b, node)
}

/// `(status, content type, body)` of `GET url` over h2 (prior knowledge).
async fn h2_get(url: &str) -> (u16, String, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .map_or("", |v| v.to_str().unwrap())
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

/// `(status, content type, body)` of `GET path` over HTTP/1 and over h2.
async fn both_ways(node: &TestNode, path: &str) -> [(u16, String, String); 2] {
    let url = node.url("front", path).await;
    let h1 = HttpClient::new().get(&url).await;
    [
        (h1.status, h1.header("content-type").to_owned(), h1.body),
        h2_get(&url).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_replace_lintas_s_answers_on_h1_and_h2() {
    let dir = TempDir::new();
    let (_b, node) = failing_node(&dir, true).await;
    let html = "text/html; charset=utf-8";
    for (path, status) in [("/dead", 502), ("/none", 503), ("/work?ms=3000", 504)] {
        let page = format!("<h1>{status} page</h1>\n");
        assert_eq!(
            both_ways(&node, path).await,
            [
                (status, html.to_owned(), page.clone()),
                (status, html.to_owned(), page)
            ],
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lintas_s_own_answers_name_no_backend_pool_or_address() {
    let dir = TempDir::new();
    let (b, node) = failing_node(&dir, false).await;
    let plain = "text/plain; charset=utf-8".to_owned();
    for (path, status, body) in [
        ("/dead", 502, "bad gateway: no server could be reached\n"),
        (
            "/none",
            503,
            "no server is available to handle this request\n",
        ),
        (
            "/work?ms=3000",
            504,
            "gateway timeout: the server did not answer in time\n",
        ),
    ] {
        let [h1, h2] = both_ways(&node, path).await;
        assert_eq!(h1, (status, plain.clone(), body.to_owned()), "{path}");
        assert_eq!(h2, h1, "{path}");
        for name in [
            "app1",
            "dead1",
            "off",
            "web",
            "none",
            &b.addr("app1").to_string(),
        ] {
            assert!(!h1.2.contains(name), "{path}: {name} in {}", h1.2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_error_page_refuses_the_configuration_at_its_key() {
    let dir = TempDir::new();
    let config = format!(
        "[proxy.pools.web]\nbackends = [{{ name = \"a\", address = \"{}\" }}]\n\n\
         [[proxy.listeners]]\nname = \"web\"\nmode = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         pool = \"web\"\nerror_pages = {{ 503 = \"{}\" }}\n",
        unused_addr(),
        dir.path().join("absent.html").display()
    );
    let file = dir.write("lintas.toml", &config);
    let message = TestNode::refused(lintas::config::load(&file).unwrap()).await;
    assert!(
        message.starts_with(&format!("{}:9:23:", file.display()))
            && message.contains("proxy.listeners[0].error_pages.503")
            && message.contains("absent.html"),
        "{message}"
    );
}
