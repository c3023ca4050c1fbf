//! MQTT 5.0 properties (§2.2.2): one typed struct for every packet, checked against the
//! packet's allowed list as they are read.
//!
//! [`Properties`] has a field per property, `None` or empty when absent, so a 3.1.1 packet
//! simply has the default. Reading enforces §2.2.2.2: a property outside the packet's
//! list or repeated (only User Property, and Subscription Identifier in PUBLISH, may
//! repeat) is a Protocol Error, as are the values the specification forbids (0 for Receive
//! Maximum, Topic Alias, Maximum Packet Size and Subscription Identifier; anything but 0 or
//! 1 for the one-byte flags). User properties keep their order. A packet without
//! properties allocates nothing: the two `Vec`s stay empty.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use bytestring::ByteString;

use super::error::Problem;
use super::packet::QoS;
use super::wire::{Counter, Overlong, Reader, Sink, VAR_INT_MAX};

/// Where a property list is: a packet, or the will inside CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// CONNECT.
    Connect,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// The will properties in CONNECT's payload.
    Will,
    /// PUBACK.
    PubAck,
    /// PUBREC.
    PubRec,
    /// PUBREL.
    PubRel,
    /// PUBCOMP.
    PubComp,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl Scope {
    /// Every place a property list can be: where User Property is allowed.
    const ALL: [Scope; 14] = [
        Scope::Connect,
        Scope::ConnAck,
        Scope::Publish,
        Scope::Will,
        Scope::PubAck,
        Scope::PubRec,
        Scope::PubRel,
        Scope::PubComp,
        Scope::Subscribe,
        Scope::SubAck,
        Scope::Unsubscribe,
        Scope::UnsubAck,
        Scope::Disconnect,
        Scope::Auth,
    ];
}

