//! The embedded durable stream: an append-only log of segment files with group commit.
//!
//! Why our own log rather than SQLite or redb: the stream is append-then-read-in-order and
//! trimmed from the front, which a log does with one sequential write and one `fdatasync`
//! per batch and a file deletion per trimmed segment; a B-tree store pays page writes,
//! a journal and compaction for ordering it does not need.
//!
//! - **Durability.** [`SegmentLog::append`] returns only after the records are synced. One
//!   writer thread takes every append that is waiting, writes them in one write and syncs
//!   once for all (group commit), so concurrent producers share the cost of a sync.
//! - **Crash safety.** Every record carries a CRC32 of its offset and payload. On open the
//!   segments are checked; a partial or damaged record at the very end of the last segment is
//!   what a crash during a write leaves, and since that write was never synced it was never
//!   acknowledged: it is cut off. Damage anywhere else stops the open with an error naming the
//!   file and byte.
//! - **Reading** goes through a sparse in-memory index (one position per 256 records) and
//!   positional reads, so readers never block the writer. [`SegmentLog::subscribe`] wakes
//!   readers when the durable end moves.
//! - **Idempotency marks.** An append may carry a [`Mark`] (its idempotency key): it is
//!   written just before the append's records, in the same write and sync, and comes back
//!   from [`SegmentLog::open_with_marks`]; recovery cuts a keyed append whose records did not
//!   all make it, mark included.
//! - **Trimming** deletes whole segments whose records are all below the given offset and
//!   whose marks are all older than the given time.

mod record;
mod segment;

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

pub use record::{MAX_RECORD, Mark};
use segment::{RecoverError, Segment};

/// Appends waiting for the writer; beyond this, appending waits (back-pressure).
const QUEUE: usize = 4096;

/// Bytes the writer puts in one write (and one sync) at most.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Tuning of a log.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// A segment that reaches this size is closed and a new one started.
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A segment is damaged somewhere other than its tail.
    #[error(
        "{path}: damaged at byte {position} ({reason}); restore the file or move it away to start from the next segment"
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where.
        position: u64,
        /// What was found.
        reason: &'static str,
    },
    /// A record over [`MAX_RECORD`] bytes.
    #[error("record of {size} bytes is over the {MAX_RECORD}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// An earlier write failed: the log refuses further appends rather than risk a gap.
    #[error("the log stopped accepting appends after a write failed: {0}")]
    Failed(String),
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its offset: consecutive from 0 over the log's whole life.
    pub offset: u64,
    /// What was appended.
    pub payload: Bytes,
}

struct Append {
    payloads: Vec<Bytes>,
    /// The append's idempotency key; with no payloads, a key recorded for records already
    /// in the log (see [`SegmentLog::remember`]), else its `first` is set by the writer.
    mark: Option<Mark>,
    reply: oneshot::Sender<Result<Range<u64>, LogError>>,
}

/// State shared by the handle, the writer thread and readers.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: LogOptions,
    /// Segments by base offset.
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// One past the last durable offset.
    durable: watch::Sender<u64>,
}

