//! Listener routes: HTTP by host, path, method and header to pools or redirects with
//! rewrites (on HTTP/1 and h2), TCP by SNI without terminating TLS, and what `lintas check`
//! says about routes that can never be used.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioExecutor;
use testkit::HttpClient;
use tokio::io::AsyncWriteExt;

use crate::harness::{Backends, TestNode, raw_exchange};

/// Four pools of one demo backend each (`web` the listener's default) and the routes under
/// test in front of them.
async fn routed_node(routes: &str) -> (Backends, TestNode) {
    let b = Backends::start(&["web1", "api1", "admin1", "canary1"]).await;
    let pool = |name: &str, backend: &str| {
        format!(
            "[proxy.pools.{name}]\nbackends = [{{ name = \"{backend}\", address = \"{}\" }}]\n",
            b.addr(backend)
        )
    };
    let config = format!(
        "{}{}{}{}
[[proxy.listeners]]
name = \"web\"
mode = \"http\"
listen = \"127.0.0.1:0\"
pool = \"web\"
{routes}",
        pool("web", "web1"),
        pool("api", "api1"),
        pool("admin", "admin1"),
        pool("canary", "canary1"),
    );
    let node = TestNode::start(&config).await;
    (b, node)
}

const ROUTES: &str = r#"
[[proxy.listeners.routes]]
name = "canary"
headers = { "X-Canary" = "yes" }
pool = "canary"

[[proxy.listeners.routes]]
name = "api"
host = "api.example.com"
pool = "api"

[[proxy.listeners.routes]]
name = "tenants"
host = "*.apps.example.com"
path = "/health"
pool = "canary"

