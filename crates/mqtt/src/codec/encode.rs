//! Writing packets for a peer of either version.
//!
//! The body of every packet is written by one function against a [`Sink`]: run on a
//! [`Counter`] it gives the remaining length (and [`encoded_len`], which the broker uses to
//! drop properties or the message for a peer's Maximum Packet Size, §3.1.2.11.4), run on
//! the output buffer it writes the same bytes. 3.1.1 output carries only what 3.1.1 has:
//! properties, subscription options beyond the QoS, and the reason codes of the
//! acknowledgements, UNSUBACK and DISCONNECT are left out; a value 3.1.1 cannot say at all
//! is an [`EncodeError::Unrepresentable`]. A QoS 0 PUBLISH is written without packet
//! identifier and DUP. Properties are written as given: the broker sets only those the
//! packet's list allows (the peer refuses others). 5.0 output uses the short forms the specification allows (an
//! acknowledgement, DISCONNECT or AUTH with reason Success and no properties ends after its
//! packet identifier or fixed header).

use bytes::{BufMut, BytesMut};

use super::Version;
use super::error::EncodeError;
use super::packet::{Packet, PacketType, QoS, SubscriptionOptions};
use super::properties::Properties;
use super::reason::ReasonCode;
use super::wire::{Counter, Overlong, Sink, VAR_INT_MAX, var_int_len};

/// Why a body could not be written, before the packet type is attached.
enum Failure {
    Overlong(Overlong),
    Unrepresentable(&'static str),
}

impl From<Overlong> for Failure {
    fn from(o: Overlong) -> Self {
        Self::Overlong(o)
    }
}

/// Appends `packet`, written for a peer speaking `version`, to `out`; refuses it without
/// writing anything if it would be larger than `max_packet_size` bytes in all (the peer's
/// Maximum Packet Size, or [`u32::MAX`] when it set none).
pub fn encode(
    packet: &Packet,
    version: Version,
    max_packet_size: u32,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let body_len = body_len(packet, version)?;
    let size = 1 + var_int_len(body_len) + body_len as usize;
    if size as u64 > u64::from(max_packet_size) {
        return Err(EncodeError::TooLarge {
            packet: packet.packet_type(),
            size: size as u64,
            max: max_packet_size,
        });
    }
    out.reserve(size);
    out.put_u8(first_byte(packet));
    out.var_int(body_len);
    body(packet, version, out).map_err(|f| failure(packet.packet_type(), version, f))
}

/// The number of bytes [`encode`] writes for `packet`, fixed header included.
pub fn encoded_len(packet: &Packet, version: Version) -> Result<usize, EncodeError> {
    let body_len = body_len(packet, version)?;
    Ok(1 + var_int_len(body_len) + body_len as usize)
}

fn body_len(packet: &Packet, version: Version) -> Result<u32, EncodeError> {
    let mut counter = Counter::default();
    body(packet, version, &mut counter).map_err(|f| failure(packet.packet_type(), version, f))?;
    u32::try_from(counter.0)
        .ok()
        .filter(|&n| n <= VAR_INT_MAX)
        .ok_or(EncodeError::TooLarge {
            packet: packet.packet_type(),
            size: counter.0 as u64,
            max: VAR_INT_MAX,
        })
}

fn failure(packet: PacketType, version: Version, failure: Failure) -> EncodeError {
    match failure {
        Failure::Overlong(Overlong { field, len }) => {
            EncodeError::FieldTooLong { packet, field, len }
        }
        Failure::Unrepresentable(what) => EncodeError::Unrepresentable {
            packet,
            version,
            what,
        },
    }
}

fn first_byte(packet: &Packet) -> u8 {
    let kind = packet.packet_type();
    let flags = match packet {
        Packet::Publish(p) if p.qos != QoS::AtMostOnce => {
            u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain)
        }
        Packet::Publish(p) => u8::from(p.retain),
        _ => kind.fixed_flags(),
    };
    (kind as u8) << 4 | flags
}

