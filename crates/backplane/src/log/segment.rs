//! One segment file: records with consecutive offsets from `base`, named `{base:020}.log`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use super::record::{self, Decoded};

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

    /// Opens an existing segment and checks every record. A damaged or partial record at
    /// the very end is what a crash in the middle of a write leaves: when `is_last`, it is
    /// cut off (those records were never acknowledged, since the write had not been synced).
    /// Damage anywhere else is an error.
    pub fn recover(path: PathBuf, base: u64, is_last: bool) -> Result<Self, RecoverError> {
        let bytes = std::fs::read(&path)?;
        let mut state = SegmentState {
            next: base,
            ..SegmentState::default()
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
                }
                Decoded::Record { .. } => {
                    return Err(RecoverError::Corrupt {
                        position: pos as u64,
                        reason: "offsets out of order",
                    });
                }
                Decoded::Incomplete | Decoded::Corrupt(_) if is_last => break,
                Decoded::Incomplete => {
                    return Err(RecoverError::Corrupt {
                        position: pos as u64,
                        reason: "truncated record",
                    });
                }
                Decoded::Corrupt(reason) => {
                    return Err(RecoverError::Corrupt {
                        position: pos as u64,
                        reason,
                    });
                }
            }
        }
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        if pos < bytes.len() {
            tracing::warn!(path = %path.display(), valid = pos, cut = bytes.len() - pos, "cutting an unfinished write off the log's tail");
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        state.len = pos as u64;
        Ok(Self {
            base,
            path,
            file,
            state: RwLock::new(state),
        })
    }

    /// Appends already-encoded records (`first..first + count`) and makes them durable.
    pub fn append(
        &self,
        bytes: &[u8],
        first: u64,
        count: u64,
        positions: &[u64],
    ) -> io::Result<()> {
        (&self.file).write_all(bytes)?;
        self.file.sync_data()?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let at = state.len;
        for (i, rel) in positions.iter().enumerate() {
            let offset = first + i as u64;
            if (offset - self.base).is_multiple_of(INDEX_EVERY) {
                state.index.push((offset, at + rel));
            }
        }
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
                let size = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
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
