//! An embedded stream: a [`SegmentLog`] with its idempotency keys, consumer groups and
//! identity.
//!
//! - **Idempotency.** A keyed append writes its key as a mark in the same write and sync
//!   as its records (see `log`), and the in-memory [`Keys`] index is rebuilt from the marks
//!   on open. The write runs on a task of its own, which also settles the key, so a caller
//!   that gives up mid-append can neither leave records without their key remembered nor
//!   the key pending forever.
//! - **Groups** are positions in memory: the acknowledged floor of each group, used by
//!   [`Stream::trim`]. After a restart a group starts where its consumer says (`from`),
//!   which for the relay is the offset its destination committed.
//! - **Identity** is the `ID` file, made with the stream.
//! - **Format.** `FORMAT` (holding `2`) says the keys are kept as marks. A stream without
//!   it was written when the relay kept its keys inside its records: on the first open the
//!   keys still in the window are read from the records ([`StreamOptions::legacy_keys`])
//!   and written as marks, then `FORMAT` is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::idempotency::{Claim, Keys, Stored, now_ms};
use crate::log::{Entry, LogOptions, Mark, SegmentLog};
use crate::{Appended, BackplaneError, Feed, IdempotencyKey, Stream, StreamOptions};

/// Most payload bytes one read returns.
const READ_BYTES: usize = 8 * 1024 * 1024;

/// What `FORMAT` holds once keys are kept as marks.
const FORMAT: &str = "2";

/// One embedded stream.
#[derive(Debug)]
pub(crate) struct LogStream {
    id: String,
    log: SegmentLog,
    keys: Keys,
    /// Each group's acknowledged floor: everything below it is done with.
    groups: Arc<Mutex<HashMap<String, u64>>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackplaneError + '_ {
    move |source| BackplaneError::Io {
        path: path.to_owned(),
        source,
    }
}

impl LogStream {
    /// Opens (or creates) the stream in `dir`.
    pub(crate) async fn open(
        dir: PathBuf,
        log_options: LogOptions,
        options: StreamOptions,
    ) -> Result<Self, BackplaneError> {
        let opened = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                let (log, marks) = SegmentLog::open_with_marks(&dir, log_options)?;
                let id = stream_id(&dir)?;
                Ok::<_, BackplaneError>((log, marks, id))
            })
            .await
            .map_err(|e| BackplaneError::Stopped(e.to_string()))??
        };
        let (log, marks, id) = opened;
        let keys = Keys::new(options.idempotency_window);
        for m in &marks {
            keys.learn(m);
        }
        let stream = Self {
            id,
            log,
            keys,
            groups: Arc::new(Mutex::new(HashMap::new())),
        };
        let format = dir.join("FORMAT");
        if !format.exists() {
            // A stream without FORMAT and without records is new: nothing to carry over.
            if let Some(legacy) = options.legacy_keys.filter(|_| stream.log.end() > 0) {
                let carried = stream.carry_legacy_keys(legacy).await?;
                tracing::info!(
                    keys = carried,
                    "idempotency keys carried over from the records of an older stream"
                );
            }
            write_durably(&dir, "FORMAT", FORMAT).map_err(io(&format))?;
        }
        tracing::info!(
            dir = %dir.display(),
            end = stream.log.end(),
            idempotency_keys = marks.len(),
            "stream opened"
        );
        Ok(stream)
    }

    /// Reads the keys of the window from records written before marks existed, and
    /// writes them as marks (concurrently, so they share syncs).
    async fn carry_legacy_keys(&self, legacy: crate::LegacyKeys) -> Result<usize, BackplaneError> {
        let cutoff = self.keys.cutoff_ms();
        let mut at = self.log.start();
        let end = self.log.end();
        let mut marks = Vec::new();
        while at < end {
            let entries = self.log.read(at, 10_000, READ_BYTES).await?;
            let Some(last) = entries.last() else { break };
            at = last.offset + 1;
            for e in &entries {
                if let Some((key, count, body_hash, at_ms)) = legacy(&e.payload)
                    && at_ms >= cutoff
                {
                    marks.push(Mark {
                        key,
                        first: e.offset,
                        count,
                        body_hash,
                        at_ms,
                    });
                }
            }
        }
        let n = marks.len();
        let writes = marks.iter().map(|m| self.log.remember(m.clone()));
        for r in futures_util::future::join_all(writes).await {
            r?;
        }
        for m in &marks {
            self.keys.learn(m);
        }
        Ok(n)
    }
}

