//! Where alerts go: the console, webhooks (and, next, Telegram and email). Every send is
//! retried, and every outcome is written to the alert log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use store::Store;
use tracing::warn;

use crate::engine::Alert;
use crate::now_ms;

/// Attempts per alert and channel.
pub const ATTEMPTS: u32 = 3;

/// How long one webhook call may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// An alert channel.
#[derive(Debug, Clone)]
pub enum Channel {
    /// Standard output.
    Console,
    /// A JSON POST.
    Webhook {
        /// Where.
        url: String,
        /// A kept-alive HTTP client (boxed: it is large, and the console has nothing).
        client: Box<Client<HttpConnector, Full<Bytes>>>,
    },
}

impl Channel {
    /// A webhook channel to `url`.
    pub fn webhook(url: &str) -> Self {
        Self::Webhook {
            url: url.to_owned(),
            client: Box::new(Client::builder(TokioExecutor::new()).build_http()),
        }
    }

    /// Its name in the alert log.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Webhook { .. } => "webhook",
        }
    }

    /// Who it reaches, for the alert log.
    pub fn recipient(&self) -> &str {
        match self {
            Self::Console => "stdout",
            Self::Webhook { url, .. } => url,
        }
    }

    async fn send(&self, alert: &Alert) -> Result<(), String> {
        match self {
            Self::Console => {
                println!("[lintas watch] {}", alert.text);
                Ok(())
            }
            Self::Webhook { url, client } => {
                let body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(url.as_str())
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::USER_AGENT, "lintas-watch")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let resp = tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(req))
                    .await
                    .map_err(|_| format!("no answer within {WEBHOOK_TIMEOUT:?}"))?
                    .map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", resp.status().as_u16()))
                }
            }
        }
    }
}

/// Sends `alert` on `channel`, retrying after 1 s and 2 s, and logs the outcome.
pub async fn deliver(channel: Arc<Channel>, alert: Arc<Alert>, store: Store) {
    let mut last_error = None;
    let mut attempts = 0;
    for attempt in 1..=ATTEMPTS {
        attempts = attempt;
        match channel.send(&alert).await {
            Ok(()) => {
                last_error = None;
                break;
            }
            Err(e) => {
                warn!(channel = channel.name(), to = channel.recipient(), attempt, error = %e, "alert not delivered");
                last_error = Some(e);
                if attempt < ATTEMPTS {
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
            }
        }
    }
    let r = sqlx::query(
        "INSERT INTO watch_alerts (at_ms, target, kind, channel, recipient, text, status, attempts, error)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(now_ms())
    .bind(&alert.target)
    .bind(serde_json::to_value(alert.kind).ok().and_then(|v| v["kind"].as_str().map(str::to_owned)))
    .bind(channel.name())
    .bind(channel.recipient())
    .bind(&alert.text)
    .bind(if last_error.is_none() { "sent" } else { "failed" })
    .bind(i64::from(attempts))
    .bind(&last_error)
    .execute(store.pool())
    .await;
    if let Err(e) = r {
        warn!(error = %e, "cannot write the alert log");
    }
}
