//! What the codec refuses, where, and the reason code the broker answers with.
//!
//! A [`DecodeError`] names the packet type and the field it was reading and holds a
//! [`Problem`]; [`DecodeError::reason_code`] is the MQTT 5.0 code to put in the CONNACK (when
//! the CONNECT itself was refused) or the DISCONNECT that closes the connection. Every
//! decode error closes the connection: the stream cannot be resynchronised after a bad
//! packet.

use thiserror::Error;

use super::Version;
use super::packet::PacketType;
use super::properties::PropertyId;
use super::reason::ReasonCode;

/// What was wrong with the bytes of one field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    /// A length or the remaining length promised more bytes than the packet holds.
    #[error("the packet ends inside the field")]
    Truncated,
    /// The remaining length was longer than the fields it should hold.
    #[error("{0} bytes left over after the last field")]
    TrailingBytes(usize),
    /// §1.5.5: four bytes at most.
    #[error("variable byte integer longer than 4 bytes")]
    VarIntTooLong,
    /// §1.5.5: the minimum number of bytes must be used.
    #[error("variable byte integer not encoded in the fewest bytes")]
    VarIntNotMinimal,
    /// §1.5.4: ill-formed UTF-8, including encoded surrogates.
    #[error("string is not well-formed UTF-8")]
    InvalidUtf8,
    /// §1.5.4: U+0000 must not appear.
    #[error("string contains U+0000")]
    NulChar,
    /// AUTH (type 15) is reserved in 3.1.1.
    #[error("AUTH is not an MQTT 3.1.1 packet")]
    AuthInV311,
    /// §2.1.3: the flag bits of the fixed header are fixed for every type but PUBLISH.
    #[error("fixed header flags {got:#06b}, must be {want:#06b}")]
    ReservedFlags {
        /// The flags received.
        got: u8,
        /// The only value allowed for the type.
        want: u8,
    },
    /// A QoS field of 3.
    #[error("QoS 3")]
    QoS3,
    /// §3.3.1.1: DUP must be 0 when QoS is 0.
    #[error("DUP set with QoS 0")]
    DupWithQoS0,
    /// §2.2.1: packet identifiers are non-zero.
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// A reserved bit of a flags byte is set (CONNECT flags bit 0, CONNACK flags,
    /// subscription options bits 6-7, or 3.1.1 subscription bits 2-7).
    #[error("reserved bit set in {0:#010b}")]
    ReservedBit(u8),
    /// §3.1.2.6/§3.1.2.7: will QoS and will retain must be 0 without the will flag.
    #[error("will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// MQTT 3.1.1 §3.1.2.9: a password needs a user name (5.0 allows it).
    #[error("password flag set without the user name flag")]
    PasswordWithoutUsername,
    /// §3.3.2.1 (5.0): an empty topic name needs a Topic Alias to stand for it.
    #[error("empty topic name without a Topic Alias")]
    EmptyTopicWithoutAlias,
    /// §3.1.2.11.10 (5.0): Authentication Data needs an Authentication Method.
    #[error("Authentication Data without an Authentication Method")]
    AuthDataWithoutMethod,
    /// §3.8.3 / §3.10.3: at least one topic filter.
    #[error("no topic filters")]
    NoTopicFilters,
    /// §3.8.3.1: retain handling 3 is reserved.
    #[error("retain handling 3")]
    RetainHandling3,
    /// A property identifier the specification does not define.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u32),
    /// §2.2.2.2: the property is not in this packet's list.
    #[error("{0} is not allowed in this packet")]
    PropertyNotAllowed(PropertyId),
    /// §2.2.2.2: only User Property (and Subscription Identifier in PUBLISH) may repeat.
    #[error("{0} appears more than once")]
    PropertyRepeated(PropertyId),
    /// A property value the specification forbids (0 for Receive Maximum, 2 for a
    /// 0-or-1 byte, ...).
    #[error("{id} has the forbidden value {value}")]
    PropertyValue {
        /// The property.
        id: PropertyId,
        /// The value received.
        value: u32,
    },
    /// A reason code the specification does not define, or not for this packet (§2.4).
    #[error("reason code {0:#04x} is not valid in this packet")]
    ReasonCode(u8),
    /// A 3.1.1 CONNACK or SUBACK return code outside the defined ones.
    #[error("return code {0:#04x} is reserved")]
    ReturnCode(u8),
    /// CONNECT names a protocol or level other than "MQTT" 4 or 5 (3.1's "MQIsdp" 3 among them).
    #[error("protocol {name:?} level {level} is not supported (MQTT 3.1.1 and 5.0 are)")]
    UnsupportedProtocol {
        /// The protocol name, lossily decoded for the message.
        name: String,
        /// The protocol level byte.
        level: u8,
    },
    /// §3.1.0: a CONNECT after the first one, or another packet before it.
    #[error("{0}")]
    Sequence(&'static str),
}

