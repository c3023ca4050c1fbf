//! The node's journal: every QoS 1 and 2 message queued for a session with an expiry,
//! written to the backplane before the publisher is told the message is safe, so that the
//! node's death does not take it along.
//!
//! The journal is one stream per node (`mqtt:journal:{node}`), written by one task in
//! batches ([`super::append`]). Two kinds of record:
//!
//! ```text
//! M  u8 'M' | u64 jseq | u16 n | n × (str client, u8 qos, u8 retain, u8 k, k × u32 id) | envelope
//! F  u8 'F' | u32 n | n × (str client, u64 floor)
//! ```
//!
//! An `M` record is one message and the sessions it was queued for, numbered by the
//! node (`jseq`, from 1); each queued copy remembers its number. An `F` record says, for
//! every session with an expiry, the number below which all its journaled messages have
//! been acknowledged by the client (or dropped); it is written every [`FLOORS_EVERY`] when
//! a floor moved, and the journal is trimmed below both the oldest number any session
//! still needs and the last `F` record. A node resuming a session whose node died reads
//! the journal (`super::adopt`): the messages for that session from its last floor on.
//! Acknowledgements in the last second before the death are not in a floor yet, so those
//! messages are sent again (QoS 1: at least once; QoS 2: the one case where a message may
//! come twice — see docs/mqtt.md).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backplane::{Backplane, StreamOptions};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::append::{Appended, Appender};
use super::envelope::{Envelope, EnvelopeError, get_str, put_str};
use crate::codec::QoS;
use crate::session::Outgoing;

/// How often the sessions' floors are written (when one moved) and the journal trimmed.
pub const FLOORS_EVERY: Duration = Duration::from_secs(1);

/// How long the writer goes on after the node's shutdown, for the last floors.
pub const CLOSING: Duration = Duration::from_secs(2);

/// Records written in one append at most.
const BATCH: usize = 512;

/// The journal stream of `node` in a cluster (a node alone names its journals otherwise:
/// `super::restore`).
pub fn stream(node: &str) -> String {
    format!("mqtt:journal:{node}")
}

/// How journals are opened.
pub fn options() -> StreamOptions {
    StreamOptions {
        idempotency_window: Duration::from_secs(600),
        legacy_keys: None,
    }
}

/// One copy of a journaled message: for which session, and how it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The session's client identifier.
    pub client: String,
    /// The QoS it is sent with.
    pub qos: QoS,
    /// The RETAIN flag it is sent with.
    pub retain: bool,
    /// Its Subscription Identifiers.
    pub identifiers: Vec<std::num::NonZeroU32>,
}

/// A record read back.
#[derive(Debug)]
pub enum Record {
    /// A message and its copies.
    Message {
        /// Its number in this journal.
        jseq: u64,
        /// The sessions it was queued for.
        copies: Vec<Copy>,
        /// The message.
        envelope: Envelope,
    },
    /// Every session's floor.
    Floors(Vec<(String, u64)>),
}

/// An `M` record.
pub fn message_record(jseq: u64, copies: &[Copy], envelope: &Envelope, now: Instant) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(b'M');
    out.put_u64(jseq);
    out.put_u16(u16::try_from(copies.len()).unwrap_or(u16::MAX));
    for c in copies.iter().take(usize::from(u16::MAX)) {
        put_str(&mut out, &c.client);
        out.put_u8(c.qos as u8);
        out.put_u8(u8::from(c.retain));
        out.put_u8(u8::try_from(c.identifiers.len()).unwrap_or(u8::MAX));
        for id in c.identifiers.iter().take(usize::from(u8::MAX)) {
            out.put_u32(id.get());
        }
    }
    envelope.encode(now, &mut out);
    out.freeze()
}

/// An `F` record.
fn floors_record(floors: &HashMap<String, u64>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(b'F');
    out.put_u32(u32::try_from(floors.len()).unwrap_or(u32::MAX));
    for (client, floor) in floors {
        put_str(&mut out, client);
        out.put_u64(*floor);
    }
    out.freeze()
}