[[proxy.listeners.routes]]
name = "admin"
path_prefix = "/admin/"
methods = ["GET", "HEAD"]
strip_prefix = true
pool = "admin"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_route_chooses_the_pool() {
    let (_b, node) = routed_node(ROUTES).await;
    let addr = node.addr("web").await;
    let client = HttpClient::new();
    let to = async |method: &str, host: &str, path: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("Host", host)];
        all.extend_from_slice(headers);
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let r = client
            .send(method, &format!("http://{addr}{path}"), &all, "")
            .await
            .unwrap();
        (r.status, r.header("x-backend").to_owned())
    };
    let ok = |backend: &str| (200, backend.to_owned());

    assert_eq!(to("GET", "www.example.com", "/", &[]).await, ok("web1"));
    assert_eq!(
        to("GET", "API.Example.com:8080", "/", &[]).await,
        ok("api1")
    );
    assert_eq!(to("GET", "api.example.com.", "/", &[]).await, ok("api1"));
    // First match wins: the header route comes before the host route.
    let canary = [("X-Canary", "yes")];
    assert_eq!(
        to("GET", "api.example.com", "/", &canary).await,
        ok("canary1")
    );
    assert_eq!(
        to("GET", "www.example.com", "/", &[("X-Canary", "no")]).await,
        ok("web1")
    );
    // Any depth under the wildcard, exact path only.
    assert_eq!(
        to("GET", "a.b.apps.example.com", "/health", &[]).await,
        ok("canary1")
    );
    assert_eq!(
        to("GET", "apps.example.com", "/health", &[]).await,
        ok("web1")
    );
    assert_eq!(
        to("GET", "a.apps.example.com", "/health/x", &[]).await,
        (404, "web1".into())
    );
    // Prefix, stripped: the admin backend gets `/health`.
    assert_eq!(to("GET", "x", "/admin/health", &[]).await, ok("admin1"));
    assert_eq!(to("GET", "x", "/%61dmin/health", &[]).await, ok("admin1"));
    assert_eq!(
        to("POST", "x", "/admin/health", &[]).await,
        (404, "web1".into())
    );
    assert_eq!(to("GET", "x", "/admin", &[]).await, (404, "web1".into()));

    // Two copies of a header a route looks at match nothing.
    let twice = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Canary: yes\r\nX-Canary: yes\r\nConnection: close\r\n\r\n",
    )
    .await;
    let twice = String::from_utf8_lossy(&twice);
    assert!(twice.contains("x-backend: web1"), "{twice}");
    // The absolute-form's authority is the host.
    let absolute = raw_exchange(
        addr,
        b"GET http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(String::from_utf8_lossy(&absolute).contains("x-backend: api1"));
    // A path a backend would resolve differently from the route is refused.
    let dotted = raw_exchange(
        addr,
        b"GET /public/../admin/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&dotted),
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: 79\r\nconnection: close\r\n\r\n\
         bad request: the path `/public/../admin/health` has dot segments (`.` or `..`)\n"
    );

    // The same routes on the h2 path (h2c, `:authority` naming the host).
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (authority, path, backend) in [
        ("api.example.com", "/", "api1"),
        ("x.apps.example.com", "/health", "canary1"),
        ("other", "/admin/health", "admin1"),
        ("other", "/", "web1"),
    ] {
        let req = http::Request::get(format!("http://{authority}{path}"))
            .body(Empty::new())
            .unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(
            (
                resp.status().as_u16(),
                resp.headers()["x-backend"].to_str().unwrap()
            ),
            (200, backend),
            "h2 {authority}{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_rewrite_headers_and_give_each_request_an_id() {
    let (_b, node) = routed_node(
        r#"
[[proxy.listeners.routes]]
path_prefix = "/app"
strip_prefix = true
set_request_headers = { "X-Env" = "prod", "Host" = "internal.example" }
remove_request_headers = ["X-Debug"]
set_response_headers = { "Strict-Transport-Security" = "max-age=60" }
remove_response_headers = ["X-Backend"]
request_id = true
pool = "api"
"#,
    )
    .await;
    let url = node.url("web", "/app/headers").await;
    let sent = [
        ("X-Env", "dev"),
        ("X-Debug", "1"),
        ("X-Request-Id", "forged"),
        ("Accept", "*/*"),
    ];
    let r = HttpClient::new()
        .send(http::Method::GET, &url, &sent, "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.header("x-request-id").to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(r.header("strict-transport-security"), "max-age=60");
    assert!(r.headers.get("x-backend").is_none(), "{r:?}");
    let mut got: Vec<&str> = r.body.lines().collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "accept: */*".to_owned(),
            "host: internal.example".to_owned(),
            "x-env: prod".to_owned(),
            "x-forwarded-for: 127.0.0.1".to_owned(),
            "x-forwarded-proto: http".to_owned(),
            format!("x-request-id: {id}"),
        ]
    );
    // Another request, another id.
    let again = HttpClient::new().get(&url).await;
    assert_ne!(again.header("x-request-id"), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_redirects_with_the_host_and_uri_it_was_asked_for() {
    let (_b, node) = routed_node(
        r#"
[[proxy.listeners.routes]]
host = "old.example.com"
redirect = "https://new.example.com{uri}"
redirect_status = 301

[[proxy.listeners.routes]]
path_prefix = "/"
redirect = "https://{host}{uri}"
"#,
    )
    .await;
    let addr = node.addr("web").await;
    let moved = raw_exchange(
        addr,
        b"GET /a/b?c=d HTTP/1.1\r\nHost: old.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&moved),
        "HTTP/1.1 301 Moved Permanently\r\nlocation: https://new.example.com/a/b?c=d\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n"
    );
    // Keep-alive survives a redirect without a body: two on one connection.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: shop.example.com:80\r\n\r\nGET /y HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let both = crate::harness::read_until_closed(&mut s).await;
    assert_eq!(
        String::from_utf8_lossy(&both),
        "HTTP/1.1 302 Found\r\nlocation: https://shop.example.com/x\r\ncontent-length: 0\r\n\r\n\
         HTTP/1.1 302 Found\r\nlocation: https://shop.example.com/y\r\ncontent-length: 0\r\n\
         connection: close\r\n\r\n"
    );
    assert_eq!(node.listener("web").responses[2], 3);
}

/// A TCP listener reads the ClientHello's server name and passes the TLS bytes, untouched,
/// to the pool its route names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_routes_by_sni_without_terminating_tls() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, Vec<u8>)>();
    let recorder = |name: &'static str| {
        let tx = tx.clone();
        crate::harness::tcp_server(move |mut s| {
            let tx = tx.clone();
            async move {
                let mut got = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got).await;
                let _ = tx.send((name, got));
            }
        })
    };
    let (mqtt, web, other) = (
        recorder("mqtt").await,
        recorder("web").await,
        recorder("other").await,
    );
    let config = format!(
        r#"
[proxy.pools.mqtt]
backends = [{{ name = "m", address = "{mqtt}" }}]
[proxy.pools.web]
backends = [{{ name = "w", address = "{web}" }}]
[proxy.pools.other]
backends = [{{ name = "o", address = "{other}" }}]

[[proxy.listeners]]
name = "tls"
mode = "tcp"
listen = "127.0.0.1:0"
pool = "other"

[[proxy.listeners.routes]]
sni = "mqtt.example.com"
pool = "mqtt"

[[proxy.listeners.routes]]
sni = "*.example.com"
pool = "web"
"#
    );
    let node = TestNode::start(&config).await;
    let addr = node.addr("tls").await;
    for (sni, expected) in [
        ("mqtt.example.com", "mqtt"),
        ("www.example.com", "web"),
        ("example.org", "other"),
    ] {
        let hello = client_hello(sni);
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello).await.unwrap();
        s.write_all(b"after the hello").await.unwrap();
        s.shutdown().await.unwrap();
        let (backend, got) = rx.recv().await.unwrap();
        assert_eq!(backend, expected, "{sni}");
        let mut sent = hello.clone();
        sent.extend_from_slice(b"after the hello");
        assert_eq!(got, sent, "{sni}: bytes changed on the way");
    }
    // Not TLS at all: no server name, the listener's pool.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PING\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), ("other", b"PING\r\n".to_vec()));
}

