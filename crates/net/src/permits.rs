//! Connection permits whose number can change while connections hold them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener's connection slots. Taken *before* accepting, so at the limit new clients
/// wait in the kernel's backlog; resizable on reload without dropping connections. A
/// shrink takes back the free slots at once and the rest as connections end: a semaphore
/// can only forget permits that are free, and a limit that silently stays higher than
/// configured is a limit that does not hold.
#[derive(Debug, Clone)]
pub struct Permits {
    slots: Arc<Semaphore>,
    /// Slots a shrink could not take back yet; the next ones returned are forgotten.
    owed: Arc<AtomicUsize>,
}

/// One connection's slot; given back (or forgotten, after a shrink) when dropped.
#[derive(Debug)]
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicUsize>,
}

impl Permits {
    /// `max` slots.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            owed: Arc::default(),
        }
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> Permit {
        // The semaphore is never closed.
        let permit = self.slots.clone().acquire_owned().await.ok();
        Permit {
            permit,
            owed: self.owed.clone(),
        }
    }

    /// Changes the number of slots from `old` to `new`.
    pub fn resize(&self, old: usize, new: usize) {
        if new >= old {
            let more = new - old;
            let before = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                    Some(o.saturating_sub(more))
                })
                .unwrap_or(0);
            self.slots.add_permits(more - before.min(more));
        } else {
            let fewer = old - new;
            let taken = self.slots.forget_permits(fewer);
            self.owed.fetch_add(fewer - taken, Ordering::AcqRel);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let owed = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1));
        if owed.is_ok() {
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shrink_below_the_slots_in_use_holds_once_they_end() {
        let permits = Permits::new(3);
        let held = [
            permits.acquire().await,
            permits.acquire().await,
            permits.acquire().await,
        ];
        permits.resize(3, 1);
        assert_eq!(permits.slots.available_permits(), 0);
        drop(held);
        assert_eq!(permits.slots.available_permits(), 1);

        let one = permits.acquire().await;
        permits.resize(1, 2);
        permits.resize(2, 4);
        assert_eq!(permits.slots.available_permits(), 3);
        drop(one);
        assert_eq!(permits.slots.available_permits(), 4);
    }

    #[tokio::test]
    async fn growing_pays_back_what_a_shrink_still_owes() {
        let permits = Permits::new(2);
        let held = [permits.acquire().await, permits.acquire().await];
        permits.resize(2, 1);
        permits.resize(1, 2);
        drop(held);
        assert_eq!(permits.slots.available_permits(), 2);
    }
}
