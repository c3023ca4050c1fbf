//! Bodies, forwarded byte for byte in the framing they arrive in.
//!
//! lintas does not re-encode bodies: a chunked body goes out chunked, a sized one sized. It
//! only has to know where a body *ends*, so that the next message on a kept-alive connection
//! starts at the right byte; [`Progress`] tracks that as bytes pass (chunk sizes are read
//! with `httparse::parse_chunk_size`).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::head::BodyLen;

/// Bytes read from a socket at a time while a body streams.
const READ_CHUNK: usize = 16 * 1024;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Where a body stands.
#[derive(Debug)]
pub(crate) enum Progress {
    /// This many bytes still to come.
    Length(u64),
    /// A chunked body, somewhere in its framing.
    Chunked(Chunk),
    /// Everything until the sender closes.
    UntilClose,
    /// The body has ended.
    Done,
}

/// Position inside chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data; this many bytes of it left.
    DataEnd(u8),
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// Why a body could not be forwarded.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Reading from the sender failed.
    Read(io::Error),
    /// Writing to the receiver failed.
    Write(io::Error),
    /// The sender closed before the body's end.
    Truncated,
    /// The chunked framing is broken.
    Malformed(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(e) => write!(f, "reading the body failed: {e}"),
            Self::Write(e) => write!(f, "writing the body failed: {e}"),
            Self::Truncated => f.write_str("the sender closed before the end of the body"),
            Self::Malformed(why) => write!(f, "broken chunked framing: {why}"),
        }
    }
}

impl Progress {
    /// Progress of a body about to start.
    pub fn new(len: BodyLen) -> Self {
        match len {
            BodyLen::None | BodyLen::Length(0) => Self::Done,
            BodyLen::Length(n) => Self::Length(n),
            BodyLen::Chunked => Self::Chunked(Chunk::Size),
            BodyLen::UntilClose => Self::UntilClose,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// How many leading bytes of `bytes` belong to the body; moves past them.
    pub fn take(&mut self, bytes: &[u8]) -> Result<usize, String> {
        match self {
            Self::Done => Ok(0),
            Self::UntilClose => Ok(bytes.len()),
            Self::Length(left) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                if *left == 0 {
                    *self = Self::Done;
                }
                Ok(n as usize)
            }
            Self::Chunked(state) => {
                let (n, done) = scan_chunked(state, bytes)?;
                if done {
                    *self = Self::Done;
                }
                Ok(n)
            }
        }
    }
}

/// Advances chunked framing over `bytes`; returns the bytes consumed and whether the body
/// ended. A line split across reads is left unconsumed until the rest arrives.
fn scan_chunked(state: &mut Chunk, bytes: &[u8]) -> Result<(usize, bool), String> {
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        match *state {
            Chunk::Size => match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete((n, size))) => {
                    pos += n;
                    *state = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Ok(httparse::Status::Partial) if rest.len() > MAX_LINE => {
                    return Err("chunk-size line too long".into());
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return Err("invalid chunk size".into()),
            },
            Chunk::Data(left) => {
                let n = left.min(rest.len() as u64);
                pos += n as usize;
                *state = if n == left {
                    Chunk::DataEnd(2)
                } else {
                    Chunk::Data(left - n)
                };
            }
            Chunk::DataEnd(left) => {
                let expected: &[u8] = if left == 2 { b"\r\n" } else { b"\n" };
                let n = (left as usize).min(rest.len());
                if rest[..n] != expected[..n] {
                    return Err("chunk data not followed by CRLF".into());
                }
                pos += n;
                *state = if n == left as usize {
                    Chunk::Size
                } else {
                    Chunk::DataEnd(left - n as u8)
                };
            }
            Chunk::Trailers => match rest.windows(2).position(|w| w == b"\r\n") {
                Some(0) => return Ok((pos + 2, true)),
                Some(end) => pos += end + 2,
                None if rest.len() > MAX_LINE => return Err("trailer line too long".into()),
                None => break,
            },
        }
    }
    Ok((pos, false))
}

/// Forwards the rest of a body from `pending` (bytes already read) and then `src` to `dst`,
/// counting forwarded bytes in `counter`. Bytes after the body's end stay in `pending`.
pub(crate) async fn forward<R, W>(
    progress: &mut Progress,
    pending: &mut BytesMut,
    src: &mut R,
    dst: &mut W,
    counter: &AtomicU64,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if !pending.is_empty() {
            let n = progress.take(pending).map_err(BodyError::Malformed)?;
            if n > 0 {
                dst.write_all(&pending[..n])
                    .await
                    .map_err(BodyError::Write)?;
                counter.fetch_add(n as u64, Ordering::Relaxed);
                pending.advance(n);
            }
        }
        if progress.is_done() {
            return Ok(());
        }
        pending.reserve(READ_CHUNK);
        let n = src.read_buf(pending).await.map_err(BodyError::Read)?;
        if n == 0 {
            if matches!(progress, Progress::UntilClose) {
                *progress = Progress::Done;
                return Ok(());
            }
            return Err(BodyError::Truncated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(p: &mut Progress, parts: &[&[u8]]) -> Vec<usize> {
        parts.iter().map(|b| p.take(b).unwrap()).collect()
    }

    #[test]
    fn length_stops_at_its_end() {
        let mut p = Progress::new(BodyLen::Length(5));
        assert_eq!(take_all(&mut p, &[b"abc", b"defgh"]), vec![3, 2]);
        assert!(p.is_done());
    }

    #[test]
    fn chunked_end_is_found_across_splits() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut p = Progress::new(BodyLen::Chunked);
            let mut pending = BytesMut::new();
            let mut consumed = 0;
            for part in [&body[..split], &body[split..]] {
                pending.extend_from_slice(part);
                let n = p.take(&pending).unwrap();
                consumed += n;
                pending.advance(n);
            }
            assert!(p.is_done(), "split {split}");
            assert_eq!(consumed, body.len() - 4, "split {split}");
        }
    }

    #[test]
    fn broken_chunking_is_refused() {
        let mut p = Progress::new(BodyLen::Chunked);
        assert_eq!(p.take(b"zz\r\n"), Err("invalid chunk size".into()));
        let mut p = Progress::new(BodyLen::Chunked);
        assert_eq!(
            p.take(b"1\r\naXY"),
            Err("chunk data not followed by CRLF".into())
        );
    }

    #[tokio::test]
    async fn forward_leaves_the_next_message_pending() {
        let mut pending = BytesMut::from(&b"3\r\nabc\r\n"[..]);
        let mut src: &[u8] = b"0\r\n\r\nGET / HTTP/1.1\r\n";
        let mut dst = Vec::new();
        let counter = AtomicU64::new(0);
        let mut p = Progress::new(BodyLen::Chunked);
        forward(&mut p, &mut pending, &mut src, &mut dst, &counter)
            .await
            .unwrap();
        assert_eq!(dst, b"3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(&pending[..], b"GET / HTTP/1.1\r\n");
        assert_eq!(counter.load(Ordering::Relaxed), 13);
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let mut pending = BytesMut::new();
        let mut src: &[u8] = b"abc";
        let mut dst = Vec::new();
        let mut p = Progress::new(BodyLen::Length(10));
        let r = forward(&mut p, &mut pending, &mut src, &mut dst, &AtomicU64::new(0)).await;
        assert!(matches!(r, Err(BodyError::Truncated)));
    }
}
