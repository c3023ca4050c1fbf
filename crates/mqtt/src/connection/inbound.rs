//! Packets from the client, handled in the order they arrive.
//!
//! PUBLISH is resolved (topic alias, topic name check), counted against our Receive
//! Maximum, retained and routed, then acknowledged: QoS 1 with PUBACK after routing, QoS 2
//! with PUBREC, its packet identifier kept until PUBREL so that a re-sent PUBLISH is
//! acknowledged again but not routed again. 5.0 acknowledgements say No Matching Subscribers
//! (0x10) when nobody got the message. SUBSCRIBE is answered with one code per filter and
//! then the retained messages its Retain Handling asks for (after the SUBACK, as the write
//! buffer keeps the order), a filter beyond the session's `max_subscriptions` refused with
//! Quota exceeded; UNSUBSCRIBE with one code per filter. Acknowledgements of our
//! own messages release their packet identifiers, which lets the session's queue move.
//! The ACL is asked about every PUBLISH and every SUBSCRIBE filter (see [`crate::auth`]
//! for the answers a refusal gets).

use std::num::NonZeroU16;

use tokio::time::Instant;

use super::{Close, Connection, Handled, Violation};
use crate::auth::Access;
use crate::broker::Published;
use crate::cluster::Forwarded;
use crate::codec::{
    Ack, ByteString, Disconnect, Packet, PacketId, Properties, Publish, QoS, ReasonCode, SubAck,
    Subscribe, UnsubAck, Unsubscribe, Version,
};
use crate::message::Message;
use crate::session::{Phase, SubOptions};
use crate::topic::{SubscriptionTarget, TopicName};

