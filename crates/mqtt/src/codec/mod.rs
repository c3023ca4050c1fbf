//! MQTT control packets of versions 3.1.1 and 5.0 on the wire.
//!
//! The codec is the broker's attack surface, so it is strict and checks sizes before it
//! allocates: [`decode_connect`] reads the CONNECT that opens a connection and learns the
//! [`Version`]; [`decode`] reads every later packet in that version, refusing a packet over
//! the maximum size from its fixed header alone and splitting a complete one off the read
//! buffer without copying (strings and payloads in a [`Packet`] are slices of it).
//! [`encode`] writes a [`Packet`] for a peer of either version and [`encoded_len`] says
//! how big it will be. Every MUST of the specification about the wire format is enforced
//! on decode ([`Problem`] lists them) and each error maps to the 5.0 reason code to answer
//! with; what needs a session's state (topic aliases, receive maximum, packet identifiers
//! in flight) or topic syntax (wildcards, handled by [`crate::topic`]) is left to the
//! broker.
//!
//! Layout: `wire.rs` holds the data representations (§1.5), `packet.rs` the packet values,
//! `properties.rs` the 5.0 properties, `reason.rs` the reason codes, `decode.rs` and
//! `encode.rs` the two directions, `error.rs` what can go wrong.

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod reason;
mod wire;

use std::fmt;

pub use decode::{decode, decode_connect};
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError, Problem};
pub use packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PacketType, Publish, QoS,
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
pub use properties::{Properties, PropertyId, Scope};
pub use reason::ReasonCode;

/// Re-exported so callers name the string type the packets hold without a dependency.
pub use bytestring::ByteString;

/// The protocol version a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// The protocol level byte CONNECT carries.
    pub fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V311 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5.0",
        })
    }
}

#[cfg(test)]
mod tests;
