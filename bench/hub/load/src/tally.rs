//! What a member counts: the message data, the per-member tally and the latency histograms.
//!
//! Every message's `data` is `{"pub":P,"seq":S,"sent":T,"pad":"x…"}`: the publisher's
//! index, its sequence number and the send time in ns on the tool's monotonic clock
//! (publishers and members share the process, so one clock). Both servers keep one
//! publisher's order within a room, so a member checks the sequence against the next one
//! it expects: a jump counts the skipped messages as missing, a number already passed as a
//! duplicate. Latencies go into one HDR histogram per tool thread (10,000 per-member
//! histograms would be hundreds of MiB), merged at the end.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Result, bail};
use hdrhistogram::Histogram;

use crate::proto::Payload;

/// Publisher index of the readiness probes sent before a measurement (not counted).
pub const PROBE: u32 = u32::MAX;
/// Highest latency the histograms hold: 60 s in µs; longer ones are clamped to it.
const MAX_US: u64 = 60_000_000;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's epoch.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The `data` of message `seq` of `publisher`, stamped now.
pub fn data(publisher: u32, seq: u64, pad: &str) -> String {
    format!(
        r#"{{"pub":{publisher},"seq":{seq},"sent":{},"pad":"{pad}"}}"#,
        now_ns()
    )
}

/// A latency histogram with 2 significant digits (1 % resolution).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("static histogram bounds are valid")
}

type Shared = Arc<Mutex<Histogram<u64>>>;

fn all_histograms() -> &'static Mutex<Vec<Shared>> {
    static ALL: OnceLock<Mutex<Vec<Shared>>> = OnceLock::new();
    ALL.get_or_init(Default::default)
}

thread_local! {
    /// This thread's histogram; its lock is only ever contended by [`merged`].
    static LOCAL: Shared = {
        let h = Arc::new(Mutex::new(histogram()));
        all_histograms().lock().expect("not poisoned").push(Arc::clone(&h));
        h
    };
}

fn record_latency(us: u64) {
    LOCAL.with(|h| {
        h.lock()
            .expect("not poisoned")
            .record(us.clamp(1, MAX_US))
            .expect("clamped into the histogram's range")
    });
}

/// Every thread's latencies together.
pub fn merged() -> Histogram<u64> {
    let mut out = histogram();
    for h in all_histograms().lock().expect("not poisoned").iter() {
        out.add(&*h.lock().expect("not poisoned"))
            .expect("histograms of equal bounds add");
    }
    out
}

/// What a received message was.
pub enum Seen {
    /// A probe; `true` the first time this member sees one.
    Probe(bool),
    /// A measured message.
    Measured,
}

/// One member's counts.
pub struct Tally {
    /// The publisher of this member's room, if it has one.
    publisher: Option<u32>,
    /// The next sequence number expected from it.
    next: u64,
    /// Messages received, probes excluded, duplicates included.
    pub received: u64,
    /// Messages skipped over in the sequence.
    pub gaps: u64,
    /// Messages whose sequence number was already passed.
    pub duplicates: u64,
    /// When the last measured message arrived (ns since the epoch).
    pub last_ns: u64,
    probed: bool,
}

impl Tally {
    pub fn new(publisher: Option<u32>) -> Self {
        Tally {
            publisher,
            next: 0,
            received: 0,
            gaps: 0,
            duplicates: 0,
            last_ns: 0,
            probed: false,
        }
    }

    pub fn record(&mut self, p: &Payload) -> Result<Seen> {
        if p.publisher == PROBE {
            let first = !self.probed;
            self.probed = true;
            return Ok(Seen::Probe(first));
        }
        if Some(p.publisher) != self.publisher {
            bail!(
                "a message of publisher {} reached a member of publisher {:?}'s room",
                p.publisher,
                self.publisher
            );
        }
        let now = now_ns();
        self.received += 1;
        self.last_ns = now;
        if p.seq < self.next {
            self.duplicates += 1;
        } else {
            self.gaps += p.seq - self.next;
            self.next = p.seq + 1;
        }
        record_latency(now.saturating_sub(p.sent) / 1000);
        Ok(Seen::Measured)
    }

    /// Messages never seen, given how many each publisher sent: gaps plus the tail after
    /// the last one received.
    pub fn missing(&self, sent: &[u64]) -> u64 {
        let tail = self
            .publisher
            .map_or(0, |p| sent[p as usize].saturating_sub(self.next));
        self.gaps + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(publisher: u32, seq: u64) -> Payload {
        let text = data(publisher, seq, "xx");
        serde_json::from_str(&text).expect("data parses as a payload")
    }

    #[test]
    fn counts_gaps_duplicates_and_tail() {
        let mut t = Tally::new(Some(1));
        for seq in [0, 1, 4, 2, 5] {
            assert!(matches!(t.record(&payload(1, seq)), Ok(Seen::Measured)));
        }
        assert_eq!((t.received, t.gaps, t.duplicates), (5, 2, 1));
        assert_eq!(t.missing(&[0, 8]), 2 + 2);
    }

    #[test]
    fn probe_is_not_counted_and_strangers_are_refused() {
        let mut t = Tally::new(Some(0));
        assert!(matches!(
            t.record(&payload(PROBE, 0)),
            Ok(Seen::Probe(true))
        ));
        assert!(matches!(
            t.record(&payload(PROBE, 0)),
            Ok(Seen::Probe(false))
        ));
        assert_eq!(t.received, 0);
        assert!(t.record(&payload(2, 0)).is_err());
    }
}
