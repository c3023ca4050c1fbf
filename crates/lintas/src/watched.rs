//! What the watch service watches without being told: every backend of every proxy pool
//! (through the pools' own health events, so nothing is checked twice) and the relay's
//! destinations (their heartbeat). Each source's events become watch transitions.

use std::sync::Arc;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use watch::engine::Transition;

fn ms(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Forwards `events` as transitions until `shutdown` or either side closes.
async fn forward<E: Clone>(
    mut events: Receiver<E>,
    out: Sender<Transition>,
    shutdown: CancellationToken,
    what: &'static str,
    convert: impl Fn(E) -> Transition,
) {
    loop {
        let e = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        match e {
            Ok(e) => {
                if out.send(convert(e)).await.is_err() {
                    return;
                }
            }
            Err(RecvError::Lagged(n)) => warn!(missed = n, source = what, "watch fell behind"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Proxy pools: target `pool/backend`, down when ejected or failing checks.
pub async fn pools(
    events: Receiver<balance::HealthEvent>,
    out: Sender<Transition>,
    shutdown: CancellationToken,
) {
    forward(events, out, shutdown, "proxy", |e| Transition {
        target: format!("{}/{}", e.pool, e.backend),
        detail: e.addr.to_string(),
        up: e.to == balance::Health::Up,
        reason: e.reason,
        at_ms: ms(e.at),
    })
    .await;
}

/// Relay destinations: target `relay/destination`.
pub async fn relay(
    events: Receiver<relay::status::RelayEvent>,
    out: Sender<Transition>,
    shutdown: CancellationToken,
) {
    use relay::status::RelayEvent;
    forward(events, out, shutdown, "relay", |e| {
        let (destination, up, reason) = match e {
            RelayEvent::DestinationDown { destination, error } => (destination, false, error),
            RelayEvent::DestinationUp { destination } => {
                (destination, true, "answers again".into())
            }
        };
        Transition {
            target: format!("relay/{destination}"),
            detail: "relay destination".into(),
            up,
            reason,
            at_ms: ms(std::time::SystemTime::now()),
        }
    })
    .await;
}

/// The proxy's pools as the bot's `/pools` shows them.
pub struct ProxyPools(pub Arc<proxy::Proxy>);

impl watch::Pools for ProxyPools {
    fn summary(&self) -> Vec<String> {
        self.0
            .registry()
            .pool_snapshots()
            .iter()
            .map(|p| {
                let up = p.backends.iter().filter(|b| b.available).count();
                let out: Vec<String> = p
                    .backends
                    .iter()
                    .filter(|b| !b.available)
                    .map(|b| format!("{} {}", b.name, b.health.as_str()))
                    .collect();
                let mut line = format!("{}: {up}/{} up", p.name, p.backends.len());
                if !out.is_empty() {
                    line.push_str(&format!(" ({})", out.join(", ")));
                }
                line
            })
            .collect()
    }
}
