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

    /// Logs in through `POST /login` as a browser does; panics unless the listener opens a
    /// session. For tests of what a session (rather than basic auth) may do.
    pub async fn log_in(&self, user: &str, password: &str) -> Session {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        let r = self
            .send(
                Method::POST,
                "/login",
                &[("content-type", "application/json")],
                &body,
            )
            .await;
        assert_eq!(r.status, 200, "POST /login: {}", r.body);
        let set_cookie = r.header("set-cookie").to_owned();
        let cookie = set_cookie.split(';').next().unwrap_or_default().to_owned();
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("the login answer is JSON");
        Session {
            cookie,
            csrf: v["csrf"].as_str().expect("a CSRF token").to_owned(),
            user: v["user"].as_str().expect("the user").to_owned(),
            set_cookie,
        }
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

/// A browser's session on an admin listener, from [`AdminClient::log_in`].
#[derive(Debug, Clone)]
pub struct Session {
    /// `lintas_session=...`, as a `Cookie` header sends it.
    pub cookie: String,
    /// The token its changes carry (`X-CSRF-Token`, or a form's `csrf` field).
    pub csrf: String,
    /// The user the login answer names.
    pub user: String,
    /// The whole `Set-Cookie` value, attributes included, for tests of the cookie itself.
    pub set_cookie: String,
}
