//! The access log: one line per HTTP request or TCP session, in nginx's `common` or
//! `combined` format or as one JSON object, appended to a file or written to standard output.
//!
//! The request path only formats: the line goes into one buffer sized for it and is handed
//! to the file's writer thread with a non-blocking send on a bounded channel
//! ([`CHANNEL_LINES`]). When the channel is full the line is dropped and counted
//! (`lintas_listener_access_log_dropped_total`) — a slow disk never slows a request. The
//! writer takes every line waiting (up to 256 KiB), writes them with one system call, and
//! once the channel is empty sleeps [`GATHER`] so the next lines gather: a request wakes it
//! (a futex call) only after a quiet spell, never once per line under load.
//!
//! Reload reopens: [`LogFiles::open`] runs in every apply, opens each configured path again
//! and hands the new file to that path's writer, which switches before its next write, so
//! logrotate's move-then-reload loses no line (lines sent before the reload may still land
//! in the moved file). Listeners naming one path share its writer, so their lines never
//! interleave. A writer ends, after writing what it was sent, when the last listener
//! settings and connections holding its file are gone.
//!
//! Values are escaped as nginx escapes them: in `common`/`combined`, `"`, `\` and bytes
//! outside printable ASCII become `\xHH`; in JSON, strings are JSON-escaped (invalid UTF-8
//! becomes U+FFFD). A client cannot forge a line break or close a quoted field.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use balance::Backend;
use tracing::warn;

use crate::config::{ListenerConfig, LogFormat};

/// Lines a file's channel holds; more are dropped and counted.
pub(crate) const CHANNEL_LINES: usize = 16 * 1024;
/// How long the writer lets lines gather after each write.
const GATHER: Duration = Duration::from_millis(20);
/// Most bytes the writer puts in one write.
const MAX_BATCH: usize = 256 * 1024;
/// Room reserved for a line before formatting, by format: enough for most lines without
/// growing (a JSON line of a short request is about 450 bytes).
const LINE_CAPACITY: [usize; 2] = [256, 640];

