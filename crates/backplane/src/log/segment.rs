//! One segment file: records with consecutive offsets from `base`, named `{base:020}.log`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use super::record::{self, Decoded, Mark};

/// A position kept for every this many records, so a read seeks close to its offset.
const INDEX_EVERY: u64 = 256;

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 256 * 1024;

/// A segment with its sparse offset → position index.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of its first record.
    pub base: u64,
    /// Its file.
    pub path: PathBuf,
    /// Opened for appending (the last segment) and reading.
    pub file: File,
    /// What changes as records are appended.
    pub state: RwLock<SegmentState>,
}

/// The part of a segment the writer moves forward.
#[derive(Debug, Default)]
pub(crate) struct SegmentState {
    /// One past the last record's offset.
    pub next: u64,
    /// Bytes of valid records.
    pub len: u64,
    /// `(offset, position)` of every `INDEX_EVERY`-th record.
    pub index: Vec<(u64, u64)>,
    /// When its newest idempotency mark was written (ms since the Unix epoch; 0 for none):
    /// the segment is kept while that key is remembered.
    pub newest_mark_ms: u64,
}

/// Why a segment could not be recovered.
#[derive(Debug)]
pub(crate) enum RecoverError {
    /// Reading or truncating failed.
    Io(io::Error),
    /// A damaged record that is not at the tail, or an out-of-order offset.
    Corrupt { position: u64, reason: &'static str },
}

impl From<io::Error> for RecoverError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}.log")
}

impl Segment {
    /// Creates an empty segment starting at `base`.
    pub fn create(dir: &Path, base: u64) -> io::Result<Self> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            base,
            path,
            file,
            state: RwLock::new(SegmentState {
                next: base,
                ..SegmentState::default()
            }),
        })
    }

    /// Opens an existing segment and checks every record; returns it with the idempotency
    /// marks it holds. A damaged or partial record at the very end is what a crash in the
    /// middle of a write leaves: when `is_last`, it is cut off (those records were never
    /// acknowledged, since the write had not been synced), and with it a keyed append whose
    /// records did not all make it, mark included, so a key never survives without its
    /// records nor records without their key. Damage anywhere else is an error.
    pub fn recover(
        path: PathBuf,
        base: u64,
        is_last: bool,
    ) -> Result<(Self, Vec<Mark>), RecoverError> {
        let bytes = std::fs::read(&path)?;
        let mut state = SegmentState {
            next: base,
            ..SegmentState::default()
        };
        let mut marks = Vec::new();
        // A keyed append being read: where its mark starts and how many records are owed.
        let mut open_append: Option<(usize, u32)> = None;
        let corrupt = |position: usize, reason| RecoverError::Corrupt {
            position: position as u64,
            reason,
        };
        let mut pos = 0;
        while pos < bytes.len() {
            match record::decode(&bytes, pos) {
                Decoded::Record { offset, end, .. } if offset == state.next => {
                    if (offset - base).is_multiple_of(INDEX_EVERY) {
                        state.index.push((offset, pos as u64));
                    }
                    state.next += 1;
                    pos = end;
                    if let Some((at, owed)) = open_append {
                        open_append = (owed > 1).then_some((at, owed - 1));
                    }
                }
                Decoded::Mark { at, mark, end } if at == state.next && open_append.is_none() => {
                    if mark.first == at && mark.count > 0 {
                        open_append = Some((pos, mark.count));
                    } else if mark.first.saturating_add(u64::from(mark.count)) > at {
                        return Err(corrupt(pos, "idempotency mark out of place"));
                    }
                    state.newest_mark_ms = state.newest_mark_ms.max(mark.at_ms);
                    marks.push(mark);
                    pos = end;
                }
                Decoded::Record { .. } | Decoded::Mark { .. } => {
                    return Err(corrupt(pos, "offsets out of order"));
                }
                Decoded::Incomplete | Decoded::Corrupt(_) if is_last => break,
                Decoded::Incomplete => return Err(corrupt(pos, "truncated record")),
                Decoded::Corrupt(reason) => return Err(corrupt(pos, reason)),
            }
        }
        let mut valid = pos;
        if let Some((at, _)) = open_append {
            if !is_last {
                return Err(corrupt(at, "records of a keyed append are missing"));
            }
            let cut = marks.pop().map_or(state.next, |m| m.first);
            state.next = cut;
            state.index.retain(|&(o, _)| o < cut);
            state.newest_mark_ms = marks.iter().map(|m| m.at_ms).max().unwrap_or(0);
            valid = at;
        }
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), valid, cut = bytes.len() - valid, "cutting an unfinished write off the log's tail");
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        state.len = valid as u64;
        Ok((
            Self {
                base,
                path,
                file,
                state: RwLock::new(state),
            },
            marks,
        ))
    }

    /// Appends already-encoded records (`first..first + count`, with the marks written
    /// among them, the newest of `newest_mark_ms`) and makes them durable.
    pub fn append(
        &self,
        bytes: &[u8],
        first: u64,
        count: u64,
        positions: &[(u64, u64)],
        newest_mark_ms: u64,
    ) -> io::Result<()> {
        (&self.file).write_all(bytes)?;
        self.file.sync_data()?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let at = state.len;
        for &(offset, rel) in positions {
            if (offset - self.base).is_multiple_of(INDEX_EVERY) {
                state.index.push((offset, at + rel));
            }
        }
        state.newest_mark_ms = state.newest_mark_ms.max(newest_mark_ms);
        state.next = first + count;
        state.len += bytes.len() as u64;
        Ok(())
    }

    /// One past the last offset.
    pub fn next(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).next
    }

    /// Bytes of valid records.
    pub fn len(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).len
    }

    /// When its newest idempotency mark was written (0 for none).
    pub fn newest_mark_ms(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .newest_mark_ms
    }

    /// Reads records from `from` on: at most `max_records`, and stops once `max_bytes` of
    /// payload are collected (at least one record is returned if any is there).
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let (mut pos, len) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if from >= state.next {
                return Ok(Vec::new());
            }
            let i = state.index.partition_point(|&(o, _)| o <= from);
            (if i == 0 { 0 } else { state.index[i - 1].1 }, state.len)
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut buf = Vec::new();
        while pos < len && out.len() < max_records && bytes < max_bytes {
            let chunk = ((len - pos) as usize).min(READ_CHUNK.max(max_bytes));
            buf.resize(chunk, 0);
            self.file.read_exact_at(&mut buf, pos)?;
            if let Decoded::Incomplete = record::decode(&buf, 0) {
                // One record larger than the chunk: read exactly it.
                let size = record::announced_len(&buf, 0).unwrap_or(0);
                buf.resize(record::HEADER + size.min(record::MAX_RECORD), 0);
                self.file.read_exact_at(&mut buf, pos)?;
            }
            let mut at = 0;
            while out.len() < max_records && bytes < max_bytes {
                match record::decode(&buf, at) {
                    Decoded::Record { offset, start, end } => {
                        if offset >= from {
                            bytes += end - start;
                            out.push((offset, buf[start..end].to_vec()));
                        }
                        at = end;
                    }
                    Decoded::Mark { end, .. } => at = end,
                    Decoded::Incomplete => break,
                    Decoded::Corrupt(reason) => {
                        let at = pos + at as u64;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{} at byte {at}: {reason}", self.path.display()),
                        ));
                    }
                }
            }
            pos += at as u64;
        }
        Ok(out)
    }
}
