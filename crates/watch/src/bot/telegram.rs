//! The Telegram Bot API client: `frankenstein`'s types and method list over lintas's own
//! HTTP client (hyper with rustls/ring, like the rest of lintas), pointed at `api_url` so
//! tests can use a local Bot API server.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use frankenstein::AsyncTelegramApi;
use frankenstein::methods::SendMessageParams;
use frankenstein::response::ErrorResponse;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Longest a call may take: long polls wait up to their own timeout on the server, so this
/// must be longer than [`super::POLL_TIMEOUT`].
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest text sent as one message, in UTF-16 code units: Telegram refuses more than 4096
/// (counted after entity parsing, in UTF-16); the margin covers what it counts differently.
pub const MESSAGE_MAX: usize = 4000;

/// `text` in pieces of at most `max` UTF-16 code units, cut between lines; a line longer
/// than `max` is cut between characters. Joining the pieces with newlines gives `text` back
/// when no line was cut.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut units = 0;
    for line in text.split('\n') {
        let len = line.encode_utf16().count();
        if !part.is_empty() && units + 1 + len > max {
            parts.push(std::mem::take(&mut part));
            units = 0;
        }
        if !part.is_empty() {
            part.push('\n');
            units += 1;
        }
        for c in line.chars() {
            if units + c.len_utf16() > max && !part.is_empty() {
                parts.push(std::mem::take(&mut part));
                units = 0;
            }
            part.push(c);
            units += c.len_utf16();
        }
    }
    if !part.is_empty() || parts.is_empty() {
        parts.push(part);
    }
    parts
}

/// What a call can fail with. The token is part of every URL, so errors never carry URLs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramError {
    /// The Bot API answered `ok: false`.
    #[error("Telegram refused: {description} ({code})")]
    Api {
        /// `error_code`.
        code: u64,
        /// `description`.
        description: String,
    },
    /// No answer, or not one the Bot API gives.
    #[error("Telegram unreachable: {0}")]
    Transport(String),
}

/// A bot: `{api_url}/bot{token}/{method}`.
#[derive(Clone)]
pub struct Telegram {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The base holds the token.
        f.debug_struct("Telegram").finish_non_exhaustive()
    }
}

impl Telegram {
    /// A client for the bot with `token` at `api_url` (`https://api.telegram.org`).
    pub fn new(api_url: &str, token: &str) -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            base: format!("{}/bot{token}", api_url.trim_end_matches('/')),
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }
}

impl Telegram {
    /// Sends `text` to `chat`, in as many messages as Telegram's length limit needs.
    pub async fn send_text(&self, chat: i64, text: &str) -> Result<(), TelegramError> {
        for part in split(text, MESSAGE_MAX) {
            let params = SendMessageParams::builder()
                .chat_id(chat)
                .text(part)
                .build();
            self.send_message(&params).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl AsyncTelegramApi for Telegram {
    type Error = TelegramError;

    async fn request<Params, Output>(
        &self,
        method: &str,
        params: Option<Params>,
    ) -> Result<Output, Self::Error>
    where
        Params: serde::ser::Serialize + std::fmt::Debug + std::marker::Send,
        Output: serde::de::DeserializeOwned,
    {
        let transport = |e: &dyn std::fmt::Display| TelegramError::Transport(e.to_string());
        let body = match &params {
            Some(p) => serde_json::to_vec(p).map_err(|e| transport(&e))?,
            None => b"{}".to_vec(),
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/{method}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| transport(&e))?;
        let resp = tokio::time::timeout(CALL_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| TelegramError::Transport(format!("no answer within {CALL_TIMEOUT:?}")))?
            // hyper-util's errors do not carry the URL (which holds the token).
            .map_err(|e| match std::error::Error::source(&e) {
                Some(cause) => TelegramError::Transport(format!("{e}: {cause}")),
                None => transport(&e),
            })?;
        let ok = resp.status().is_success();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        if ok {
            // `Output` is the whole `MethodResponse<T>` for every method the trait lists.
            serde_json::from_slice(&bytes).map_err(|e| transport(&e))
        } else {
            let e: ErrorResponse = serde_json::from_slice(&bytes).map_err(|e| transport(&e))?;
            Err(TelegramError::Api {
                code: e.error_code,
                description: e.description,
            })
        }
    }

    async fn request_with_form_data<Params, Output>(
        &self,
        _method: &str,
        _params: Params,
        _files: Vec<(&str, PathBuf)>,
    ) -> Result<Output, Self::Error>
    where
        Params: serde::ser::Serialize + std::fmt::Debug + std::marker::Send,
        Output: serde::de::DeserializeOwned,
    {
        Err(TelegramError::Transport(
            "lintas sends text only; file uploads are not used".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_between_lines_under_the_limit_in_utf16_units() {
        assert_eq!(split("", 10), [""]);
        assert_eq!(split("ab\ncd", 10), ["ab\ncd"]);
        assert_eq!(split("abcd\nefgh\nij", 9), ["abcd\nefgh", "ij"]);
        // 𝔸 is two UTF-16 units: two lines of two and their newline make nine.
        assert_eq!(split("𝔸𝔸\n𝔸𝔸\nx", 8), ["𝔸𝔸", "𝔸𝔸\nx"]);
        assert_eq!(split("𝔸𝔸\n𝔸𝔸\nx", 9), ["𝔸𝔸\n𝔸𝔸", "x"]);
        // A line longer than the limit is cut between characters.
        assert_eq!(split("a\n𝔸𝔸𝔸b", 4), ["a", "𝔸𝔸", "𝔸b"]);
    }
}
