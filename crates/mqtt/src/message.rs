//! An application message as the broker routes, queues and retains it.
//!
//! A [`Message`] is what a PUBLISH carried minus what belongs to one hop (packet identifier,
//! DUP, topic alias, subscription identifiers): it is cloned once per subscriber that gets
//! it, so every part is shared rather than copied — the topic and payload are slices of the
//! buffer the PUBLISH was read into, and the 5.0 properties that travel with a message
//! (§3.3.2.3) sit behind one `Arc`, absent altogether for the common message without them.
//! The Message Expiry Interval becomes an absolute deadline when the message arrives, so a
//! message that waits in a queue is sent with what is left of it (§3.3.2.3.3).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use tokio::time::Instant;

use crate::codec::{Properties, Publish, QoS, Will};

/// One application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic name it was published to (never an alias).
    pub topic: ByteString,
    /// The payload, shared by every copy.
    pub payload: Bytes,
    /// The QoS it was published with; each subscriber gets at most its subscription's.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// The 5.0 properties forwarded with it; `None` when it has none.
    pub properties: Option<Arc<MessageProperties>>,
    /// When it expires, from its Message Expiry Interval.
    pub expires_at: Option<Instant>,
}

/// The PUBLISH properties a server forwards unaltered to subscribers (§3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// Payload Format Indicator: whether the payload is UTF-8.
    pub payload_format_indicator: Option<bool>,
    /// Content Type.
    pub content_type: Option<ByteString>,
    /// Response Topic.
    pub response_topic: Option<ByteString>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in the order they were sent (§3.3.2.3.7).
    pub user: Vec<(ByteString, ByteString)>,
}

impl MessageProperties {
    /// The forwarded properties of `props`, or `None` when there are none (no allocation).
    fn take(props: &mut Properties) -> Option<Arc<Self>> {
        let p = Self {
            payload_format_indicator: props.payload_format_indicator.take(),
            content_type: props.content_type.take(),
            response_topic: props.response_topic.take(),
            correlation_data: props.correlation_data.take(),
            user: std::mem::take(&mut props.user),
        };
        (p != Self::default()).then(|| Arc::new(p))
    }
}

impl Message {
    /// The message a client's PUBLISH carries, the topic already resolved from any alias.
    /// Its expiry is counted from `now`.
    pub fn from_publish(publish: Publish, topic: ByteString, now: Instant) -> Self {
        let mut props = publish.properties;
        Self {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            expires_at: expiry(props.message_expiry_interval, now),
            properties: MessageProperties::take(&mut props),
        }
    }

    /// The message a will turns into when it is published (§3.1.3.2: the will properties
    /// are those of the PUBLISH it becomes).
    pub fn from_will(will: Will, now: Instant) -> Self {
        let mut props = will.properties;
        Self {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            expires_at: expiry(props.message_expiry_interval, now),
            properties: MessageProperties::take(&mut props),
        }
    }

    /// A message the broker publishes itself (`$SYS`), with no properties.
    pub fn new(topic: ByteString, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            properties: None,
            expires_at: None,
        }
    }

    /// Whether the message has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The PUBLISH properties to send it with at `now`: the forwarded ones, what is left of
    /// its expiry interval (rounded up, so it never reads 0 before it has expired), and the
    /// subscription identifiers of the subscriptions it matched.
    pub fn properties_at(&self, now: Instant, identifiers: &[std::num::NonZeroU32]) -> Properties {
        let mut out = Properties {
            subscription_identifiers: identifiers.to_vec(),
            message_expiry_interval: self.expires_at.map(|at| remaining_secs(at, now)),
            ..Properties::default()
        };
        if let Some(p) = &self.properties {
            out.payload_format_indicator = p.payload_format_indicator;
            out.content_type.clone_from(&p.content_type);
            out.response_topic.clone_from(&p.response_topic);
            out.correlation_data.clone_from(&p.correlation_data);
            out.user.clone_from(&p.user);
        }
        out
    }
}

/// The deadline of an expiry interval counted from `now`.
fn expiry(interval: Option<u32>, now: Instant) -> Option<Instant> {
    interval.map(|secs| now + Duration::from_secs(u64::from(secs)))
}

/// Whole seconds left until `at`, rounded up.
fn remaining_secs(at: Instant, now: Instant) -> u32 {
    let left = at.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn publish(props: Properties) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b".into(),
            packet_id: None,
            properties: props,
            payload: Bytes::from_static(b"hi"),
        }
    }

    #[test]
    fn a_message_without_forwarded_properties_allocates_none() {
        let now = Instant::now();
        let m = Message::from_publish(
            publish(Properties {
                topic_alias: std::num::NonZeroU16::new(3),
                ..Properties::default()
            }),
            "a/b".into(),
            now,
        );
        assert_eq!(m.properties, None);
        assert_eq!(m.expires_at, None);
        assert_eq!(m.properties_at(now, &[]), Properties::default());
    }

    #[test]
    fn forwarded_properties_and_the_rest_of_the_expiry_are_sent() {
        let now = Instant::now();
        let m = Message::from_publish(
            publish(Properties {
                message_expiry_interval: Some(10),
                content_type: Some("text/plain".into()),
                user: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
                ..Properties::default()
            }),
            "a/b".into(),
            now,
        );
        let id = NonZeroU32::new(7).expect("non-zero");
        let later = now + Duration::from_millis(3_500);
        let sent = m.properties_at(later, &[id]);
        assert_eq!(sent.message_expiry_interval, Some(7));
        assert_eq!(sent.content_type.as_deref(), Some("text/plain"));
        assert_eq!(sent.user.len(), 2);
        assert_eq!(sent.subscription_identifiers, [id]);
        assert!(!m.expired(later));
        assert!(m.expired(now + Duration::from_secs(10)));
    }
}
