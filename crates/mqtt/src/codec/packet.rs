//! The fifteen control packets as values that hold either version.
//!
//! A field 3.1.1 lacks is simply empty there: [`Properties`] default, reason codes
//! [`ReasonCode::Success`], subscription options beyond the QoS false. Strings are
//! [`ByteString`]s and payloads [`Bytes`], both slices of the buffer the packet was read
//! from, so decoding a PUBLISH copies neither its topic nor its payload.

use std::fmt;
use std::num::NonZeroU16;

use bytes::Bytes;
use bytestring::ByteString;

use super::properties::Properties;
use super::reason::ReasonCode;

/// A packet identifier (§2.2.1): never 0, which the type enforces.
pub type PacketId = NonZeroU16;

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum QoS {
    /// Delivered at most once, never acknowledged.
    #[default]
    AtMostOnce = 0,
    /// Delivered at least once: PUBLISH, PUBACK.
    AtLeastOnce = 1,
    /// Delivered exactly once: PUBLISH, PUBREC, PUBREL, PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS of a two-bit field; `None` for 3, which every packet must refuse.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// The control packet types (§2.1.2), used to name where an error was and which reason
/// codes and properties a packet may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Client asks to connect.
    Connect = 1,
    /// Server answers CONNECT.
    ConnAck = 2,
    /// A message.
    Publish = 3,
    /// QoS 1 acknowledgement.
    PubAck = 4,
    /// QoS 2, first answer.
    PubRec = 5,
    /// QoS 2, release.
    PubRel = 6,
    /// QoS 2, completion.
    PubComp = 7,
    /// Client subscribes.
    Subscribe = 8,
    /// Server answers SUBSCRIBE.
    SubAck = 9,
    /// Client unsubscribes.
    Unsubscribe = 10,
    /// Server answers UNSUBSCRIBE.
    UnsubAck = 11,
    /// Keep-alive ping.
    PingReq = 12,
    /// Keep-alive answer.
    PingResp = 13,
    /// Either side closes.
    Disconnect = 14,
    /// 5.0 enhanced authentication exchange.
    Auth = 15,
}

impl PacketType {
    /// The type of a fixed header's high nibble; `None` for the reserved 0.
    pub fn from_nibble(nibble: u8) -> Option<Self> {
        use PacketType::*;
        Some(match nibble {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The fixed header flags every type but PUBLISH must carry (§2.1.3).
    pub fn fixed_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }

    /// The name the specification uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Any control packet of either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Boxed: it is large and arrives once per connection.
    Connect(Box<Connect>),
    /// The server's answer to CONNECT.
    ConnAck(ConnAck),
    /// A message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(Ack),
    /// QoS 2: received.
    PubRec(Ack),
    /// QoS 2: release.
    PubRel(Ack),
    /// QoS 2: complete.
    PubComp(Ack),
    /// Subscription request.
    Subscribe(Subscribe),
    /// Subscription answer, one code per filter.
    SubAck(SubAck),
    /// Unsubscription request.
    Unsubscribe(Unsubscribe),
    /// Unsubscription answer (codes per filter in 5.0, none in 3.1.1).
    UnsubAck(UnsubAck),
    /// Ping.
    PingReq,
    /// Ping answer.
    PingResp,
    /// Closing the connection (a reason and properties in 5.0).
    Disconnect(Disconnect),
    /// 5.0 enhanced authentication.
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The version the client speaks, from the protocol level; every later packet on the
    /// connection is read and written in it. [`super::encode`] writes the level of the
    /// version it is given, not this field.
    pub version: super::Version,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 turns the keep-alive off.
    pub keep_alive: u16,
    /// 5.0 CONNECT properties.
    pub properties: Properties,
    /// May be empty: the server then assigns one (or refuses, in 3.1.1 without clean session).
    pub client_id: ByteString,
    /// The message published when the connection ends badly.
    pub will: Option<Will>,
    /// User name, when the flag is set.
    pub username: Option<ByteString>,
    /// Password (binary data), when the flag is set.
    pub password: Option<Bytes>,
}

/// A CONNECT's will message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// 5.0 will properties (delay, expiry, content type, ...).
    pub properties: Properties,
    /// Where it is published.
    pub topic: ByteString,
    /// What is published.
    pub payload: Bytes,
    /// Its QoS.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
}

/// CONNACK (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a session.
    pub session_present: bool,
    /// The outcome; for 3.1.1 one of the six codes [`ReasonCode::to_v311_connack`] maps.
    pub reason_code: ReasonCode,
    /// 5.0 CONNACK properties.
    pub properties: Properties,
}

/// PUBLISH (§3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Re-delivery of an earlier attempt (only with QoS > 0).
    pub dup: bool,
    /// The message's QoS.
    pub qos: QoS,
    /// Whether the server keeps it for future subscribers.
    pub retain: bool,
    /// The topic name, not validated beyond UTF-8 (the topic module checks wildcards);
    /// empty in 5.0 when a Topic Alias stands for it.
    pub topic: ByteString,
    /// Present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// 5.0 PUBLISH properties.
    pub properties: Properties,
    /// The message, a slice of the read buffer.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4-§3.7) share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The PUBLISH (or PUBREL) being answered.
    pub packet_id: PacketId,
    /// 5.0 outcome; Success for 3.1.1.
    pub reason_code: ReasonCode,
    /// 5.0 properties (Reason String, User Property).
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement without properties: what 3.1.1 always sends.
    pub fn success(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        }
    }
}

/// What 5.0 does with retained messages when a subscription is made (§3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// Send retained messages on every subscribe (3.1.1's behaviour).
    #[default]
    OnSubscribe = 0,
    /// Send them only when the subscription did not exist.
    OnNewSubscription = 1,
    /// Never send them.
    Never = 2,
}

/// A subscription's options byte (§3.8.3.1); 3.1.1 has only the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS granted for this subscription.
    pub qos: QoS,
    /// 5.0: do not forward the client's own publications to it.
    pub no_local: bool,
    /// 5.0: keep the RETAIN flag as published instead of clearing it.
    pub retain_as_published: bool,
    /// 5.0: when retained messages are sent.
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE (§3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Echoed in the SUBACK.
    pub packet_id: PacketId,
    /// 5.0 properties (Subscription Identifier, User Property).
    pub properties: Properties,
    /// At least one; filter syntax is the topic module's to check.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

/// SUBACK (§3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE answered.
    pub packet_id: PacketId,
    /// 5.0 properties.
    pub properties: Properties,
    /// One per filter. 3.1.1's return codes are Success (granted QoS 0), GrantedQos1,
    /// GrantedQos2 and any error (written as 0x80).
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (§3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Echoed in the UNSUBACK.
    pub packet_id: PacketId,
    /// 5.0 properties (User Property).
    pub properties: Properties,
    /// At least one.
    pub filters: Vec<ByteString>,
}

/// UNSUBACK (§3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE answered.
    pub packet_id: PacketId,
    /// 5.0 properties.
    pub properties: Properties,
    /// 5.0: one per filter; not written for 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT (§3.14).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// 5.0 reason; Normal disconnection (0x00) for 3.1.1.
    pub reason_code: ReasonCode,
    /// 5.0 properties.
    pub properties: Properties,
}

/// AUTH (§3.15), 5.0 only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication Method and Data.
    pub properties: Properties,
}
