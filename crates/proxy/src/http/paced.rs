//! A request body held to the listener's pace on its way to the backend (the h2 path).
//!
//! hyper streams an h2 client's request body to the backend as it arrives, with no timer of
//! its own: a client dribbling a byte a second, or stopping halfway, would hold a stream
//! and a backend connection for ever. [`Paced`] fails the body when no data frame arrives
//! within `body_timeout`, or when the body falls under `min_body_rate` after its grace
//! period, as the HTTP/1 path does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a paced body was cut.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PaceError {
    /// No data for the idle time.
    #[error("no body data for {}", configkit::format_duration(*.0))]
    Stalled(Duration),
    /// Under the minimum rate (bytes per second).
    #[error("body data slower than {0} bytes/s")]
    TooSlow(u64),
    /// The client's stream failed.
    #[error(transparent)]
    Client(#[from] hyper::Error),
}

/// `inner`, failed with a [`PaceError`] when it stalls or falls under its minimum rate.
pub(crate) struct Paced {
    inner: Incoming,
    idle: Duration,
    rate: net::MinRate,
    /// The earlier of the idle deadline and the rate's.
    deadline: Pin<Box<Sleep>>,
    /// Whether `deadline` is the rate's (the body is too slow) rather than the idle one.
    for_rate: bool,
    /// Told of every frame, so the wait for the response counts from the body's end.
    progress: Progress,
}

/// When a request last made progress towards the backend: the request's `request_timeout`
/// counts from there, so a long upload that keeps moving is not cut, and a backend that
/// stops reading it or answering is.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    base: Instant,
    marks: Arc<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    /// Milliseconds after `base` of the last progress.
    last: AtomicU64,
    /// Body bytes passed on, for the access log.
    bytes: AtomicU64,
}

impl Progress {
    /// Progress made now.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            marks: Arc::default(),
        }
    }

    fn mark(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.marks.last.store(ms, Ordering::Relaxed);
    }

    /// Body bytes passed on so far.
    pub fn received(&self) -> u64 {
        self.marks.bytes.load(Ordering::Relaxed)
    }

    /// Resolves once `limit` has passed without progress.
    pub async fn stalled_for(&self, limit: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.marks.last.load(Ordering::Relaxed));
            let until = last + limit;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

impl Paced {
    /// Paces `inner` from now, marking `progress` as frames pass.
    pub fn new(inner: Incoming, idle: Duration, rate: net::MinRate, progress: Progress) -> Self {
        let mut paced = Self {
            inner,
            idle,
            rate,
            deadline: Box::pin(tokio::time::sleep(idle)),
            for_rate: false,
            progress,
        };
        paced.rearm();
        paced
    }

    /// Sets the deadline for the next data frame.
    fn rearm(&mut self) {
        let idle = Instant::now() + self.idle;
        let (at, for_rate) = match self.rate.deadline() {
            Some(slow) if slow < idle => (slow, true),
            _ => (idle, false),
        };
        self.deadline.as_mut().reset(at);
        self.for_rate = for_rate;
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = PaceError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, PaceError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.rate.add(data.len());
                    let n = data.len() as u64;
                    self.progress.marks.bytes.fetch_add(n, Ordering::Relaxed);
                }
                self.progress.mark();
                self.rearm();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                self.progress.mark();
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(self.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(if self.for_rate {
                    PaceError::TooSlow(self.rate.rate())
                } else {
                    PaceError::Stalled(self.idle)
                })))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The pace error somewhere in `e`'s sources, if a paced body is why it failed.
pub(crate) fn pace_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a PaceError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(p) = err.downcast_ref::<PaceError>() {
            return Some(p);
        }
        cur = err.source();
    }
    None
}
