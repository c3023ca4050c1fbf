//! Targets watch checks itself: HTTP (status range, optional body match) and TCP, each on
//! its own interval with its own rise and fall. The probe ([`net::probe`]) and the rise/fall
//! counting ([`balance::RiseFall`]) are the ones the proxy's active checks use.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use balance::RiseFall;
use net::probe::HttpProbe;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{TargetCheck, TargetConfig};
use crate::engine::Transition;
use crate::now_ms;
use crate::telemetry::CheckCounters;

/// Checks of one target kept for its response-time graph: a day at one check a minute,
/// two hours at the default 10 s interval.
const KEEP_TIMES: usize = 1440;

/// One check as the console's response-time graph draws it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CheckTime {
    /// When it ran (ms since the Unix epoch).
    pub at_ms: i64,
    /// How long the probe took, in milliseconds (a failed one: until it failed).
    pub ms: f64,
    /// Whether it passed.
    pub ok: bool,
}

/// A target's latest checks, newest last; in memory only (the state changes are stored).
#[derive(Debug, Default)]
pub struct ResponseTimes(Mutex<VecDeque<CheckTime>>);

impl ResponseTimes {
    fn push(&self, t: CheckTime) {
        let mut times = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if times.len() == KEEP_TIMES {
            times.pop_front();
        }
        times.push_back(t);
    }

    /// Every check kept, oldest first.
    pub fn all(&self) -> Vec<CheckTime> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// Checks `t` every interval until `cancel`, reporting changes (after `fall` failures or
/// `rise` passes in a row) on `out`. A target starts up, like a proxy backend.
/// Every check counts in `counters` and is kept in `times`.
pub(crate) async fn run(
    t: TargetConfig,
    out: mpsc::Sender<Transition>,
    counters: CheckCounters,
    times: Arc<ResponseTimes>,
    cancel: CancellationToken,
) {
    let detail = t.check.detail();
    let (address, http) = match &t.check {
        TargetCheck::Http {
            url,
            expect_status,
            body_contains,
        } => (
            format!("{}:{}", url.host(), url.port()),
            Some(HttpProbe {
                method: http::Method::GET,
                path: url.path_and_query().to_owned(),
                host: url.authority().to_owned(),
                expect: *expect_status,
                body_contains: body_contains.clone(),
                user_agent: "lintas-watch",
            }),
        ),
        TargetCheck::Tcp { address } => (address.clone(), None),
    };
    let mut state = RiseFall::default();
    let mut ticker = tokio::time::interval(t.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let result = net::probe::probe(address.as_str(), http.as_ref(), t.timeout).await;
        counters.ran(result.is_ok());
        times.push(CheckTime {
            at_ms: now_ms(),
            ms: started.elapsed().as_secs_f64() * 1000.0,
            ok: result.is_ok(),
        });
        let Some(up) = state.observe(result.is_ok(), t.rise, t.fall) else {
            continue;
        };
        let change = Transition {
            target: t.name.clone(),
            detail: detail.clone(),
            up,
            reason: match result {
                Ok(d) | Err(d) => d,
            },
            at_ms: now_ms(),
        };
        if out.send(change).await.is_err() {
            return;
        }
    }
}