/// The property identifiers of §2.2.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    /// Payload Format Indicator (0x01).
    PayloadFormatIndicator = 0x01,
    /// Message Expiry Interval (0x02).
    MessageExpiryInterval = 0x02,
    /// Content Type (0x03).
    ContentType = 0x03,
    /// Response Topic (0x08).
    ResponseTopic = 0x08,
    /// Correlation Data (0x09).
    CorrelationData = 0x09,
    /// Subscription Identifier (0x0B).
    SubscriptionIdentifier = 0x0B,
    /// Session Expiry Interval (0x11).
    SessionExpiryInterval = 0x11,
    /// Assigned Client Identifier (0x12).
    AssignedClientIdentifier = 0x12,
    /// Server Keep Alive (0x13).
    ServerKeepAlive = 0x13,
    /// Authentication Method (0x15).
    AuthenticationMethod = 0x15,
    /// Authentication Data (0x16).
    AuthenticationData = 0x16,
    /// Request Problem Information (0x17).
    RequestProblemInformation = 0x17,
    /// Will Delay Interval (0x18).
    WillDelayInterval = 0x18,
    /// Request Response Information (0x19).
    RequestResponseInformation = 0x19,
    /// Response Information (0x1A).
    ResponseInformation = 0x1A,
    /// Server Reference (0x1C).
    ServerReference = 0x1C,
    /// Reason String (0x1F).
    ReasonString = 0x1F,
    /// Receive Maximum (0x21).
    ReceiveMaximum = 0x21,
    /// Topic Alias Maximum (0x22).
    TopicAliasMaximum = 0x22,
    /// Topic Alias (0x23).
    TopicAlias = 0x23,
    /// Maximum QoS (0x24).
    MaximumQos = 0x24,
    /// Retain Available (0x25).
    RetainAvailable = 0x25,
    /// User Property (0x26).
    UserProperty = 0x26,
    /// Maximum Packet Size (0x27).
    MaximumPacketSize = 0x27,
    /// Wildcard Subscription Available (0x28).
    WildcardSubscriptionAvailable = 0x28,
    /// Subscription Identifier Available (0x29).
    SubscriptionIdentifierAvailable = 0x29,
    /// Shared Subscription Available (0x2A).
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// The identifier of a byte; `None` for an undefined one.
    pub fn from_u32(id: u32) -> Option<Self> {
        use PropertyId::*;
        Some(match id {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQos,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// The specification's name.
    pub fn name(self) -> &'static str {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator => "Payload Format Indicator",
            MessageExpiryInterval => "Message Expiry Interval",
            ContentType => "Content Type",
            ResponseTopic => "Response Topic",
            CorrelationData => "Correlation Data",
            SubscriptionIdentifier => "Subscription Identifier",
            SessionExpiryInterval => "Session Expiry Interval",
            AssignedClientIdentifier => "Assigned Client Identifier",
            ServerKeepAlive => "Server Keep Alive",
            AuthenticationMethod => "Authentication Method",
            AuthenticationData => "Authentication Data",
            RequestProblemInformation => "Request Problem Information",
            WillDelayInterval => "Will Delay Interval",
            RequestResponseInformation => "Request Response Information",
            ResponseInformation => "Response Information",
            ServerReference => "Server Reference",
            ReasonString => "Reason String",
            ReceiveMaximum => "Receive Maximum",
            TopicAliasMaximum => "Topic Alias Maximum",
            TopicAlias => "Topic Alias",
            MaximumQos => "Maximum QoS",
            RetainAvailable => "Retain Available",
            UserProperty => "User Property",
            MaximumPacketSize => "Maximum Packet Size",
            WildcardSubscriptionAvailable => "Wildcard Subscription Available",
            SubscriptionIdentifierAvailable => "Subscription Identifier Available",
            SharedSubscriptionAvailable => "Shared Subscription Available",
        }
    }

    /// Whether the property may appear in `scope` (§2.2.2.2's table).
    pub fn allowed_in(self, scope: Scope) -> bool {
        use PropertyId::*;
        use Scope::*;
        let allowed: &[Scope] = match self {
            PayloadFormatIndicator => &[Publish, Will],
            MessageExpiryInterval => &[Publish, Will],
            ContentType => &[Publish, Will],
            ResponseTopic => &[Publish, Will],
            CorrelationData => &[Publish, Will],
            SubscriptionIdentifier => &[Publish, Subscribe],
            SessionExpiryInterval => &[Connect, ConnAck, Disconnect],
            AssignedClientIdentifier => &[ConnAck],
            ServerKeepAlive => &[ConnAck],
            AuthenticationMethod => &[Connect, ConnAck, Auth],
            AuthenticationData => &[Connect, ConnAck, Auth],
            RequestProblemInformation => &[Connect],
            WillDelayInterval => &[Will],
            RequestResponseInformation => &[Connect],
            ResponseInformation => &[ConnAck],
            ServerReference => &[ConnAck, Disconnect],
            ReasonString => &[
                ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
            ],
            ReceiveMaximum => &[Connect, ConnAck],
            TopicAliasMaximum => &[Connect, ConnAck],
            TopicAlias => &[Publish],
            MaximumQos => &[ConnAck],
            RetainAvailable => &[ConnAck],
            UserProperty => &Scope::ALL,
            MaximumPacketSize => &[Connect, ConnAck],
            WildcardSubscriptionAvailable => &[ConnAck],
            SubscriptionIdentifierAvailable => &[ConnAck],
            SharedSubscriptionAvailable => &[ConnAck],
        };
        allowed.contains(&scope)
    }
}
impl fmt::Display for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), *self as u8)
    }
}

