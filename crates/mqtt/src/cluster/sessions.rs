//! Sessions belong to the cluster: a client that connects to another node (the balancer
//! sent it elsewhere) takes its session with it, and a client identifier connected twice in
//! the cluster keeps only its newest connection.
//!
//! - **Who holds a session.** `mqtt:session:{client}` names the node holding it. A node
//!   accepting a CONNECT claims the key; if another node held it, it says so on the
//!   `mqtt:sessions` channel (`take\t{client}\t{node}\t{state}`), and that node closes its
//!   connection (5.0: DISCONNECT 0x8E), ends its copy of the session, and — when the new
//!   connection resumes the session (`state` 1) — writes it to `mqtt:handoff:{client}`:
//!   subscriptions, and the messages queued and in flight, in order.
//! - **The new node** waits for the handoff until the old node's liveness key expires (a
//!   node SIGKILLed a moment ago still has it for up to the lease TTL). A node that is
//!   gone is resumed from what it left: `mqtt:subs:{client}`, the subscriptions of every
//!   session with an expiry, rewritten after each change, and the messages its journal and
//!   inbox hold for the session ([`super::adopt`]). A node that is alive but does not
//!   answer within [`HANDOFF_WAIT`] leaves the new node its subscriptions only.
//!
//! A session's state travels as MQTT 5.0 packets read and written by the crate's codec —
//! one SUBSCRIBE per subscription (with its Subscription Identifier) and one PUBLISH per
//! message (with the QoS, RETAIN flag and Subscription Identifiers it is to be sent with) —
//! after a header holding the format and the expiry interval.

use std::sync::Arc;
use std::time::Duration;

use backplane::{BackplaneError, Subscription};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Cluster;
use super::envelope::stored_publish;
use crate::broker::Broker;
use crate::codec::{self, Packet, PacketId, Properties, Subscribe, Version};
use crate::message::Message;
use crate::session::{Outgoing, SessionState, SubOptions};
use crate::topic::{MAX_LEVELS_CEILING, SubscriptionTarget};

/// The channel takeovers are announced on.
const CHANNEL: &str = "mqtt:sessions";

/// How long a handed-over session waits in the key/value space for its new node.
const HANDOFF_TTL: Duration = Duration::from_secs(60);

/// The prefix of the keys naming the node that holds each session.
pub(super) const HOLDERS: &str = "mqtt:session:";

/// The key naming the node that holds `client`'s session.
pub(super) fn holder_key(client: &str) -> String {
    format!("{HOLDERS}{client}")
}

/// The prefix of the keys of sessions' subscriptions.
pub(super) const SUBSCRIPTIONS: &str = "mqtt:subs:";

/// The key of `client`'s subscriptions, kept for a node's death or restart.
pub(super) fn subscriptions_key(client: &str) -> String {
    format!("{SUBSCRIPTIONS}{client}")
}

/// The key a session handed over waits under.
fn handoff_key(client: &str) -> String {
    format!("mqtt:handoff:{client}")
}

