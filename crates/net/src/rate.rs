//! A minimum data rate for bodies (Kestrel's `MinRequestBodyDataRate`).

use std::time::Duration;

use tokio::time::Instant;

/// Tracks one body's bytes against a minimum average rate. An inactivity timeout never fires
/// on a client that sends one byte a second; this does: after `grace`, the body's average
/// rate since its start must stay at or above `rate` bytes per second.
#[derive(Debug, Clone)]
pub struct MinRate {
    start: Instant,
    grace: Duration,
    rate: u64,
    received: u64,
}

impl MinRate {
    /// A body starting now; `rate` 0 never expires.
    pub fn new(rate: u64, grace: Duration) -> Self {
        Self {
            start: Instant::now(),
            grace,
            rate,
            received: 0,
        }
    }

    /// The minimum rate, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Counts bytes received.
    pub fn add(&mut self, n: usize) {
        self.received = self.received.saturating_add(n as u64);
    }

    /// When the next byte must have arrived for the body to keep the rate; `None` when
    /// the check is off.
    pub fn deadline(&self) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64((self.received + 1) as f64 / self.rate as f64);
        Some(self.start + earned.max(self.grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadline_grows_with_the_bytes_received() {
        let mut r = MinRate::new(100, Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(r.deadline(), Some(start + Duration::from_secs(5)));
        r.add(999);
        assert_eq!(r.deadline(), Some(start + Duration::from_secs(10)));
        assert_eq!(MinRate::new(0, Duration::ZERO).deadline(), None);
    }
}