/// One log destination, shared by the listeners naming its path.
#[derive(Debug)]
pub(crate) struct LogFile {
    /// `stdout` or the file's path, as configured.
    path: String,
    /// Taken when the file is dropped, which tells the writer to finish.
    tx: Option<SyncSender<Vec<u8>>>,
    /// A file opened again by a reload, taken by the writer before its next write.
    reopened: Arc<Mutex<Option<File>>>,
    /// The writer thread, joined on drop so that no line sent is lost at exit.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogFile {
    /// Runs once every listener and connection holding the file is gone: the writer writes
    /// what is left and ends (woken from its pause, so this waits for one write at most).
    fn drop(&mut self) {
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

/// Where a writer writes.
enum Target {
    Stdout,
    File(File),
}

impl LogFile {
    /// Opens `path` for appending (creating it) and starts its writer thread.
    fn open(path: &str) -> io::Result<Arc<Self>> {
        let target = if path == "stdout" {
            Target::Stdout
        } else {
            Target::File(append(path)?)
        };
        let (mut file, rx) = Self::channel(path, CHANNEL_LINES);
        let reopened = file.reopened.clone();
        file.writer = Some(
            std::thread::Builder::new()
                .name("lintas-access-log".into())
                .spawn(move || write_lines(&rx, target, &reopened))?,
        );
        Ok(Arc::new(file))
    }

    /// The file's sending side and the receiver its writer reads, without a writer.
    fn channel(path: &str, lines: usize) -> (Self, Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::sync_channel(lines);
        let file = Self {
            path: path.to_owned(),
            tx: Some(tx),
            reopened: Arc::default(),
            writer: None,
        };
        (file, rx)
    }

    /// Opens the path again; the writer switches to it before its next write.
    fn reopen(&self) -> io::Result<()> {
        if self.path != "stdout" {
            let file = append(&self.path)?;
            *self.reopened.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        }
        Ok(())
    }

    /// Hands a line to the writer without waiting; a full channel drops it into `dropped`.
    pub(crate) fn send(&self, line: Vec<u8>, dropped: &AtomicU64) {
        let sent = self.tx.as_ref().map(|tx| tx.try_send(line));
        if let Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) = sent {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn append(path: &str) -> io::Result<File> {
    File::options().create(true).append(true).open(path)
}

/// The writer thread: batches what waits, writes it, lets more gather; ends when every
/// sender is gone and the channel is empty.
fn write_lines(rx: &Receiver<Vec<u8>>, mut target: Target, reopened: &Mutex<Option<File>>) {
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut failing = false;
    while let Ok(line) = rx.recv() {
        batch.extend_from_slice(&line);
        let mut drained = false;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(line) => batch.extend_from_slice(&line),
                Err(_) => {
                    drained = true;
                    break;
                }
            }
        }
        if let Some(file) = reopened.lock().unwrap_or_else(|e| e.into_inner()).take() {
            target = Target::File(file);
        }
        let written = match &mut target {
            Target::Stdout => io::stdout().lock().write_all(&batch),
            Target::File(f) => f.write_all(&batch),
        };
        match written {
            // Said once per failing spell, not once per batch.
            Err(e) if !failing => {
                warn!(error = %e, "access log lines could not be written; the disk may be full");
                failing = true;
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
        batch.clear();
        // More is waiting: write it at once, or the writer would cap the rate it can take.
        // Unparked early when the file is dropped.
        if drained {
            std::thread::park_timeout(GATHER);
        }
    }
}

/// The log files of the running proxy by path, kept across reloads so that each path has
/// one writer.
#[derive(Debug, Default)]
pub(crate) struct LogFiles(BTreeMap<String, Arc<LogFile>>);

impl LogFiles {
    /// Opens — or reopens, for a path already written — every path `listeners` name; the
    /// result replaces `self` once the configuration is applied. On error: the index of
    /// the listener whose path could not be opened.
    pub(crate) fn open(&self, listeners: &[ListenerConfig]) -> Result<Self, (usize, io::Error)> {
        let mut next = BTreeMap::new();
        for (index, l) in listeners.iter().enumerate() {
            let Some(log) = &l.access_log else { continue };
            if next.contains_key(&log.path) {
                continue;
            }
            let file = match self.0.get(&log.path) {
                Some(file) => file.reopen().map(|()| file.clone()),
                None => LogFile::open(&log.path),
            };
            next.insert(log.path.clone(), file.map_err(|e| (index, e))?);
        }
        Ok(Self(next))
    }

    /// The log of a listener: its format and file.
    pub(crate) fn for_listener(&self, l: &ListenerConfig) -> Option<AccessLog> {
        let cfg = l.access_log.as_ref()?;
        Some(AccessLog {
            format: cfg.format,
            file: self.0.get(&cfg.path)?.clone(),
        })
    }
}

/// A listener's access log.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    pub format: LogFormat,
    pub file: Arc<LogFile>,
}

impl AccessLog {
    /// Formats `r` and hands it to the writer; counts it into `dropped` if it cannot take it.
    pub(crate) fn write(&self, r: &Record<'_>, dropped: &AtomicU64) {
        self.file.send(format_line(self.format, r), dropped);
    }
}

/// The request line's parts, for HTTP records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLine<'a> {
    pub method: &'a [u8],
    /// As the client sent it.
    pub target: &'a [u8],
    /// `HTTP/1.1`, `HTTP/1.0`, `HTTP/2.0`.
    pub protocol: &'static str,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

/// One line's content: an HTTP request (with `request`) or a TCP session (without).
#[derive(Debug)]
pub(crate) struct Record<'a> {
    /// When the request head was read (TCP: the session accepted).
    pub time: SystemTime,
    pub client: SocketAddr,
    pub listener: &'a str,
    /// `None`: a TCP session, or a request whose head could not be read.
    pub request: Option<RequestLine<'a>>,
    /// `true` for TCP sessions: no request fields, protocol `tcp`.
    pub tcp: bool,
    pub status: u16,
    /// Body bytes sent to the client (TCP: every byte).
    pub bytes_sent: u64,
    /// Body bytes received from the client (TCP: every byte).
    pub bytes_received: u64,
    pub pool: &'a str,
    pub route: Option<&'a str>,
    pub backend: Option<&'a Backend>,
    pub connect: Option<Duration>,
    pub response: Option<Duration>,
    pub total: Duration,
    pub request_id: Option<&'a str>,
    pub retries: u32,
    pub error: Option<&'static str>,
}

/// What an exchange found out on its way, for its log line; filled whether or not the
/// listener logs (plain stores), timed only when it does.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// When the request started; `None` when nothing is logged (no clock reads then).
    pub start: Option<tokio::time::Instant>,
    pub status: u16,
    pub body_sent: u64,
    pub body_received: u64,
    /// The backend that answered, or the last one tried.
    pub backend: Option<Arc<Backend>>,
    /// Time to a backend connection, from `start`.
    pub connect: Option<Duration>,
    /// Time to the backend's response head, from `start`.
    pub response: Option<Duration>,
    /// Backends tried after the first.
    pub retries: u32,
    /// What went wrong, for answers lintas gave itself.
    pub error: Option<&'static str>,
}

impl Trace {
    /// A trace timed from now when `timed`.
    pub fn new(timed: bool) -> Self {
        Self {
            start: timed.then(tokio::time::Instant::now),
            ..Self::default()
        }
    }