/// Every MQTT 5.0 property a packet can carry; all absent by default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// Payload Format Indicator (0x01): `true` (1) says the payload is UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval (0x02).
    pub message_expiry_interval: Option<u32>,
    /// Content Type (0x03).
    pub content_type: Option<ByteString>,
    /// Response Topic (0x08).
    pub response_topic: Option<ByteString>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<Bytes>,
    /// Subscription Identifier (0x0B).
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// Session Expiry Interval (0x11).
    pub session_expiry_interval: Option<u32>,
    /// Assigned Client Identifier (0x12).
    pub assigned_client_identifier: Option<ByteString>,
    /// Server Keep Alive (0x13).
    pub server_keep_alive: Option<u16>,
    /// Authentication Method (0x15).
    pub authentication_method: Option<ByteString>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
    /// Request Problem Information (0x17).
    pub request_problem_information: Option<bool>,
    /// Will Delay Interval (0x18).
    pub will_delay_interval: Option<u32>,
    /// Request Response Information (0x19).
    pub request_response_information: Option<bool>,
    /// Response Information (0x1A).
    pub response_information: Option<ByteString>,
    /// Server Reference (0x1C).
    pub server_reference: Option<ByteString>,
    /// Reason String (0x1F).
    pub reason_string: Option<ByteString>,
    /// Receive Maximum (0x21).
    pub receive_maximum: Option<NonZeroU16>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Topic Alias (0x23).
    pub topic_alias: Option<NonZeroU16>,
    /// Maximum QoS (0x24): only 0 or 1 may be sent (a server supporting QoS 2 omits it).
    pub maximum_qos: Option<QoS>,
    /// Retain Available (0x25).
    pub retain_available: Option<bool>,
    /// User Property (0x26).
    pub user: Vec<(ByteString, ByteString)>,
    /// Maximum Packet Size (0x27).
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Wildcard Subscription Available (0x28).
    pub wildcard_subscription_available: Option<bool>,
    /// Subscription Identifier Available (0x29).
    pub subscription_identifier_available: Option<bool>,
    /// Shared Subscription Available (0x2A).
    pub shared_subscription_available: Option<bool>,
}

impl Properties {
    /// Whether no property is set: 3.1.1 packets, and 5.0 packets that may then drop the
    /// property length where the specification allows.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Reads a property length and the properties after it, for a packet or will of `scope`.
    pub(super) fn decode(r: &mut Reader, scope: Scope) -> Result<Self, Problem> {
        let len = r.var_int()?;
        let mut props = Self::default();
        if len == 0 {
            return Ok(props);
        }
        let mut r = Reader::new(r.take(len as usize)?);
        // One bit per identifier seen (all are below 64) to find repeats.
        let mut seen: u64 = 0;
        while r.remaining() > 0 {
            let raw = r.var_int()?;
            let id = PropertyId::from_u32(raw).ok_or(Problem::UnknownProperty(raw))?;
            if !id.allowed_in(scope) {
                return Err(Problem::PropertyNotAllowed(id));
            }
            let bit = 1u64 << (id as u8);
            let may_repeat = id == PropertyId::UserProperty
                || (id == PropertyId::SubscriptionIdentifier && scope == Scope::Publish);
            if seen & bit != 0 && !may_repeat {
                return Err(Problem::PropertyRepeated(id));
            }
            seen |= bit;
            use PropertyId::*;
            match id {
                PayloadFormatIndicator => props.payload_format_indicator = Some(flag(&mut r, id)?),
                MessageExpiryInterval => props.message_expiry_interval = Some(r.u32()?),
                ContentType => props.content_type = Some(r.string()?),
                ResponseTopic => props.response_topic = Some(r.string()?),
                CorrelationData => props.correlation_data = Some(r.binary()?),
                SessionExpiryInterval => props.session_expiry_interval = Some(r.u32()?),
                AssignedClientIdentifier => props.assigned_client_identifier = Some(r.string()?),
                ServerKeepAlive => props.server_keep_alive = Some(r.u16()?),
                AuthenticationMethod => props.authentication_method = Some(r.string()?),
                AuthenticationData => props.authentication_data = Some(r.binary()?),
                RequestProblemInformation => {
                    props.request_problem_information = Some(flag(&mut r, id)?)
                }
                WillDelayInterval => props.will_delay_interval = Some(r.u32()?),
                RequestResponseInformation => {
                    props.request_response_information = Some(flag(&mut r, id)?)
                }
                ResponseInformation => props.response_information = Some(r.string()?),
                ServerReference => props.server_reference = Some(r.string()?),
                ReasonString => props.reason_string = Some(r.string()?),
                ReceiveMaximum => props.receive_maximum = Some(non_zero_u16(&mut r, id)?),
                TopicAliasMaximum => props.topic_alias_maximum = Some(r.u16()?),
                TopicAlias => props.topic_alias = Some(non_zero_u16(&mut r, id)?),
                MaximumQos => props.maximum_qos = Some(maximum_qos(&mut r, id)?),
                RetainAvailable => props.retain_available = Some(flag(&mut r, id)?),
                MaximumPacketSize => props.maximum_packet_size = Some(non_zero_u32(r.u32()?, id)?),
                WildcardSubscriptionAvailable => {
                    props.wildcard_subscription_available = Some(flag(&mut r, id)?)
                }
                SubscriptionIdentifierAvailable => {
                    props.subscription_identifier_available = Some(flag(&mut r, id)?)
                }
                SharedSubscriptionAvailable => {
                    props.shared_subscription_available = Some(flag(&mut r, id)?)
                }
                SubscriptionIdentifier => {
                    let value = r.var_int()?;
                    props
                        .subscription_identifiers
                        .push(non_zero_u32(value, id)?);
                }
                UserProperty => {
                    let name = r.string()?;
                    let value = r.string()?;
                    props.user.push((name, value));
                }
            }
        }
        Ok(props)
    }