/// 16 random bytes in hex.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stream's identity, from `ID` in `dir`, made with the stream.
fn stream_id(dir: &Path) -> Result<String, BackplaneError> {
    let path = dir.join("ID");
    match std::fs::read_to_string(&path) {
        Ok(id) => return Ok(id.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
        Err(_) => {}
    }
    let id = random_id();
    write_durably(dir, "ID", &id).map_err(io(&path))?;
    Ok(id)
}

/// Writes `dir/name` so that it is either absent or whole after a crash.
fn write_durably(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl Stream for LogStream {
    fn id(&self) -> &str {
        &self.id
    }

    async fn append(
        &self,
        records: Vec<Bytes>,
        key: Option<IdempotencyKey>,
    ) -> Result<Appended, BackplaneError> {
        let Some(IdempotencyKey { key, body_hash }) = key else {
            let offsets = self.log.append(records).await?;
            return Ok(Appended {
                offsets,
                replayed: false,
            });
        };
        match self.keys.claim(&key).await {
            Claim::Done(stored) if stored.body_hash != body_hash => Err(BackplaneError::KeyReused),
            Claim::Done(stored) => Ok(Appended {
                offsets: stored.first..stored.first + u64::from(stored.count),
                replayed: true,
            }),
            Claim::Mine => {
                let (log, keys, mine) = (self.log.clone(), self.keys.clone(), key.clone());
                let write = tokio::spawn(async move {
                    let count = records.len() as u32;
                    let at_ms = now_ms();
                    let mark = Mark {
                        key: mine,
                        first: 0,
                        count,
                        body_hash,
                        at_ms,
                    };
                    let appended = log.append_marked(records, mark.clone()).await;
                    match &appended {
                        Ok(offsets) => keys.complete(
                            &mark.key,
                            Stored {
                                first: offsets.start,
                                count,
                                body_hash,
                                at_ms,
                            },
                        ),
                        Err(_) => keys.release(&mark.key),
                    }
                    appended
                });
                match write.await {
                    Ok(r) => Ok(Appended {
                        offsets: r?,
                        replayed: false,
                    }),
                    Err(e) => {
                        // The task died before settling the key.
                        self.keys.release(&key);
                        Err(BackplaneError::Stopped(e.to_string()))
                    }
                }
            }
        }
    }

    async fn end(&self) -> Result<u64, BackplaneError> {
        Ok(self.log.end())
    }

    async fn read(&self, from: u64, max: usize) -> Result<Vec<Entry>, BackplaneError> {
        Ok(self.log.read(from, max, READ_BYTES).await?)
    }

    async fn feed(
        &self,
        group: &str,
        _consumer: &str,
        from: u64,
    ) -> Result<Box<dyn Feed>, BackplaneError> {
        let next = *self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(group.to_owned())
            .or_insert(from);
        Ok(Box::new(LogFeed {
            log: self.log.clone(),
            groups: self.groups.clone(),
            group: group.to_owned(),
            next,
            durable: self.log.subscribe(),
        }))
    }

    async fn trim(&self, groups: &[String], below: u64) -> Result<Option<u64>, BackplaneError> {
        self.keys.prune();
        let floor = {
            let floors = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            groups
                .iter()
                .map(|g| floors.get(g).copied())
                .try_fold(below, |min, f| f.map(|f| min.min(f)))
        };
        let Some(floor) = floor.filter(|_| !groups.is_empty()) else {
            return Ok(None);
        };
        let log = self.log.clone();
        let cutoff = self.keys.cutoff_ms();
        tokio::task::spawn_blocking(move || log.trim_before(floor, cutoff))
            .await
            .map_err(|e| BackplaneError::Stopped(e.to_string()))??;
        Ok(Some(floor))
    }

    async fn truncate(&self, below: u64) -> Result<(), BackplaneError> {
        self.keys.prune();
        let log = self.log.clone();
        let cutoff = self.keys.cutoff_ms();
        tokio::task::spawn_blocking(move || log.trim_before(below, cutoff))
            .await
            .map_err(|e| BackplaneError::Stopped(e.to_string()))??;
        Ok(())
    }
}

/// A group's feed on the embedded log: a position, woken when appends become durable.
struct LogFeed {
    log: SegmentLog,
    groups: Arc<Mutex<HashMap<String, u64>>>,
    group: String,
    next: u64,
    durable: watch::Receiver<u64>,
}

impl LogFeed {
    fn set_floor(&self, f: impl FnOnce(u64) -> u64) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(floor) = groups.get_mut(&self.group) {
            *floor = f(*floor);
        }
    }
}

#[async_trait]
impl Feed for LogFeed {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Entry>, BackplaneError> {
        let read = self.log.read(self.next, max, READ_BYTES).await?;
        if let Some(last) = read.last() {
            self.next = last.offset + 1;
            return Ok(read);
        }
        self.durable.borrow_and_update();
        if self.log.end() > self.next {
            return Ok(Vec::new());
        }
        let _ = tokio::time::timeout(wait, self.durable.changed()).await;
        Ok(Vec::new())
    }

    async fn ack(&mut self, next: u64, _offsets: &[u64]) -> Result<(), BackplaneError> {
        self.next = self.next.max(next);
        self.set_floor(|floor| floor.max(next));
        Ok(())
    }

    fn rewind(&mut self, next: u64) {
        self.next = next;
        self.set_floor(|floor| floor.min(next));
    }
}