impl Cluster {
    /// Claims `client`'s session for this node before its connection is attached; with
    /// `resume`, returns the session's state from the node that held it (or, that node
    /// being gone, its subscriptions), which the caller installs.
    pub async fn claim(
        &self,
        client: &str,
        resume: bool,
    ) -> Result<Option<Carried>, BackplaneError> {
        let bp = &self.backplane;
        let key = holder_key(client);
        let me = Bytes::copy_from_slice(self.node().as_bytes());
        let before = bp.get(&key).await?;
        bp.set(&key, me, None).await?;
        let Some(holder) = before.filter(|h| h[..] != *self.node().as_bytes()) else {
            return Ok(None);
        };
        let holder = String::from_utf8_lossy(&holder).into_owned();
        let _ = bp.delete(&handoff_key(client)).await?;
        let alive = self.routes.is_alive(&holder).await?;
        // Told even when its liveness key is gone: a node that only missed a renewal (a
        // stall longer than the lease) still ends its copy and withdraws its routes, rather
        // than two nodes holding the session.
        let take = format!("take\t{client}\t{}\t{}", self.node(), u8::from(resume));
        bp.publish(CHANNEL, Bytes::from(take)).await?;
        if !resume {
            return Ok(None);
        }
        let mut alive = alive;
        if alive {
            // The holder answers within HANDOFF_WAIT, or it died: its liveness key goes
            // within the lease TTL (SIGKILLed a moment ago, it is still there).
            let deadline = Instant::now() + HANDOFF_WAIT.max(bp.lease_ttl() + LIVENESS_SLACK);
            let mut checked = Instant::now();
            while alive && Instant::now() < deadline {
                if let Some(bytes) = bp.get(&handoff_key(client)).await? {
                    let _ = bp.delete(&handoff_key(client)).await?;
                    return Ok(Carried::decode(&bytes, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                if checked.elapsed() >= Duration::from_millis(200) {
                    checked = Instant::now();
                    alive = self.routes.is_alive(&holder).await?;
                }
            }
            if alive {
                warn!(
                    client,
                    node = holder,
                    "the node holding the session did not hand it over in time; resuming its subscriptions"
                );
            }
        }
        let now = Instant::now();
        let saved = bp.get(&subscriptions_key(client)).await?;
        let mut carried = saved
            .and_then(|b| Carried::decode(&b, now))
            .unwrap_or_default();
        if !alive {
            carried.messages = self.adopt(&holder, client, &carried.subscriptions).await?;
            carried.adopted = true;
        }
        Ok(Some(carried))
    }
}

/// Follows the takeover channel for `broker`: a session of this node claimed by another
/// is ended here and, when asked, handed over.
pub(crate) async fn start(broker: &Arc<Broker>, cluster: &Cluster) -> Result<(), BackplaneError> {
    let takeovers = cluster.backplane.subscribe(CHANNEL).await?;
    let stop = broker.shutdown().clone();
    broker.tasks().spawn(hand_over(
        broker.clone(),
        cluster.backplane.clone(),
        takeovers,
        stop,
    ));
    Ok(())
}

async fn hand_over(
    broker: Arc<Broker>,
    backplane: Arc<dyn backplane::Backplane>,
    mut takeovers: Subscription,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            m = takeovers.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        let Ok(text) = std::str::from_utf8(&message) else {
            continue;
        };
        let mut fields = text.split('\t');
        let (Some("take"), Some(client), Some(node), Some(resume)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if broker.cluster().is_some_and(|c| &**c.node() == node) {
            continue;
        }
        let Some(carried) = broker.give_away(client, resume == "1") else {
            continue;
        };
        let bytes = carried.encode(Instant::now());
        if let Err(e) = backplane
            .set(&handoff_key(client), bytes, Some(HANDOFF_TTL))
            .await
        {
            warn!(client, error = %e, "cannot hand a session over to another node");
        }
    }
}

/// The first byte of a session's state: its layout.
const FORMAT: u8 = 1;

/// How long a node taking a session over waits for a live node to hand it.
pub const HANDOFF_WAIT: Duration = Duration::from_secs(3);

/// Beyond the lease TTL, how long a node taking a session over waits for the liveness key
/// of a node that stopped answering to expire.
pub const LIVENESS_SLACK: Duration = Duration::from_secs(1);

/// A session's state as it moves between nodes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carried {
    /// Session Expiry Interval in seconds.
    pub expiry_interval: u32,
    /// The subscriptions.
    pub subscriptions: Vec<(SubscriptionTarget, SubOptions)>,
    /// Messages in flight first (sent again), then the queue, in order.
    pub messages: Vec<Outgoing>,
    /// Whether it comes from a node that died, whose inbox still brings it messages
    /// (never encoded: it is how this node got it).
    pub adopted: bool,
}

impl Carried {
    /// What of `state` moves: with its messages (`messages`) or its subscriptions only.
    pub fn of(state: &SessionState, messages: bool) -> Self {
        let mut subscriptions: Vec<_> = state
            .subscriptions
            .iter()
            .map(|(t, o)| (t.clone(), *o))
            .collect();
        subscriptions.sort_by_key(|(t, _)| t.to_string());
        let messages = if messages {
            let inflight = state.inflight.iter().map(|f| f.out.clone());
            inflight.chain(state.queue.iter().cloned()).collect()
        } else {
            Vec::new()
        };
        Self {
            expiry_interval: state.expiry_interval,
            subscriptions,
            messages,
            adopted: false,
        }
    }

    /// The bytes that carry it, messages' expiry counted down to `now`.
    pub fn encode(&self, now: Instant) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(FORMAT);
        out.put_u32(self.expiry_interval);
        for (target, options) in &self.subscriptions {
            let subscribe = Subscribe {
                packet_id: PacketId::MIN,
                properties: Properties {
                    subscription_identifiers: options.identifier.into_iter().collect(),
                    ..Properties::default()
                },
                filters: vec![(target.to_string().into(), options.options)],
            };
            encode(&Packet::Subscribe(subscribe), &mut out);
        }
        for o in &self.messages {
            let publish = stored_publish(&o.message, (o.qos, o.retain), &o.identifiers, now);
            encode(&Packet::Publish(publish), &mut out);
        }
        out.freeze()
    }

    /// Reads what [`Carried::encode`] wrote, at `now`; `None` if it is not that.
    pub fn decode(bytes: &[u8], now: Instant) -> Option<Self> {
        let mut r = bytes;
        if r.remaining() < 5 || r.get_u8() != FORMAT {
            return None;
        }
        let mut carried = Self {
            expiry_interval: r.get_u32(),
            ..Self::default()
        };
        let mut buf = BytesMut::from(r);
        while !buf.is_empty() {
            match codec::decode(&mut buf, Version::V5, u32::MAX).ok()?? {
                Packet::Subscribe(s) => {
                    let identifier = s.properties.subscription_identifiers.first().copied();
                    for (filter, options) in s.filters {
                        let target = SubscriptionTarget::parse(&filter, MAX_LEVELS_CEILING).ok()?;
                        let options = SubOptions {
                            options,
                            identifier,
                        };
                        carried.subscriptions.push((target, options));
                    }
                }
                Packet::Publish(mut p) => {
                    let identifiers = std::mem::take(&mut p.properties.subscription_identifiers);
                    let (qos, retain, topic) = (p.qos, p.retain, p.topic.clone());
                    carried.messages.push(Outgoing {
                        message: Message::from_publish(p, topic, now),
                        qos,
                        retain,
                        identifiers,
                        journal: 0,
                    });
                }
                _ => return None,
            }
        }
        Some(carried)
    }
}

/// Appends `packet`; the packets built here always encode (their parts were read by the
/// same codec).
fn encode(packet: &Packet, out: &mut BytesMut) {
    if let Err(e) = codec::encode(packet, Version::V5, u32::MAX, out) {
        tracing::error!(error = %e, "a session's state did not encode");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{QoS, RetainHandling, SubscriptionOptions};
    use std::num::NonZeroU32;

    #[test]
    fn a_session_state_reads_back_with_its_subscriptions_and_messages_in_order() {
        let sub = |filter: &str, qos, identifier| {
            (
                SubscriptionTarget::parse(filter, 32).expect("filter"),
                SubOptions {
                    options: SubscriptionOptions {
                        qos,
                        no_local: true,
                        retain_as_published: false,
                        retain_handling: RetainHandling::Never,
                    },
                    identifier: NonZeroU32::new(identifier),
                },
            )
        };
        let now = Instant::now();
        let message = |payload: &'static str| {
            Message::new(
                "a/b".into(),
                Bytes::from_static(payload.as_bytes()),
                QoS::ExactlyOnce,
                false,
            )
        };
        let carried = Carried {
            adopted: false,
            expiry_interval: 3600,
            subscriptions: vec![
                sub("$share/g/jobs/#", QoS::AtLeastOnce, 0),
                sub("a/+", QoS::ExactlyOnce, 7),
            ],
            messages: vec![
                Outgoing {
                    message: message("one"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    identifiers: vec![NonZeroU32::new(7).expect("non-zero")],
                    journal: 0,
                },
                Outgoing {
                    message: message("two"),
                    qos: QoS::AtMostOnce,
                    retain: false,
                    identifiers: Vec::new(),
                    journal: 0,
                },
            ],
        };
        let bytes = carried.encode(now);
        let back = Carried::decode(&bytes, now).expect("reads back");
        assert_eq!(back.expiry_interval, 3600);
        assert_eq!(back.subscriptions, carried.subscriptions);
        let shape = |c: &Carried| -> Vec<_> {
            c.messages
                .iter()
                .map(|o| {
                    (
                        o.message.payload.clone(),
                        o.qos,
                        o.retain,
                        o.identifiers.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(shape(&back), shape(&carried));
        assert_eq!(Carried::decode(&bytes[..bytes.len() - 1], now), None);
        assert_eq!(Carried::decode(&[2, 0, 0, 0, 0], now), None);
    }
}
