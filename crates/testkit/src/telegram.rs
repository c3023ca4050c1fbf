//! A local Telegram Bot API server for tests: it speaks the real HTTP protocol
//! (`POST /bot{token}/getUpdates` with offsets and long polling, `POST /bot{token}/sendMessage`),
//! lets a test script what people write (or inject any raw update, of kinds the bot may not
//! know), and records what the bot sent and which update kinds it asked for.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Longest message text Telegram accepts, in UTF-16 code units.
pub const MAX_TEXT: usize = 4096;

#[derive(Default)]
struct Inner {
    next_update: u64,
    updates: Vec<Value>,
    sent: Vec<(i64, String)>,
    allowed_updates: Option<Value>,
}

#[derive(Clone)]
struct Shared {
    token: String,
    inner: Arc<Mutex<Inner>>,
    news: Arc<Notify>,
}

/// The fake Bot API; stops with the test's runtime.
#[derive(Clone)]
pub struct FakeBotApi {
    addr: SocketAddr,
    shared: Shared,
}

impl FakeBotApi {
    /// Serves the bot with `token` on an ephemeral port.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        let shared = Shared {
            token: token.to_owned(),
            inner: Arc::new(Mutex::new(Inner {
                next_update: 1,
                ..Inner::default()
            })),
            news: Arc::new(Notify::new()),
        };
        let app = Router::new()
            .route("/{bot}/{method}", post(call))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared })
    }

    /// The base URL to configure as the bot's `api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A private message from `chat` to the bot.
    pub fn say(&self, chat: i64, text: &str) {
        self.push(|id| {
            json!({
                "update_id": id,
                "message": {
                    "message_id": id,
                    "date": 1_764_000_000,
                    "chat": {"id": chat, "type": "private", "first_name": "Tester"},
                    "from": {"id": chat, "is_bot": false, "first_name": "Tester"},
                    "text": text,
                },
            })
        });
    }

    /// An update of any shape: `fields` (an object, such as `{"future_kind": {...}}`) with
    /// the next `update_id` added, as Telegram would send a kind it introduced later.
    pub fn push_raw(&self, fields: Value) {
        self.push(|id| {
            let mut update = fields;
            update["update_id"] = json!(id);
            update
        });
    }

    fn push(&self, update: impl FnOnce(u64) -> Value) {
        {
            let mut inner = self.lock();
            let id = inner.next_update;
            inner.next_update += 1;
            inner.updates.push(update(id));
        }
        self.shared.news.notify_waiters();
    }

    /// `allowed_updates` of the last `getUpdates` call (`None` when it sent none).
    pub fn allowed_updates(&self) -> Option<Value> {
        self.lock().allowed_updates.clone()
    }

    /// Sends `text` as `chat` and returns the bot's next message to `chat`, waiting up to
    /// [`crate::PATIENCE`].
    pub async fn ask(&self, chat: i64, text: &str) -> String {
        let before = self.sent_to(chat).len();
        self.say(chat, text);
        crate::wait_until(
            &format!("an answer to {text:?}"),
            crate::PATIENCE,
            || async { self.sent_to(chat).len() > before },
        )
        .await;
        self.sent_to(chat)[before].clone()
    }

    /// Everything the bot sent to `chat`, in order.
    pub fn sent_to(&self, chat: i64) -> Vec<String> {
        self.lock()
            .sent
            .iter()
            .filter(|(c, _)| *c == chat)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

async fn call(
    State(s): State<Shared>,
    Path((bot, method)): Path<(String, String)>,
    body: String,
) -> (StatusCode, Json<Value>) {
    if bot != format!("bot{}", s.token) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        );
    }
    let params: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match method.as_str() {
        "getUpdates" => {
            let offset = params["offset"].as_u64().unwrap_or(0);
            let timeout = params["timeout"].as_u64().unwrap_or(0);
            s.inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allowed_updates = params.get("allowed_updates").cloned();
            let pending = |s: &Shared| {
                let mut inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
                // Updates below the offset are confirmed: forget them, as Telegram does.
                inner
                    .updates
                    .retain(|u| u["update_id"].as_u64().unwrap_or(0) >= offset);
                inner.updates.clone()
            };
            let notified = s.news.notified();
            let mut found = pending(&s);
            if found.is_empty() {
                let _ = tokio::time::timeout(Duration::from_secs(timeout), notified).await;
                found = pending(&s);
            }
            (StatusCode::OK, Json(json!({"ok": true, "result": found})))
        }
        "sendMessage" => {
            let chat = params["chat_id"].as_i64().unwrap_or(0);
            let text = params["text"].as_str().unwrap_or_default().to_owned();
            // Telegram's limit, counted as it counts: UTF-16 code units.
            if text.encode_utf16().count() > MAX_TEXT {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"ok": false, "error_code": 400, "description": "Bad Request: message is too long"}),
                    ),
                );
            }
            let id = {
                let mut inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner.sent.push((chat, text.clone()));
                inner.sent.len()
            };
            (
                StatusCode::OK,
                Json(json!({"ok": true, "result": {
                    "message_id": id,
                    "date": 1_764_000_000,
                    "chat": {"id": chat, "type": "private"},
                    "text": text,
                }})),
            )
        }
        other => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"ok": false, "error_code": 404, "description": format!("Not Found: method {other}")}),
            ),
        ),
    }
}
