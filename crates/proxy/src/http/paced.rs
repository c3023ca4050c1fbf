//! A request body held to the listener's pace on its way to the backend (the h2 path).
//!
//! hyper streams an h2 client's request body to the backend as it arrives, with no timer of
//! its own: a client dribbling a byte a second, or stopping halfway, would hold a stream
//! and a backend connection for ever. [`Paced`] fails the body when no data frame arrives
//! within `body_timeout`, or when the body falls under `min_body_rate` after its grace
//! period, as the HTTP/1 path does.

use std::pin::Pin;
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
}

impl Paced {
    /// Paces `inner` from now.
    pub fn new(inner: Incoming, idle: Duration, rate: net::MinRate) -> Self {
        let mut paced = Self {
            inner,
            idle,
            rate,
            deadline: Box::pin(tokio::time::sleep(idle)),
            for_rate: false,
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
                }
                self.rearm();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
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
