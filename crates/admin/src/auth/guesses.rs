//! Per-source limits on password checks: a few free failures, then exponential backoff, and
//! at most [`MAX_PENDING`] checks in flight per source.
//!
//! Every wrong password costs an argon2 run; the global cap ([`super::MAX_VERIFYING`]) keeps
//! that from taking the whole machine, and this keeps one source from taking the whole cap
//! or guessing at full speed. A throttled request is answered at once, without argon2.
//!
//! A source is whatever key the caller counts by: the admin listener counts client
//! addresses, the MQTT broker a user name with an address. Addresses are counted as IPv4
//! addresses and IPv6 /64 networks ([`source`]; one host usually holds a whole /64, so
//! counting single IPv6 addresses would count nothing). The table is bounded
//! ([`MAX_ADDRESSES`]): it keeps only sources with recent failures or checks in flight, and
//! when full forgets the source whose last failure is oldest. An attacker with more
//! sources than that can make lintas forget some of them; the global cap still holds.
//!
//! The policy is plain logic over explicit times, so its tests need no clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures an address may have before it must wait between attempts: enough for an
/// operator's typos.
pub(crate) const FREE_FAILURES: u32 = 5;

/// The wait after the first failure past the free ones; each further failure doubles it.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait imposed.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// An address that has not failed for this long starts afresh.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Sources tracked at most.
pub(crate) const MAX_ADDRESSES: usize = 4096;

/// Checks one address may have queued or running at once. Two, so that a browser's parallel
/// first requests (page and favicon) both get an answer.
pub(crate) const MAX_PENDING: u32 = 2;

/// Why an address must wait before its credentials are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// It failed too often lately; it may try again after this long.
    Backoff(Duration),
    /// It already has two checks in flight (`MAX_PENDING`).
    Busy,
}

/// What is known of one address.
#[derive(Debug, Default)]
struct Entry {
    /// Failures since it last succeeded or was forgotten.
    failures: u32,
    /// When it last failed; drives [`FORGET_AFTER`] and eviction.
    last_failure: Option<Instant>,
    /// No check before this instant.
    blocked_until: Option<Instant>,
    /// Checks admitted and not yet settled.
    pending: u32,
}

impl Entry {
    /// Forgets failures older than [`FORGET_AFTER`].
    fn expire(&mut self, now: Instant) {
        if self
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_AFTER)
        {
            *self = Entry {
                pending: self.pending,
                ..Entry::default()
            };
        }
    }

    /// Whether it holds nothing worth keeping.
    fn is_empty(&self) -> bool {
        self.failures == 0 && self.pending == 0
    }
}

/// The table of sources (client addresses by default) with recent failures or checks in
/// flight.
#[derive(Debug)]
pub struct Guesses<K = IpAddr> {
    by_source: Mutex<HashMap<K, Entry>>,
}