/// Reads a record at `now`.
pub fn read(bytes: &[u8], now: Instant) -> Result<Record, EnvelopeError> {
    let mut r = bytes;
    if r.remaining() < 1 {
        return Err(EnvelopeError::Length);
    }
    match r.get_u8() {
        b'M' => {
            if r.remaining() < 10 {
                return Err(EnvelopeError::Length);
            }
            let jseq = r.get_u64();
            let n = r.get_u16();
            let mut copies = Vec::with_capacity(usize::from(n).min(64));
            for _ in 0..n {
                let client = get_str(&mut r)?;
                if r.remaining() < 3 {
                    return Err(EnvelopeError::Length);
                }
                let qos = QoS::from_bits(r.get_u8()).ok_or(EnvelopeError::Length)?;
                let retain = r.get_u8() == 1;
                let k = r.get_u8();
                if r.remaining() < usize::from(k) * 4 {
                    return Err(EnvelopeError::Length);
                }
                let identifiers = (0..k)
                    .filter_map(|_| std::num::NonZeroU32::new(r.get_u32()))
                    .collect();
                copies.push(Copy {
                    client,
                    qos,
                    retain,
                    identifiers,
                });
            }
            Ok(Record::Message {
                jseq,
                copies,
                envelope: Envelope::decode(r, now)?,
            })
        }
        b'F' => {
            if r.remaining() < 4 {
                return Err(EnvelopeError::Length);
            }
            let n = r.get_u32();
            let mut floors = Vec::new();
            for _ in 0..n {
                let client = get_str(&mut r)?;
                if r.remaining() < 8 {
                    return Err(EnvelopeError::Length);
                }
                floors.push((client, r.get_u64()));
            }
            Ok(Record::Floors(floors))
        }
        other => Err(EnvelopeError::Format(other)),
    }
}

/// What the writer is asked to do.
enum Job {
    /// Append a record; tell when it is durable.
    Write(Bytes, Option<oneshot::Sender<()>>),
    /// Append the floors, then trim below what neither they nor `oldest` (the oldest
    /// number still needed) need.
    Floors(HashMap<String, u64>, u64),
    /// Tell once everything asked before is durable.
    Flush(oneshot::Sender<()>),
    /// The node stops: the writer ends after the jobs before this one.
    Close,
}

/// This node's journal.
#[derive(Debug)]
pub struct Journal {
    jobs: mpsc::UnboundedSender<Job>,
    /// The last number handed out.
    last: AtomicU64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Write(..) => "Write",
            Self::Floors(..) => "Floors",
            Self::Flush(..) => "Flush",
            Self::Close => "Close",
        })
    }
}

impl Journal {
    /// The journal of `node` in stream `name`, written by a task on `tasks` until
    /// `shutdown`.
    pub fn start(
        backplane: Arc<dyn Backplane>,
        (node, name): (&str, String),
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (jobs, pending) = mpsc::unbounded_channel();
        tasks.spawn(
            Writer {
                journal: Appender::new(backplane, node.into(), name, options()),
                marks: VecDeque::new(),
            }
            .run(pending, shutdown),
        );
        Self {
            jobs,
            last: AtomicU64::new(0),
        }
    }

