//! Wills: the message a client leaves to be published if its connection ends without a
//! DISCONNECT (or with DISCONNECT 0x04), §3.1.2.5.
//!
//! The connection keeps its own will (CONNECT set it, a normal DISCONNECT discards it) and
//! hands it to [`on_abnormal_close`] when it ends otherwise. A will with no delay is
//! published at once. A 5.0 Will Delay Interval makes it wait — no longer than the session
//! lasts, because the will is due when the session ends if that is sooner — in the session
//! state (`SessionState::will`, so it travels with the session), with a timer that
//! publishes it unless a connection has attached to the session meanwhile: attaching
//! bumps the session's generation and clears the waiting will, which is how a client that
//! comes back in time cancels it. A connection taken over by another has, by definition,
//! a new connection on its session: its will is published only if it had no delay.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::Broker;
use crate::message::Message;
use crate::session::{Session, WillSpec};

/// The connection of `generation` on `session` ended abnormally leaving `will`; call it
/// before the session is detached.
pub fn on_abnormal_close(
    broker: &Arc<Broker>,
    session: &Arc<Session>,
    generation: u64,
    will: WillSpec,
) {
    let wait = {
        let mut state = session.lock();
        if state.generation != generation {
            if will.delay != 0 {
                return;
            }
            0
        } else {
            let wait = will.delay.min(state.expiry_interval);
            if wait != 0 {
                state.will = Some(will.clone());
            }
            wait
        }
    };
    if wait == 0 {
        publish(broker, will);
        return;
    }
    let (b, session) = (broker.clone(), session.clone());
    let stop = broker.shutdown().clone();
    broker.tasks().spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(u64::from(wait))) => {
                let due = {
                    let mut state = session.lock();
                    if state.generation == generation { state.will.take() } else { None }
                };
                if let Some(will) = due {
                    publish(&b, will);
                }
            }
            () = stop.cancelled() => {}
        }
    });
}

/// Publishes `will` as a message from the broker (its client is gone, so No Local does not
/// apply).
pub fn publish(broker: &Broker, will: WillSpec) {
    broker.publish(&Message::from_will(*will.will, Instant::now()), None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::testing::{attach, broker, subscribe};
    use crate::codec::{Properties, QoS, Will};
    use crate::config::MqttConfig;
    use bytes::Bytes;

    fn will(delay: u32) -> WillSpec {
        WillSpec {
            will: Box::new(Will {
                properties: Properties::default(),
                topic: "wills/x".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: false,
            }),
            delay,
        }
    }

    /// A session subscribed to `wills/#`, and a session that loses its connection with a
    /// will of `delay` seconds while its session lasts an hour.
    async fn lose(b: &Arc<Broker>, delay: u32) -> (Arc<Session>, Arc<Session>) {
        let watcher = attach(b, "watcher").session;
        subscribe(b, &watcher, "wills/#", QoS::AtLeastOnce);
        let gone = attach(b, "gone");
        gone.session.lock().expiry_interval = 3600;
        on_abnormal_close(b, &gone.session, gone.generation, will(delay));
        b.detach(&gone.session, gone.generation);
        (watcher, gone.session)
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_will_is_published_when_its_delay_has_passed() {
        let b = broker(MqttConfig::default());
        let (watcher, _) = lose(&b, 5).await;
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert!(watcher.lock().queue.is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(watcher.lock().queue.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnection_within_the_delay_cancels_the_will() {
        let b = broker(MqttConfig::default());
        let (watcher, _) = lose(&b, 5).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = attach(&b, "gone");
        assert!(again.present);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(watcher.lock().queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_will_without_delay_is_published_at_once() {
        let b = broker(MqttConfig::default());
        let (watcher, _) = lose(&b, 0).await;
        assert_eq!(watcher.lock().queue.len(), 1);
    }
}
