//! Targets watch checks itself: HTTP (status range, optional body match) and TCP, each on
//! its own interval with its own rise and fall.

use std::ops::RangeInclusive;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{TargetConfig, TargetKind};
use crate::engine::Transition;
use crate::now_ms;
use crate::telemetry::CheckCounters;

/// Most body bytes read for `body_contains`.
const MAX_BODY: usize = 64 * 1024;

/// Checks `t` every interval until `cancel`, reporting changes (after `fall` failures or
/// `rise` passes in a row) on `out`. A target starts up, like a proxy backend.
/// Every check counts in `counters`.
pub(crate) async fn run(
    t: TargetConfig,
    out: mpsc::Sender<Transition>,
    counters: CheckCounters,
    cancel: CancellationToken,
) {
    let expect = configkit::parse_status_range(&t.expect_status).unwrap_or(200..=399);
    let detail = t
        .url
        .clone()
        .or_else(|| t.address.clone())
        .unwrap_or_default();
    let mut up = true;
    let mut streak = 0u32;
    let mut ticker = tokio::time::interval(t.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = match tokio::time::timeout(t.timeout, probe(&t, &expect)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {}",
                configkit::format_duration(t.timeout)
            )),
        };
        let passed = result.is_ok();
        counters.ran(passed);
        if passed == up {
            streak = 0;
            continue;
        }
        streak += 1;
        if streak < if up { t.fall } else { t.rise } {
            continue;
        }
        up = passed;
        streak = 0;
        let reason = match result {
            Ok(d) | Err(d) => d,
        };
        let change = Transition {
            target: t.name.clone(),
            detail: detail.clone(),
            up,
            reason,
            at_ms: now_ms(),
        };
        if out.send(change).await.is_err() {
            return;
        }
    }
}

/// One check: `Ok(what it saw)` or `Err(what was wrong)`.
async fn probe(t: &TargetConfig, expect: &RangeInclusive<u16>) -> Result<String, String> {
    match t.kind {
        TargetKind::Tcp => {
            let addr = t.address.as_deref().unwrap_or_default();
            TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            Ok("TCP connect ok".into())
        }
        TargetKind::Http => {
            let uri: http::Uri = t
                .url
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| format!("bad url: {e}"))?;
            let host = uri.host().unwrap_or("localhost");
            let port = uri.port_u16().unwrap_or(80);
            let stream = TcpStream::connect((host, port))
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake failed: {e}"))?;
            tokio::spawn(conn);
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let req = Request::get(path)
                .header(header::HOST, uri.authority().map_or(host, |a| a.as_str()))
                .header(header::USER_AGENT, "lintas-watch")
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("HTTP request failed: {e}"))?;
            let status = resp.status().as_u16();
            if !expect.contains(&status) {
                return Err(format!("HTTP {status}, expected {}", t.expect_status));
            }
            let Some(needle) = &t.body_contains else {
                return Ok(format!("HTTP {status}"));
            };
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            if String::from_utf8_lossy(&body).contains(needle.as_str()) {
                Ok(format!("HTTP {status}, body has {needle:?}"))
            } else {
                Err(format!("HTTP {status}, but the body lacks {needle:?}"))
            }
        }
    }
}