    /// A number for a message about to be routed.
    pub fn next(&self) -> u64 {
        self.last.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The number the next message will get: every session's floor when it waits for
    /// nothing.
    pub fn upcoming(&self) -> u64 {
        self.last.load(Ordering::Relaxed) + 1
    }

    /// Writes `record`; the receiver is told when it is durable.
    pub fn write(&self, record: Bytes) -> oneshot::Receiver<()> {
        let (done, wait) = oneshot::channel();
        let _ = self.jobs.send(Job::Write(record, Some(done)));
        wait
    }

    /// Writes the sessions' `floors` and trims below `oldest`.
    pub fn floors(&self, floors: HashMap<String, u64>, oldest: u64) {
        let _ = self.jobs.send(Job::Floors(floors, oldest));
    }

    /// The node stops cleanly: the floors just asked for are the last job; the writer
    /// ends after them (or [`CLOSING`] after the node's shutdown, whichever is first).
    pub fn close(&self) {
        let _ = self.jobs.send(Job::Close);
    }

    /// Waits until every record written before is durable; false if the node stops first.
    pub async fn flush(&self) -> bool {
        let (done, wait) = oneshot::channel();
        let _ = self.jobs.send(Job::Flush(done));
        wait.await.is_ok()
    }
}

/// The copies of `out` for journaling: the session `client` and how `out` is sent.
pub fn copy_of(client: &str, out: &Outgoing) -> Copy {
    Copy {
        client: client.to_owned(),
        qos: out.qos,
        retain: out.retain,
        identifiers: out.identifiers.clone(),
    }
}

/// The task behind a [`Journal`].
struct Writer {
    journal: Appender,
    /// (the highest message number in a batch, the batch's first offset), oldest first.
    /// Numbers are taken by routing threads and written in the order they reach the
    /// queue, so a batch may hold a number lower than an earlier batch's.
    marks: VecDeque<(u64, u64)>,
}

impl Writer {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut closing = None;
        let mut closed = false;
        while !closed {
            tokio::select! {
                () = stop.cancelled(), if closing.is_none() => {
                    closing = Some(Instant::now() + CLOSING);
                    continue;
                }
                () = tokio::time::sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => return,
                n = jobs.recv_many(&mut batch, BATCH) => if n == 0 { return },
            }
            let mut records = Vec::new();
            let mut done = Vec::new();
            let mut highest = None;
            let mut trim = None;
            for job in batch.drain(..) {
                match job {
                    Job::Write(record, tell) => {
                        if let Some(mut jseq) = record.get(1..9) {
                            highest = highest.max(Some(jseq.get_u64()));
                        }
                        records.push(record);
                        done.extend(tell);
                    }
                    Job::Floors(floors, oldest) => {
                        records.push(floors_record(&floors));
                        trim = Some(oldest);
                    }
                    Job::Flush(tell) => done.push(tell),
                    Job::Close => closed = true,
                }
            }
            let first = if records.is_empty() {
                None
            } else {
                match self.journal.append(records, &stop).await {
                    Appended::Stored(first) => Some(first),
                    // Nobody is told: their messages stay unacknowledged.
                    Appended::Refused => continue,
                    Appended::Stopped => return,
                }
            };
            for tell in done {
                let _ = tell.send(());
            }
            let Some(first) = first else { continue };
            if let Some(jseq) = highest {
                self.marks.push_back((jseq, first));
            }
            if let Some(oldest) = trim {
                self.trim(oldest, first).await;
            }
        }
    }

    /// Trims the batches whose messages are all below `oldest`, and never past
    /// `floors_at` (the offset of the latest floors).
    async fn trim(&mut self, oldest: u64, floors_at: u64) {
        while self
            .marks
            .front()
            .is_some_and(|&(highest, _)| highest < oldest)
        {
            self.marks.pop_front();
        }
        let below = self
            .marks
            .front()
            .map_or(floors_at, |&(_, offset)| offset.min(floors_at));
        if let Some(stream) = self.journal.stream()
            && let Err(e) = stream.truncate(below).await
        {
            warn!(error = %e, "cannot trim this node's MQTT journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    #[test]
    fn message_and_floor_records_read_back() {
        let now = Instant::now();
        let envelope = Envelope {
            id: super::super::MessageId {
                origin: "n1".into(),
                seq: 7,
            },
            message: Message::new(
                "a/b".into(),
                Bytes::from_static(b"x"),
                QoS::ExactlyOnce,
                false,
            ),
            plain: true,
            groups: Vec::new(),
        };
        let copies = vec![
            Copy {
                client: "c1".into(),
                qos: QoS::AtLeastOnce,
                retain: true,
                identifiers: vec![std::num::NonZeroU32::new(3).expect("non-zero")],
            },
            Copy {
                client: "c2".into(),
                qos: QoS::ExactlyOnce,
                retain: false,
                identifiers: Vec::new(),
            },
        ];
        match read(&message_record(42, &copies, &envelope, now), now) {
            Ok(Record::Message {
                jseq,
                copies: got,
                envelope: e,
            }) => {
                assert_eq!((jseq, got, e.id), (42, copies, envelope.id));
            }
            other => panic!("{other:?}"),
        }
        let floors = HashMap::from([("c1".to_owned(), 43), ("c2".to_owned(), 40)]);
        match read(&floors_record(&floors), now) {
            Ok(Record::Floors(f)) => assert_eq!(f.into_iter().collect::<HashMap<_, _>>(), floors),
            other => panic!("{other:?}"),
        }
        assert!(read(b"Mshort", now).is_err());
        assert!(matches!(read(b"Z", now), Err(EnvelopeError::Format(b'Z'))));
    }
}
