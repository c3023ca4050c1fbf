//! A client for the admin listener: basic auth on every call, answers read as JSON.
//!
//! The admin shell's tests and every service's admin-route tests talk to a listener the same
//! way, so the client is written once.

use base64::Engine;
use http::Method;

use crate::{HttpClient, Reply};

/// The `Authorization` value for basic auth.
pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Calls an admin listener at `base` (`http://127.0.0.1:port`) as one user.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// Where the listener is, for tests that open their own connections.
    pub base: String,
    /// The basic-auth header every [`AdminClient::call`] sends.
    authorization: String,
    /// Keeps connections alive between calls, as a browser or a script would.
    client: HttpClient,
}

impl AdminClient {
    /// A client for `base` that logs in as `user` with `password`.
    pub fn new(base: String, user: &str, password: &str) -> Self {
        Self {
            base,
            authorization: basic(user, password),
            client: HttpClient::new(),
        }
    }

    /// An authenticated request; panics on transport errors.
    pub async fn call(&self, method: Method, path: &str, body: &str) -> Reply {
        self.send(
            method,
            path,
            &[("authorization", &self.authorization)],
            body,
        )
        .await
    }

    /// A request with exactly `headers` (none added); panics on transport errors.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        self.client
            .send(method, &url, headers, body.to_string())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// An authenticated `GET`.
    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, "").await
    }

    /// An authenticated request whose answer must be JSON: (status, body).
    pub async fn json(&self, method: Method, path: &str, body: &str) -> (u16, serde_json::Value) {
        let r = self.call(method, path, body).await;
        assert_eq!(
            r.header("content-type"),
            "application/json",
            "{path}: {}",
            r.body
        );
        let v = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body));
        (r.status, v)
    }
}
