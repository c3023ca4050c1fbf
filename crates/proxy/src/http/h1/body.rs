//! Bodies, forwarded byte for byte in the framing they arrive in.
//!
//! lintas does not re-encode bodies: a chunked body goes out chunked, a sized one sized. It
//! only has to know where a body *ends*, so that the next message on a kept-alive connection
//! starts at the right byte; [`Progress`] tracks that as bytes pass.
//!
//! Since the receiver reads the same bytes, chunked framing is held to RFC 9112 §7.1 before
//! any of it is forwarded: a chunk-size line is hex digits, then extensions made of tokens
//! and quoted strings, then CRLF; each trailer line is `name: value` ended by CRLF, and
//! never a framing or routing field. A bare CR or LF, an empty size, a size over 64 bits or
//! a line over [`MAX_LINE`] bytes is refused: those are where parsers disagree about where
//! a chunk ends, which is how a body smuggles a request past a proxy. (`httparse`'s chunk
//! parser is lenient on some of these, so the grammar is checked here.)

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use super::head::BodyLen;

/// Bytes read from a socket at a time while a body streams.
const READ_CHUNK: usize = 16 * 1024;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Largest trailer section accepted, all lines together.
const MAX_TRAILERS: usize = 16 * 1024;

/// Fields a trailer may not carry (RFC 9110 §6.5.1): a recipient that merged them into the
/// head would reframe or reroute the message.
const FORBIDDEN_TRAILERS: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "trailer",
    "te",
];

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
    /// After the last chunk: trailer lines until an empty one; this many trailer bytes
    /// seen so far.
    Trailers(usize),
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
    /// The sender sent nothing for the pace's `idle` time.
    Stalled(Duration),
    /// The sender fell under the pace's minimum rate (bytes per second).
    TooSlow(u64),
}

/// How fast a body must move: each read and write must make progress within `idle`, and
/// a request body must keep a minimum average rate (`rate`, after its grace period).
#[derive(Debug)]
pub(crate) struct Pace {
    pub idle: Duration,
    pub rate: Option<net::MinRate>,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(e) => write!(f, "reading the body failed: {e}"),
            Self::Write(e) => write!(f, "writing the body failed: {e}"),
            Self::Truncated => f.write_str("the sender closed before the end of the body"),
            Self::Malformed(why) => write!(f, "broken chunked framing: {why}"),
            Self::Stalled(after) => {
                write!(f, "no body data for {}", configkit::format_duration(*after))
            }
            Self::TooSlow(rate) => write!(f, "body data slower than {rate} bytes/s"),
        }
    }
}

impl Pace {
    /// The minimum rate, for messages.
    fn rate_floor(&self) -> u64 {
        self.rate.as_ref().map_or(0, net::MinRate::rate)
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
            Chunk::Size => {
                let Some(line) = line(rest, "chunk-size")? else {
                    break;
                };
                let size = chunk_size(line)?;
                pos += line.len() + 2;
                *state = if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                };
            }
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
            Chunk::Trailers(seen) => {
                let Some(line) = line(rest, "trailer")? else {
                    if seen + rest.len() > MAX_TRAILERS {
                        return Err(format!("trailers larger than {MAX_TRAILERS} bytes"));
                    }
                    break;
                };
                pos += line.len() + 2;
                if line.is_empty() {
                    return Ok((pos, true));
                }
                let seen = seen + line.len() + 2;
                if seen > MAX_TRAILERS {
                    return Err(format!("trailers larger than {MAX_TRAILERS} bytes"));
                }
                trailer_field(line)?;
                *state = Chunk::Trailers(seen);
            }
        }
    }
    Ok((pos, false))
}

