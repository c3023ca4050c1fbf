//! Targets watch checks itself: HTTP (status range, optional body match) and TCP, each on
//! its own interval with its own rise and fall. The probe ([`net::probe`]) and the rise/fall
//! counting ([`balance::RiseFall`]) are the ones the proxy's active checks use.

use balance::RiseFall;
use net::probe::HttpProbe;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{TargetCheck, TargetConfig};
use crate::engine::Transition;
use crate::now_ms;
use crate::telemetry::CheckCounters;

/// Checks `t` every interval until `cancel`, reporting changes (after `fall` failures or
/// `rise` passes in a row) on `out`. A target starts up, like a proxy backend.
/// Every check counts in `counters`.
pub(crate) async fn run(
    t: TargetConfig,
    out: mpsc::Sender<Transition>,
    counters: CheckCounters,
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
        let result = net::probe::probe(address.as_str(), http.as_ref(), t.timeout).await;
        counters.ran(result.is_ok());
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
