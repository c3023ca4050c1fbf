//! A hub started in-process on an ephemeral port (alone, or as a node of a cluster on a
//! real Redis), and a WebSocket client that reads frames as JSON for exact assertions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backplane::{Backplane, BackplaneConfig};
use futures_util::{SinkExt, StreamExt};
use hub::{Hub, HubConfig};
use serde_json::{Value, json};
use service::Service;
use testkit::{PATIENCE, TempDir};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, http};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The secret test tokens are signed with: `LINTAS_HUB_TEST_SECRET`, which
/// `.cargo/config.toml` sets for every process cargo runs.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// A running hub.
pub struct Node {
    pub hub: Arc<Hub>,
    pub addr: SocketAddr,
    pub metrics: admin::Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    _dir: TempDir,
}

impl Node {
    /// A single hub with `[hub]` set to `text` after the test defaults (ephemeral port,
    /// anonymous clients allowed, tokens signed with [`SECRET`]).
    pub async fn start(text: &str) -> Self {
        Self::start_on(text, None).await
    }

    /// [`Node::start`] on `backplane` (a cluster node when it is Redis).
    pub async fn start_on(text: &str, backplane: Option<Arc<dyn Backplane>>) -> Self {
        let mut section = String::from("listen = \"127.0.0.1:0\"\n");
        for (key, line) in [
            ("allow_anonymous", "allow_anonymous = true\n"),
            (
                "token_secret_env",
                "token_secret_env = \"LINTAS_HUB_TEST_SECRET\"\n",
            ),
        ] {
            if !text.contains(key) {
                section.push_str(line);
            }
        }
        let text = format!("{section}{text}");
        let cfg: HubConfig = toml::from_str(&text).expect("the test section parses");
        let mut issues = configkit::Issues::default();
        cfg.validate(&configkit::KeyPath::root("hub"), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        let dir = TempDir::new();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let backplane = match backplane {
            Some(b) => b,
            None => backplane::open(None, dir.path())
                .await
                .expect("embedded backplane"),
        };
        let deps = service::Deps::new(
            net::Workers::default(),
            tracker.clone(),
            dir.path().to_owned(),
            backplane,
        );
        let metrics = deps.metrics.clone();
        let hub = Hub::start(&cfg, deps, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("hub start: {e}"));
        let addr = hub.local_addr();
        Self {
            hub,
            addr,
            metrics,
            shutdown,
            tracker,
            _dir: dir,
        }
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A client connected anonymously as `name`, its `connected` frame read.
    pub async fn anonymous(&self, name: &str) -> Client {
        let mut c = Client::open(&self.url()).await;
        c.send(json!({"type": "connect", "name": name})).await;
        let connected = c.next().await;
        assert_eq!(connected["type"], "connected", "{connected}");
        assert_eq!(connected["user"], format!("~{name}"));
        c
    }

    /// A client connected with a token for `sub` allowed `rooms`, its `connected` read.
    pub async fn with_token(&self, sub: &str, rooms: &[&str]) -> Client {
        let mut c = Client::open(&self.url()).await;
        let token = token(&json!({"sub": sub, "rooms": rooms, "exp": now() + 600}));
        c.send(json!({"type": "connect", "token": token})).await;
        let connected = c.next().await;
        assert_eq!(connected["type"], "connected", "{connected}");
        c
    }

    /// Stops the hub (as on SIGTERM) and waits for every task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(PATIENCE, self.tracker.wait())
            .await
            .expect("the hub stops");
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A token with `claims`, signed with [`SECRET`].
pub fn token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signed")
}

/// A WebSocket client reading the hub's frames as JSON.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects to `url` (no `connect` frame sent yet).
    pub async fn open(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
            .await
            .expect("the upgrade answers in time")
            .expect("the upgrade is accepted");
        Self { ws }
    }

    /// Sends `frame` as a text frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends `text` as it is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("the frame is sent");
    }

    /// Sends a raw WebSocket message.
    pub async fn send_message(&mut self, m: Message) {
        self.ws.send(m).await.expect("the message is sent");
    }

    /// The next text frame, as JSON.
    pub async fn next(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).expect("JSON")
    }

    /// The next text frame, as sent.
    pub async fn next_text(&mut self) -> String {
        loop {
            let m = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame within the patience")
                .expect("the connection is open")
                .expect("a frame, not an error");
            match m {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame, if one comes within `wait`.
    pub async fn maybe(&mut self, wait: Duration) -> Option<Value> {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => Some(serde_json::from_str(t.as_str()).expect("JSON")),
            Ok(other) => panic!("expected a text frame or nothing, got {other:?}"),
            Err(_) => None,
        }
    }

    /// Sends `request` with `id` and returns the reply carrying that id, with the frames
    /// that came before it.
    pub async fn ask(&mut self, id: u64, mut request: Value) -> (Value, Vec<Value>) {
        request["id"] = id.into();
        self.send(request).await;
        let mut before = Vec::new();
        loop {
            let f = self.next().await;
            if f["id"] == id {
                return (f, before);
            }
            before.push(f);
        }
    }

    /// Joins `room`; the `joined` reply.
    pub async fn join(&mut self, room: &str) -> Value {
        let (reply, _) = self
            .ask(1_000_001, json!({"type": "join", "room": room}))
            .await;
        assert_eq!(reply["type"], "joined", "{reply}");
        reply
    }

    /// Reads frames until the server closes; the close code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let m = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("the close within the patience");
            match m {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => {
                    return (u16::from(CloseCode::Status), String::new());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("the connection failed before a close frame: {e}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

/// The HTTP answer to a WebSocket upgrade of `url` with `headers`, when it is refused.
pub async fn refused_upgrade(url: &str, headers: &[(&'static str, &str)]) -> (u16, String) {
    let mut req = url.into_client_request().expect("a URL");
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, http::HeaderValue::from_str(v).expect("a header value"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Ok(_) => panic!("the upgrade was accepted"),
        Err(e) => panic!("the upgrade failed otherwise: {e}"),
    }
}

/// The Redis tests use (`LINTAS_TEST_REDIS`, else the local one).
pub fn redis_url() -> String {
    std::env::var("LINTAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A backplane on Redis under `prefix`: each node of a test cluster opens its own, as
/// separate processes would.
pub async fn redis_backplane(prefix: &str, dir: &TempDir) -> Arc<dyn Backplane> {
    let cfg = BackplaneConfig {
        redis: redis_url(),
        password_env: None,
        tls_ca_file: None,
        prefix: prefix.to_owned(),
        lease: Duration::from_secs(2),
    };
    backplane::open(Some(&cfg), dir.path())
        .await
        .expect("Redis is reachable")
}

/// A prefix no other test run uses.
pub fn prefix(tag: &str) -> String {
    format!(
        "lintas-hub-test-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    )
}