/// The line at the start of `bytes` without its CRLF; `None` until its LF has arrived.
/// A line ended by a bare LF, holding a CR, or longer than [`MAX_LINE`] is an error.
fn line<'a>(bytes: &'a [u8], what: &str) -> Result<Option<&'a [u8]>, String> {
    let window = &bytes[..bytes.len().min(MAX_LINE + 2)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if window.len() > MAX_LINE + 1 {
            return Err(format!("{what} line longer than {MAX_LINE} bytes"));
        }
        return match window.iter().position(|&b| b == b'\r') {
            Some(cr) if cr + 1 < window.len() => Err(format!("bare CR in a {what} line")),
            _ => Ok(None),
        };
    };
    let Some(line) = window[..lf].strip_suffix(b"\r") else {
        return Err(format!("{what} line ended by a bare LF"));
    };
    if line.contains(&b'\r') {
        return Err(format!("bare CR in a {what} line"));
    }
    Ok(Some(line))
}

/// The size on a chunk-size line (RFC 9112 §7.1): `1*HEXDIG`, then extensions
/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("chunk size missing".into());
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| "chunk size missing")?;
    // Over 63 bits a receiver that reads sizes as signed integers would see a negative one.
    let size = u64::from_str_radix(hex, 16)
        .ok()
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or("chunk size over 63 bits")?;
    let mut rest = &line[digits..];
    while !rest.is_empty() {
        // Whitespace only before a `;`: a line may not end in it.
        let Some(after) = skip_ws(rest).strip_prefix(b";") else {
            return Err("invalid character after the chunk size".into());
        };
        rest = skip_ws(after);
        let name = rest
            .iter()
            .take_while(|&&b| super::head::is_tchar(b))
            .count();
        if name == 0 {
            return Err("chunk extension without a name".into());
        }
        rest = &rest[name..];
        if let Some(after) = skip_ws(rest).strip_prefix(b"=") {
            rest = ext_value(skip_ws(after)).ok_or("invalid chunk extension value")?;
        }
    }
    Ok(size)
}

/// Spaces and tabs skipped (RFC 9110 BWS).
fn skip_ws(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &v[n..]
}

/// What follows a chunk extension's value (a token or a quoted string); `None` when there
/// is no valid value.
fn ext_value(v: &[u8]) -> Option<&[u8]> {
    let Some(mut rest) = v.strip_prefix(b"\"") else {
        let n = v.iter().take_while(|&&b| super::head::is_tchar(b)).count();
        return (n > 0).then(|| &v[n..]);
    };
    loop {
        match *rest.first()? {
            b'"' => return Some(&rest[1..]),
            b'\\' => {
                let quoted = *rest.get(1)?;
                if !is_field_byte(quoted) {
                    return None;
                }
                rest = &rest[2..];
            }
            b if is_field_byte(b) => rest = &rest[1..],
            _ => return None,
        }
    }
}

/// A byte allowed in a field value or quoted string: HTAB, SP, VCHAR, obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Checks one trailer line: `token ":" OWS field-value OWS`, no obs-fold, and not a field
/// a trailer may not carry.
fn trailer_field(line: &[u8]) -> Result<(), String> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or("trailer line without a colon")?;
    let name = &line[..colon];
    if !super::head::is_token(name) {
        return Err("invalid trailer field name".into());
    }
    if !line[colon + 1..].iter().all(|&b| is_field_byte(b)) {
        return Err("invalid trailer field value".into());
    }
    if let Some(f) = FORBIDDEN_TRAILERS
        .iter()
        .find(|f| name.eq_ignore_ascii_case(f.as_bytes()))
    {
        return Err(format!("trailer field `{f}` is not allowed"));
    }
    Ok(())
}

