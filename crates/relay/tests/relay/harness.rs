//! A relay started in-process on ephemeral ports, with its admin routes on a plain listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use configkit::KeyPath;
use http::Method;
use relay::{Relay, RelayConfig};
use service::Service;
use testkit::{HttpClient, PATIENCE, Reply, wait_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The API key every test application uses.
pub const KEY: &str = "test-key-1";

/// A running relay.
pub struct Node {
    pub relay: Arc<Relay>,
    pub ingest: String,
    pub admin: String,
    pub client: HttpClient,
    /// The registry the relay registered its metrics in.
    pub metrics: admin::Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// `[relay]` text with an application `shop` (key [`KEY`]) and ephemeral listen port,
/// followed by `rest` (destinations and routes).
pub fn config(rest: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nretry_min = \"50ms\"\nretry_max = \"500ms\"\nheartbeat = \"200ms\"\n\n{}{rest}",
        application("shop", KEY)
    )
}

/// An application entry with key `key`.
pub fn application(name: &str, key: &str) -> String {
    format!(
        "[[applications]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\n\n",
        relay::keys::to_hex(&relay::keys::hash(key))
    )
}

/// A destination entry.
pub fn destination(name: &str, kind: &str, url: &str) -> String {
    format!("[[destinations]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n\n")
}

/// A route entry for `shop`.
pub fn route(destination: &str, table: &str, op: &str, columns: &str, keys: &str) -> String {
    route_from("shop", destination, table, op, columns, keys)
}

/// A route entry.
pub fn route_from(
    application: &str,
    destination: &str,
    table: &str,
    op: &str,
    columns: &str,
    keys: &str,
) -> String {
    format!(
        "[[routes]]\napplication = \"{application}\"\ndestination = \"{destination}\"\ntable = \"{table}\"\noperation = \"{op}\"\ncolumns = {{ {columns} }}\nkeys = [{keys}]\n\n"
    )
}

/// An SQLite database file in `dir` made with `ddl`; returns its URL.
pub async fn sqlite(dir: &Path, name: &str, ddl: &str) -> String {
    let path: PathBuf = dir.join(name);
    let url = format!("sqlite://{}", path.display());
    let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let pool = sqlx::SqlitePool::connect_with(opts.create_if_missing(true))
        .await
        .unwrap();
    sqlx::raw_sql(ddl).execute(&pool).await.unwrap();
    pool.close().await;
    url
}

/// Rows of an SQLite query, every column as text.
pub async fn sqlite_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}

/// Rows as `[["a", "b"], ...]` with NULL as "NULL", for compact assertions.
pub fn flat(rows: Vec<Vec<Option<String>>>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .collect()
        })
        .collect()
}

impl Node {
    /// Starts a relay with data in `data_dir` and the `[relay]` section `text`.
    pub async fn start(data_dir: &Path, text: &str) -> Self {
        let cfg: RelayConfig = toml::from_str(text).unwrap();
        let mut issues = configkit::Issues::default();
        cfg.validate(&KeyPath::root("relay"), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let deps = service::Deps::new(
            net::Workers::default(),
            tracker.clone(),
            data_dir.to_owned(),
            backplane::open(None, data_dir).await.unwrap(),
        );
        let metrics = deps.metrics.clone();
        let relay = Relay::start(&cfg, deps, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("relay start: {}: {}", e.at, e.message));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        let router = service::Service::routes(&relay);
        let stop = shutdown.clone();
        tracker.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .unwrap();
        });
        Self {
            ingest: format!("http://{}/v1/records", relay.local_addr()),
            relay,
            admin,
            client: HttpClient::new(),
            metrics,
            shutdown,
            tracker,
        }
    }

    /// Stops everything and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(PATIENCE, self.tracker.wait())
            .await
            .expect("the relay stops");
    }

    /// POSTs `body` with the test key.
    pub async fn post(&self, body: &str) -> Reply {
        self.post_with(&[("authorization", &format!("Bearer {KEY}"))], body)
            .await
    }

    /// POSTs `body` with another application's key; expects 202.
    pub async fn ingest_as(&self, key: &str, body: &str) -> Vec<u64> {
        let r = self
            .post_with(&[("authorization", &format!("Bearer {key}"))], body)
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        ids(&r.body)
    }

    /// POSTs `body` with these headers.
    pub async fn post_with(&self, headers: &[(&str, &str)], body: &str) -> Reply {
        self.client
            .send(Method::POST, &self.ingest, headers, body.to_owned())
            .await
            .unwrap()
    }

    /// POSTs and expects 202; returns the ids.
    pub async fn ingest(&self, body: &str) -> Vec<u64> {
        let r = self.post(body).await;
        assert_eq!(r.status, 202, "{}", r.body);
        ids(&r.body)
    }

    /// An admin API call; returns status and JSON body.
    pub async fn admin(&self, method: Method, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.admin_send(method, path, body).await;
        let v = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, v)
    }

    /// An admin API answer as text, for what a JSON parser would round (decimals beyond
    /// `f64`).
    pub async fn admin_text(&self, method: Method, path: &str) -> (u16, String) {
        self.admin_send(method, path, "").await
    }

    async fn admin_send(&self, method: Method, path: &str, body: &str) -> (u16, String) {
        let r = self
            .client
            .send(
                method,
                &format!("{}{path}", self.admin),
                &[("content-type", "application/json")],
                body.to_owned(),
            )
            .await
            .unwrap();
        (r.status, r.body)
    }

    /// The sample lines of `/metrics` that start with `prefix`, sorted.
    pub fn samples(&self, prefix: &str) -> Vec<String> {
        testkit::samples(&self.metrics.encode().unwrap(), prefix)
    }

    /// One past the last record stored.
    pub async fn end(&self) -> u64 {
        self.relay.stream().end().await.unwrap()
    }

    /// Waits until every destination has applied everything stored so far.
    pub async fn wait_delivered(&self) {
        let end = self.end().await;
        wait_until(
            "every destination to apply the stream",
            PATIENCE,
            || async {
                self.relay
                    .statuses()
                    .iter()
                    .all(|s| s.next_offset.is_some_and(|n| n >= end))
            },
        )
        .await;
    }
}

/// The ids of a 202 body.
pub fn ids(body: &str) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect()
}
