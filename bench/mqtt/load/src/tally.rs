//! What a subscriber counts: the payload layout and the per-subscriber tally.
//!
//! Every payload starts with the publisher's index, its sequence number and the send time
//! (nanoseconds since the process started; publishers and subscribers share the process, so
//! one monotonic clock). MQTT keeps the order of one publisher's messages on one topic, so a
//! subscriber checks each publisher's sequence against the next one it expects: a jump
//! counts the skipped messages as missing, a number already passed counts as a duplicate
//! (a redelivery). That needs O(publishers) memory instead of a bitmap per message, which
//! matters with 1,000 subscribers. Latency goes into an HDR histogram in microseconds.

use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Result, bail};
use hdrhistogram::Histogram;

/// Bytes of the header every payload carries: publisher u32, sequence u64, sent-at u64.
pub const HEADER: usize = 20;
/// Publisher index of the readiness probes sent before a measurement (not counted).
pub const PROBE: u32 = u32::MAX;
/// Highest latency the histogram holds: 60 s in µs; longer ones are clamped to it.
const MAX_US: u64 = 60_000_000;

/// The clock every timestamp is relative to.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's epoch.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Writes the header into the first `HEADER` bytes of `payload`.
pub fn stamp(payload: &mut [u8], publisher: u32, seq: u64) {
    payload[..4].copy_from_slice(&publisher.to_le_bytes());
    payload[4..12].copy_from_slice(&seq.to_le_bytes());
    payload[12..20].copy_from_slice(&now_ns().to_le_bytes());
}

/// A latency histogram with 2 significant digits (1 % resolution, a few KiB each, so 1,000
/// subscribers can each own one without sharing a lock).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("static histogram bounds are valid")
}

/// One subscriber's counts.
pub struct Tally {
    /// Next expected sequence number per publisher index.
    next: Vec<u64>,
    /// Messages received, probes excluded, duplicates included.
    pub received: u64,
    /// Messages skipped over in a publisher's sequence.
    pub gaps: u64,
    /// Messages whose sequence number was already passed.
    pub duplicates: u64,
    /// Publish-to-deliver latency in µs.
    pub latency: Histogram<u64>,
    /// When the last counted message arrived (ns since the epoch).
    pub last_ns: u64,
    /// Whether a probe arrived: the subscription is live end to end.
    pub probed: bool,
}

impl Tally {
    /// A tally expecting messages from publishers `0..publishers`.
    pub fn new(publishers: usize) -> Self {
        Tally {
            next: vec![0; publishers],
            received: 0,
            gaps: 0,
            duplicates: 0,
            latency: histogram(),
            last_ns: 0,
            probed: false,
        }
    }

    /// Counts one payload; `Ok(true)` when it was a measured message, not a probe.
    pub fn record(&mut self, payload: &[u8]) -> Result<bool> {
        if payload.len() < HEADER {
            bail!(
                "payload of {} bytes is shorter than the {HEADER}-byte header",
                payload.len()
            );
        }
        let publisher = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes"));
        if publisher == PROBE {
            self.probed = true;
            return Ok(false);
        }
        let seq = u64::from_le_bytes(payload[4..12].try_into().expect("8 bytes"));
        let sent = u64::from_le_bytes(payload[12..20].try_into().expect("8 bytes"));
        let Some(next) = self.next.get_mut(publisher as usize) else {
            bail!(
                "payload from publisher {publisher}, but this run has {}",
                self.next.len()
            );
        };
        let now = now_ns();
        self.received += 1;
        self.last_ns = now;
        if seq < *next {
            self.duplicates += 1;
        } else {
            self.gaps += seq - *next;
            *next = seq + 1;
        }
        let us = (now.saturating_sub(sent) / 1000).clamp(1, MAX_US);
        self.latency
            .record(us)
            .expect("clamped into the histogram's range");
        Ok(true)
    }

    /// Messages never seen: gaps plus each publisher's tail after its last received one.
    pub fn missing(&self, sent: &[u64]) -> u64 {
        let tails: u64 = self
            .next
            .iter()
            .zip(sent)
            .map(|(next, sent)| sent.saturating_sub(*next))
            .sum();
        self.gaps + tails
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(publisher: u32, seq: u64) -> Vec<u8> {
        let mut p = vec![0; 32];
        stamp(&mut p, publisher, seq);
        p
    }

    #[test]
    fn counts_gaps_duplicates_and_tails() {
        let mut t = Tally::new(2);
        for (publisher, seq) in [(0, 0), (0, 1), (0, 4), (0, 2), (1, 0), (0, 5)] {
            assert!(t.record(&payload(publisher, seq)).expect("valid"));
        }
        assert_eq!((t.received, t.gaps, t.duplicates), (6, 2, 1));
        assert_eq!(t.missing(&[8, 3]), 2 + 2 + 2);
        assert_eq!(t.latency.len(), 6);
    }

    #[test]
    fn probe_is_not_counted() {
        let mut t = Tally::new(1);
        assert!(!t.record(&payload(PROBE, 0)).expect("valid"));
        assert!(t.probed);
        assert_eq!(t.received, 0);
    }

    #[test]
    fn rejects_short_payload_and_unknown_publisher() {
        let mut t = Tally::new(1);
        assert!(t.record(&[0; 19]).is_err());
        assert!(t.record(&payload(1, 0)).is_err());
    }
}