    /// Time since the start, when timed.
    pub fn elapsed(&self) -> Option<Duration> {
        self.start.map(|s| s.elapsed())
    }

    /// A new attempt on `backend` begins (the first or a retry).
    pub fn attempt(&mut self, backend: &Arc<Backend>, first: bool) {
        if !first {
            self.retries += 1;
        }
        self.backend = Some(backend.clone());
    }

    /// Marks the answer lintas gave itself.
    pub fn own(&mut self, status: u16, error: &'static str) {
        self.status = status;
        self.error = Some(error);
    }
}

/// The line for `r` in `format`, with its newline.
pub(crate) fn format_line(format: LogFormat, r: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(LINE_CAPACITY[usize::from(format == LogFormat::Json)]);
    match format {
        LogFormat::Common => common(&mut out, r),
        LogFormat::Combined => {
            common(&mut out, r);
            let (referer, agent) = r
                .request
                .map_or((None, None), |q| (q.referer, q.user_agent));
            out.extend_from_slice(b" \"");
            escape_or_dash(&mut out, referer);
            out.extend_from_slice(b"\" \"");
            escape_or_dash(&mut out, agent);
            out.push(b'"');
        }
        LogFormat::Json => json(&mut out, r),
    }
    out.push(b'\n');
    out
}

/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent`.
fn common(out: &mut Vec<u8>, r: &Record<'_>) {
    ip(out, r.client.ip());
    out.extend_from_slice(b" - - [");
    clf_time(out, r.time);
    out.extend_from_slice(b"] \"");
    match &r.request {
        Some(q) => {
            escape_clf(out, q.method);
            out.push(b' ');
            escape_clf(out, q.target);
            out.push(b' ');
            out.extend_from_slice(q.protocol.as_bytes());
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\" ");
    num(out, u64::from(r.status));
    out.push(b' ');
    num(out, r.bytes_sent);
}

fn escape_or_dash(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) if !v.is_empty() => escape_clf(out, v),
        _ => out.push(b'-'),
    }
}

/// nginx's `escape=default`: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escape_clf(out: &mut Vec<u8>, mut v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let plain = |b: &u8| b != &b'"' && b != &b'\\' && (0x20..0x7f).contains(b);
    // Runs of plain bytes are copied whole: nearly every value is one run.
    while !v.is_empty() {
        let run = v.iter().position(|b| !plain(b)).unwrap_or(v.len());
        out.extend_from_slice(&v[..run]);
        if let Some(&b) = v.get(run) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
        v = v.get(run + 1..).unwrap_or_default();
    }
}

fn json(out: &mut Vec<u8>, r: &Record<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339_ms(out, r.time);
    out.extend_from_slice(b"\",\"client\":\"");
    socket_addr(out, r.client);
    out.push(b'"');
    key_str(out, "listener", Some(r.listener.as_bytes()));
    let q = r.request.as_ref();
    if r.tcp {
        key_str(out, "protocol", Some(b"tcp"));
    } else {
        key_str(out, "method", q.map(|q| q.method));
        key_str(out, "target", q.map(|q| q.target));
        key_str(out, "protocol", q.map(|q| q.protocol.as_bytes()));
    }
    key_num(out, "status", u64::from(r.status));
    key_num(out, "bytes_sent", r.bytes_sent);
    key_num(out, "bytes_received", r.bytes_received);
    if !r.tcp {
        key_str(out, "referer", q.and_then(|q| q.referer));
        key_str(out, "user_agent", q.and_then(|q| q.user_agent));
    }
    key_str(out, "pool", Some(r.pool.as_bytes()));
    key_str(out, "route", r.route.map(str::as_bytes));
    key_str(out, "backend", r.backend.map(|b| b.name().as_bytes()));
    match r.backend {
        Some(b) => {
            out.extend_from_slice(b",\"upstream\":\"");
            socket_addr(out, b.addr());
            out.push(b'"');
        }
        None => out.extend_from_slice(b",\"upstream\":null"),
    }
    key_ms(out, "connect_ms", r.connect);
    if !r.tcp {
        key_ms(out, "response_ms", r.response);
    }
    key_ms(out, "total_ms", Some(r.total));
    if !r.tcp {
        key_str(out, "request_id", r.request_id.map(str::as_bytes));
    }
    key_num(out, "retries", u64::from(r.retries));
    key_str(out, "error", r.error.map(str::as_bytes));
    out.push(b'}');
}

/// `,"key":`.
fn key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `,"key":` and a number.
fn key_num(out: &mut Vec<u8>, k: &str, n: u64) {
    key(out, k);
    num(out, n);
}

/// `,"key":` and a JSON string, or `null`.
fn key_str(out: &mut Vec<u8>, k: &str, v: Option<&[u8]>) {
    key(out, k);
    match v {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `,"key":` and milliseconds with three decimals (microseconds), or `null`.
fn key_ms(out: &mut Vec<u8>, k: &str, d: Option<Duration>) {
    key(out, k);
    match d {
        Some(d) => {
            let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            num(out, us / 1000);
            out.push(b'.');
            padded(out, us % 1000, 3);
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string; bytes that are not UTF-8 become U+FFFD.
fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    // The usual value is printable ASCII without `"` or `\`: copied whole.
    if v.iter()
        .all(|&b| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b))
    {
        out.extend_from_slice(v);
        out.push(b'"');
        return;
    }
    for chunk in v.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => {
                    let mut b = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

/// `n` in decimal (the `fmt` machinery costs more than the rest of a line).
fn num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `n` in decimal with leading zeros to `width` digits.
fn padded(out: &mut Vec<u8>, n: u64, width: u32) {
    let mut limit = 10u64.pow(width.saturating_sub(1));
    while limit > 1 && n < limit {
        out.push(b'0');
        limit /= 10;
    }
    num(out, n);
}

/// An IP address; IPv4 without `fmt`.
fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                num(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ip:port`, an IPv6 address in brackets.
fn socket_addr(out: &mut Vec<u8>, a: SocketAddr) {
    if a.is_ipv6() {
        out.push(b'[');
        ip(out, a.ip());
        out.push(b']');
    } else {
        ip(out, a.ip());
    }
    out.push(b':');
    num(out, u64::from(a.port()));
}

/// Days since 1970-01-01 as (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A time's UTC calendar fields.
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    /// Seconds into the day.
    secs: u64,
    ms: u32,
}

impl Utc {
    fn of(t: SystemTime) -> Self {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil((secs / 86_400) as i64);
        Self {
            year,
            month,
            day,
            secs: secs % 86_400,
            ms: since.subsec_millis(),
        }
    }

    /// Hours, minutes, seconds.
    fn hms(&self) -> (u64, u64, u64) {
        (self.secs / 3600, self.secs / 60 % 60, self.secs % 60)
    }
}

/// `10/Oct/2000:13:55:36 +0000` (always UTC).
fn clf_time(out: &mut Vec<u8>, t: SystemTime) {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let u = Utc::of(t);
    padded(out, u64::from(u.day), 2);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(u.month - 1) as usize]);
    out.push(b'/');
    num(out, u.year.unsigned_abs());
    out.push(b':');
    clock(out, &u);
    out.extend_from_slice(b" +0000");
}

/// `2000-10-10T13:55:36.123Z`.
fn rfc3339_ms(out: &mut Vec<u8>, t: SystemTime) {
    let u = Utc::of(t);
    padded(out, u.year.unsigned_abs(), 4);
    out.push(b'-');
    padded(out, u64::from(u.month), 2);
    out.push(b'-');
    padded(out, u64::from(u.day), 2);
    out.push(b'T');
    clock(out, &u);
    out.push(b'.');
    padded(out, u64::from(u.ms), 3);
    out.push(b'Z');
}

/// `13:55:36`.
fn clock(out: &mut Vec<u8>, u: &Utc) {
    let (h, m, s) = u.hms();
    for (i, part) in [h, m, s].into_iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        padded(out, part, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(request: Option<RequestLine<'static>>) -> Record<'static> {
        Record {
            // 2026-12-01T04:52:23.456Z
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_100_743_456),
            client: "127.0.0.1:40000".parse().unwrap(),
            listener: "web",
            request,
            tcp: false,
            status: 200,
            bytes_sent: 5,
            bytes_received: 0,
            pool: "web",
            route: None,
            backend: None,
            connect: None,
            response: None,
            total: Duration::from_micros(1500),
            request_id: None,
            retries: 0,
            error: None,
        }
    }

    const GET: RequestLine<'static> = RequestLine {
        method: b"GET",
        target: b"/a?b=1",
        protocol: "HTTP/1.1",
        referer: None,
        user_agent: Some(b"curl/8"),
    };

    fn line(format: LogFormat, r: &Record<'_>) -> String {
        String::from_utf8(format_line(format, r)).unwrap()
    }

    #[test]
    fn numbers_and_addresses_are_written_without_fmt() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 999, u64::MAX] {
            num(&mut out, n);
            out.push(b' ');
        }
        padded(&mut out, 5, 3);
        out.push(b' ');
        padded(&mut out, 1234, 3);
        out.push(b' ');
        socket_addr(&mut out, "[::1]:8080".parse().unwrap());
        out.push(b' ');
        socket_addr(&mut out, "10.0.0.255:1".parse().unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 7 10 999 18446744073709551615 005 1234 [::1]:8080 10.0.0.255:1"
        );
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_788), (2026, 12, 1));
        let mut out = Vec::new();
        rfc3339_ms(&mut out, record(None).time);
        assert_eq!(out, b"2026-12-01T04:52:23.456Z");
    }

    #[test]
    fn common_and_combined_lines_are_nginx_s() {
        let r = record(Some(GET));
        assert_eq!(
            line(LogFormat::Common, &r),
            "127.0.0.1 - - [01/Dec/2026:04:52:23 +0000] \"GET /a?b=1 HTTP/1.1\" 200 5\n"
        );
        assert_eq!(
            line(LogFormat::Combined, &r),
            "127.0.0.1 - - [01/Dec/2026:04:52:23 +0000] \"GET /a?b=1 HTTP/1.1\" 200 5 \"-\" \"curl/8\"\n"
        );
        assert_eq!(
            line(LogFormat::Combined, &record(None)),
            "127.0.0.1 - - [01/Dec/2026:04:52:23 +0000] \"-\" 200 5 \"-\" \"-\"\n"
        );
    }

    #[test]
    fn values_cannot_forge_lines_or_quotes() {
        let r = record(Some(RequestLine {
            user_agent: Some(b"a\"b\\c\nd\xff"),
            ..GET
        }));
        let combined = line(LogFormat::Combined, &r);
        assert!(
            combined.ends_with(" \"-\" \"a\\x22b\\x5Cc\\x0Ad\\xFF\"\n"),
            "{combined}"
        );
        let json = line(LogFormat::Json, &r);
        assert!(
            json.contains(",\"user_agent\":\"a\\\"b\\\\c\\nd\u{fffd}\","),
            "{json}"
        );
        assert_eq!(json.matches('\n').count(), 1);
    }

    #[test]
    fn json_lines_have_every_field() {
        let mut r = record(Some(GET));
        r.route = Some("api");
        r.request_id = Some("id1");
        r.connect = Some(Duration::from_micros(250));
        r.error = Some("backend_timeout");
        assert_eq!(
            line(LogFormat::Json, &r),
            "{\"time\":\"2026-12-01T04:52:23.456Z\",\"client\":\"127.0.0.1:40000\",\
             \"listener\":\"web\",\"method\":\"GET\",\"target\":\"/a?b=1\",\
             \"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes_sent\":5,\"bytes_received\":0,\
             \"referer\":null,\"user_agent\":\"curl/8\",\"pool\":\"web\",\"route\":\"api\",\
             \"backend\":null,\"upstream\":null,\"connect_ms\":0.250,\"response_ms\":null,\
             \"total_ms\":1.500,\"request_id\":\"id1\",\"retries\":0,\
             \"error\":\"backend_timeout\"}\n"
        );
        r.tcp = true;
        r.request = None;
        assert_eq!(
            line(LogFormat::Json, &r),
            "{\"time\":\"2026-12-01T04:52:23.456Z\",\"client\":\"127.0.0.1:40000\",\
             \"listener\":\"web\",\"protocol\":\"tcp\",\"status\":200,\"bytes_sent\":5,\
             \"bytes_received\":0,\"pool\":\"web\",\"route\":\"api\",\"backend\":null,\
             \"upstream\":null,\"connect_ms\":0.250,\"total_ms\":1.500,\"retries\":0,\
             \"error\":\"backend_timeout\"}\n"
        );
    }

    #[test]
    fn dropping_the_file_writes_every_line_sent_before_it_returns() {
        let path = std::env::temp_dir().join(format!("lintas-alog-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let file = LogFile::open(path.to_str().unwrap()).unwrap();
        let dropped = AtomicU64::new(0);
        for i in 0..1000 {
            file.send(format!("{i}\n").into_bytes(), &dropped);
        }
        drop(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("999"));
    }

    /// What formatting costs, measured in an optimized build:
    /// `CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo test -p proxy --lib format_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a test"]
    fn format_cost() {
        let backend = Backend::new(&balance::BackendSpec {
            name: "app1".into(),
            addr: "10.0.0.7:8080".parse().unwrap(),
            weight: 1,
            max_connections: 0,
            backup: false,
        });
        let mut r = record(Some(RequestLine {
            referer: Some(b"https://example.com/page"),
            user_agent: Some(b"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"),
            ..GET
        }));
        r.backend = Some(&backend);
        r.connect = Some(Duration::from_micros(120));
        r.response = Some(Duration::from_micros(900));
        for format in [LogFormat::Common, LogFormat::Combined, LogFormat::Json] {
            let n = 1_000_000u32;
            let start = std::time::Instant::now();
            let mut bytes = 0;
            for _ in 0..n {
                bytes += std::hint::black_box(format_line(format, &r)).len();
            }
            let ns = start.elapsed().as_nanos() / u128::from(n);
            println!("{format:?}: {ns} ns per line, {} bytes", bytes / n as usize);
        }
    }

    #[test]
    fn a_full_channel_drops_and_counts() {
        let (file, rx) = LogFile::channel("stdout", 2);
        let dropped = AtomicU64::new(0);
        for i in 0..5u8 {
            file.send(vec![i], &dropped);
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![vec![0], vec![1]]);
        file.send(vec![9], &dropped);
        assert_eq!(rx.try_recv().ok(), Some(vec![9]));
    }
}