/// A durable, append-only stream of records in a directory.
#[derive(Debug, Clone)]
pub struct SegmentLog {
    shared: Arc<Shared>,
    appends: mpsc::Sender<Append>,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append")
            .field("records", &self.payloads.len())
            .finish()
    }
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, checking and repairing it as described in the
    /// module documentation. Blocking: call it at start-up or from `spawn_blocking`.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Self, LogError> {
        Self::open_with_marks(dir, options).map(|(log, _)| log)
    }

    /// [`SegmentLog::open`], also returning the idempotency marks the log holds, oldest
    /// first.
    pub fn open_with_marks(dir: &Path, options: LogOptions) -> Result<(Self, Vec<Mark>), LogError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LogError::Io { path, source }
        };
        // Private to lintas's user: records are whatever producers sent.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut marks = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment::file_name(base));
            let (seg, found) = Segment::recover(path.clone(), base, i + 1 == bases.len()).map_err(
                |e| match e {
                    RecoverError::Io(source) => LogError::Io { path, source },
                    RecoverError::Corrupt { position, reason } => LogError::Corrupt {
                        path,
                        position,
                        reason,
                    },
                },
            )?;
            marks.extend(found);
            segments.insert(base, Arc::new(seg));
        }
        if segments.is_empty() {
            let seg = Segment::create(dir, 0).map_err(io_err(dir))?;
            sync_dir(dir).map_err(io_err(dir))?;
            segments.insert(0, Arc::new(seg));
        }
        let next = segments.values().next_back().map_or(0, |s| s.next());
        let (appends, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            options,
            segments: RwLock::new(segments),
            durable: watch::Sender::new(next),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("lintas-log-writer".into())
            .spawn(move || write_loop(&writer, rx))
            .map_err(io_err(dir))?;
        Ok((Self { shared, appends }, marks))
    }

    /// Appends `payloads` as consecutive records; returns their offsets once they are durable.
    pub async fn append(&self, payloads: Vec<Bytes>) -> Result<Range<u64>, LogError> {
        self.send(payloads, None).await
    }

    /// [`SegmentLog::append`] with the append's idempotency key, written in the same sync
    /// (`mark.first` is set to the first offset).
    pub async fn append_marked(
        &self,
        payloads: Vec<Bytes>,
        mark: Mark,
    ) -> Result<Range<u64>, LogError> {
        self.send(payloads, Some(mark)).await
    }

    /// Records `mark` for records already in the log (`mark.first..first + count`, below
    /// [`SegmentLog::end`]): for keys learnt from records written before marks existed.
    pub async fn remember(&self, mark: Mark) -> Result<(), LogError> {
        self.send(Vec::new(), Some(mark)).await.map(|_| ())
    }

    async fn send(&self, payloads: Vec<Bytes>, mark: Option<Mark>) -> Result<Range<u64>, LogError> {
        if let Some(p) = payloads.iter().find(|p| p.len() > MAX_RECORD) {
            return Err(LogError::TooLarge { size: p.len() });
        }
        let (reply, answer) = oneshot::channel();
        let closed = || LogError::Failed("the writer thread has stopped".into());
        self.appends
            .send(Append {
                payloads,
                mark,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// One past the last durable offset.
    pub fn end(&self) -> u64 {
        *self.shared.durable.borrow()
    }

    /// The oldest offset still kept.
    pub fn start(&self) -> u64 {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        segments.keys().next().copied().unwrap_or(0)
    }

    /// Sees [`SegmentLog::end`] move as appends become durable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    /// Reads up to `max_records` durable records from `from` on, stopping early once
    /// `max_bytes` of payload are collected. Reading below [`SegmentLog::start`] starts there.
    pub async fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        let shared = self.shared.clone();
        let task = tokio::task::spawn_blocking(move || shared.read(from, max_records, max_bytes));
        task.await.map_err(|e| LogError::Failed(e.to_string()))?
    }

    /// Deletes the segments whose records are all below `offset` (every consumer has them)
    /// and whose idempotency marks are all older than `marks_since_ms` (their keys
    /// forgotten), oldest first, stopping at the first segment that must stay; returns how
    /// many were deleted. The segment being written is never deleted.
    pub fn trim_before(&self, offset: u64, marks_since_ms: u64) -> Result<usize, LogError> {
        let doomed: Vec<Arc<Segment>> = {
            let mut segments = self
                .shared
                .segments
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let last = segments.keys().next_back().copied().unwrap_or(0);
            let bases: Vec<u64> = segments
                .iter()
                .take_while(|(base, seg)| {
                    **base != last && seg.next() <= offset && seg.newest_mark_ms() < marks_since_ms
                })
                .map(|(base, _)| *base)
                .collect();
            bases.iter().filter_map(|b| segments.remove(b)).collect()
        };
        for seg in &doomed {
            std::fs::remove_file(&seg.path).map_err(|source| LogError::Io {
                path: seg.path.clone(),
                source,
            })?;
        }
        Ok(doomed.len())
    }
}

impl Shared {
    fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        let durable = *self.durable.borrow();
        let segments: Vec<Arc<Segment>> = {
            let all = self.segments.read().unwrap_or_else(|e| e.into_inner());
            let first = all.range(..=from).next_back().map(|(b, _)| *b).unwrap_or(0);
            all.range(first..).map(|(_, s)| s.clone()).collect()
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for seg in segments {
            if out.len() >= max_records || bytes >= max_bytes {
                break;
            }
            let records = seg
                .read(
                    from.max(seg.base),
                    max_records - out.len(),
                    max_bytes - bytes,
                )
                .map_err(|source| LogError::Io {
                    path: seg.path.clone(),
                    source,
                })?;
            for (offset, payload) in records {
                if offset >= durable {
                    return Ok(out);
                }
                bytes += payload.len();
                out.push(Entry {
                    offset,
                    payload: Bytes::from(payload),
                });
            }
        }
        Ok(out)
    }
}

/// The writer thread: group commit until every handle is dropped.
fn write_loop(shared: &Shared, mut rx: mpsc::Receiver<Append>) {
    let mut failed: Option<String> = None;
    let mut buf = Vec::new();
    let mut positions = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let mut size: usize = batch[0].payloads.iter().map(Bytes::len).sum();
        while size < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(a) => {
                    size += a.payloads.iter().map(Bytes::len).sum::<usize>();
                    batch.push(a);
                }
                Err(_) => break,
            }
        }
        if let Some(why) = &failed {
            for a in batch {
                let _ = a.reply.send(Err(LogError::Failed(why.clone())));
            }
            continue;
        }
        match write_batch(shared, &batch, &mut buf, &mut positions) {
            Ok(ranges) => {
                if let Some(end) = ranges.last().map(|r| r.end) {
                    shared.durable.send_replace(end);
                }
                for (a, range) in batch.into_iter().zip(ranges) {
                    let _ = a.reply.send(Ok(range));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "log write failed; refusing further appends");
                let why = e.to_string();
                for a in batch {
                    let _ = a.reply.send(Err(LogError::Failed(why.clone())));
                }
                failed = Some(why);
            }
        }
    }
}