fn body(packet: &Packet, version: Version, sink: &mut impl Sink) -> Result<(), Failure> {
    let v5 = version == Version::V5;
    let kind = packet.packet_type();
    match packet {
        Packet::Connect(c) => {
            if !v5 && c.password.is_some() && c.username.is_none() {
                return Err(Failure::Unrepresentable("a password without a user name"));
            }
            sink.binary("protocol name", b"MQTT")?;
            sink.byte(if v5 { 5 } else { 4 });
            let mut flags = u8::from(c.clean_start) << 1;
            if let Some(will) = &c.will {
                flags |= 0x04 | (will.qos as u8) << 3 | u8::from(will.retain) << 5;
            }
            flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
            sink.byte(flags);
            sink.u16(c.keep_alive);
            properties(&c.properties, v5, sink)?;
            sink.binary("client identifier", c.client_id.as_bytes())?;
            if let Some(will) = &c.will {
                properties(&will.properties, v5, sink)?;
                sink.binary("will topic", will.topic.as_bytes())?;
                sink.binary("will payload", &will.payload)?;
            }
            if let Some(username) = &c.username {
                sink.binary("user name", username.as_bytes())?;
            }
            if let Some(password) = &c.password {
                sink.binary("password", password)?;
            }
        }
        Packet::ConnAck(c) => {
            sink.byte(u8::from(c.session_present));
            if v5 {
                reason(c.reason_code, kind, sink)?;
            } else {
                let code = c
                    .reason_code
                    .to_v311_connack()
                    .ok_or(Failure::Unrepresentable(
                        "a CONNACK reason code without a 3.1.1 return code",
                    ))?;
                sink.byte(code);
            }
            properties(&c.properties, v5, sink)?;
        }
        Packet::Publish(p) => {
            sink.binary("topic name", p.topic.as_bytes())?;
            if p.qos != QoS::AtMostOnce {
                let id = p.packet_id.ok_or(Failure::Unrepresentable(
                    "a QoS 1 or 2 PUBLISH without a packet identifier",
                ))?;
                sink.u16(id.get());
            }
            properties(&p.properties, v5, sink)?;
            sink.bytes(&p.payload);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            sink.u16(a.packet_id.get());
            if v5 {
                short_tail(a.reason_code, &a.properties, kind, sink)?;
            }
        }
        Packet::Subscribe(s) => {
            if s.filters.is_empty() {
                return Err(Failure::Unrepresentable(
                    "a SUBSCRIBE without topic filters",
                ));
            }
            sink.u16(s.packet_id.get());
            properties(&s.properties, v5, sink)?;
            for (filter, options) in &s.filters {
                sink.binary("topic filter", filter.as_bytes())?;
                sink.byte(options_byte(options, v5));
            }
        }
        Packet::SubAck(s) => {
            sink.u16(s.packet_id.get());
            properties(&s.properties, v5, sink)?;
            for &code in &s.reason_codes {
                if v5 {
                    reason(code, kind, sink)?;
                } else {
                    sink.byte(v311_suback(code)?);
                }
            }
        }
        Packet::Unsubscribe(u) => {
            if u.filters.is_empty() {
                return Err(Failure::Unrepresentable(
                    "an UNSUBSCRIBE without topic filters",
                ));
            }
            sink.u16(u.packet_id.get());
            properties(&u.properties, v5, sink)?;
            for filter in &u.filters {
                sink.binary("topic filter", filter.as_bytes())?;
            }
        }
        Packet::UnsubAck(u) => {
            sink.u16(u.packet_id.get());
            if v5 {
                properties(&u.properties, v5, sink)?;
                for &code in &u.reason_codes {
                    reason(code, kind, sink)?;
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                short_tail(d.reason_code, &d.properties, kind, sink)?;
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(Failure::Unrepresentable("AUTH, which 3.1.1 does not have"));
            }
            short_tail(a.reason_code, &a.properties, kind, sink)?;
        }
    }
    Ok(())
}

/// A 5.0 reason code and properties that may be left out from the end when they are
/// Success and empty.
fn short_tail(
    code: ReasonCode,
    props: &Properties,
    kind: PacketType,
    sink: &mut impl Sink,
) -> Result<(), Failure> {
    if props.is_empty() {
        if code != ReasonCode::Success {
            reason(code, kind, sink)?;
        }
        return Ok(());
    }
    reason(code, kind, sink)?;
    props.encode(sink)?;
    Ok(())
}

fn reason(code: ReasonCode, kind: PacketType, sink: &mut impl Sink) -> Result<(), Failure> {
    if !code.valid_in(kind) {
        return Err(Failure::Unrepresentable(
            "a reason code not valid in this packet",
        ));
    }
    sink.byte(code as u8);
    Ok(())
}

fn properties(props: &Properties, v5: bool, sink: &mut impl Sink) -> Result<(), Failure> {
    if v5 {
        props.encode(sink)?;
    }
    Ok(())
}

fn options_byte(options: &SubscriptionOptions, v5: bool) -> u8 {
    let qos = options.qos as u8;
    if !v5 {
        return qos;
    }
    qos | u8::from(options.no_local) << 2
        | u8::from(options.retain_as_published) << 3
        | (options.retain_handling as u8) << 4
}

/// 3.1.1 SUBACK return codes: the granted QoS, or 0x80 for any refusal.
fn v311_suback(code: ReasonCode) -> Result<u8, Failure> {
    match code {
        ReasonCode::Success | ReasonCode::GrantedQos1 | ReasonCode::GrantedQos2 => Ok(code as u8),
        c if c.is_error() => Ok(0x80),
        _ => Err(Failure::Unrepresentable(
            "a SUBACK reason code without a 3.1.1 return code",
        )),
    }
}