impl Connection {
    /// Handles one packet from the client.
    pub(super) fn handle(&mut self, packet: Packet) -> Handled {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(ack) => {
                self.session
                    .lock()
                    .complete(ack.packet_id, Phase::AwaitingPubAck);
                Ok(())
            }
            Packet::PubRec(ack) => {
                self.on_pubrec(&ack);
                Ok(())
            }
            Packet::PubRel(ack) => {
                let known = self.session.lock().inbound_qos2.remove(&ack.packet_id);
                let code = if known {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.send(&Packet::PubComp(reply(ack.packet_id, code)));
                Ok(())
            }
            Packet::PubComp(ack) => {
                self.session
                    .lock()
                    .complete(ack.packet_id, Phase::AwaitingPubComp);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(&d),
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => Err(Violation(ReasonCode::ProtocolError).into()),
        }
    }

    fn on_publish(&mut self, mut p: Publish) -> Handled {
        self.broker.stats().received(p.qos);
        let (max_levels, receive_maximum) = {
            let cfg = self.broker.config();
            (cfg.max_topic_levels, usize::from(cfg.receive_maximum))
        };
        let topic = match p.properties.topic_alias.take() {
            Some(alias) => self.resolve_alias(alias, &p.topic)?,
            None => p.topic.clone(),
        };
        let Ok(name) = TopicName::parse(&topic, max_levels) else {
            return Err(Violation(ReasonCode::TopicNameInvalid).into());
        };
        let id = p.packet_id;
        let qos = p.qos;
        if !self
            .broker
            .acl()
            .allows(&self.identity, Access::Publish(name))
        {
            self.refuse_publish(qos, id);
            return Ok(());
        }
        let repeated = match (qos, id) {
            (QoS::ExactlyOnce, Some(id)) => {
                let state = self.session.lock();
                let known = state.inbound_qos2.contains(&id);
                if !known && state.inbound_qos2.len() >= receive_maximum {
                    return Err(Violation(ReasonCode::ReceiveMaximumExceeded).into());
                }
                known
            }
            _ => false,
        };
        let published = if repeated {
            Published {
                matched: 1,
                forwarded: Forwarded::default(),
            }
        } else {
            let message = Message::from_publish(p, topic, Instant::now());
            let published = self.broker.publish(&message, Some(&self.client_id));
            self.routed |= published.matched > 0;
            published
        };
        let code = if published.matched == 0 {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        let ack = match (qos, id) {
            (QoS::AtLeastOnce, Some(id)) => Packet::PubAck(reply(id, code)),
            (QoS::ExactlyOnce, Some(id)) => {
                self.session.lock().inbound_qos2.insert(id);
                Packet::PubRec(reply(id, code))
            }
            _ => return Ok(()),
        };
        self.acknowledge(ack, published.forwarded);
        Ok(())
    }

    /// Answers a PUBLISH the ACL refused, which is dropped: 5.0 says Not authorized on
    /// its acknowledgement; 3.1.1 has no way to say it, so it is acknowledged as usual
    /// (as Mosquitto does), its QoS 2 identifier kept until PUBREL like any other.
    fn refuse_publish(&mut self, qos: QoS, id: Option<PacketId>) {
        self.broker.stats().denied();
        let v5 = self.version == Version::V5;
        let code = if v5 {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::Success
        };
        let ack = match (qos, id) {
            (QoS::AtLeastOnce, Some(id)) => Packet::PubAck(reply(id, code)),
            (QoS::ExactlyOnce, Some(id)) => {
                if !v5 {
                    self.session.lock().inbound_qos2.insert(id);
                }
                Packet::PubRec(reply(id, code))
            }
            _ => return,
        };
        self.acknowledge(ack, Forwarded::default());
    }

    /// The topic a PUBLISH with Topic Alias `alias` goes to: `topic` itself (which the alias
    /// now stands for), or what the alias stood for when `topic` is empty.
    fn resolve_alias(
        &mut self,
        alias: NonZeroU16,
        topic: &ByteString,
    ) -> Result<ByteString, Close> {
        let max = self.broker.config().topic_alias_maximum;
        if alias.get() > max {
            return Err(Violation(ReasonCode::TopicAliasInvalid).into());
        }
        let at = usize::from(alias.get() - 1);
        if topic.is_empty() {
            return self
                .aliases
                .get(at)
                .cloned()
                .flatten()
                .ok_or(Violation(ReasonCode::ProtocolError).into());
        }
        if self.aliases.len() <= at {
            self.aliases.resize(at + 1, None);
        }
        self.aliases[at] = Some(topic.clone());
        Ok(topic.clone())
    }

    fn on_pubrec(&mut self, ack: &Ack) {
        let mut state = self.session.lock();
        if ack.reason_code.is_error() {
            state.complete(ack.packet_id, Phase::AwaitingPubRec);
            return;
        }
        let known = state.received(ack.packet_id);
        drop(state);
        let code = if known {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.send(&Packet::PubRel(reply(ack.packet_id, code)));
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Handled {
        let cfg = self.broker.config();
        let identifier = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (filter, options) in s.filters {
            let Ok(target) = SubscriptionTarget::parse(&filter, cfg.max_topic_levels) else {
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            };
            if !self
                .broker
                .acl()
                .allows(&self.identity, Access::Subscribe(target.filter()))
            {
                self.broker.stats().denied();
                codes.push(ReasonCode::NotAuthorized);
                continue;
            }
            let shared = matches!(target, SubscriptionTarget::Shared { .. });
            if shared && options.no_local {
                return Err(Violation(ReasonCode::ProtocolError).into());
            }
            if self.subscriptions_full(&target, cfg.max_subscriptions) {
                self.broker.stats().subscription_refused();
                codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let mut granted = options;
            granted.qos = options.qos.min(self.broker.maximum_qos());
            let sub = SubOptions {
                options: granted,
                identifier,
            };
            let existed = self.broker.subscribe(&self.session, target.clone(), sub);
            codes.push(match granted.qos {
                QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                QoS::ExactlyOnce => ReasonCode::GrantedQos2,
            });
            let wanted = match granted.retain_handling {
                crate::codec::RetainHandling::OnSubscribe => true,
                crate::codec::RetainHandling::OnNewSubscription => !existed,
                crate::codec::RetainHandling::Never => false,
            };
            if wanted && !shared {
                retained.push((target, sub));
            }
        }
        let saved = self.broker.keep(&self.session);
        let suback = Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Properties::default(),
            reason_codes: codes,
        });
        self.acknowledge(suback, saved);
        for (target, sub) in retained {
            self.broker
                .send_retained(&self.session, target.filter(), &sub);
        }
        Ok(())
    }

    /// Whether subscribing to `target` would take the session past `max` subscriptions; one
    /// it already holds is replaced, not added. Only this connection subscribes for its
    /// session, so the answer holds until [`Broker::subscribe`](crate::Broker::subscribe).
    fn subscriptions_full(&self, target: &SubscriptionTarget, max: usize) -> bool {
        let state = self.session.lock();
        state.subscriptions.len() >= max && !state.subscriptions.contains_key(target)
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let max_levels = self.broker.config().max_topic_levels;
        let codes = u
            .filters
            .iter()
            .map(
                |filter| match SubscriptionTarget::parse(filter, max_levels) {
                    Err(_) => ReasonCode::TopicFilterInvalid,
                    Ok(target) if self.broker.unsubscribe(&self.session, &target) => {
                        ReasonCode::Success
                    }
                    Ok(_) => ReasonCode::NoSubscriptionExisted,
                },
            )
            .collect();
        let saved = self.broker.keep(&self.session);
        let unsuback = Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::default(),
            reason_codes: codes,
        });
        self.acknowledge(unsuback, saved);
    }

    fn on_disconnect(&mut self, d: &Disconnect) -> Handled {
        if let Some(asked) = d.properties.session_expiry_interval {
            let mut state = self.session.lock();
            if state.expiry_interval == 0 && asked != 0 && self.version == Version::V5 {
                return Err(Violation(ReasonCode::ProtocolError).into());
            }
            state.expiry_interval = asked.min(self.broker.config().session_expiry_max_secs());
            drop(state);
            drop(self.broker.keep(&self.session));
        }
        Err(Close::Client {
            will: d.reason_code == ReasonCode::DisconnectWithWillMessage,
        })
    }
}

/// An acknowledgement of `id` with `code`.
fn reply(id: PacketId, code: ReasonCode) -> Ack {
    Ack {
        packet_id: id,
        reason_code: code,
        properties: Properties::default(),
    }
}
