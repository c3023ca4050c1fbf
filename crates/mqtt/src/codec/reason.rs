//! Reason codes (MQTT 5.0 §2.4) and the 3.1.1 return codes they stand for.
//!
//! A packet value carries a [`ReasonCode`] whichever version it is for: MQTT 3.1.1's CONNACK
//! return codes and SUBACK return codes are the 5.0 codes with the same meaning (SUBACK's
//! even have the same bytes), so the broker decides once and the encoder writes the byte
//! each version expects.

use std::fmt;

use super::packet::PacketType;

/// A reason code (§2.4): every value MQTT 5.0 defines.
///
/// 0x00 has three names in the specification (Success, Normal disconnection, Granted QoS 0);
/// it is one variant here, with the other names as constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ReasonCode {
    /// Success (0x00).
    #[default]
    Success = 0x00,
    /// Granted QoS 1 (0x01).
    GrantedQos1 = 0x01,
    /// Granted QoS 2 (0x02).
    GrantedQos2 = 0x02,
    /// Disconnect with Will Message (0x04).
    DisconnectWithWillMessage = 0x04,
    /// No matching subscribers (0x10).
    NoMatchingSubscribers = 0x10,
    /// No subscription existed (0x11).
    NoSubscriptionExisted = 0x11,
    /// Continue authentication (0x18).
    ContinueAuthentication = 0x18,
    /// Re-authenticate (0x19).
    ReAuthenticate = 0x19,
    /// Unspecified error (0x80).
    UnspecifiedError = 0x80,
    /// Malformed Packet (0x81).
    MalformedPacket = 0x81,
    /// Protocol Error (0x82).
    ProtocolError = 0x82,
    /// Implementation specific error (0x83).
    ImplementationSpecificError = 0x83,
    /// Unsupported Protocol Version (0x84).
    UnsupportedProtocolVersion = 0x84,
    /// Client Identifier not valid (0x85).
    ClientIdentifierNotValid = 0x85,
    /// Bad User Name or Password (0x86).
    BadUserNameOrPassword = 0x86,
    /// Not authorized (0x87).
    NotAuthorized = 0x87,
    /// Server unavailable (0x88).
    ServerUnavailable = 0x88,
    /// Server busy (0x89).
    ServerBusy = 0x89,
    /// Banned (0x8A).
    Banned = 0x8A,
    /// Server shutting down (0x8B).
    ServerShuttingDown = 0x8B,
    /// Bad authentication method (0x8C).
    BadAuthenticationMethod = 0x8C,
    /// Keep Alive timeout (0x8D).
    KeepAliveTimeout = 0x8D,
    /// Session taken over (0x8E).
    SessionTakenOver = 0x8E,
    /// Topic Filter invalid (0x8F).
    TopicFilterInvalid = 0x8F,
    /// Topic Name invalid (0x90).
    TopicNameInvalid = 0x90,
    /// Packet Identifier in use (0x91).
    PacketIdentifierInUse = 0x91,
    /// Packet Identifier not found (0x92).
    PacketIdentifierNotFound = 0x92,
    /// Receive Maximum exceeded (0x93).
    ReceiveMaximumExceeded = 0x93,
    /// Topic Alias invalid (0x94).
    TopicAliasInvalid = 0x94,
    /// Packet too large (0x95).
    PacketTooLarge = 0x95,
    /// Message rate too high (0x96).
    MessageRateTooHigh = 0x96,
    /// Quota exceeded (0x97).
    QuotaExceeded = 0x97,
    /// Administrative action (0x98).
    AdministrativeAction = 0x98,
    /// Payload format invalid (0x99).
    PayloadFormatInvalid = 0x99,
    /// Retain not supported (0x9A).
    RetainNotSupported = 0x9A,
    /// QoS not supported (0x9B).
    QosNotSupported = 0x9B,
    /// Use another server (0x9C).
    UseAnotherServer = 0x9C,
    /// Server moved (0x9D).
    ServerMoved = 0x9D,
    /// Shared Subscriptions not supported (0x9E).
    SharedSubscriptionsNotSupported = 0x9E,
    /// Connection rate exceeded (0x9F).
    ConnectionRateExceeded = 0x9F,
    /// Maximum connect time (0xA0).
    MaximumConnectTime = 0xA0,
    /// Subscription Identifiers not supported (0xA1).
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// Wildcard Subscriptions not supported (0xA2).
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// The DISCONNECT name of 0x00.
    pub const NORMAL_DISCONNECTION: Self = Self::Success;
    /// The SUBACK name of 0x00.
    pub const GRANTED_QOS_0: Self = Self::Success;

    /// The code for a byte, or `None` for a value the specification does not define.
    pub fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            0x00 => Self::Success,
            0x01 => Self::GrantedQos1,
            0x02 => Self::GrantedQos2,
            0x04 => Self::DisconnectWithWillMessage,
            0x10 => Self::NoMatchingSubscribers,
            0x11 => Self::NoSubscriptionExisted,
            0x18 => Self::ContinueAuthentication,
            0x19 => Self::ReAuthenticate,
            0x80 => Self::UnspecifiedError,
            0x81 => Self::MalformedPacket,
            0x82 => Self::ProtocolError,
            0x83 => Self::ImplementationSpecificError,
            0x84 => Self::UnsupportedProtocolVersion,
            0x85 => Self::ClientIdentifierNotValid,
            0x86 => Self::BadUserNameOrPassword,
            0x87 => Self::NotAuthorized,
            0x88 => Self::ServerUnavailable,
            0x89 => Self::ServerBusy,
            0x8A => Self::Banned,
            0x8B => Self::ServerShuttingDown,
            0x8C => Self::BadAuthenticationMethod,
            0x8D => Self::KeepAliveTimeout,
            0x8E => Self::SessionTakenOver,
            0x8F => Self::TopicFilterInvalid,
            0x90 => Self::TopicNameInvalid,
            0x91 => Self::PacketIdentifierInUse,
            0x92 => Self::PacketIdentifierNotFound,
            0x93 => Self::ReceiveMaximumExceeded,
            0x94 => Self::TopicAliasInvalid,
            0x95 => Self::PacketTooLarge,
            0x96 => Self::MessageRateTooHigh,
            0x97 => Self::QuotaExceeded,
            0x98 => Self::AdministrativeAction,
            0x99 => Self::PayloadFormatInvalid,
            0x9A => Self::RetainNotSupported,
            0x9B => Self::QosNotSupported,
            0x9C => Self::UseAnotherServer,
            0x9D => Self::ServerMoved,
            0x9E => Self::SharedSubscriptionsNotSupported,
            0x9F => Self::ConnectionRateExceeded,
            0xA0 => Self::MaximumConnectTime,
            0xA1 => Self::SubscriptionIdentifiersNotSupported,
            0xA2 => Self::WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// The specification's name for the code (for 0x00, "Success").
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::GrantedQos1 => "Granted QoS 1",
            Self::GrantedQos2 => "Granted QoS 2",
            Self::DisconnectWithWillMessage => "Disconnect with Will Message",
            Self::NoMatchingSubscribers => "No matching subscribers",
            Self::NoSubscriptionExisted => "No subscription existed",
            Self::ContinueAuthentication => "Continue authentication",
            Self::ReAuthenticate => "Re-authenticate",
            Self::UnspecifiedError => "Unspecified error",
            Self::MalformedPacket => "Malformed Packet",
            Self::ProtocolError => "Protocol Error",
            Self::ImplementationSpecificError => "Implementation specific error",
            Self::UnsupportedProtocolVersion => "Unsupported Protocol Version",
            Self::ClientIdentifierNotValid => "Client Identifier not valid",
            Self::BadUserNameOrPassword => "Bad User Name or Password",
            Self::NotAuthorized => "Not authorized",
            Self::ServerUnavailable => "Server unavailable",
            Self::ServerBusy => "Server busy",
            Self::Banned => "Banned",
            Self::ServerShuttingDown => "Server shutting down",
            Self::BadAuthenticationMethod => "Bad authentication method",
            Self::KeepAliveTimeout => "Keep Alive timeout",
            Self::SessionTakenOver => "Session taken over",
            Self::TopicFilterInvalid => "Topic Filter invalid",
            Self::TopicNameInvalid => "Topic Name invalid",
            Self::PacketIdentifierInUse => "Packet Identifier in use",
            Self::PacketIdentifierNotFound => "Packet Identifier not found",
            Self::ReceiveMaximumExceeded => "Receive Maximum exceeded",
            Self::TopicAliasInvalid => "Topic Alias invalid",
            Self::PacketTooLarge => "Packet too large",
            Self::MessageRateTooHigh => "Message rate too high",
            Self::QuotaExceeded => "Quota exceeded",
            Self::AdministrativeAction => "Administrative action",
            Self::PayloadFormatInvalid => "Payload format invalid",
            Self::RetainNotSupported => "Retain not supported",
            Self::QosNotSupported => "QoS not supported",
            Self::UseAnotherServer => "Use another server",
            Self::ServerMoved => "Server moved",
            Self::SharedSubscriptionsNotSupported => "Shared Subscriptions not supported",
            Self::ConnectionRateExceeded => "Connection rate exceeded",
            Self::MaximumConnectTime => "Maximum connect time",
            Self::SubscriptionIdentifiersNotSupported => "Subscription Identifiers not supported",
            Self::WildcardSubscriptionsNotSupported => "Wildcard Subscriptions not supported",
        }
    }

    /// Whether the code may be sent in a packet of type `packet` (§2.4's table); the
    /// decoder refuses a code outside it as a Protocol Error.
    pub fn valid_in(self, packet: PacketType) -> bool {
        use PacketType::*;
        let allowed: &[PacketType] = match self {
            Self::Success => &[
                ConnAck, PubAck, PubRec, PubRel, PubComp, UnsubAck, Auth, Disconnect, SubAck,
            ],
            Self::GrantedQos1 => &[SubAck],
            Self::GrantedQos2 => &[SubAck],
            Self::DisconnectWithWillMessage => &[Disconnect],
            Self::NoMatchingSubscribers => &[PubAck, PubRec],
            Self::NoSubscriptionExisted => &[UnsubAck],
            Self::ContinueAuthentication => &[Auth],
            Self::ReAuthenticate => &[Auth],
            Self::UnspecifiedError => &[ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect],
            Self::MalformedPacket => &[ConnAck, Disconnect],
            Self::ProtocolError => &[ConnAck, Disconnect],
            Self::ImplementationSpecificError => {
                &[ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect]
            }
            Self::UnsupportedProtocolVersion => &[ConnAck],
            Self::ClientIdentifierNotValid => &[ConnAck],
            Self::BadUserNameOrPassword => &[ConnAck],
            Self::NotAuthorized => &[ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect],
            Self::ServerUnavailable => &[ConnAck],
            Self::ServerBusy => &[ConnAck, Disconnect],
            Self::Banned => &[ConnAck],
            Self::ServerShuttingDown => &[Disconnect],
            Self::BadAuthenticationMethod => &[ConnAck, Disconnect],
            Self::KeepAliveTimeout => &[Disconnect],
            Self::SessionTakenOver => &[Disconnect],
            Self::TopicFilterInvalid => &[SubAck, UnsubAck, Disconnect],
            Self::TopicNameInvalid => &[ConnAck, PubAck, PubRec, Disconnect],
            Self::PacketIdentifierInUse => &[PubAck, PubRec, SubAck, UnsubAck],
            Self::PacketIdentifierNotFound => &[PubRel, PubComp],
            Self::ReceiveMaximumExceeded => &[Disconnect],
            Self::TopicAliasInvalid => &[Disconnect],
            Self::PacketTooLarge => &[ConnAck, Disconnect],
            Self::MessageRateTooHigh => &[Disconnect],
            Self::QuotaExceeded => &[ConnAck, PubAck, PubRec, SubAck, Disconnect],
            Self::AdministrativeAction => &[Disconnect],
            Self::PayloadFormatInvalid => &[ConnAck, PubAck, PubRec, Disconnect],
            Self::RetainNotSupported => &[ConnAck, Disconnect],
            Self::QosNotSupported => &[ConnAck, Disconnect],
            Self::UseAnotherServer => &[ConnAck, Disconnect],
            Self::ServerMoved => &[ConnAck, Disconnect],
            Self::SharedSubscriptionsNotSupported => &[SubAck, Disconnect],
            Self::ConnectionRateExceeded => &[ConnAck, Disconnect],
            Self::MaximumConnectTime => &[Disconnect],
            Self::SubscriptionIdentifiersNotSupported => &[SubAck, Disconnect],
            Self::WildcardSubscriptionsNotSupported => &[SubAck, Disconnect],
        };
        allowed.contains(&packet)
    }
}