impl<K> Default for Guesses<K> {
    fn default() -> Self {
        Self {
            by_source: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Guesses<K> {
    /// Admits a check from `source` at `now`, or says why it must wait. The returned ticket
    /// counts as in flight until it is finished or dropped. Count addresses through
    /// [`source`](fn@source).
    pub fn admit(self: &Arc<Self>, source: K, now: Instant) -> Result<Ticket<K>, Throttle> {
        let mut table = self.lock();
        if !table.contains_key(&source) && table.len() >= MAX_ADDRESSES {
            evict_one(&mut table);
        }
        let entry = table.entry(source.clone()).or_default();
        entry.expire(now);
        if let Some(wait) = blocked(entry, now) {
            return Err(Throttle::Backoff(wait));
        }
        if entry.pending >= MAX_PENDING {
            return Err(Throttle::Busy);
        }
        entry.pending += 1;
        Ok(Ticket {
            guesses: self.clone(),
            source,
            settled: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        self.by_source.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends one check of `source`: `Some(true)` succeeded (its failures are forgotten),
    /// `Some(false)` failed, `None` was abandoned before a verdict.
    fn settle(&self, source: &K, outcome: Option<bool>, now: Instant) {
        let mut table = self.lock();
        let Some(entry) = table.get_mut(source) else {
            return;
        };
        entry.pending = entry.pending.saturating_sub(1);
        match outcome {
            Some(true) => {
                entry.failures = 0;
                entry.last_failure = None;
                entry.blocked_until = None;
            }
            Some(false) => {
                entry.failures = entry.failures.saturating_add(1);
                entry.last_failure = Some(now);
                if let Some(wait) = backoff(entry.failures) {
                    entry.blocked_until = Some(now + wait);
                }
            }
            None => {}
        }
        if entry.is_empty() {
            table.remove(source);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// A check admitted for one source; settles itself as abandoned if dropped unfinished (a
/// client that hung up before its check started).
#[derive(Debug)]
pub struct Ticket<K: Hash + Eq + Clone = IpAddr> {
    guesses: Arc<Guesses<K>>,
    source: K,
    settled: bool,
}

impl<K: Hash + Eq + Clone> Ticket<K> {
    /// Whether the source may still go ahead at `now`: another of its checks may have failed
    /// while this one waited for a verification slot.
    pub fn recheck(&self, now: Instant) -> Result<(), Throttle> {
        let mut table = self.guesses.lock();
        match table.get_mut(&self.source) {
            Some(entry) => blocked(entry, now).map_or(Ok(()), |w| Err(Throttle::Backoff(w))),
            None => Ok(()),
        }
    }

    /// Records the verdict of the check: a success forgets the source's failures.
    pub fn finish(mut self, ok: bool, now: Instant) {
        self.settled = true;
        self.guesses.settle(&self.source, Some(ok), now);
    }
}

impl<K: Hash + Eq + Clone> Drop for Ticket<K> {
    fn drop(&mut self) {
        if !self.settled {
            self.guesses.settle(&self.source, None, Instant::now());
        }
    }
}

/// How long `entry` must still wait at `now`, if at all.
fn blocked(entry: &Entry, now: Instant) -> Option<Duration> {
    entry
        .blocked_until
        .map(|until| until.saturating_duration_since(now))
        .filter(|wait| !wait.is_zero())
}

/// The wait imposed after the `failures`-th failure: none for the free ones, then
/// [`FIRST_BACKOFF`] doubling up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Option<Duration> {
    let past_free = failures.checked_sub(FREE_FAILURES + 1)?;
    let factor = 1u32.checked_shl(past_free).unwrap_or(u32::MAX);
    Some(FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF))
}

/// The unit addresses are counted in: an IPv4 address (IPv4-mapped IPv6 included), or an
/// IPv6 /64.
pub fn source(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Makes room for one source: forgets the idle one whose last failure is oldest. Sources
/// with checks in flight are kept (there are at most as many as connections).
fn evict_one<K: Hash + Eq + Clone>(table: &mut HashMap<K, Entry>) {
    let oldest = table
        .iter()
        .filter(|(_, e)| e.pending == 0)
        .min_by_key(|(_, e)| e.last_failure)
        .map(|(source, _)| source.clone());
    if let Some(source) = oldest {
        table.remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn fail(g: &Arc<Guesses>, client: IpAddr, now: Instant) {
        g.admit(client, now).unwrap().finish(false, now);
    }

    #[test]
    fn free_failures_then_doubling_waits_up_to_the_cap() {
        assert_eq!(backoff(FREE_FAILURES), None);
        assert_eq!(backoff(FREE_FAILURES + 1), Some(Duration::from_secs(1)));
        assert_eq!(backoff(FREE_FAILURES + 2), Some(Duration::from_secs(2)));
        assert_eq!(backoff(FREE_FAILURES + 5), Some(Duration::from_secs(16)));
        assert_eq!(backoff(FREE_FAILURES + 9), Some(Duration::from_secs(256)));
        assert_eq!(backoff(FREE_FAILURES + 10), Some(MAX_BACKOFF));
        assert_eq!(backoff(u32::MAX), Some(MAX_BACKOFF));
    }

    #[test]
    fn an_address_is_throttled_after_its_free_failures_and_others_are_not() {
        let g = Arc::new(Guesses::default());
        let t0 = Instant::now();
        for _ in 0..=FREE_FAILURES {
            fail(&g, A, t0);
        }
        let half = t0 + Duration::from_millis(500);
        assert_eq!(
            g.admit(A, half).unwrap_err(),
            Throttle::Backoff(Duration::from_millis(500))
        );
        assert!(g.admit(B, half).is_ok());
        // After the wait, one more failure doubles it.
        let t1 = t0 + Duration::from_secs(1);
        fail(&g, A, t1);
        assert_eq!(
            g.admit(A, t1).unwrap_err(),
            Throttle::Backoff(Duration::from_secs(2))
        );
        // A success forgets everything.
        let t2 = t1 + Duration::from_secs(2);
        g.admit(A, t2).unwrap().finish(true, t2);
        assert_eq!(g.tracked(), 0);
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_while() {
        let g = Arc::new(Guesses::default());
        let t0 = Instant::now();
        for _ in 0..=FREE_FAILURES {
            fail(&g, A, t0);
        }
        // Counted from zero again: the free failures are free once more.
        let later = t0 + FORGET_AFTER;
        for _ in 0..FREE_FAILURES {
            fail(&g, A, later);
        }
        assert!(g.admit(A, later).is_ok());
    }

    #[test]
    fn in_flight_checks_per_address_are_capped_and_dropped_tickets_give_back() {
        let g = Arc::new(Guesses::default());
        let now = Instant::now();
        let first = g.admit(A, now).unwrap();
        let _second = g.admit(A, now).unwrap();
        assert_eq!(g.admit(A, now).unwrap_err(), Throttle::Busy);
        drop(first);
        assert!(g.admit(A, now).is_ok());
    }

    #[test]
    fn a_ticket_rechecks_failures_recorded_while_it_waited() {
        let g = Arc::new(Guesses::default());
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            fail(&g, A, now);
        }
        let waiting = g.admit(A, now).unwrap();
        fail(&g, A, now);
        assert_eq!(
            waiting.recheck(now).unwrap_err(),
            Throttle::Backoff(FIRST_BACKOFF)
        );
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(source("::ffff:192.0.2.1".parse().unwrap()), A);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest_failure() {
        let g = Arc::new(Guesses::default());
        let t0 = Instant::now();
        for i in 0..MAX_ADDRESSES as u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            fail(&g, ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(g.tracked(), MAX_ADDRESSES);
        let later = t0 + Duration::from_secs(60);
        fail(&g, A, later);
        assert_eq!(g.tracked(), MAX_ADDRESSES);
        assert!(!g.lock().contains_key(&IpAddr::V4(0x0a00_0000.into())));
        assert!(g.lock().contains_key(&A));
    }
}