/// Encodes, writes and syncs one batch; rolls to a new segment first when the current one
/// is full.
fn write_batch(
    shared: &Shared,
    batch: &[Append],
    buf: &mut Vec<u8>,
    positions: &mut Vec<(u64, u64)>,
) -> Result<Vec<Range<u64>>, LogError> {
    let mut current = {
        let segments = shared.segments.read().unwrap_or_else(|e| e.into_inner());
        segments
            .values()
            .next_back()
            .cloned()
            .ok_or_else(|| LogError::Failed("no segment".into()))?
    };
    if current.len() >= shared.options.segment_bytes {
        let seg = Arc::new(
            Segment::create(&shared.dir, current.next()).map_err(|source| LogError::Io {
                path: shared.dir.clone(),
                source,
            })?,
        );
        sync_dir(&shared.dir).map_err(|source| LogError::Io {
            path: shared.dir.clone(),
            source,
        })?;
        shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seg.base, seg.clone());
        current = seg;
    }
    buf.clear();
    positions.clear();
    let first = current.next();
    let mut next = first;
    let mut newest_mark_ms = 0;
    let mut ranges = Vec::with_capacity(batch.len());
    for a in batch {
        let start = next;
        if let Some(mark) = &a.mark {
            newest_mark_ms = newest_mark_ms.max(mark.at_ms);
            let covers = if a.payloads.is_empty() {
                (mark.first, mark.count)
            } else {
                (next, a.payloads.len() as u32)
            };
            record::encode_mark(buf, next, mark, covers);
        }
        for p in &a.payloads {
            positions.push((next, buf.len() as u64));
            record::encode(buf, next, p);
            next += 1;
        }
        ranges.push(start..next);
    }
    current
        .append(buf, first, next - first, positions, newest_mark_ms)
        .map_err(|source| LogError::Io {
            path: current.path.clone(),
            source,
        })?;
    Ok(ranges)
}

/// Makes a created or deleted file's directory entry durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