    /// Writes the property length and the properties.
    pub(super) fn encode(&self, sink: &mut impl Sink) -> Result<(), Overlong> {
        let mut counter = Counter::default();
        self.encode_list(&mut counter)?;
        let len = property_length(counter.0)?;
        sink.var_int(len);
        self.encode_list(sink)
    }

    fn encode_list(&self, sink: &mut impl Sink) -> Result<(), Overlong> {
        if let Some(v) = self.payload_format_indicator {
            sink.byte(PropertyId::PayloadFormatIndicator as u8);
            sink.byte(u8::from(v));
        }
        if let Some(v) = self.message_expiry_interval {
            sink.byte(PropertyId::MessageExpiryInterval as u8);
            sink.u32(v);
        }
        if let Some(v) = &self.content_type {
            sink.byte(PropertyId::ContentType as u8);
            sink.binary(PropertyId::ContentType.name(), v.as_bytes())?;
        }
        if let Some(v) = &self.response_topic {
            sink.byte(PropertyId::ResponseTopic as u8);
            sink.binary(PropertyId::ResponseTopic.name(), v.as_bytes())?;
        }
        if let Some(v) = &self.correlation_data {
            sink.byte(PropertyId::CorrelationData as u8);
            sink.binary(PropertyId::CorrelationData.name(), v)?;
        }
        if let Some(v) = self.session_expiry_interval {
            sink.byte(PropertyId::SessionExpiryInterval as u8);
            sink.u32(v);
        }
        if let Some(v) = &self.assigned_client_identifier {
            sink.byte(PropertyId::AssignedClientIdentifier as u8);
            sink.binary(PropertyId::AssignedClientIdentifier.name(), v.as_bytes())?;
        }
        if let Some(v) = self.server_keep_alive {
            sink.byte(PropertyId::ServerKeepAlive as u8);
            sink.u16(v);
        }
        if let Some(v) = &self.authentication_method {
            sink.byte(PropertyId::AuthenticationMethod as u8);
            sink.binary(PropertyId::AuthenticationMethod.name(), v.as_bytes())?;
        }
        if let Some(v) = &self.authentication_data {
            sink.byte(PropertyId::AuthenticationData as u8);
            sink.binary(PropertyId::AuthenticationData.name(), v)?;
        }
        if let Some(v) = self.request_problem_information {
            sink.byte(PropertyId::RequestProblemInformation as u8);
            sink.byte(u8::from(v));
        }
        if let Some(v) = self.will_delay_interval {
            sink.byte(PropertyId::WillDelayInterval as u8);
            sink.u32(v);
        }
        if let Some(v) = self.request_response_information {
            sink.byte(PropertyId::RequestResponseInformation as u8);
            sink.byte(u8::from(v));
        }
        if let Some(v) = &self.response_information {
            sink.byte(PropertyId::ResponseInformation as u8);
            sink.binary(PropertyId::ResponseInformation.name(), v.as_bytes())?;
        }
        if let Some(v) = &self.server_reference {
            sink.byte(PropertyId::ServerReference as u8);
            sink.binary(PropertyId::ServerReference.name(), v.as_bytes())?;
        }
        if let Some(v) = &self.reason_string {
            sink.byte(PropertyId::ReasonString as u8);
            sink.binary(PropertyId::ReasonString.name(), v.as_bytes())?;
        }
        if let Some(v) = self.receive_maximum {
            sink.byte(PropertyId::ReceiveMaximum as u8);
            sink.u16(v.get());
        }
        if let Some(v) = self.topic_alias_maximum {
            sink.byte(PropertyId::TopicAliasMaximum as u8);
            sink.u16(v);
        }
        if let Some(v) = self.topic_alias {
            sink.byte(PropertyId::TopicAlias as u8);
            sink.u16(v.get());
        }
        if let Some(v) = self.maximum_qos {
            sink.byte(PropertyId::MaximumQos as u8);
            sink.byte(v as u8);
        }
        if let Some(v) = self.retain_available {
            sink.byte(PropertyId::RetainAvailable as u8);
            sink.byte(u8::from(v));
        }
        if let Some(v) = self.maximum_packet_size {
            sink.byte(PropertyId::MaximumPacketSize as u8);
            sink.u32(v.get());
        }
        if let Some(v) = self.wildcard_subscription_available {
            sink.byte(PropertyId::WildcardSubscriptionAvailable as u8);
            sink.byte(u8::from(v));
        }
        if let Some(v) = self.subscription_identifier_available {
            sink.byte(PropertyId::SubscriptionIdentifierAvailable as u8);
            sink.byte(u8::from(v));
        }
        if let Some(v) = self.shared_subscription_available {
            sink.byte(PropertyId::SharedSubscriptionAvailable as u8);
            sink.byte(u8::from(v));
        }
        for id in &self.subscription_identifiers {
            if id.get() > VAR_INT_MAX {
                return Err(Overlong {
                    field: "Subscription Identifier",
                    len: id.get() as usize,
                });
            }
            sink.byte(PropertyId::SubscriptionIdentifier as u8);
            sink.var_int(id.get());
        }
        for (name, value) in &self.user {
            sink.byte(PropertyId::UserProperty as u8);
            sink.binary("User Property name", name.as_bytes())?;
            sink.binary("User Property value", value.as_bytes())?;
        }
        Ok(())
    }
}

fn property_length(len: usize) -> Result<u32, Overlong> {
    u32::try_from(len)
        .ok()
        .filter(|&n| n <= VAR_INT_MAX)
        .ok_or(Overlong {
            field: "properties",
            len,
        })
}

fn flag(r: &mut Reader, id: PropertyId) -> Result<bool, Problem> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(Problem::PropertyValue {
            id,
            value: value.into(),
        }),
    }
}

fn maximum_qos(r: &mut Reader, id: PropertyId) -> Result<QoS, Problem> {
    match r.u8()? {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        value => Err(Problem::PropertyValue {
            id,
            value: value.into(),
        }),
    }
}

fn non_zero_u16(r: &mut Reader, id: PropertyId) -> Result<NonZeroU16, Problem> {
    NonZeroU16::new(r.u16()?).ok_or(Problem::PropertyValue { id, value: 0 })
}

fn non_zero_u32(value: u32, id: PropertyId) -> Result<NonZeroU32, Problem> {
    NonZeroU32::new(value).ok_or(Problem::PropertyValue { id, value: 0 })
}
