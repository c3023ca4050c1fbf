//! A backend to run a property against: embedded in a scratch directory, or Redis under a
//! prefix no other test uses (so tests run in parallel), reopenable to see what survives.

use std::sync::Arc;
use std::time::Duration;

use backplane::{Backplane, BackplaneConfig, LogOptions, Stream, StreamOptions, Subscription};
use bytes::Bytes;
use testkit::{PATIENCE, TempDir};

/// The machine's Redis (override with `LINTAS_TEST_REDIS`).
pub fn redis_url() -> String {
    std::env::var("LINTAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Where a property runs.
pub enum Backend {
    /// Every append its own segment, so trimming deletes exactly what it may.
    Embedded(TempDir),
    /// Under `prefix` on the Redis at `url`.
    Redis {
        /// The URL.
        url: String,
        /// The test's own prefix.
        prefix: String,
    },
}

/// Idempotency keys remembered for an hour: longer than any test.
pub const WINDOW: Duration = Duration::from_secs(3600);

impl Backend {
    /// A fresh embedded backend.
    pub fn embedded() -> Self {
        Self::Embedded(TempDir::new())
    }

    /// A fresh Redis backend for test `tag`.
    pub fn redis(tag: &str) -> Self {
        Self::redis_at(&redis_url(), tag)
    }

    /// A fresh backend for test `tag` on the Redis at `url`.
    pub fn redis_at(url: &str, tag: &str) -> Self {
        Self::Redis {
            url: url.to_owned(),
            prefix: format!(
                "lintas-test-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ),
        }
    }

    /// The configuration of the Redis form.
    pub fn config(&self) -> Option<BackplaneConfig> {
        match self {
            Self::Embedded(_) => None,
            Self::Redis { url, prefix } => Some(BackplaneConfig {
                redis: url.clone(),
                password_env: None,
                tls_ca_file: None,
                prefix: prefix.clone(),
                lease: Duration::from_secs(10),
            }),
        }
    }

    /// Opens the backplane (again): what a restarted node sees.
    pub async fn open(&self) -> Arc<dyn Backplane> {
        match self {
            Self::Embedded(dir) => {
                backplane::open_embedded(dir.path(), LogOptions { segment_bytes: 1 }).unwrap()
            }
            Self::Redis { .. } => {
                backplane::open(self.config().as_ref(), std::path::Path::new("/nonexistent"))
                    .await
                    .expect("the tests need Redis (scripts/test starts it)")
            }
        }
    }

    /// Deletes everything the backend stored: what "the stream was recreated" means.
    pub async fn wipe(&self) {
        match self {
            Self::Embedded(dir) => {
                let _ = std::fs::remove_dir_all(dir.path().join("streams"));
            }
            Self::Redis { url, prefix } => {
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let keys: Vec<String> =
                    redis::AsyncCommands::keys(&mut conn, format!("{prefix}:*"))
                        .await
                        .unwrap();
                if !keys.is_empty() {
                    let _: () = redis::AsyncCommands::del(&mut conn, keys).await.unwrap();
                }
            }
        }
    }
}

/// The stream `name` with keys remembered for [`WINDOW`].
pub async fn stream(bp: &Arc<dyn Backplane>, name: &str) -> Arc<dyn Stream> {
    bp.stream(
        name,
        StreamOptions {
            idempotency_window: WINDOW,
            legacy_keys: None,
        },
    )
    .await
    .unwrap()
}

/// `record-{i}`.
pub fn rec(i: u64) -> Bytes {
    Bytes::from(format!("record-{i}"))
}

/// The next message of `sub`, or a panic naming `what` after [`PATIENCE`].
pub async fn next_message(sub: &mut Subscription, what: &str) -> Bytes {
    tokio::time::timeout(PATIENCE, sub.recv())
        .await
        .unwrap_or_else(|_| panic!("no message {what} within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("the subscription ended before {what}"))
}
