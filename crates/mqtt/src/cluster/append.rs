//! Appending batches to one backplane stream until they are stored: what the links to
//! other nodes' inboxes and this node's journal both do.
//!
//! Each batch is one append with an idempotency key made of this node's name, the
//! stream's name and the batch's number, so an append retried after a lost reply (Redis
//! restarted, the connection broke) stores once. A retryable error is retried with a
//! backoff up to 1 s until the node shuts down; any other (a record too large for the
//! backend) drops the batch.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use backplane::{Backplane, BackplaneError, IdempotencyKey, Stream, StreamOptions};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Appended {
    /// Stored, the first record at this offset.
    Stored(u64),
    /// Not storable: dropped.
    Refused,
    /// The node shuts down.
    Stopped,
}

/// Appends to the stream `name` for `node`.
pub(super) struct Appender {
    backplane: Arc<dyn Backplane>,
    node: Arc<str>,
    name: String,
    options: StreamOptions,
    /// The stream, once opened.
    stream: Option<Arc<dyn Stream>>,
    /// Batches appended so far: the idempotency key's number.
    batches: u64,
}

impl Appender {
    /// An appender of `node` to stream `name`, opened with `options` on first use.
    pub(super) fn new(
        backplane: Arc<dyn Backplane>,
        node: Arc<str>,
        name: String,
        options: StreamOptions,
    ) -> Self {
        Self {
            backplane,
            node,
            name,
            options,
            stream: None,
            batches: 0,
        }
    }

    /// The stream, if it was opened.
    pub(super) fn stream(&self) -> Option<&Arc<dyn Stream>> {
        self.stream.as_ref()
    }

    /// Appends `records`, retrying while the backplane is unavailable.
    pub(super) async fn append(
        &mut self,
        records: Vec<Bytes>,
        stop: &CancellationToken,
    ) -> Appended {
        let mut hasher = DefaultHasher::new();
        records.hash(&mut hasher);
        let key = IdempotencyKey {
            key: format!("{}:{}:{}", self.node, self.name, self.batches),
            body_hash: hasher.finish(),
        };
        self.batches += 1;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.try_append(&records, &key).await {
                Ok(first) => return Appended::Stored(first),
                Err(e) if e.retryable() => {
                    warn!(stream = %self.name, error = %e, "cannot append yet; retrying");
                }
                Err(e) => {
                    tracing::error!(stream = %self.name, error = %e, dropped = records.len(), "records refused by the backplane");
                    return Appended::Refused;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Appended::Stopped,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn try_append(
        &mut self,
        records: &[Bytes],
        key: &IdempotencyKey,
    ) -> Result<u64, BackplaneError> {
        let stream = match &self.stream {
            Some(s) => s.clone(),
            None => {
                let s = self.backplane.stream(&self.name, self.options).await?;
                self.stream = Some(s.clone());
                s
            }
        };
        let appended = stream.append(records.to_vec(), Some(key.clone())).await?;
        Ok(appended.offsets.start)
    }
}