/// The bytes a rustls client sends first to `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let roots = rustls::RootCertStore::empty();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn check_refuses_routes_that_can_never_be_used() {
    let config = r#"
[proxy.pools.web]
backends = [{ name = "a", address = "127.0.0.1:1" }]

[[proxy.listeners]]
name = "web"
mode = "http"
listen = "127.0.0.1:0"
pool = "web"

[[proxy.listeners.routes]]
name = "api"
path_prefix = "/api"
pool = "web"

[[proxy.listeners.routes]]
name = "api-v1"
path_prefix = "/api/v1"
methods = ["GET"]
pool = "web"

[[proxy.listeners.routes]]
path_prefix = "/api"
pool = "web"

[[proxy.listeners.routes]]
path = "/x"
path_prefix = "/y"
sni = "a.example.com"
set_request_headers = { "Content-Length" = "5" }
pool = "nowhere"

[[proxy.listeners.routes]]
redirect = "ftp//{hots}"
redirect_status = 200
"#;
    let err = lintas::config::parse(std::path::Path::new("routes.toml"), config.to_owned())
        .unwrap_err()
        .to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "routes.toml:16:1: proxy.listeners[0].routes[1]: route `api-v1` is shadowed by route `api` before it: every request it matches goes there, so it can never be used",
            "routes.toml:22:1: proxy.listeners[0].routes[2]: route `#2` duplicates route `api` before it: every request it matches goes there, so it can never be used",
            "routes.toml:28:15: proxy.listeners[0].routes[3].path_prefix: use either path (exact) or path_prefix, not both",
            "routes.toml:29:7: proxy.listeners[0].routes[3].sni: sni is for mode = \"tcp\" listeners; HTTP routes match host",
            "routes.toml:30:44: proxy.listeners[0].routes[3].set_request_headers.Content-Length: `Content-Length` frames the message or is written by lintas; a route cannot change it",
            "routes.toml:31:8: proxy.listeners[0].routes[3].pool: no pool named `nowhere`",
            "routes.toml:34:12: proxy.listeners[0].routes[4].redirect: unknown placeholder `{hots}`; use {host} and {uri}",
            "routes.toml:34:12: proxy.listeners[0].routes[4].redirect: `ftp//{hots}` is not an absolute URL or a path starting with `/`",
            "routes.toml:35:19: proxy.listeners[0].routes[4].redirect_status: 200 is not a redirect; use 301, 302, 303, 307 or 308",
        ]
    );
}

/// A TLS listener with certificates per server name: each client gets the certificate for
/// the name it asked for, the default one otherwise, and the route for that host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_presents_the_certificate_for_the_name_asked() {
    let dir = crate::harness::TempDir::new();
    let cert = |stem: &str, names: &[&str]| {
        testkit::tls::self_signed_for(dir.path(), stem, names).unwrap()
    };
    let (default_cert, default_key) = cert("localhost", &["DNS:localhost"]);
    let (shop_cert, shop_key) = cert("shop", &["DNS:shop.example.com"]);
    let (apps_cert, apps_key) = cert("apps", &["DNS:*.apps.example.com"]);
    let tls = format!(
        r#"tls = {{ cert = "{}", key = "{}", sni = [
    {{ names = ["shop.example.com"], cert = "{}", key = "{}" }},
    {{ names = ["*.apps.example.com"], cert = "{}", key = "{}" }},
] }}
[[proxy.listeners.routes]]
host = "shop.example.com"
pool = "api""#,
        default_cert.display(),
        default_key.display(),
        shop_cert.display(),
        shop_key.display(),
        apps_cert.display(),
        apps_key.display(),
    );
    let (_b, node) = routed_node(&tls).await;
    let addr = node.addr("web").await;
    for (name, trusted, backend) in [
        ("shop.example.com", &shop_cert, "api1"),
        ("a.apps.example.com", &apps_cert, "web1"),
        ("localhost", &default_cert, "web1"),
    ] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Verification against only this certificate proves which one was presented.
        let mut tls = crate::harness::tls_connector(trusted)
            .connect(
                rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
                tcp,
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.contains(&format!("x-backend: {backend}")),
            "{name}: {answer}"
        );
    }
}
