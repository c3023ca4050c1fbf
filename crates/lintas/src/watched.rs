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
///
/// A broadcast receiver that falls behind loses the oldest events, and a lost event can be
/// the one that took a target down. So on a lag the forwarder starts over from now: a new
/// receiver (events from here on) and `current()`, every target's state read from its
/// source. States that did not change are repeats, which the engine ignores.
async fn forward<E: Clone>(
    mut events: Receiver<E>,
    out: Sender<Transition>,
    shutdown: CancellationToken,
    what: &'static str,
    convert: impl Fn(E) -> Transition,
    current: impl Fn() -> Vec<Transition>,
) {
    loop {
        let e = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        let transitions = match e {
            Ok(e) => vec![convert(e)],
            Err(RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    source = what,
                    "watch fell behind; reading the current state of every target"
                );
                events = events.resubscribe();
                current()
            }
            Err(RecvError::Closed) => return,
        };
        for t in transitions {
            if out.send(t).await.is_err() {
                return;
            }
        }
    }
}

fn now_ms() -> i64 {
    ms(std::time::SystemTime::now())
}

/// Proxy pools: target `pool/backend`, down when ejected or failing checks.
pub async fn pools(proxy: Arc<proxy::Proxy>, out: Sender<Transition>, shutdown: CancellationToken) {
    let events = proxy.subscribe_health();
    let current = move || {
        let at_ms = now_ms();
        proxy
            .registry()
            .pool_snapshots()
            .iter()
            .flat_map(|p| {
                p.backends.iter().map(move |b| Transition {
                    target: format!("{}/{}", p.name, b.name),
                    detail: b.addr.clone(),
                    up: b.health == balance::Health::Up,
                    reason: b
                        .last_check
                        .as_ref()
                        .map_or_else(|| b.health.as_str().to_owned(), |c| c.detail.clone()),
                    at_ms,
                })
            })
            .collect()
    };
    forward(
        events,
        out,
        shutdown,
        "proxy",
        |e: balance::HealthEvent| Transition {
            target: format!("{}/{}", e.pool, e.backend),
            detail: e.addr.to_string(),
            up: e.to == balance::Health::Up,
            reason: e.reason,
            at_ms: ms(e.at),
        },
        current,
    )
    .await;
}

/// Relay destinations: target `relay/destination`.
pub async fn relay(relay: Arc<relay::Relay>, out: Sender<Transition>, shutdown: CancellationToken) {
    use relay::status::{RelayEvent, State};
    let transition = |destination: &str, up: bool, reason: String| Transition {
        target: format!("relay/{destination}"),
        detail: "relay destination".into(),
        up,
        reason,
        at_ms: now_ms(),
    };
    let events = relay.subscribe();
    let current = move || {
        relay
            .statuses()
            .into_iter()
            .filter_map(|s| match s.state {
                State::Up => Some(transition(&s.destination, true, "answers again".into())),
                State::Down => Some(transition(
                    &s.destination,
                    false,
                    s.last_error.unwrap_or_default(),
                )),
                // Not known yet, or delivered by another node: nothing to say.
                State::Connecting | State::Standby => None,
            })
            .collect()
    };
    forward(
        events,
        out,
        shutdown,
        "relay",
        move |e| match e {
            RelayEvent::DestinationDown { destination, error } => {
                transition(&destination, false, error)
            }
            RelayEvent::DestinationUp { destination } => {
                transition(&destination, true, "answers again".into())
            }
        },
        current,
    )
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use tokio::sync::{broadcast, mpsc};

    use super::*;

    fn t(target: &str, up: bool) -> Transition {
        Transition {
            target: target.into(),
            detail: String::new(),
            up,
            reason: String::new(),
            at_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_lagging_forwarder_reads_the_current_state_instead_of_forgetting() {
        // The source: every target's state, and its events (two buffered at most).
        let state = Arc::new(Mutex::new(BTreeMap::new()));
        let (events, rx) = broadcast::channel::<(String, bool)>(2);
        let change = |target: &str, up: bool| {
            state.lock().expect("state").insert(target.to_owned(), up);
            events.send((target.to_owned(), up)).expect("a receiver");
        };
        // Three changes before the forwarder reads any: `a` going down is lost.
        change("a", false);
        change("b", false);
        change("b", true);
        let (out, mut got) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let source = state.clone();
        let forwarder = tokio::spawn(forward(
            rx,
            out,
            shutdown.clone(),
            "test",
            |(target, up)| t(&target, up),
            move || {
                let state = source.lock().expect("state");
                state.iter().map(|(k, up)| t(k, *up)).collect()
            },
        ));
        assert_eq!(got.recv().await, Some(t("a", false)));
        assert_eq!(got.recv().await, Some(t("b", true)));
        // Later events flow again.
        change("a", true);
        assert_eq!(got.recv().await, Some(t("a", true)));
        assert!(got.try_recv().is_err(), "nothing else");
        shutdown.cancel();
        forwarder.await.expect("forwarder");
    }
}
