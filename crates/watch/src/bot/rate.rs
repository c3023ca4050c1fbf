//! A token bucket per chat, so one chat (or a script behind it) cannot keep the bot busy,
//! fill the store or make it mail codes without end.
//!
//! A chat may send `burst` messages at once; its allowance refills at `per_minute`. The
//! first message over the allowance is answered once with "slow down"; later ones are
//! dropped unanswered until the allowance refills. Pure logic over explicit instants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Chats remembered at most; beyond it, chats whose allowance is full again are forgotten
/// (they lose nothing: a new chat starts with a full allowance).
const MAX_CHATS: usize = 10_000;

/// What to do with a chat's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Allow,
    /// Over the allowance for the first time: say "slow down" once.
    Warn,
    /// Over the allowance again: ignore it.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    warned: bool,
}

/// Allowances of every chat that wrote recently.
#[derive(Debug)]
pub struct RateLimit {
    burst: f64,
    refill: Duration,
    chats: HashMap<i64, Bucket>,
}

impl RateLimit {
    /// `burst` messages at once, then `per_minute` (both at least 1).
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            refill: Duration::from_secs(60) / per_minute.max(1),
            chats: HashMap::new(),
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let gained = now.saturating_duration_since(b.at).as_secs_f64() / self.refill.as_secs_f64();
        (b.tokens + gained).min(self.burst)
    }

    /// Takes one message from `chat`'s allowance at `now`.
    pub fn check(&mut self, chat: i64, now: Instant) -> Verdict {
        if self.chats.len() >= MAX_CHATS && !self.chats.contains_key(&chat) {
            let burst = self.burst;
            let full: Vec<i64> = self
                .chats
                .iter()
                .filter(|(_, b)| self.refilled(b, now) >= burst)
                .map(|(c, _)| *c)
                .collect();
            for c in full {
                self.chats.remove(&c);
            }
        }
        let fresh = Bucket {
            tokens: self.burst,
            at: now,
            warned: false,
        };
        let mut b = self.chats.get(&chat).copied().unwrap_or(fresh);
        b.tokens = self.refilled(&b, now);
        b.at = now;
        let verdict = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.warned = false;
            Verdict::Allow
        } else if b.warned {
            Verdict::Drop
        } else {
            b.warned = true;
            Verdict::Warn
        };
        self.chats.insert(chat, b);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_one_warning_then_silence_until_refilled() {
        let mut r = RateLimit::new(3, 6);
        let t0 = Instant::now();
        let got: Vec<Verdict> = (0..6).map(|_| r.check(1, t0)).collect();
        use Verdict::*;
        assert_eq!(got, [Allow, Allow, Allow, Warn, Drop, Drop]);
        // Another chat has its own allowance.
        assert_eq!(r.check(2, t0), Allow);
        // One message refills every 10 s.
        assert_eq!(r.check(1, t0 + Duration::from_secs(9)), Drop);
        assert_eq!(r.check(1, t0 + Duration::from_secs(11)), Allow);
        assert_eq!(r.check(1, t0 + Duration::from_secs(11)), Warn);
        // A full refill after 30 s.
        let later = t0 + Duration::from_secs(60);
        let got: Vec<Verdict> = (0..4).map(|_| r.check(1, later)).collect();
        assert_eq!(got, [Allow, Allow, Allow, Warn]);
    }

    #[test]
    fn idle_chats_are_forgotten_when_too_many() {
        let mut r = RateLimit::new(2, 60);
        let t0 = Instant::now();
        for chat in 0..MAX_CHATS as i64 {
            r.check(chat, t0);
        }
        assert_eq!(r.chats.len(), MAX_CHATS);
        r.check(-1, t0 + Duration::from_secs(5));
        assert_eq!(r.chats.len(), 1);
    }
}