impl Problem {
    /// The MQTT 5.0 reason code for this problem (§4.13: Malformed Packet for bytes that
    /// cannot be parsed as the specification says, Protocol Error for parsed data that
    /// breaks a rule).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Truncated
            | Self::TrailingBytes(_)
            | Self::VarIntTooLong
            | Self::VarIntNotMinimal
            | Self::InvalidUtf8
            | Self::NulChar
            | Self::AuthInV311
            | Self::ReservedFlags { .. }
            | Self::QoS3
            | Self::DupWithQoS0
            | Self::ReservedBit(_)
            | Self::WillFlagsWithoutWill
            | Self::RetainHandling3
            | Self::UnknownProperty(_)
            | Self::ReturnCode(_) => ReasonCode::MalformedPacket,
            Self::ZeroPacketId
            | Self::PasswordWithoutUsername
            | Self::NoTopicFilters
            | Self::EmptyTopicWithoutAlias
            | Self::AuthDataWithoutMethod
            | Self::PropertyNotAllowed(_)
            | Self::PropertyRepeated(_)
            | Self::PropertyValue { .. }
            | Self::ReasonCode(_)
            | Self::Sequence(_) => ReasonCode::ProtocolError,
            Self::UnsupportedProtocol { .. } => ReasonCode::UnsupportedProtocolVersion,
        }
    }
}

/// Why bytes read from a client are not a packet the codec accepts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Packet type 0 is reserved (§2.1.2).
    #[error("malformed MQTT packet: reserved packet type 0 (first byte {byte1:#04x})")]
    ReservedPacketType {
        /// The fixed header's first byte.
        byte1: u8,
    },
    /// The fixed header announced a packet larger than the limit; nothing of it was
    /// buffered beyond the header.
    #[error("MQTT {packet} of {size} bytes is larger than the maximum packet size {max}")]
    TooLarge {
        /// The packet type.
        packet: PacketType,
        /// The whole packet's size as announced (fixed header included).
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// A field broke the specification.
    #[error("malformed MQTT {packet}: {field}: {problem}")]
    Invalid {
        /// The packet type, when the fixed header got that far.
        packet: PacketType,
        /// Which field was being read.
        field: &'static str,
        /// What was wrong with it.
        problem: Problem,
    },
}

impl DecodeError {
    /// The MQTT 5.0 reason code to answer with (CONNACK for a refused CONNECT, DISCONNECT
    /// otherwise). For a 3.1.1 client only a refused CONNECT gets an answer, through
    /// [`ReasonCode::to_v311_connack`]; for any other error the connection is closed.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::TooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::ReservedPacketType { .. } => ReasonCode::MalformedPacket,
            Self::Invalid { problem, .. } => problem.reason_code(),
        }
    }

    /// The problem found, when it was in a field.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::TooLarge { .. } | Self::ReservedPacketType { .. } => None,
            Self::Invalid { problem, .. } => Some(problem),
        }
    }
}

/// Why a packet value cannot be written for a peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The packet would be larger than the peer accepts (§3.1.2.11.4 for 5.0's Maximum
    /// Packet Size; 256 MiB for any peer). The broker drops such a message for that peer.
    #[error("MQTT {packet} of {size} bytes is larger than the peer's maximum packet size {max}")]
    TooLarge {
        /// The packet type.
        packet: PacketType,
        /// Its encoded size.
        size: u64,
        /// The limit.
        max: u32,
    },
    /// A string or binary field is longer than its two-byte length can say.
    #[error("MQTT {packet}: {field} is {len} bytes, more than 65535")]
    FieldTooLong {
        /// The packet type.
        packet: PacketType,
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The value cannot be said in the version being written (AUTH in 3.1.1, a CONNACK
    /// reason without a 3.1.1 return code, a QoS > 0 PUBLISH without a packet identifier).
    #[error("MQTT {packet} cannot be encoded for {version}: {what}")]
    Unrepresentable {
        /// The packet type.
        packet: PacketType,
        /// The version being written.
        version: Version,
        /// What has no encoding.
        what: &'static str,
    },
}
