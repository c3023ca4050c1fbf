//! Active health checks: one task per pool probes every backend each `interval`.
//!
//! Probes of one round run concurrently, each bounded by `timeout`; results feed the pool's
//! state machine ([`balance::Pool::report_check`]), which applies rise/fall and publishes
//! events. Disabled (maintenance) backends are not probed. The same task also ends passive
//! ejections whose cooldown is over ([`balance::Pool::tick`]), which is why a pool without
//! active checks still gets one, ticking every second.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use balance::{AdminState, Backend, CheckResult, Pool};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{CheckKind, HealthCheckConfig, parse_status_range};
use crate::tcp;

/// How often a pool without active checks looks for ended ejections.
const TICK_WITHOUT_CHECKS: Duration = Duration::from_secs(1);

/// A validated check: what `HealthCheckConfig` becomes once its strings are parsed.
#[derive(Debug, Clone)]
struct Probe {
    kind: CheckKind,
    path: String,
    expect: RangeInclusive<u16>,
    timeout: Duration,
}

/// Runs checks for `pool` until `cancel`.
pub(crate) async fn run(
    pool: Arc<Pool>,
    cfg: Option<HealthCheckConfig>,
    cancel: CancellationToken,
) {
    let probe = cfg.as_ref().map(|c| Probe {
        kind: c.kind,
        path: c.path.clone(),
        expect: parse_status_range(&c.expect_status).unwrap_or(200..=399),
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
    let outcome = tokio::time::timeout(probe.timeout, attempt(b, probe)).await;
    let (ok, detail) = match outcome {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(detail)) => (false, detail),
        Err(_) => (
            false,
            format!(
                "no answer within {}",
                configkit::format_duration(probe.timeout)
            ),
        ),
    };
    CheckResult {
        ok,
        detail,
        duration: started.elapsed(),
    }
}

async fn attempt(b: &Backend, probe: &Probe) -> Result<String, String> {
    let stream = tcp::connect(b.addr(), probe.timeout)
        .await
        .map_err(|e| e.to_string())?;
    if probe.kind == CheckKind::Tcp {
        return Ok("TCP connect ok".into());
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get(probe.path.as_str())
        .header(header::HOST, b.addr().to_string())
        .header(header::USER_AGENT, "lintas-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP request failed: {e}"))?;
    let status = resp.status().as_u16();
    if probe.expect.contains(&status) {
        Ok(format!("HTTP {status}"))
    } else {
        Err(format!(
            "HTTP {status}, expected {}-{}",
            probe.expect.start(),
            probe.expect.end()
        ))
    }
}
