//! The embedded backplane: one node, nothing else to run.
//!
//! - **Streams** are [`SegmentLog`](crate::SegmentLog)s in `data_dir/streams/<name>/`,
//!   durable once an append returns (see `stream`).
//! - **Pub/sub** is an in-process fan-out: only this node's subscribers exist.
//! - **Key/value** is a map in memory whose changes are written to a segment log in
//!   `data_dir/kv/` (`kv`): it survives a restart. Leases live there too.

mod kv;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::fanout::Fanout;
use crate::named::Named;
use crate::{Backplane, BackplaneError, Kind, LogOptions, Stream, StreamOptions, Subscription};

/// How long a lease lasts on one node, where only this process takes leases.
const LEASE: Duration = Duration::from_secs(10);

/// The embedded backplane of one node.
#[derive(Debug)]
pub(crate) struct Embedded {
    data_dir: PathBuf,
    options: LogOptions,
    /// Streams opened so far: a name opened twice is one stream (one writer per log).
    streams: Named<stream::LogStream>,
    kv: kv::Kv,
    fanout: Arc<Fanout>,
}

impl Embedded {
    /// The backplane of `data_dir`; streams open when first asked for.
    pub(crate) fn new(data_dir: &Path, options: LogOptions) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            options,
            streams: Named::default(),
            kv: kv::Kv::new(data_dir.join("kv"), options),
            fanout: Fanout::new(None),
        }
    }

    /// Where stream `name` lives. The relay's stream lived in `data_dir/stream` before
    /// streams had names; such a directory is moved into place (one rename, so the
    /// stream keeps its records and its identity).
    fn stream_dir(&self, name: &str) -> Result<PathBuf, BackplaneError> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(BackplaneError::Config {
                key: "stream",
                message: format!("`{name}` is not a stream name: use letters, digits, - and _"),
            });
        }
        let streams = self.data_dir.join("streams");
        let dir = streams.join(name);
        let legacy = self.data_dir.join("stream");
        if name == "relay" && !dir.exists() && legacy.is_dir() {
            let io = |source| BackplaneError::Io {
                path: legacy.clone(),
                source,
            };
            std::fs::create_dir_all(&streams).map_err(io)?;
            std::fs::rename(&legacy, &dir).map_err(io)?;
            std::fs::File::open(&streams)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            std::fs::File::open(&self.data_dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            tracing::info!(from = %legacy.display(), to = %dir.display(), "moved the relay stream to its named place");
        }
        Ok(dir)
    }
}

#[async_trait]
impl Backplane for Embedded {
    fn kind(&self) -> Kind {
        Kind::Embedded
    }

    fn lease_ttl(&self) -> Duration {
        LEASE
    }

    async fn stream(
        &self,
        name: &str,
        options: StreamOptions,
    ) -> Result<Arc<dyn Stream>, BackplaneError> {
        let opened = self
            .streams
            .get_or_open(name, || async {
                let dir = self.stream_dir(name)?;
                stream::LogStream::open(dir, self.options, options).await
            })
            .await?;
        Ok(opened)
    }

    async fn delete_stream(&self, name: &str) -> Result<bool, BackplaneError> {
        let dir = self.stream_dir(name)?;
        self.streams
            .forget(name, || async {
                tokio::task::spawn_blocking(move || remove_dir(&dir))
                    .await
                    .map_err(|e| BackplaneError::Stopped(e.to_string()))?
            })
            .await
    }

    async fn publish(&self, channel: &str, message: Bytes) -> Result<(), BackplaneError> {
        self.fanout.deliver(channel, &message);
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackplaneError> {
        Ok(self.fanout.add(channel, true).0)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackplaneError> {
        self.kv.get(key).await
    }

    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackplaneError> {
        self.kv.set(key, value, ttl).await
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackplaneError> {
        self.kv.set_if_absent(key, value, ttl).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<bool, BackplaneError> {
        self.kv.compare_and_set(key, expected, new, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool, BackplaneError> {
        self.kv.delete(key).await
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, BackplaneError> {
        self.kv.scan(prefix).await
    }
}

/// Removes the stream directory `dir` and makes its removal durable; false if it was not
/// there.
fn remove_dir(dir: &Path) -> Result<bool, BackplaneError> {
    let io = |source| BackplaneError::Io {
        path: dir.to_owned(),
        source,
    };
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(e)),
    }
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(true)
}