impl ReasonCode {
    /// Whether the code reports a failure (0x80 and above, §2.4).
    pub fn is_error(self) -> bool {
        self as u8 >= 0x80
    }

    /// The MQTT 3.1.1 CONNACK return code (§3.2.2.3 of 3.1.1) with this meaning, or `None`
    /// when 3.1.1 has none: the broker must pick one of those six before answering a 3.1.1
    /// client.
    pub fn to_v311_connack(self) -> Option<u8> {
        Some(match self {
            Self::Success => 0x00,
            Self::UnsupportedProtocolVersion => 0x01,
            Self::ClientIdentifierNotValid => 0x02,
            Self::ServerUnavailable => 0x03,
            Self::BadUserNameOrPassword => 0x04,
            Self::NotAuthorized => 0x05,
            _ => return None,
        })
    }

    /// The code a 3.1.1 CONNACK return code stands for; `None` for the reserved values 6-255.
    pub fn from_v311_connack(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => Self::Success,
            0x01 => Self::UnsupportedProtocolVersion,
            0x02 => Self::ClientIdentifierNotValid,
            0x03 => Self::ServerUnavailable,
            0x04 => Self::BadUserNameOrPassword,
            0x05 => Self::NotAuthorized,
            _ => return None,
        })
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), *self as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_byte_round_trips_and_others_are_unknown() {
        let defined = (0..=255u8).filter_map(ReasonCode::from_u8).count();
        assert_eq!(defined, 43);
        for byte in 0..=255u8 {
            if let Some(code) = ReasonCode::from_u8(byte) {
                assert_eq!(code as u8, byte);
            }
        }
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xA3), None);
    }

    #[test]
    fn display_names_the_code_and_its_byte() {
        assert_eq!(
            ReasonCode::PacketTooLarge.to_string(),
            "Packet too large (0x95)"
        );
        assert_eq!(ReasonCode::NORMAL_DISCONNECTION.name(), "Success");
    }

    #[test]
    fn validity_follows_the_specification_table() {
        assert!(ReasonCode::Success.valid_in(PacketType::SubAck));
        assert!(ReasonCode::GrantedQos2.valid_in(PacketType::SubAck));
        assert!(!ReasonCode::GrantedQos2.valid_in(PacketType::PubAck));
        assert!(ReasonCode::PacketIdentifierNotFound.valid_in(PacketType::PubRel));
        assert!(!ReasonCode::PacketIdentifierNotFound.valid_in(PacketType::PubAck));
        assert!(ReasonCode::UnsupportedProtocolVersion.valid_in(PacketType::ConnAck));
        assert!(!ReasonCode::UnsupportedProtocolVersion.valid_in(PacketType::Disconnect));
        assert!(ReasonCode::ReAuthenticate.valid_in(PacketType::Auth));
        assert!(!ReasonCode::Success.valid_in(PacketType::Publish));
    }

    #[test]
    fn v311_connack_codes_map_both_ways() {
        for code in 0..=5u8 {
            let reason = ReasonCode::from_v311_connack(code).expect("defined in 3.1.1");
            assert_eq!(reason.to_v311_connack(), Some(code));
        }
        assert_eq!(ReasonCode::from_v311_connack(6), None);
        assert_eq!(ReasonCode::Banned.to_v311_connack(), None);
    }
}