/// Forwards the rest of a body from `pending` (bytes already read) and then `src` to `dst`,
/// counting forwarded bytes in the backend's `counter` and this exchange's `moved`, at
/// `pace`. Bytes after the body's end stay in `pending`.
pub(crate) async fn forward<R, W>(
    progress: &mut Progress,
    pending: &mut BytesMut,
    src: &mut R,
    dst: &mut W,
    (counter, moved): (&AtomicU64, &mut u64),
    pace: &mut Pace,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if !pending.is_empty() {
            let n = progress.take(pending).map_err(BodyError::Malformed)?;
            if n > 0 {
                match timeout(pace.idle, dst.write_all(&pending[..n])).await {
                    Ok(written) => written.map_err(BodyError::Write)?,
                    Err(_) => {
                        return Err(BodyError::Write(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the receiver took no body data in time",
                        )));
                    }
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
                *moved += n as u64;
                pending.advance(n);
            }
        }
        if progress.is_done() {
            return Ok(());
        }
        pending.reserve(READ_CHUNK);
        let idle = Instant::now() + pace.idle;
        let slow = pace.rate.as_ref().and_then(net::MinRate::deadline);
        let deadline = slow.map_or(idle, |d| d.min(idle));
        let n = match timeout_at(deadline, src.read_buf(pending)).await {
            Ok(read) => read.map_err(BodyError::Read)?,
            Err(_) if slow == Some(deadline) && deadline < idle => {
                return Err(BodyError::TooSlow(pace.rate_floor()));
            }
            Err(_) => return Err(BodyError::Stalled(pace.idle)),
        };
        if let Some(rate) = &mut pace.rate {
            rate.add(n);
        }
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
        let body = b"5;ext=1;q=\"a\\\"b\"\r\nhello\r\n0\r\nX-Sum: x\r\n\r\nNEXT";
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

    /// The first error `take` reports for `body`, fed whole and then split in two at every
    /// byte (at a few hundred places in a long body).
    fn refusal(body: &[u8]) -> String {
        let mut p = Progress::new(BodyLen::Chunked);
        let whole = p.take(body).expect_err("accepted whole");
        for split in (1..body.len()).step_by(body.len() / 256 + 1) {
            let mut p = Progress::new(BodyLen::Chunked);
            let mut pending = BytesMut::new();
            let mut error = None;
            for part in [&body[..split], &body[split..]] {
                pending.extend_from_slice(part);
                match p.take(&pending) {
                    Ok(n) => pending.advance(n),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            assert_eq!(error.as_ref(), Some(&whole), "split at {split}");
        }
        whole
    }

    #[test]
    fn broken_chunking_is_refused() {
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_LINE));
        let long_trailers = format!("0\r\n{}\r\n", "X-A: b\r\n".repeat(2400));
        let cases: [(&[u8], &str); 20] = [
            (b"zz\r\n", "chunk size missing"),
            (b"\r\nhello", "chunk size missing"),
            (b"1\r\naXY", "chunk data not followed by CRLF"),
            (b"5;a\nb\r\nhello\r\n", "chunk-size line ended by a bare LF"),
            (b"5\nhello\r\n", "chunk-size line ended by a bare LF"),
            (b"5;a\rb\r\nhello\r\n", "bare CR in a chunk-size line"),
            (
                b"0x5\r\nhello\r\n",
                "invalid character after the chunk size",
            ),
            (b"5 \r\nhello\r\n", "invalid character after the chunk size"),
            (b"-5\r\nhello\r\n", "chunk size missing"),
            (b"8000000000000000\r\n", "chunk size over 63 bits"),
            (b"10000000000000000\r\n", "chunk size over 63 bits"),
            (b"5;\r\nhello\r\n", "chunk extension without a name"),
            (
                b"5;a \r\nhello\r\n",
                "invalid character after the chunk size",
            ),
            (b"5;a=\"b\r\nhello\r\n", "invalid chunk extension value"),
            (
                long_ext.as_bytes(),
                "chunk-size line longer than 4096 bytes",
            ),
            (
                b"0\r\nX: a\nGET / HTTP/1.1\r\n\r\n",
                "trailer line ended by a bare LF",
            ),
            (b"0\r\n X: folded\r\n\r\n", "invalid trailer field name"),
            (b"0\r\nno colon\r\n\r\n", "trailer line without a colon"),
            (
                b"0\r\nContent-Length: 5\r\n\r\n",
                "trailer field `content-length` is not allowed",
            ),
            (long_trailers.as_bytes(), "trailers larger than 16384 bytes"),
        ];
        for (body, why) in cases {
            assert_eq!(refusal(body), why, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn lawful_chunk_lines_and_trailers_pass() {
        let bodies: [&[u8]; 4] = [
            b"5 ; a = b ;c;d\t=\te\r\nhello\r\n0\r\n\r\n",
            b"00005\r\nhello\r\n0000\r\n\r\n",
            b"5;q=\"x;y\\\\z\"\r\nhello\r\n0\r\n\r\n",
            b"A\r\n0123456789\r\n0\r\nX-Sum:\t\"abc\" \r\nX-Other: 1\r\n\r\n",
        ];
        for body in bodies {
            let mut p = Progress::new(BodyLen::Chunked);
            assert_eq!(
                p.take(body),
                Ok(body.len()),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(p.is_done());
        }
    }

    fn pace() -> Pace {
        Pace {
            idle: Duration::from_secs(30),
            rate: Some(net::MinRate::new(240, Duration::from_secs(5))),
        }
    }

    /// A sender that writes one byte every `every`, forever.
    fn trickle(every: Duration) -> tokio::io::DuplexStream {
        let (mut tx, rx) = tokio::io::duplex(16);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if tx.write_all(b"a").await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Forwards a `len`-byte body from `src` at `pace` (into nothing); how it ended and how
    /// long it took.
    async fn forward_timed(
        src: &mut tokio::io::DuplexStream,
        len: u64,
        mut pace: Pace,
    ) -> (Result<(), BodyError>, Duration) {
        let started = Instant::now();
        let r = forward(
            &mut Progress::new(BodyLen::Length(len)),
            &mut BytesMut::new(),
            src,
            &mut Vec::new(),
            (&AtomicU64::new(0), &mut 0),
            &mut pace,
        )
        .await;
        (r, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_trickling_under_the_minimum_rate_is_cut_after_the_grace_period() {
        let mut src = trickle(Duration::from_secs(1));
        let (r, took) = forward_timed(&mut src, 1_000_000, pace()).await;
        assert!(matches!(r, Err(BodyError::TooSlow(240))), "{r:?}");
        assert_eq!(took, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_is_cut_after_the_idle_time() {
        let (_tx, mut src) = tokio::io::duplex(16);
        let idle = Pace {
            idle: Duration::from_secs(3),
            rate: None,
        };
        let (r, took) = forward_timed(&mut src, 10, idle).await;
        assert!(matches!(r, Err(BodyError::Stalled(_))), "{r:?}");
        assert_eq!(took, Duration::from_secs(3));
    }

    #[tokio::test]
    async fn forward_leaves_the_next_message_pending() {
        let mut pending = BytesMut::from(&b"3\r\nabc\r\n"[..]);
        let mut src: &[u8] = b"0\r\n\r\nGET / HTTP/1.1\r\n";
        let mut dst = Vec::new();
        let counter = AtomicU64::new(0);
        let mut moved = 0;
        let mut p = Progress::new(BodyLen::Chunked);
        forward(
            &mut p,
            &mut pending,
            &mut src,
            &mut dst,
            (&counter, &mut moved),
            &mut pace(),
        )
        .await
        .unwrap();
        assert_eq!(dst, b"3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(&pending[..], b"GET / HTTP/1.1\r\n");
        assert_eq!((counter.load(Ordering::Relaxed), moved), (13, 13));
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let mut pending = BytesMut::new();
        let mut src: &[u8] = b"abc";
        let mut dst = Vec::new();
        let mut p = Progress::new(BodyLen::Length(10));
        let r = forward(
            &mut p,
            &mut pending,
            &mut src,
            &mut dst,
            (&AtomicU64::new(0), &mut 0),
            &mut pace(),
        )
        .await;
        assert!(matches!(r, Err(BodyError::Truncated)));
    }
}
