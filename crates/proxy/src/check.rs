//! Active health checks: one task per pool probes every backend each `interval`.
//!
//! Probes of one round run concurrently, each bounded by `timeout` ([`net::probe`], the probe
//! watch's targets use too); results feed the pool's
//! state machine ([`balance::Pool::report_check`]), which applies rise/fall and publishes
//! events. Disabled (maintenance) backends are not probed. The same task also ends passive
//! ejections whose cooldown is over ([`balance::Pool::tick`]), which is why a pool without
//! active checks still gets one, ticking every second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use balance::{AdminState, Backend, CheckResult, Pool};
use net::probe::HttpProbe;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{CheckKind, HealthCheckConfig};

/// How often a pool without active checks looks for ended ejections.
const TICK_WITHOUT_CHECKS: Duration = Duration::from_secs(1);

/// What a pool's check sends to each backend: `HealthCheckConfig` made ready once.
#[derive(Debug, Clone)]
struct Probe {
    /// The request of an HTTP check; an empty `Host` means each backend's own address.
    http: Option<HttpProbe>,
    timeout: Duration,
}

/// Runs checks for `pool` until `cancel`.
pub(crate) async fn run(
    pool: Arc<Pool>,
    cfg: Option<HealthCheckConfig>,
    cancel: CancellationToken,
) {
    let probe = cfg.as_ref().map(|c| Probe {
        http: (c.kind == CheckKind::Http).then(|| HttpProbe {
            method: c.method.parse().unwrap_or(http::Method::GET),
            path: c.path.clone(),
            host: c.host.clone().unwrap_or_default(),
            expect: c.expect_status,
            body_contains: c.expect_body.clone(),
            user_agent: "lintas-health-check",
        }),
        timeout: c.timeout,
    });
    let period = cfg.as_ref().map_or(TICK_WITHOUT_CHECKS, |c| c.interval);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = cancel.cancelled() => return,
        }
        pool.tick(Instant::now());
        let Some(probe) = &probe else { continue };
        let mut round = JoinSet::new();
        for b in pool.state().backends.iter().cloned() {
            if b.admin_state() == AdminState::Disabled {
                continue;
            }
            let probe = probe.clone();
            round.spawn(async move {
                let result = check(&b, &probe).await;
                (b, result)
            });
        }
        loop {
            tokio::select! {
                next = round.join_next() => match next {
                    Some(Ok((b, result))) => pool.report_check(&b, &result),
                    Some(Err(_)) => {}
                    None => break,
                },
                _ = cancel.cancelled() => return,
            }
        }
    }
}

async fn check(b: &Backend, probe: &Probe) -> CheckResult {
    let started = Instant::now();
    let http = probe.http.clone().map(|http| match http.host.is_empty() {
        true => HttpProbe {
            host: b.addr().to_string(),
            ..http
        },
        false => http,
    });
    let outcome = net::probe::probe(b.addr(), http.as_ref(), probe.timeout).await;
    CheckResult {
        ok: outcome.is_ok(),
        detail: match outcome {
            Ok(d) | Err(d) => d,
        },
        duration: started.elapsed(),
    }
}
