//! Where alerts go: the console, webhooks, Telegram (every approved person not muted) and
//! email (the configured addresses, and approved people whose address is confirmed). Each recipient's send is retried
//! after 1 s and 2 s, and every outcome — who was told what, when, on which channel — is
//! written to the alert log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use store::Store;
use tracing::warn;

use crate::bot::telegram::Telegram;
use crate::bot::users;
use crate::config::EmailConfig;
use crate::engine::Alert;
use crate::now_ms;
use crate::telemetry::Telemetry;

/// Attempts per alert and recipient.
pub const ATTEMPTS: u32 = 3;

/// How long one webhook call or email may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The bot, to every registered person not muted.
    Telegram(Box<Telegram>),
    /// SMTP, to registered people and the configured addresses.
    Email(Box<Mailer>),
}

/// An SMTP transport and the addresses it uses.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<String>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The transport `cfg` describes, with the password from its environment variable (read
    /// through `env`).
    pub fn new(cfg: &EmailConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp)
            .map_err(|e| format!("smtp: {e}"))?
            .timeout(Some(SEND_TIMEOUT));
        if let Some(user) = &cfg.username {
            let password = match &cfg.password_env {
                Some(var) => env(var).ok_or_else(|| {
                    format!("environment variable {var} (password_env) is not set")
                })?,
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
            from: cfg.from.parse().map_err(|e| format!("from: {e}"))?,
            to: cfg.to.clone(),
        })
    }
}

impl Mailer {
    /// Mails `body` to `to` under `subject`.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to.parse::<Mailbox>().map_err(|e| e.to_string())?)
            .subject(subject)
            .body(body.to_owned())
            .map_err(|e| e.to_string())?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
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
            Self::Telegram(_) => "telegram",
            Self::Email(_) => "email",
        }
    }

    /// Who gets the next alert.
    async fn recipients(&self, store: &Store) -> Vec<String> {
        match self {
            Self::Console => vec!["stdout".into()],
            Self::Webhook { url, .. } => vec![url.clone()],
            Self::Telegram(_) => users::alerted(store)
                .await
                .unwrap_or_default()
                .iter()
                .map(|u| u.chat_id.to_string())
                .collect(),
            Self::Email(m) => {
                let mut to = m.to.clone();
                for u in users::alerted(store).await.unwrap_or_default() {
                    if let Some(e) = u.email
                        && u.email_confirmed
                        && !to.contains(&e)
                    {
                        to.push(e);
                    }
                }
                to
            }
        }
    }

    async fn send(&self, to: &str, alert: &Alert) -> Result<(), String> {
        match self {
            Self::Console => {
                println!("[lintas watch] {}", alert.text);
                Ok(())
            }
            Self::Webhook { client, .. } => {
                let body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(to)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::USER_AGENT, "lintas-watch")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let resp = tokio::time::timeout(SEND_TIMEOUT, client.request(req))
                    .await
                    .map_err(|_| format!("no answer within {SEND_TIMEOUT:?}"))?
                    .map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", resp.status().as_u16()))
                }
            }
            Self::Telegram(api) => {
                let chat: i64 = to.parse().map_err(|_| format!("bad chat id {to}"))?;
                api.send_text(chat, &alert.text)
                    .await
                    .map_err(|e| e.to_string())
            }
            Self::Email(m) => {
                m.send(to, &format!("[lintas] {}", alert.headline()), &alert.text)
                    .await
            }
        }
    }
}

/// Sends `alert` to every recipient of `channel`, retrying each after 1 s and 2 s, and logs
/// and counts each outcome.
pub(crate) async fn deliver(
    channel: Arc<Channel>,
    alert: Arc<Alert>,
    store: Store,
    telemetry: Telemetry,
) {
    for to in channel.recipients(&store).await {
        let mut last_error = None;
        let mut attempts = 0;
        for attempt in 1..=ATTEMPTS {
            attempts = attempt;
            match channel.send(&to, &alert).await {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                Err(e) => {
                    warn!(channel = channel.name(), %to, attempt, error = %e, "alert not delivered");
                    last_error = Some(e);
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    }
                }
            }
        }
        telemetry.alert(channel.name(), last_error.is_none());
        let r = sqlx::query(
            "INSERT INTO watch_alerts (at_ms, target, kind, channel, recipient, text, status, attempts, error)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(now_ms())
        .bind(&alert.target)
        .bind(serde_json::to_value(alert.kind).ok().and_then(|v| v["kind"].as_str().map(str::to_owned)))
        .bind(channel.name())
        .bind(&to)
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
}
